#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and
# end-to-end tests (real Nix store paths, real engines, skopeo, umoci,
# a registry on 127.0.0.1), then the Nix wrapper's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Rust end-to-end tests' fixtures (tests/e2e/fixtures.nix) use the
# host's /bin/sh as their builder, so they build with the sandbox off.
NIX_CONFIG="substituters =
sandbox = false" cargo test --workspace --locked
cargo build --release --locked -p nix-layer
# The Nix tests build images in Nix's sandbox, as Nix does by default
# (tests/nix/lib.sh sets sandbox = true; test-build.sh also covers it off).
bash tests/nix/run.sh
