#!/usr/bin/env bash
# CI as GitHub runs it, simulated on this machine: a real non-root `runner`
# user with passwordless sudo, a multi-user Nix (a nix-daemon running as
# root, build-users-group nixbld with build users, trusted-users as
# cachix/install-nix-action writes them), and the workflow's steps that can
# run without nixpkgs, run as `runner` through the daemon.
#
# .github/workflows/test.yml, job by job:
#   flake             not here: nix flake check/show, the example images,
#                     devShells and templates all need nixpkgs (GitHub and
#                     cache.nixos.org, unreachable here)
#   repository-tests  checkout: the working tree copied to the runner's
#                     $GITHUB_WORKSPACE; install-nix-action: the daemon and
#                     its nix.conf below; rust-toolchain: the host's cargo and
#                     rustc, put in the store; `bash .ci/run`: its parts that
#                     behave differently as runner through a daemon
#                     (scripts/setup.sh, tests/package, an e2e fixture built
#                     with sandbox = false, tests/nix's test-args and
#                     test-flake: evaluation through the daemon).
#                     The rest of .ci/run is scripts/test.sh, which runs this
#                     script: running it all again here would recurse.
#   workflows         setup-python: a venv of the host's python3; then the
#                     job's own pip install and check-jsonschema (PyPI)
# Also (b): scripts/setup.sh as root on a machine whose Nix has no
# configuration at all writes none.
#
# Nothing of root's Nix changes: the daemon and each runner step run in
# their own mount namespace where /etc/nix is this test's directory holding
# install-nix-action's nix.conf (so a step that writes /etc/nix/nix.conf
# fails as on GitHub), and /nix/var/nix/daemon-socket is this test's
# directory holding the daemon's socket. Root's own /etc/nix/nix.conf and
# its direct store access stay as they are. The daemon is stopped on exit.
# The runner account stays (no password); its sudo rule is removed on exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$repo/tests/package/inputs.sh"
failed=0
pass() { echo "ok - $1"; }
fail() { echo "not ok - $1"; [ $# -gt 1 ] && printf '    %s\n' "${@:2}"; failed=1; }
die() { fail "$@"; exit 1; }

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
$SUDO true 2>/dev/null || die "root or passwordless sudo (to make the runner user and the daemon)"
for tool in nix-daemon nix-store useradd sudo python3 git tar; do
  command -v "$tool" >/dev/null || die "$tool is installed"
done

work=$(mktemp -d)
chmod 755 "$work"
sudoers=/etc/sudoers.d/nix-layer-ci-runner
daemon=""
cleanup() {
  [ -n "$daemon" ] && $SUDO kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  $SUDO rm -f "$sudoers"
  $SUDO rm -rf "$work"
}
trap cleanup EXIT

# --- the runner user and the multi-user Nix --------------------------------
id runner >/dev/null 2>&1 || $SUDO useradd --create-home --shell /bin/bash runner ||
  die "the runner user is created"
echo 'runner ALL=(ALL) NOPASSWD: ALL' | $SUDO tee "$sudoers" >/dev/null && $SUDO chmod 440 "$sudoers" ||
  die "runner gets passwordless sudo"
ensure_build_users || die "the nixbld group and its build users exist"

# What cachix/install-nix-action leaves in /etc/nix/nix.conf (plus the
# installer's build-users-group), except the binary cache (none is
# reachable here) and always-allow-substitutes (Nix 2.8 does not know it).
mkdir -p "$work/etc-nix" "$work/daemon" "$work/bare-nix"
cat >"$work/etc-nix/nix.conf" <<'CONF'
build-users-group = nixbld
max-jobs = auto
trusted-users = root runner
experimental-features = nix-command flakes
CONF
# No binary cache is reachable here: each command passes `substituters =`
# (scripts/test.sh and the tests set it in NIX_CONFIG).
nocache=$'substituters ='
# Root's Nix configuration too, to check that nothing rewrites either.
conf_sums() { sha256sum "$work/etc-nix/nix.conf" /etc/nix/nix.conf 2>/dev/null; ls -A "$work/etc-nix"; }
before=$(conf_sums)

# in_ns ETC_NIX COMMAND…: COMMAND as root with ETC_NIX as /etc/nix and the
# test's socket directory as /nix/var/nix/daemon-socket.
$SUDO mkdir -p /etc/nix /nix/var/nix/daemon-socket || die "mount points exist"
in_ns() {
  $SUDO unshare --mount --propagation private -- bash -c \
    'mount --bind "$1" /etc/nix && mount --bind "$2" /nix/var/nix/daemon-socket && shift 2 && exec "$@"' \
    in_ns "$1" "$work/daemon" "${@:2}"
}

# Not through in_ns: $! must be the daemon itself (unshare and bash exec it).
$SUDO unshare --mount --propagation private -- bash -c \
  'mount --bind "$1" /etc/nix && mount --bind "$2" /nix/var/nix/daemon-socket &&
   exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin nix-daemon' \
  daemon "$work/etc-nix" "$work/daemon" >"$work/daemon.log" 2>&1 &
daemon=$!
sock=$work/daemon/socket
for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.2; done
[ -S "$sock" ] || die "nix-daemon listens" "$(tail -5 "$work/daemon.log")"

toolchain=$(add_toolchain "$work") || die "the Rust toolchain is added to the store (rust-toolchain step)"
ws=/home/runner/work/nix-layer/nix-layer
$SUDO rm -rf "$ws" && sudo -n -u runner mkdir -p "$ws" || die "the runner's workspace is made"
# actions/checkout: the working tree as it is (tracked and new files).
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) |
  sudo -n -u runner tar -xf - -C "$ws" || die "the checkout is copied to $ws"

# A step of the workflow: bash as runner in the workspace, with a GitHub
# runner's environment (CI, GITHUB_*), its Nix client config and cargo.
step() { # COMMANDS
  in_ns "$work/etc-nix" sudo -n -u runner env -i HOME=/home/runner USER=runner LOGNAME=runner CI=true \
    GITHUB_WORKSPACE="$ws" NIX_CONFIG="$nocache" \
    PATH="$toolchain/bin:/home/runner/.local/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    bash -euo pipefail -c "cd '$ws' && $1"
}

if out=$(step 'test "$(id -u)" -ne 0 && sudo -n true && nix store ping 2>&1' 2>&1) && grep -q 'daemon' <<<"$out"; then
  pass "runner is not root, has passwordless sudo, and its Nix goes through the daemon ($(tr '\n' ' ' <<<"$out"))"
else
  fail "runner is not root, has passwordless sudo, and its Nix goes through the daemon" "$out"
fi

# --- repository-tests: the parts of .ci/run that differ as runner ---------------
if out=$(step 'bash scripts/setup.sh' 2>&1); then pass "scripts/setup.sh runs as runner (sudo, daemon)"
else fail "scripts/setup.sh runs as runner (sudo, daemon)" "$(tail -10 <<<"$out")"; fi
[ "$(conf_sums)" = "$before" ] && pass "scripts/setup.sh as runner leaves the Nix configuration as it was" ||
  fail "scripts/setup.sh as runner leaves the Nix configuration as it was" "before: $before" "after: $(conf_sums)"

# The e2e fixtures' build (sandbox off, as scripts/test.sh asks), as runner:
# a trusted user's per-command option, built by a build user of the daemon.
if out=$(step 'NIX_CONFIG="$NIX_CONFIG
sandbox = false" nix-build tests/e2e/fixtures.nix -A app --no-out-link 2>&1 | tail -3' 2>&1) &&
  [ -x "$(tail -1 <<<"$out")/bin/app" ]; then
  pass "an e2e fixture builds through the daemon with sandbox = false per command"
else
  fail "an e2e fixture builds through the daemon with sandbox = false per command" "$out"
fi

for t in test-args test-flake; do
  if out=$(step "ONLY=$t bash tests/nix/run.sh" 2>&1); then pass "tests/nix $t as runner: $(tail -1 <<<"$out")"
  else fail "tests/nix $t as runner" "$(grep -A3 '^not ok' <<<"$out" | head -20)" "$(tail -1 <<<"$out")"; fi
done

echo "# tests/package as runner, through the daemon"
start=$(date +%s)
if out=$(step 'bash tests/package/run.sh' 2>&1); then
  pass "tests/package as runner through the daemon ($(($(date +%s) - start))s): $(grep -c '^ok - ' <<<"$out") checks"
else
  fail "tests/package as runner through the daemon" "$(grep -A12 '^not ok' <<<"$out" | head -40)"
fi
printf '%s\n' "$out" | sed 's/^/    package: /' | grep -E '^    package: (ok|not ok) '

# --- workflows --------------------------------------------------------------
if out=$(step 'python3 -m venv "$HOME/venv" && . "$HOME/venv/bin/activate" && pip install -q check-jsonschema &&
  check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml templates/*/.github/workflows/*.yml' 2>&1); then
  pass "workflows job: check-jsonschema accepts every workflow"
else
  fail "workflows job: check-jsonschema accepts every workflow" "$(tail -10 <<<"$out")"
fi

# --- (b) root on a bare machine: a Nix without any configuration ---------------
if out=$(in_ns "$work/bare-nix" env -i PATH="$toolchain/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root \
  bash "$repo/scripts/setup.sh" 2>&1) && [ -z "$(ls -A "$work/bare-nix")" ]; then
  pass "scripts/setup.sh as root on a Nix without configuration writes none"
else
  fail "scripts/setup.sh as root on a Nix without configuration writes none" "$out" "/etc/nix: $(ls -A "$work/bare-nix")"
fi

[ "$(conf_sums)" = "$before" ] && pass "nothing rewrote the runner's nix.conf or root's /etc/nix/nix.conf" ||
  fail "nothing rewrote the runner's nix.conf or root's /etc/nix/nix.conf" "before: $before" "after: $(conf_sums)"

exit $failed
