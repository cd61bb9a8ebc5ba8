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

# build-containers signs what it pushes. Keyless (cosign with GitHub's OIDC identity) is
# checked statically: it needs GitHub's token and the public Fulcio and Rekor. The build
# job's keyless step also attests the provenance predicate its push step wrote.
check "build-containers signs and attests keyless by the pushed digest, never by tag" /usr/bin/python3 - .github/workflows/build-containers.yml <<'PY'
import re, sys, yaml
jobs = yaml.safe_load(open(sys.argv[1]))["jobs"]
signing = attesting = 0
for name, job in jobs.items():
    steps = job.get("steps", [])
    for i, s in enumerate(steps):
        run = s.get("run", "")
        if "cosign sign" not in run:
            continue
        signing += 1
        assert job["permissions"].get("id-token") == "write", f"{name}: no id-token: write"
        # Only `cosign sign --yes "$IMAGE"`, IMAGE being NAME@<digest output of an earlier step>.
        assert re.findall(r"cosign sign[^\n]*", run) == ['cosign sign --yes "$IMAGE"'], run
        m = re.fullmatch(r"\$\{\{ [^}]+ \}\}@\$\{\{ steps\.(\w+)\.outputs\.digest \}\}", s["env"]["IMAGE"])
        assert m, s["env"]["IMAGE"]
        src = next(j for j, t in enumerate(steps) if t.get("id") == m.group(1))
        assert src < i and 'echo "digest=$digest" >>"$GITHUB_OUTPUT"' in steps[src]["run"], steps[src]
        assert f"steps.{m.group(1)}.outputs.keyed == 'false'" in s["if"], s["if"]
        installers = [t["uses"] for t in steps[src:i] if "cosign-installer" in t.get("uses", "")]
        assert installers and all(re.fullmatch(r"sigstore/cosign-installer@v\d+\.\d+\.\d+", u) for u in installers), installers
        attests = re.findall(r"cosign attest[^\n]*", run)
        if name == "build":
            # The same "$IMAGE" (by digest), after signing, with the predicate the push wrote.
            predicate = '"$RUNNER_TEMP/provenance.json"'
            assert attests == [f'cosign attest --yes --type slsaprovenance1 --predicate {predicate} "$IMAGE"'], run
            assert run.index("cosign sign") < run.index("cosign attest"), run
            assert f"--provenance-predicate {predicate}" in steps[src]["run"], steps[src]["run"]
            attesting += 1
        else:
            assert not attests, f"{name}: an index has no provenance to attest"
    # Key-based signing in the same job: by digest too.
    for s in steps:
        for line in re.findall(r"nix-layer -- sign [^\n]*", s.get("run", "")):
            assert line.startswith('nix-layer -- sign "$name@$digest"'), line
assert signing == 2, f"{signing} keyless signing steps (build and manifest expected)"
assert attesting == 1, f"{attesting} keyless attesting steps (build expected)"
PY

