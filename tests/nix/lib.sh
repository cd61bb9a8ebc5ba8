# Helpers shared by the tests in tests/nix/ (sourced, not run).
# Each check prints "ok - NAME" or "not ok - NAME" and appends to $RESULTS,
# which run.sh counts.
set -u
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$TESTS_DIR/../.." && pwd)
RESULTS=${RESULTS:-$(mktemp)}
# Builds run in Nix's sandbox (its default on Linux) unless
# NIX_LAYER_TEST_SANDBOX=false; sandbox-fallback = false makes a machine that
# cannot sandbox fail loudly instead of building unsandboxed. Appended to the
# caller's NIX_CONFIG (scripts/test.sh's), whose other lines still apply.
export NIX_PATH= NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}experimental-features = nix-command flakes
substituters =
sandbox = ${NIX_LAYER_TEST_SANDBOX:-true}
sandbox-fallback = false"

pass() { echo "ok - $1"; echo "pass $1" >> "$RESULTS"; }
fail() { echo "not ok - $1"; [ $# -gt 1 ] && printf '    %s\n' "${@:2}"; echo "fail $1" >> "$RESULTS"; }
skip() { echo "skip - $1${2:+ ($2)}"; echo "skip $1" >> "$RESULTS"; }

check() { # check NAME COMMAND…: passes when the command exits 0
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 15)"; fi
}

expect_eq() { # expect_eq NAME GOT WANT
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "want: $3" "got:  $2"; fi
}

# Evaluates a Nix expression (in the tests directory) to JSON.
nix_json() { nix-instantiate --eval --strict --json -E "$1" 2>&1; }

# eval_is NAME EXPR EXPECTED_JSON
eval_is() {
  local got
  if got=$(cd "$TESTS_DIR" && nix_json "$2") && [ "$got" = "$3" ]; then pass "$1"
  else fail "$1" "expected: $3" "got:      $got"; fi
}

# eval_fails NAME EXPR MESSAGE_SUBSTRING: evaluation must fail with that message
eval_fails() {
  local out
  if out=$(cd "$TESTS_DIR" && nix_json "$2"); then fail "$1" "evaluation succeeded: $out"
  elif printf '%s' "$out" | grep -qF -- "$3"; then pass "$1"
  else fail "$1" "expected the message: $3" "got: $(printf '%s' "$out" | grep -m1 error)"; fi
}

# static_nix_layer WORKDIR LOG: builds nix-layer statically linked (inside the
# sandbox there is no /lib for a dynamic one) and prints its binary's path.
static_nix_layer() {
  (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -p nix-layer \
    --target x86_64-unknown-linux-gnu --target-dir target/static >"$2" 2>&1) &&
    echo "$REPO/target/static/x86_64-unknown-linux-gnu/release/nix-layer"
}

# to_store WORKDIR BINARY: prints a store path holding bin/nix-layer (BINARY).
to_store() {
  rm -rf "$1/pkg" && mkdir -p "$1/pkg/nix-layer/bin" && cp "$2" "$1/pkg/nix-layer/bin/nix-layer"
  nix-store --add "$1/pkg/nix-layer"
}
