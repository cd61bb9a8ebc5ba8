#!/usr/bin/env bash
# The GitHub workflows (ours and the templates') validate against GitHub's
# workflow schema, with check-jsonschema's built-in copy (offline).
source "$(dirname "$0")/lib.sh"
cd "$REPO"
# A private venv: Debian's own python refuses system-wide pip installs.
venv="$REPO/target/venv"
if ! command -v check-jsonschema >/dev/null 2>&1; then
  [ -x "$venv/bin/check-jsonschema" ] ||
    { python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/pip" install --quiet check-jsonschema >/dev/null 2>&1; }
  PATH="$venv/bin:$PATH"
fi
if ! command -v check-jsonschema >/dev/null 2>&1; then
  fail "check-jsonschema is installed" "pip install check-jsonschema failed"
  exit 0
fi
for f in .github/workflows/*.yml templates/*/.github/workflows/*.yml; do
  check "workflow schema: $f" check-jsonschema --builtin-schema vendor.github-workflows "$f"
done
# The plan's fragile push is gone; pushes use the image's own name.
check "no 'docker images | head -1' in workflows" sh -c '! grep -rnE "docker images.*\\| *head" .github/workflows templates/*/.github/workflows'
check "build-containers reads imageName" grep -q 'imageName' .github/workflows/build-containers.yml
check "build-containers tags date, date-sha and latest" grep -q 'for tag in "$build" "${{ needs.build.outputs.date }}" latest' .github/workflows/build-containers.yml
check "security-scan scans nix-layer's SBOM of each image's closure, not flake.lock" sh -c 'grep -q "nix-layer -- sbom" .github/workflows/security-scan.yml && grep -q "sbom:sbom.cdx.json" .github/workflows/security-scan.yml && ! grep -q "sbomnix\|lockfile=" .github/workflows/security-scan.yml'
check "update-nixpkgs regenerates the family catalogues" sh -c 'grep -q "family-catalogue" .github/workflows/update-nixpkgs.yml && grep -q "path: nix/family" .github/workflows/update-nixpkgs.yml'
check "test workflow runs nix flake check and .ci/run" sh -c 'grep -q "nix flake check" .github/workflows/test.yml && grep -q "bash .ci/run" .github/workflows/test.yml'
