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
check "build-containers tags date, date-sha and latest" grep -q 'push-index "$name:$build" .*--tag "${{ needs.build.outputs.date }}" --tag latest' <(tr -d '\\\n' < .github/workflows/build-containers.yml)
check "build-containers pushes with nix-layer push: SBOM and annotations" grep -q 'push "$name:$suffix" --settings "$stream" --creds "$CREDS" --sbom' .github/workflows/build-containers.yml
check "security-scan scans nix-layer's SBOM of each image's closure, not flake.lock" sh -c 'grep -q "nix-layer -- sbom" .github/workflows/security-scan.yml && grep -q "sbom:sbom.cdx.json" .github/workflows/security-scan.yml && ! grep -q "sbomnix\|lockfile=" .github/workflows/security-scan.yml'
check "update-nixpkgs regenerates the family catalogues" sh -c 'grep -q "family-catalogue" .github/workflows/update-nixpkgs.yml && grep -q "path: nix/family" .github/workflows/update-nixpkgs.yml'
check "test workflow runs nix flake check and .ci/run" sh -c 'grep -q "nix flake check" .github/workflows/test.yml && grep -q "bash .ci/run" .github/workflows/test.yml'
# Current action majors (node24), an installer that installs upstream Nix.
check "workflows use node24 action majors" sh -c '! grep -rnE "actions/(checkout|setup-python)@v[1-4]\b|actions/(upload|download)-artifact@v[1-5]\b|docker/login-action@v[1-3]\b|create-pull-request@v[1-7]\b" .github/workflows templates/*/.github/workflows'
check "workflows install upstream Nix (cachix/install-nix-action), no Determinate installer or magic cache" sh -c '! grep -rn "DeterminateSystems/" .github/workflows templates/*/.github/workflows && grep -q "cachix/install-nix-action@v31" .github/workflows/test.yml'
# Template CI runs only what each image has: no coreutils in go/rust runtimes.
check "template CI runs no /usr/bin/env id in runtime images" sh -c '! grep -rn "/usr/bin/env id" templates/*/.github/workflows'
check "go and rust template runtimes run their own Cmd" sh -c 'for t in go rust; do grep -A1 "image: runtime" templates/$t-project/.github/workflows/ci.yml | grep -q "run: \"\""; done'
check "the update PR uses UPDATE_PR_TOKEN and falls back to starting the tests" sh -c 'grep -q "secrets.UPDATE_PR_TOKEN || secrets.GITHUB_TOKEN" .github/workflows/update-nixpkgs.yml && grep -q "gh workflow run test.yml" .github/workflows/update-nixpkgs.yml && grep -q "workflow_dispatch" .github/workflows/test.yml'
