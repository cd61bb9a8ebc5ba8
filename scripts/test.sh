#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and
# end-to-end tests (real Nix store paths, real engines, skopeo, umoci,
# a registry on 127.0.0.1), then the Nix wrapper's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NIX_CONFIG="substituters =
sandbox = false"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo build --release --locked -p nix-layer
bash tests/nix/run.sh
