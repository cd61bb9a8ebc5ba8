#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and
# end-to-end tests (real Nix store paths, real engines, skopeo, umoci,
# a registry on 127.0.0.1), the Nix wrapper's tests, the package built as
# nixpkgs builds it, and CI's steps as a GitHub runner runs them.
# Runs as root or as a user with passwordless sudo; never writes a Nix
# configuration (see scripts/setup.sh): what Nix needs comes per command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian trixie's skopeo, podman and cosign (built with sigstore) in a root of
# their own, for the interoperability tests in tests/e2e/interop.rs.
bash scripts/sigstore-tools.sh

# No binary cache is needed (nor reachable on the development machines).
NIX_CONFIG="experimental-features = nix-command flakes
substituters ="
# Root with its own store (Debian's nix-bin) builds without build users
# unless the machine has them; through a daemon the daemon decides.
if [ "$(id -u)" -eq 0 ] && [ ! -S "${NIX_DAEMON_SOCKET_PATH:-/nix/var/nix/daemon-socket/socket}" ] &&
  ! getent group nixbld >/dev/null; then
  NIX_CONFIG+=$'\nbuild-users-group ='
fi
export NIX_CONFIG

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Rust end-to-end tests' fixtures (tests/e2e/fixtures.nix) use the
# host's /bin/sh as their builder, so they build with the sandbox off.
NIX_CONFIG="$NIX_CONFIG
sandbox = false" cargo test --workspace --locked
cargo build --release --locked -p nix-layer
# The Nix tests build images in Nix's sandbox, as Nix does by default
# (tests/nix/lib.sh sets sandbox = true; test-build.sh also covers it off).
bash tests/nix/run.sh
if [ "${GITHUB_ACTIONS:-}" = true ]; then
  # On GitHub the runner user and its Nix daemon are real.
  bash tests/package/run.sh
else
  # A runner user with sudo and a multi-user Nix daemon, made here; runs
  # tests/package as that user through the daemon.
  bash tests/ci/run.sh
fi
