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
