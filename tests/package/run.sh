#!/usr/bin/env bash
# Builds nix/package.nix the way nixpkgs' rustPlatform.buildRustPackage
# builds it, and runs its check phase: in Nix's sandbox (no network), as a
# build user of build-users-group, HOME=/homeless-shelter, with stdenv's
# tools and C compiler only on PATH, crates vendored from Cargo.lock.
#
# Without nixpkgs here, the inputs nixpkgs would provide are made from the
# host and added to the store (content-addressed, so a second run reuses
# them):
#   tools      stdenv's tools (coreutils findutils diffutils sed grep gawk
#              tar gzip bzip2 make bash patch xz) and gcc/binutils, copied
#   toolchain  the host's Rust toolchain (cargo, rustc, the target's std)
#   vendor     `cargo vendor` of Cargo.lock (crates.io reachable, or cargo's
#              cache); the build itself is offline
# These are host binaries linked against the host's glibc: the loader, the
# shared libraries and gcc's own files come in read-only through
# sandbox-paths (/usr/lib/<triple>, /usr/lib/gcc, /usr/libexec/gcc,
# /usr/include, the loader's directory), and /bin/sh as a nixpkgs-built Nix
# has it. No /usr/bin or other host tool is visible in the sandbox.
#
# As root with a local store it builds with build-users-group = nixbld (and
# creates that group and its users when missing); as any other user it
# builds through the Nix daemon, whose build users run the build.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
failed=0
source "$here/inputs.sh"
pass() { echo "ok - $1"; }
fail() { echo "not ok - $1"; [ $# -gt 1 ] && printf '    %s\n' "${@:2}"; failed=1; }
die() { fail "$@"; exit 1; }

for tool in nix nix-build nix-instantiate nix-store cargo readelf rustc gcc dpkg-query; do
  command -v "$tool" >/dev/null || die "$tool is installed (scripts/setup.sh)"
done

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

export NIX_PATH=
NIX_CONFIG="experimental-features = nix-command
substituters =
sandbox = true
sandbox-fallback = false"
local_store=false
[ "$(id -u)" -eq 0 ] && [ ! -S "${NIX_DAEMON_SOCKET_PATH:-/nix/var/nix/daemon-socket/socket}" ] && local_store=true
[ "${NIX_REMOTE:-}" = daemon ] && local_store=false
if $local_store; then
  ensure_build_users || die "the nixbld group and its build users exist"
  NIX_CONFIG+=$'\nbuild-users-group = nixbld'
fi

# --- inputs: stdenv's tools, the toolchain, the vendored crates -------------
triple=$(gcc -dumpmachine)
host=$(rustc -vV | sed -n 's/^host: //p')
loader=$(readelf -l "$(rustc --print sysroot)/bin/cargo" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]/\1/p')
[ -n "$loader" ] || die "the toolchain's ELF interpreter is found (readelf)"

tools=$(add_stdenv_tools "$work") || die "stdenv's tools are added to the store"
toolchain=$(add_toolchain "$work") || die "the Rust toolchain is added to the store"
vendor=$(add_vendored_crates "$work" "$repo") || die "cargo vendor of Cargo.lock, added to the store" "$(tail -5 "$work/vendor.log")"
pass "inputs in the store: $(basename "$tools") $(basename "$toolchain") $(basename "$vendor")"

# Host libraries the copied binaries load, read-only (see above).
paths=("/usr/lib/$triple" "/lib/$triple=$(realpath "/lib/$triple")" "/usr/lib/gcc" "/usr/include")
paths+=("$(dirname "$loader")=$(realpath "$(dirname "$loader")")")
[ -d /usr/libexec/gcc ] && paths+=(/usr/libexec/gcc)
# A Nix built by nixpkgs (the installers', NixOS's) puts a static busybox at
# /bin/sh in every sandbox; Debian's nix-bin does not, so it is added here
# (tests run `#!/bin/sh` scripts, as nixpkgs builds may).
if ! nix show-config 2>/dev/null | grep -q '^sandbox-paths = .*/bin/sh='; then
  busybox=$(command -v busybox || echo /bin/busybox)
  case $(ldd "$busybox" 2>&1) in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) die "a static busybox for the sandbox's /bin/sh (apt-get install busybox-static)" ;;
  esac
  paths+=("/bin/sh=$(realpath "$busybox")")
fi
# The copied gcc looks for cc1, collect2 and the LTO plugin next to itself
# unless told where they are.
gcc_install=$(gcc -print-search-dirs | sed -n 's/^install: //p') # /usr/lib/gcc/<triple>/<version>/
gcc_exec_prefix=$(dirname "$(dirname "$gcc_install")")/
export NIX_CONFIG="$NIX_CONFIG
extra-sandbox-paths = ${paths[*]}"

args=(--no-out-link "$here/default.nix" --argstr tools "$tools" --argstr toolchain "$toolchain" --argstr vendor "$vendor" --argstr gccExecPrefix "$gcc_exec_prefix")

# --- the sandbox a build sees ------------------------------------------------
if probe=$(nix-build "${args[@]}" -A probe 2>"$work/probe.log"); then
  seen=$(cat "$probe")
  host_uid=$(sed -n 's/^host-uid=//p' <<<"$seen")
  builder=$(getent passwd "$host_uid" | cut -d: -f1)
  if [ -n "$builder" ] && id -Gn "$builder" | tr ' ' '\n' | grep -qx nixbld; then
    pass "a build runs as build user $builder (uid $host_uid, group nixbld)"
  else
    fail "a build runs as a build user of nixbld" "$seen" "host uid ${host_uid:-?}: ${builder:-no such user}"
  fi
  if grep -q '^HOME=/homeless-shelter$' <<<"$seen" && grep -q '^usr-bin=absent$' <<<"$seen" &&
    grep -q '^bin-sh=present$' <<<"$seen" && grep -q '^network=$' <<<"$seen" && grep -q '^flock=none$' <<<"$seen"; then
    pass "a build sees HOME=/homeless-shelter, /bin/sh but no /usr/bin, no network but lo, no flock"
  else
    fail "a build sees HOME=/homeless-shelter, /bin/sh but no /usr/bin, no network but lo, no flock" "$seen"
  fi
else
  fail "the sandbox probe builds" "$(tail -15 "$work/probe.log")"
fi

# --- nix/package.nix, built and checked -------------------------------------
echo "# building nix/package.nix in the sandbox (release build and check phase)"
start=$(date +%s)
drv=$(nix-instantiate "${args[@]:1}" -A package 2>"$work/build.log") ||
  die "nix/package.nix evaluates with the rustPlatform shim" "$(tail -5 "$work/build.log")"
if out=$(nix-build "${args[@]}" -A package 2>"$work/build.log"); then
  pass "nix/package.nix builds with its check phase ($(($(date +%s) - start))s)"
else
  fail "nix/package.nix builds with its check phase" "$(grep -E '^(test |failures:|---- |error)' "$work/build.log" | tail -20)" "$(tail -15 "$work/build.log")"
  exit 1
fi
# Built before (same sources, same inputs): its stored log, else a rebuild.
if ! grep -q '^cargoCheckHook$' "$work/build.log"; then
  nix-store --read-log "$drv" >"$work/build.log" 2>/dev/null ||
    nix-build "${args[@]}" -A package --check 2>"$work/build.log" ||
    fail "nix/package.nix rebuilds (--check)" "$(tail -15 "$work/build.log")"
fi
grep -q "cargo test .*--release --target $host --frozen --workspace --lib" "$work/build.log" &&
  ran=$(grep -c '^test result: ok\.' "$work/build.log") && [ "$ran" -gt 10 ] &&
  ! grep -q '^test result: FAILED' "$work/build.log" &&
  pass "the check phase ran cargo test --release --workspace --lib: $ran test binaries, all ok" ||
  fail "the check phase ran cargo test --release --workspace --lib" "$(grep -E 'cargo test|^test result' "$work/build.log" | head)"
grep -q '^test sweep::tests::keeps_an_entry_locked_by_another_process_until_it_exits \.\.\. ok$' "$work/build.log" &&
  pass "the lock-holder test passed in the sandbox (no util-linux there)" ||
  fail "the lock-holder test passed in the sandbox" "$(grep -F keeps_an_entry "$work/build.log")"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
got=$("$out/bin/nix-layer" --version 2>&1)
[[ "$got" == *"$version"* ]] && pass "the built nix-layer runs: $got" || fail "the built nix-layer runs" "$got"

exit $failed