# The build job's push step with a key (COSIGN_PRIVATE_KEY), run for real: the step's
# own script, its ${{ … }} filled in as GitHub would, against a registry on 127.0.0.1
# over HTTPS (so the step needs no --plain-http), with a stand-in `nix` that hands
# `nix run .#nix-layer` to a real nix-layer, `nix build ….stream` a real stream script
# and `nix flake metadata` the metadata of a real fixture flake.
wfmissing() { if [ -n "${CI:-}" ]; then fail "workflow signing: $1"; else skip "workflow signing" "$1"; fi; }
if [ ! -x "${REGISTRY_BIN:-/usr/bin/docker-registry}" ]; then wfmissing "no docker-registry (apt-get install docker-registry)"
elif ! command -v jq >/dev/null || ! command -v openssl >/dev/null; then wfmissing "no jq or openssl"
else
  ww=$(mktemp -d)
  trap 'kill $(cat "$ww"/reg/pid 2>/dev/null) 2>/dev/null; rm -rf "$ww"' EXIT
  source "$TESTS_DIR/registry.sh"
  echo "# building a static nix-layer (target/static)"
  if ! static=$(static_nix_layer "$ww" "$ww/cargo.log"); then
    fail "a static nix-layer builds" "$(tail -20 "$ww/cargo.log")"
  elif ! REG=$(start_tls_registry "$ww/reg"); then
    fail "the HTTPS registry starts" "$(tail -5 "$ww/reg/registry.log" 2>/dev/null)"
  else
    NL=$(to_store "$ww" "$static")/bin/nix-layer
    export SSL_CERT_FILE=$ww/reg/ca.pem
    stream=$(cd "$TESTS_DIR" && nix-build --no-out-link -E "let fx = import ./fixtures/packages.nix { };
      image = import $REPO/nix/image.nix { nixLayer = builtins.storePath $(dirname "$(dirname "$NL")"); };
      in image.streamLayeredImage { name = \"$REG/test/wf\"; contents = [ fx.hello ]; config.Cmd = [ \"/bin/hello\" ]; }" 2>"$ww/stream.log")
    mkdir -p "$ww/flake/dep" "$ww/flake/app" "$ww/bin" "$ww/tmp"
    echo '{ outputs = _: { }; }' >"$ww/flake/dep/flake.nix"
    echo "{ inputs.dep.url = \"path:$ww/flake/dep\"; outputs = _: { }; }" >"$ww/flake/app/flake.nix"
    real_nix=$(command -v nix)
    cat >"$ww/bin/nix" <<SH
#!/bin/sh
case "\$1 \$2" in
  "build .#packages.x86_64-linux.example-wf.stream") echo "$stream" ;;
  "run .#nix-layer") shift 3; exec "$NL" "\$@" ;;
  "flake metadata") exec "$real_nix" flake metadata --json "path:$ww/flake/app" ;;
  *) echo "stand-in nix: unexpected \$*" >&2; exit 2 ;;
esac
SH
    chmod +x "$ww/bin/nix"
    COSIGN_PASSWORD=wf-pw "$NL" keygen --output-prefix "$ww/cosign" 2>/dev/null
    pushstep() { # pushstep KEY: runs the push step with COSIGN_PRIVATE_KEY=KEY, prints GITHUB_OUTPUT
      /usr/bin/python3 - "$REPO/.github/workflows/build-containers.yml" "$1" <<PY
import os, re, subprocess, sys, yaml
step = next(s for s in yaml.safe_load(open(sys.argv[1]))["jobs"]["build"]["steps"] if s.get("id") == "push")
ctx = {
    "steps.image.outputs.name": "$REG/test/wf", "steps.image.outputs.attr": ".#packages.x86_64-linux.example-wf",
    "needs.tags.outputs.date": "2026-01-02", "needs.tags.outputs.sha": "abc1234", "matrix.arch": "amd64",
    "github.server_url": "https://github.com", "github.repository": "org/app", "github.sha": "0" * 40,
    "github.actor": "bot", "secrets.GITHUB_TOKEN": "token",
    "secrets.COSIGN_PRIVATE_KEY": sys.argv[2], "secrets.COSIGN_PASSWORD": "wf-pw",
}
fill = lambda s: re.sub(r"\\$\{\{ *(.*?) *\}\}", lambda m: ctx[m.group(1)], str(s))
out = "$ww/output"
open(out, "w").close()
env = dict(os.environ, GITHUB_OUTPUT=out, RUNNER_TEMP="$ww/tmp", PATH="$ww/bin:" + os.environ["PATH"],
           GITHUB_SERVER_URL="https://github.com", GITHUB_REPOSITORY="org/app", GITHUB_RUN_ID="5",
           GITHUB_WORKFLOW_REF="org/app/.github/workflows/build-containers.yml@refs/heads/main",
           **{k: fill(v) for k, v in step["env"].items()})
r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", fill(step["run"])], cwd="$REPO", env=env,
                   stdout=subprocess.DEVNULL, stderr=open("$ww/step.log", "w"))
