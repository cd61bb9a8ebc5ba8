# The builder of rust-platform.nix: buildRustPackage's phases as nixpkgs'
# hooks run them (cargo-setup-hook, cargo-build-hook, cargo-check-hook,
# cargo-install-hook). Runs with the derivation's PATH only.
set -euo pipefail

echo "unpackPhase"
cp -r "$src" source
chmod -R u+w source
cd source

echo "cargoSetupHook: vendored crates from $vendor"
# The lock file the crates were vendored from must be the source's.
diff "$lockFile" Cargo.lock
diff "$vendor/Cargo.lock" Cargo.lock
mkdir -p .cargo
cat >>.cargo/config.toml <<TOML
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$vendor"

[target.$rustTarget]
linker = "cc"
TOML
cc_var="CC_${rustTarget//-/_}"
export "$cc_var=cc" "CXX_${rustTarget//-/_}=c++"

echo "cargoBuildHook"
(
  set -x
  cargo build -j "$NIX_BUILD_CORES" --target "$rustTarget" --frozen --release $cargoBuildFlags
)

if [ -n "$doCheck" ]; then
  echo "cargoCheckHook"
  (
    set -x
    cargo test -j "$NIX_BUILD_CORES" --release --target "$rustTarget" --frozen $cargoTestFlags \
      -- --test-threads="$NIX_BUILD_CORES" $checkFlags
  )
fi

echo "cargoInstallHook"
mkdir -p "$out/bin"
find "target/$rustTarget/release" -maxdepth 1 -type f -executable -exec cp {} "$out/bin/" \;
