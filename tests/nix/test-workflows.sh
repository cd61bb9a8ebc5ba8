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
check "build-containers tags date, date-sha and latest" grep -q 'push-index "$name:$build" .*--tag "${{ needs.tags.outputs.date }}" --tag latest' <(tr -d '\\\n' < .github/workflows/build-containers.yml)
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

# build-containers: the date (and sha) come from one job that is not a matrix,
# which every leg and the tagging job read; no matrix leg computes its own.
check "build-containers computes the date once for every matrix leg" /usr/bin/python3 - .github/workflows/build-containers.yml <<'PY'
import sys, yaml
jobs = yaml.safe_load(open(sys.argv[1]))["jobs"]
def needs(j): n = jobs[j].get("needs", []); return [n] if isinstance(n, str) else n
runs = lambda j: " ".join(s.get("run", "") for s in jobs[j].get("steps", []))
dated = [j for j in jobs if "$(date" in runs(j)]
assert len(dated) == 1, f"jobs computing a date: {dated}"
src = dated[0]
assert "strategy" not in jobs[src], f"{src} is a matrix job"
for j, job in jobs.items():
    text = yaml.safe_dump(job)
    if j != src and "outputs.date" in text:
        assert src in needs(j) and f"needs.{src}.outputs.date" in text and "steps.tags" not in text, f"{j} does not read {src}'s date"
assert "needs.build.outputs" not in open(sys.argv[1]).read(), "a matrix job's outputs are read (last leg wins)"
PY

# update-nixpkgs' lock step, run for real with a stand-in `nix` in a scratch
# git repository: on the first run an untracked flake.lock is neither the
# old pin nor relocked from; the new lock is staged for the next steps (and
# for the catalogue job, which downloads it).
lockstep() { # lockstep DIR: runs the "Update flake.lock" step in DIR, prints old/new
  /usr/bin/python3 - "$REPO/.github/workflows/update-nixpkgs.yml" "$1" <<'PY'
import os, subprocess, sys, yaml
wf = yaml.safe_load(open(sys.argv[1]))
step = next(s for s in wf["jobs"]["lock"]["steps"] if s.get("id") == "update")
out = os.path.join(sys.argv[2], "out")
env = dict(os.environ, GITHUB_OUTPUT=out, PATH=os.path.join(sys.argv[2], "bin") + ":" + os.environ["PATH"])
subprocess.run(["bash", "-e", "-c", step["run"]], cwd=os.path.join(sys.argv[2], "repo"), env=env, check=True)
print(open(out).read().replace("\n", " ").strip())
PY
}
lock_repo() { # lock_repo DIR: a git repo with a flake.nix and the stand-in nix
  mkdir -p "$1/bin" "$1/repo"
  # The stand-in: metadata prints the tracked lock's rev (Nix sees tracked
  # files only; with no tracked lock it locks in memory, rev "latest");
  # update and lock write rev "latest".
  cat >"$1/bin/nix" <<'SH'
#!/bin/sh
case "$1 $2" in
  "flake metadata")
    if git ls-files --error-unmatch flake.lock >/dev/null 2>&1; then rev=$(cat flake.lock); else rev=latest; fi
    printf '{"locks":{"nodes":{"nixpkgs":{"locked":{"rev":"%s"}}}}}\n' "$rev" ;;
  "flake update"|"flake lock") echo latest > flake.lock ;;
  *) exit 2 ;;
esac
SH
  chmod +x "$1/bin/nix"
  (cd "$1/repo" && git init -q && echo '{ }' >flake.nix && git add flake.nix && git -c user.name=t -c user.email=t@t commit -qm init)
}
lw=$(mktemp -d)
lock_repo "$lw/first"; echo stale >"$lw/first/repo/flake.lock"
expect_eq "update-nixpkgs, first run: an untracked flake.lock is not the old pin; the new one is staged" \
  "$(lockstep "$lw/first" 2>&1) $(cd "$lw/first/repo" && printf "%s " "$(cat flake.lock)" && git diff --cached --name-only | tr '\n' ' ')" "old=none new=latest latest flake.lock "
lock_repo "$lw/next"; (cd "$lw/next/repo" && echo pinned >flake.lock && git add flake.lock && git -c user.name=t -c user.email=t@t commit -qm lock)
expect_eq "update-nixpkgs, later runs: old is the committed pin" "$(lockstep "$lw/next" 2>&1)" "old=pinned new=latest"
rm -rf "$lw"
check "update-nixpkgs: the catalogue job stages the downloaded flake.lock before using Nix" /usr/bin/python3 - .github/workflows/update-nixpkgs.yml <<'PY'
import sys, yaml
steps = yaml.safe_load(open(sys.argv[1]))["jobs"]["catalogue"]["steps"]
runs = [s.get("run", "") for s in steps]
first_nix = next(i for i, r in enumerate(runs) if "nix " in r)
assert any("git add flake.lock" in r for r in runs[:first_nix]), runs
PY

# Templates: no bind mount of a host directory that may not exist (~/.ssh):
# Docker refuses to start the container when the source is missing.
check "template devcontainers mount nothing from the host's home" sh -c '! grep -rn "localEnv:HOME" templates/*/.devcontainer'