print(open(out).read().replace("\n", " ").strip() if r.returncode == 0 else f"exit {r.returncode}")
PY
    }
    got=$(pushstep "$(cat "$ww/cosign.key")")
    digest=$(grep -oE 'digest=sha256:[0-9a-f]{64}' <<<"$got" | cut -d= -f2)
    expect_eq "build-containers' push step with COSIGN_PRIVATE_KEY pushes and reports the digest, keyed" \
      "$(sed -E 's/sha256:[0-9a-f]{64}/D/' <<<"$got")" "digest=D keyed=true"
    [ -n "$digest" ] || printf '    %s\n' "$(tail -5 "$ww/step.log")"
    tagged=$(curl -sf --cacert "$SSL_CERT_FILE" -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "https://$REG/v2/test/wf/manifests/2026-01-02-abc1234-amd64" | tr -d '\r' | grep -i '^docker-content-digest:' | cut -d' ' -f2)
    expect_eq "the reported digest is the one the tag names" "$tagged" "$digest"
    expect_eq "the key file is removed after the step; the lock it used stays" \
      "$(ls "$ww/tmp" | tr '\n' ' ')" "flake.lock "
    check "nix-layer verify --attestations accepts what the step pushed, by digest" \
      "$NL" verify "$REG/test/wf@$digest" --key "$ww/cosign.pub" --attestations
    idx=$(curl -sf --cacert "$SSL_CERT_FILE" "https://$REG/v2/test/wf/referrers/$digest" ||
      curl -sf --cacert "$SSL_CERT_FILE" -H 'Accept: application/vnd.oci.image.index.v1+json' "https://$REG/v2/test/wf/manifests/sha256-${digest#sha256:}")
    att=$(jq -r '.manifests[] | select(.artifactType == "application/vnd.in-toto+json") | .digest' <<<"$idx")
    blob=$(curl -sf --cacert "$SSL_CERT_FILE" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$REG/v2/test/wf/manifests/$att" | jq -r '.layers[0].digest')
    statement=$(curl -sf --cacert "$SSL_CERT_FILE" "https://$REG/v2/test/wf/blobs/$blob" | jq -r .payload | base64 -d)
    expect_eq "its provenance: the workflow as builder, the flake's locked input" \
      "$(jq -c '[.predicate.runDetails.builder.id, [.predicate.buildDefinition.resolvedDependencies[] | select(.name | startswith("/") | not) | .name, .uri]]' <<<"$statement")" \
      "[\"https://github.com/org/app/.github/workflows/build-containers.yml@refs/heads/main\",[\"dep\",\"path:$ww/flake/dep\"]]"
    # Without the secret the step pushes unsigned and hands over to the keyless steps.
    got=$(pushstep "")
    expect_eq "without COSIGN_PRIVATE_KEY the push step signs nothing itself (keyed=false)" \
      "$(sed -E 's/sha256:[0-9a-f]{64}/D/' <<<"$got")" "digest=D keyed=false"
    # It writes the predicate the keyless step attests: the key path's, unsigned.
    expect_eq "without COSIGN_PRIVATE_KEY the push step writes the provenance predicate for cosign attest" \
      "$(jq -c '[.runDetails.builder.id, [.buildDefinition.resolvedDependencies[] | select(.name | startswith("/") | not) | .name, .uri]]' "$ww/tmp/provenance.json" 2>&1)" \
      "[\"https://github.com/org/app/.github/workflows/build-containers.yml@refs/heads/main\",[\"dep\",\"path:$ww/flake/dep\"]]"
    expect_eq "the predicate is the one the key path signed" \
      "$(jq -cS . "$ww/tmp/provenance.json" 2>&1)" "$(jq -cS .predicate <<<"$statement")"
  fi
fi
