#!/usr/bin/env bash
# The copy helpers (nix/image/copy-helpers.nix) push and load with nix-layer
# itself: copyToRegistry into a real docker-registry on 127.0.0.1 (only the
# blobs it lacks, an SBOM referrer, annotations), then pulled and run by
# Docker; copyToDockerDaemon and copyToPodman into the real engines, the second
# load into Docker sending no layer it already has.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

missing() { if [ -n "${CI:-}" ]; then fail "copy helpers: $1"; else skip "copy helpers" "$1"; fi; exit 0; }
REGISTRY_BIN=/usr/bin/docker-registry
[ -x "$REGISTRY_BIN" ] || missing "no $REGISTRY_BIN (apt-get install docker-registry)"
command -v docker >/dev/null && docker info >/dev/null 2>&1 || missing "no Docker engine"
command -v podman >/dev/null || missing "no podman (apt-get install podman)"
command -v busybox >/dev/null || [ -x /bin/busybox ] || missing "no busybox (apt-get install busybox-static)"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/scripts/containers.conf}

work=$(mktemp -d)
: >"$work/loaded"
cleanup() {
  for pid in $(cat "$work"/*/pid 2>/dev/null); do kill "$pid" 2>/dev/null; done
  while IFS= read -r ref; do
    docker image rm -f "$ref" >/dev/null 2>&1
    podman image rm -f "$ref" >/dev/null 2>&1
  done <"$work/loaded"
  rm -rf "$work"
}
trap cleanup EXIT

echo "# building a static nix-layer (target/static)"
if ! static=$(static_nix_layer "$work" "$work/cargo.log"); then
  fail "a static nix-layer builds" "$(tail -20 "$work/cargo.log")"; exit 0
fi
NIX_LAYER=$(to_store "$work" "$static")

source "$TESTS_DIR/registry.sh"
REG=$(start_registry "$work/reg") || { fail "the registry starts" "$(tail -5 "$work/reg/registry.log")"; exit 0; }
REF=$REG/test/copied:1
echo "$REF" >>"$work/loaded"
# The digests of the blobs uploaded so far (one per line, hex), from the final PUTs.
uploaded() { grep -oE '"PUT /v2/test/copied/blobs/uploads/[^ "]*digest=sha256(:|%3A)[0-9a-f]{64}' "$work/reg/access.log" | grep -oE '[0-9a-f]{64}$' | sort; }

# tools.docker: a client that records its calls, then runs Docker's.
mkdir -p "$work/tools"
printf '#!/bin/sh\necho "$*" >>%s\nexec %s "$@"\n' "$work/docker-calls" "$(command -v docker)" >"$work/tools/docker"
chmod +x "$work/tools/docker"

# The image and its helpers; a label unique to this run, so no layer is in Docker yet.
RUN=$(date +%s%N)
expr="let
  fx = import ./fixtures/packages.nix { };
  image = import $REPO/nix/image.nix {
    nixLayer = builtins.storePath $NIX_LAYER; mkScript = fx.writeShellScriptBin; tools.docker = \"$work/tools/docker\";
  };
in image.buildLayeredImage {
  name = \"$REG/test/copied\"; tag = \"1\";
  contents = [ fx.hello fx.tool ];
  config.Cmd = [ \"/bin/hello\" ];
  config.Labels.run = \"$RUN\";
}"
helper() { # helper ATTR: builds img.ATTR, prints its bin/ script
  local out
  out=$(nix-build --no-out-link -E "($expr).$1" 2>"$work/build-$1.log") &&
    ls "$out"/bin/* 2>/dev/null | head -1
}

# --- copyToRegistry: nix-layer push --------------------------------------------------
if H=$(helper copyToRegistry); then
  pass "copyToRegistry builds"
  expect_eq "copyToRegistry needs no image tarball in the store (none in its closure)" \
    "$(nix-store -qR "$(dirname "$(dirname "$H")")" | grep -c -- '-copied\.tar$')" 0
  grep -q "push \"$REF\" --settings" "$H" && ! grep -q skopeo "$H" &&
    pass "copyToRegistry runs nix-layer push --settings (no skopeo)" || fail "copyToRegistry runs nix-layer push" "$(cat "$H")"
  if D=$("$H" --plain-http --sbom --annotation org.opencontainers.image.source=https://example.test/copied --verbose 2>"$work/push1.log") &&
    [[ "$D" == sha256:* ]]; then
    uploaded >"$work/up1"
    pass "copyToRegistry pushes $REF: $D ($(grep -o '[0-9]* blobs uploaded ([0-9]* bytes)' "$work/push1.log"))"
    manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/test/copied/manifests/1")
    expect_eq "the tag names the pushed manifest" "sha256:$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)" "$D"
    expect_eq "the annotation is in the pushed manifest" \
      "$(jq -r '.annotations["org.opencontainers.image.source"]' <<<"$manifest")" "https://example.test/copied"
    refs=$( (curl -sf "http://$REG/v2/test/copied/referrers/$D" ||
      curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/test/copied/manifests/sha256-${D#sha256:}") |
      jq -r '[.manifests[].artifactType] | join(",")')
    expect_eq "an SBOM (CycloneDX) refers to the pushed image" "$refs" "application/vnd.cyclonedx+json"
    if D2=$("$H" --plain-http --sbom --annotation org.opencontainers.image.source=https://example.test/copied --verbose 2>"$work/push2.log"); then
      uploaded >"$work/up2"
      blobs=$(jq -r '.config.digest, .layers[].digest' <<<"$manifest" | cut -c8- | sort)
      again=$(comm -13 "$work/up1" "$work/up2" | comm -12 - <(echo "$blobs"))
      expect_eq "a second copyToRegistry sends none of the image's blobs ($(grep -o '[0-9]* blobs uploaded ([0-9]* bytes), [0-9]* mounted, [0-9]* already there' "$work/push2.log"))" \
        "$D2 $(grep -c . <<<"$again") $(grep -c ': 0 blobs uploaded (0 bytes)' "$work/push2.log")" "$D 0 1"
      expect_eq "the first push uploaded every blob of the image" "$(comm -12 "$work/up1" <(echo "$blobs") | wc -l)" "$(wc -l <<<"$blobs")"
    else
      fail "a second copyToRegistry succeeds" "$(tail -3 "$work/push2.log")"
    fi
    docker image rm -f "$REF" >/dev/null 2>&1
    if docker pull -q "$REF" >"$work/pull.log" 2>&1; then
      expect_eq "Docker pulls the pushed image and runs it" "$(docker run --rm "$REF" 2>&1)" "hello from the fixture"
    else
      fail "Docker pulls the pushed image" "$(tail -3 "$work/pull.log")"
    fi
  else
    fail "copyToRegistry pushes" "$(tail -5 "$work/push1.log")"
  fi
  if out=$("$H" 2>&1); then fail "copyToRegistry over HTTPS to a plain-HTTP registry fails" "$out"
  else pass "copyToRegistry without --plain-http fails (never implied): $(tail -1 <<<"$out" | cut -c1-100)"; fi
else
  fail "copyToRegistry builds" "$(tail -10 "$work/build-copyToRegistry.log")"
fi

# --- copyToDockerDaemon: nix-layer load ----------------------------------------------
if H=$(helper copyToDockerDaemon); then
  grep -q "load --engine docker --settings" "$H" && pass "copyToDockerDaemon runs nix-layer load --engine docker" ||
    fail "copyToDockerDaemon runs nix-layer load" "$(cat "$H")"
  docker image rm -f "$REF" >/dev/null 2>&1
  if "$H" --verbose >"$work/load1.out" 2>"$work/load1.log" && docker image inspect "$REF" >/dev/null 2>&1; then
    pass "copyToDockerDaemon loads the image ($(grep -o 'sent [0-9]* bytes.*already there)' "$work/load1.log"))"
    # It lists Docker's images first (and inspects them, when there are any), then loads.
    expect_eq "nix-layer load ran the docker of tools.docker (image ls, then load)" \
      "$(grep -q '^image ls' "$work/docker-calls" && echo ls) $(grep -qx load "$work/docker-calls" && echo load)" "ls load"
    expect_eq "the loaded image runs" "$(docker run --rm "$REF" 2>&1)" "hello from the fixture"
    sent1=$(grep -o 'sent [0-9]*' "$work/load1.log" | cut -d' ' -f2)
    layers=$(docker image inspect -f '{{len .RootFS.Layers}}' "$REF")
    if "$H" --verbose >"$work/load2.out" 2>"$work/load2.log"; then
      sent2=$(grep -o 'sent [0-9]*' "$work/load2.log" | cut -d' ' -f2)
      expect_eq "a second copyToDockerDaemon skips every layer Docker has" \
        "$(grep -o '([0-9]* layers already there)' "$work/load2.log")" "($layers layers already there)"
      if [ -n "$sent2" ] && [ -n "$sent1" ] && [ "$sent2" -lt $((sent1 / 4)) ]; then
        pass "the second load sends $sent2 bytes, the first $sent1"
      else
        fail "the second load sends far fewer bytes" "first: $sent1, second: $sent2"
      fi
    else
      fail "a second copyToDockerDaemon" "$(tail -3 "$work/load2.log")"
    fi
  else
    fail "copyToDockerDaemon loads the image" "$(tail -5 "$work/load1.log")"
  fi
else
  fail "copyToDockerDaemon builds" "$(tail -10 "$work/build-copyToDockerDaemon.log")"
fi

# --- copyToPodman: nix-layer load --engine podman --------------------------------------
if H=$(helper copyToPodman); then
  podman image rm -f "$REF" >/dev/null 2>&1
  if "$H" >"$work/podman.out" 2>"$work/podman.log" && podman image exists "$REF"; then
    pass "copyToPodman loads the image into Podman"
    expect_eq "Podman has the image's layers" "$(podman image inspect -f '{{len .RootFS.Layers}}' "$REF" 2>&1)" \
      "$(docker image inspect -f '{{len .RootFS.Layers}}' "$REF" 2>&1)"
  else
    fail "copyToPodman loads the image" "$(tail -5 "$work/podman.log")"
  fi
else
  fail "copyToPodman builds" "$(tail -10 "$work/build-copyToPodman.log")"
fi

# --- copyToRegistry with `sign`: signed, with provenance listing the flake's inputs ---
# A key made by nix-layer keygen, outside the store (its password from COSIGN_PASSWORD at
# push time); a flake.lock written by Nix itself for a flake whose input `dep` (a path)
# has an input `inner` (a git repository): the transitive one must be listed too.
export COSIGN_PASSWORD=signflake-test
mkdir -p "$work/keys" "$work/flake/inner" "$work/flake/dep" "$work/flake/app"
if ! "$NIX_LAYER/bin/nix-layer" keygen --output-prefix "$work/keys/cosign" 2>"$work/keygen.log"; then
  fail "nix-layer keygen makes the signing key" "$(cat "$work/keygen.log")"
else
  echo '{ outputs = _: { }; }' >"$work/flake/inner/flake.nix"
  (cd "$work/flake/inner" && git init -q && git add flake.nix && git -c user.name=t -c user.email=t@t commit -qm inner)
  echo "{ inputs.inner.url = \"git+file://$work/flake/inner\"; outputs = _: { }; }" >"$work/flake/dep/flake.nix"
  echo "{ inputs.dep.url = \"path:$work/flake/dep\"; outputs = _: { }; }" >"$work/flake/app/flake.nix"
  (cd "$work/flake/app" && nix flake lock "path:$work/flake/app" >"$work/lock.log" 2>&1) ||
    fail "nix flake lock writes the fixture lock" "$(tail -3 "$work/lock.log")"
  SREF=$REG/test/signed:1
  echo "$SREF" >>"$work/loaded"
  signed="let
    fx = import ./fixtures/packages.nix { };
    image = import $REPO/nix/image.nix { nixLayer = builtins.storePath $NIX_LAYER; mkScript = fx.writeShellScriptBin; };
  in image.buildLayeredImage {
    name = \"$REG/test/signed\"; tag = \"1\";
    contents = [ fx.hello ];
    config.Cmd = [ \"/bin/hello\" ];
    sign = { key = \"$work/keys/cosign.key\"; provenance = true; flakeLock = $work/flake/app/flake.lock; };
  }"
  if out=$(nix-build --no-out-link -E "($signed).copyToRegistry" 2>"$work/build-signed.log"); then
    HS=$(ls "$out"/bin/*)
    expect_eq "copyToRegistry with sign runs push --sign KEY --provenance --flake-lock (the lock in the store, the key not)" \
      "$(grep -c -- "--sign '$work/keys/cosign.key' --provenance --flake-lock '/nix/store/[a-z0-9]*-flake.lock'" "$HS")" 1
    expect_eq "no store path of copyToRegistry holds the private key" \
      "$(grep -rlF "$(sed -n 2p "$work/keys/cosign.key")" $(nix-store -qR "$out") 2>/dev/null | wc -l)" 0
    if D=$("$HS" --plain-http --sbom 2>"$work/push-signed.log") && [[ "$D" == sha256:* ]]; then
      pass "copyToRegistry with sign pushes $SREF: $D"
      check "nix-layer verify --attestations accepts the pushed image, its provenance and SBOM" \
        "$NIX_LAYER/bin/nix-layer" verify "$SREF" --plain-http --key "$work/keys/cosign.pub" --attestations
      # The statement, read from the registry: the in-toto referrer's DSSE envelope.
      idx=$(curl -sf "http://$REG/v2/test/signed/referrers/$D" ||
        curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/test/signed/manifests/sha256-${D#sha256:}")
      att=$(jq -r '.manifests[] | select(.artifactType == "application/vnd.in-toto+json") | .digest' <<<"$idx")
      env_digest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/test/signed/manifests/$att" | jq -r '.layers[0].digest')
      statement=$(curl -sf "http://$REG/v2/test/signed/blobs/$env_digest" | jq -r .payload | base64 -d)
      expect_eq "the provenance's subject is the pushed digest" "$(jq -r '.subject[0].digest.sha256' <<<"$statement")" "${D#sha256:}"
      flake_deps=$(jq -Sc '[.predicate.buildDefinition.resolvedDependencies[] | select(.name | startswith("/") | not)]' <<<"$statement")
      hex() { nix hash to-base16 "$1"; }
      lock=$work/flake/app/flake.lock
      want=$(jq -nSc --arg dir "$work/flake" --arg dephash "$(hex "$(jq -r .nodes.dep.locked.narHash "$lock")")" \
        --arg innerhash "$(hex "$(jq -r .nodes.inner.locked.narHash "$lock")")" --arg rev "$(git -C "$work/flake/inner" rev-parse HEAD)" \
        '[{name: "dep", uri: ("path:" + $dir + "/dep"), digest: {sha256: $dephash}},
          {name: "dep/inner", uri: ("git+file://" + $dir + "/inner?ref=" + "master" + "&rev=" + $rev), digest: {gitCommit: $rev, sha256: $innerhash}}]')
      # The git input's ref is the repository's default branch name, whatever git calls it.
      want=$(sed "s|ref=master|ref=$(git -C "$work/flake/inner" branch --show-current)|" <<<"$want")
      expect_eq "the provenance lists the lock's inputs, the transitive one too, with NAR hash and commit" "$flake_deps" "$want"
      expect_eq "the path input's digest is the NAR hash of its directory (nix hash path)" \
        "$(jq -r '.[0].digest.sha256' <<<"$flake_deps")" "$(nix hash path --type sha256 --base16 "$work/flake/dep")"
      # Without the password the push stops before anything is sent.
      if out=$(COSIGN_PASSWORD=wrong "$HS" --plain-http --tag 2 2>&1); then fail "copyToRegistry with a wrong password fails" "$out"
      else expect_eq "copyToRegistry with a wrong password fails before pushing (no tag 2)" \
        "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/test/signed/manifests/2")" 404; fi
    else
      fail "copyToRegistry with sign pushes" "$(tail -5 "$work/push-signed.log")"
    fi
  else
    fail "copyToRegistry with sign builds" "$(tail -10 "$work/build-signed.log")"
  fi
  # A private key as a Nix path literal or a store path: refused when evaluating, nothing copied.
  cp "$work/keys/cosign.key" "$work/keys/literal.key"
  given="\"$work/keys/cosign.key\""
  for k in "$work/keys/literal.key" "\"\${builtins.toFile \"k\" \"x\"}\""; do
    if out=$(nix-instantiate -E "(${signed/"$given"/$k}).copyToRegistry" 2>&1); then
      fail "sign.key = $k is refused at evaluation" "$out"
    else
      expect_eq "sign.key = ${k:0:40}… is refused at evaluation: $(grep -o 'sign.key.*store' <<<"$out" | head -1 | cut -c1-90)" \
        "$(grep -c "world-readable Nix store\|is in the Nix store, where every user can read it" <<<"$out")" 1
    fi
  done
  expect_eq "the refused key was not copied into the store" "$(ls /nix/store | grep -c -- '-literal\.key$')" 0
fi
