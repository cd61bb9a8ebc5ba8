#!/usr/bin/env bash
# pullImage (nix/pull-image.nix) against a real registry: Debian's
# docker-registry on 127.0.0.1, an image pushed into it by nix-layer, then
# pulled in Nix's sandbox by its manifest digest alone (no other hash), used
# as fromImage of an image built by nix/image.nix, and run by Docker.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

REGISTRY_BIN=/usr/bin/docker-registry
[ -x "$REGISTRY_BIN" ] || { skip "pullImage" "no $REGISTRY_BIN (apt-get install docker-registry)"; exit 0; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { skip "pullImage" "no Docker engine"; exit 0; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { skip "pullImage" "no busybox (apt-get install busybox-static)"; exit 0; }
HOST_BIN="$REPO/target/release/nix-layer"
[ -x "$HOST_BIN" ] || { fail "pullImage: target/release/nix-layer exists (cargo build --release -p nix-layer)"; exit 0; }

work=$(mktemp -d)
: >"$work/loaded"
cleanup() {
  for pid in $(cat "$work"/*/pid 2>/dev/null); do kill "$pid" 2>/dev/null; done
  while IFS= read -r ref; do docker image rm -f "$ref" >/dev/null 2>&1; done <"$work/loaded"
  rm -rf "$work"
}
trap cleanup EXIT

echo "# building a static nix-layer (target/static)"
if ! static=$(static_nix_layer "$work" "$work/cargo.log"); then
  fail "a static nix-layer builds" "$(tail -20 "$work/cargo.log")"; exit 0
fi
NIX_LAYER=$(to_store "$work" "$static")

# --- the registry ------------------------------------------------------------
# start_registry DIR [USER:PASSWORD]: serves DIR/storage on a free port (with
# htpasswd auth when given), prints 127.0.0.1:PORT; the access log is DIR/access.log.
# (Run in $(…), so its pid goes to DIR/pid for the cleanup.)
start_registry() {
  local dir=$1 port
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "version: 0.1" "log:" "  level: info" "  accesslog:" "    disabled: false" \
    "storage:" "  filesystem:" "    rootdirectory: $dir/storage" "http:" "  addr: 127.0.0.1:$port" >"$dir/config.yml"
  if [ -n "${2:-}" ]; then
    python3 -W ignore -c 'import crypt, sys; u, p = sys.argv[1].split(":", 1); print(u + ":" + crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' "$2" >"$dir/htpasswd"
    printf '%s\n' "auth:" "  htpasswd:" "    realm: test" "    path: $dir/htpasswd" >>"$dir/config.yml"
  fi
  "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/registry.log" &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && echo "127.0.0.1:$port"
}
REG=$(start_registry "$work/reg") || { fail "the registry starts" "$(tail -5 "$work/reg/registry.log")"; exit 0; }
# Requests for the test repositories' manifests and blobs so far.
gets() { grep -cE "\"GET /v2/test/[a-z]+/(manifests|blobs)/" "$work/reg/access.log"; }

# --- an image pushed into it ---------------------------------------------------
# (fixtures built in the sandbox; the base's top layer has /bin/hello and /bin/sh)
fixture() { nix-build --no-out-link -E "(import ./fixtures/packages.nix { }).$1" 2>"$work/fixture.log"; }
HELLO=$(fixture hello) && BASH_PKG=$(fixture bash) && TOOL=$(fixture tool) ||
  { fail "the fixture packages build" "$(tail -5 "$work/fixture.log")"; exit 0; }
# A label unique to this run: its manifest and config are not in the store yet.
echo "{\"Cmd\": [\"/bin/hello\"], \"Labels\": {\"run\": \"$(date +%s%N)\"}}" >"$work/config.json"
push() { # push REF PACKAGES…: prints the manifest digest
  local ref=$1; shift
  "$HOST_BIN" push "$REG/$ref" --plain-http --quiet --config "$work/config.json" \
    --closure $(nix-store -qR "$@") --contents "$@" 2>"$work/push.log"
}
if DIGEST=$(push test/base:1 "$HELLO" "$BASH_PKG") && [[ "$DIGEST" == sha256:* ]]; then
  pass "nix-layer push to $REG: $DIGEST"
else
  fail "nix-layer push to $REG" "$(tail -5 "$work/push.log")"; exit 0
fi

# --- pullImage by the digest alone ----------------------------------------------
# pulled DIGEST [REPO] [EXTRA ATTRS]: the expression of the pulled layout
pulled() {
  echo "import $REPO/nix/pull-image.nix { nixLayer = builtins.storePath $NIX_LAYER; }
    { imageName = \"$REG/${2:-test/base}\"; imageDigest = \"$1\"; plainHttp = true; ${3:-} }"
}
before=$(gets)
t0=$(date +%s.%N)
if LAYOUT=$(nix-build --no-out-link -E "$(pulled "$DIGEST")" 2>"$work/pull.log") && [ $(($(gets) - before)) -ge 2 ]; then
  t1=$(date +%s.%N)
  pass "pullImage { imageName; imageDigest; } builds in the sandbox ($(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s, $(($(gets) - before)) registry GETs)"
else
  fail "pullImage { imageName; imageDigest; } builds in the sandbox, fetching the manifest and config" "$(($(gets) - before)) GETs" "$(tail -15 "$work/pull.log")"; exit 0
fi
if [ "$(skopeo inspect --config "oci:$LAYOUT:base" 2>&1 | jq -c .config.Cmd)" = '["/bin/hello"]' ]; then
  pass "the pulled layout opens: skopeo inspect oci:RESULT:base (the pushed config)"
else fail "the pulled layout opens: skopeo inspect oci:RESULT:base" "$(skopeo inspect --config "oci:$LAYOUT:base" 2>&1 | tail -3)"; fi
got=$(skopeo inspect --raw "oci:$LAYOUT:base" | sha256sum | cut -d' ' -f1)
if [ "sha256:$got" = "$DIGEST" ]; then pass "the layout's manifest has the pinned digest"; else fail "the layout's manifest has the pinned digest" "got sha256:$got"; fi
# Each blob is its own fixed-output store path named by its digest.
drv=$(nix-instantiate -E "$(pulled "$DIGEST")" 2>/dev/null)
nblobs=$(nix-store -q --references "$drv" | grep -c -- '-oci-blob-[0-9a-f]\{64\}\.drv$')
nlayers=$(skopeo inspect "oci:$LAYOUT:base" | jq '.Layers | length')
if [ "$nblobs" -eq $((nlayers + 1)) ]; then pass "one fixed-output derivation per blob ($nlayers layers + config)"
else fail "one fixed-output derivation per blob" "$nblobs blob derivations for $nlayers layers"; fi
expect_passthru=$(nix-instantiate --eval --strict --json -E "let p = $(pulled "$DIGEST"); in [ p.imageName p.imageDigest ]" 2>&1)
if [ "$expect_passthru" = "[\"$REG/test/base\",\"$DIGEST\"]" ]; then pass "passthru: imageName and imageDigest"; else fail "passthru: imageName and imageDigest" "$expect_passthru"; fi

# --- nothing fetched twice ---------------------------------------------------------
before=$(gets)
again=$(nix-build --no-out-link -E "$(pulled "$DIGEST")" 2>"$work/pull2.log")
if [ "$again" = "$LAYOUT" ] && [ "$(gets)" -eq "$before" ]; then pass "a second evaluation and build sends no request to the registry"
else fail "a second evaluation and build sends no request to the registry" "$(($(gets) - before)) new GETs; $again vs $LAYOUT"; fi
# The layout itself gone, its blobs kept: reassembled without the registry.
# (with images of an earlier run that name it in their history: test outputs)
nix-store --delete $(nix-store -q --referrers "$LAYOUT" | grep -- '-on-pulled\.tar$') "$LAYOUT" >/dev/null 2>&1
before=$(gets)
if [ ! -e "$LAYOUT" ] && again=$(nix-build --no-out-link -E "$(pulled "$DIGEST")" 2>"$work/pull3.log") &&
  [ "$again" = "$LAYOUT" ] && [ "$(gets)" -eq "$before" ]; then
  pass "the layout, deleted from the store, is rebuilt from stored blobs (no request)"
else
  fail "the layout, deleted from the store, is rebuilt from stored blobs (no request)" "exists: $([ -e "$LAYOUT" ] && echo yes); $(($(gets) - before)) new GETs; $(tail -3 "$work/pull3.log")"
fi

# --- fromImage = the pulled image, run by Docker ------------------------------------
derived="let
  image = import $REPO/nix/image.nix { nixLayer = builtins.storePath $NIX_LAYER; };
  fx = import ./fixtures/packages.nix { };
in image.buildLayeredImage {
  name = \"nix-layer-test/on-pulled\"; tag = \"1\";
  fromImage = $(pulled "$DIGEST");
  contents = [ fx.tool ];
  # (a base's Cmd is not inherited, as in dockerTools: /bin/hello is the base's)
  config.Cmd = [ \"/bin/hello\" ];
}"
if out=$(nix-build --no-out-link -E "$derived" 2>"$work/derived.log") && docker load -i "$out" >/dev/null 2>&1; then
  echo nix-layer-test/on-pulled:1 >>"$work/loaded"
  pass "an image with fromImage = pullImage { … } builds and loads"
  expect_eq "on the pulled base: the base's /bin/hello runs (docker run)" "$(docker run --rm nix-layer-test/on-pulled:1 2>&1)" "hello from the fixture"
  expect_eq "on the pulled base: its own contents are there" \
    "$(docker run --rm --entrypoint /bin/sh nix-layer-test/on-pulled:1 -c 'read l < /share/tool/data; echo $l' 2>&1)" "tool data"
  base_ids=$(skopeo inspect --config "oci:$LAYOUT:base" | jq -r '.rootfs.diff_ids[]')
  ids=$(docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' nix-layer-test/on-pulled:1 | sed '/^$/d')
  expect_eq "on the pulled base: the base's layers come first, unchanged" "$(head -n "$(echo "$base_ids" | wc -l)" <<<"$ids")" "$base_ids"
else
  fail "an image with fromImage = pullImage { … } builds and loads" "$(tail -15 "$work/derived.log")"
fi

# --- what must fail ---------------------------------------------------------------
missing=sha256:$(printf 'no such manifest' | sha256sum | cut -d' ' -f1)
if out=$(nix-build --no-out-link -E "$(pulled "$missing")" 2>&1); then fail "an unknown digest fails" "built: $out"
elif grep -q "not found\|404" <<<"$out"; then pass "an unknown digest fails (the registry has no such manifest)"
else fail "an unknown digest fails with a clear message" "$(tail -5 <<<"$out")"; fi
if out=$(nix-build --no-out-link -E "$(pulled "sha256:abc")" 2>&1); then fail "a malformed digest fails" "built: $out"
elif grep -q "is not a sha256 digest" <<<"$out"; then pass "a malformed digest fails at evaluation"
else fail "a malformed digest fails at evaluation" "$(tail -3 <<<"$out")"; fi
# A registry serving other bytes under a layer's digest: tamper a layer of a
# second image (not in the store yet) in the registry's storage.
if D2=$(push test/other:1 "$TOOL" "$BASH_PKG"); then
  layer=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/test/other/manifests/$D2" |
    jq -r '.layers[].digest' | while read -r d; do
      ls -d /nix/store/*-oci-blob-"${d#sha256:}" >/dev/null 2>&1 || { echo "$d"; break; }
    done)
  data="$work/reg/storage/docker/registry/v2/blobs/sha256/${layer:7:2}/${layer#sha256:}/data"
  if [ -n "$layer" ] && [ -f "$data" ]; then
    printf 'tampered' | dd of="$data" bs=1 seek=100 conv=notrunc 2>/dev/null
    if out=$(nix-build --no-out-link -E "$(pulled "$D2" test/other)" 2>&1); then fail "a tampered blob is refused" "built: $out"
    elif grep -qi "digest" <<<"$out" && grep -q "${layer#sha256:}" <<<"$out"; then pass "a blob whose bytes do not match its digest is refused"
    else fail "a tampered blob is refused with a clear message" "$(grep -i error <<<"$out" | tail -3)"; fi
    if ls -d /nix/store/*-oci-blob-"${layer#sha256:}" >/dev/null 2>&1; then fail "the tampered blob is not in the store"
    else pass "the tampered blob is not in the store"; fi
  else
    fail "a layer of the second image to tamper with" "layer=$layer"
  fi
else
  fail "a second image pushes" "$(tail -5 "$work/push.log")"
fi

# --- an index: the platform's manifest is chosen at evaluation ------------------------
multi="$work/multi"
for a in amd64 arm64; do
  "$HOST_BIN" build --quiet --closure $(nix-store -qR "$HELLO") --config "$work/config.json" \
    --name "test/multi:$a" --arch "$a" --format oci -o "$multi" 2>>"$work/multi.log"
done
if "$HOST_BIN" index --layout "$multi" --name test/multi:1 test/multi:amd64 test/multi:arm64 >/dev/null 2>>"$work/multi.log" &&
  IDX=$("$HOST_BIN" push "$REG/test/multi:1" --plain-http --layout "$multi" --image test/multi:1 2>>"$work/multi.log"); then
  digest_of() { echo "sha256:$(skopeo inspect --raw "oci:$1" | sha256sum | cut -d' ' -f1)"; }
  for a in amd64 arm64; do
    if L=$(nix-build --no-out-link -E "$(pulled "$IDX" test/multi "arch = \"$a\";")" 2>"$work/pull-$a.log"); then
      expect_eq "an index digest, arch = $a: its manifest is pulled" "$(digest_of "$L:base")" "$(digest_of "$multi:test/multi:$a")"
    else
      fail "an index digest, arch = $a: pullImage builds" "$(tail -5 "$work/pull-$a.log")"
    fi
  done
  expect_eq "an index digest: passthru.index is the index, passthru.manifest the platform's" \
    "$(nix-instantiate --eval --strict --json -E "let p = $(pulled "$IDX" test/multi "arch = \"arm64\";"); in [ (builtins.hashFile \"sha256\" p.index) (builtins.hashFile \"sha256\" p.manifest) ]" 2>&1)" \
    "[\"${IDX#sha256:}\",\"$(digest_of "$multi:test/multi:arm64" | cut -c8-)\"]"
  if out=$(nix-instantiate --eval -E "($(pulled "$IDX" test/multi "arch = \"s390x\";")).drvPath" 2>&1); then
    fail "an index without the platform fails" "evaluated: $out"
  elif grep -qF "has no image for linux/s390x; it has: linux/amd64, linux/arm64" <<<"$out"; then
    pass "an index without the platform fails at evaluation, naming the platforms it has"
  else
    fail "an index without the platform fails, naming the platforms it has" "$(grep error <<<"$out" | tail -2)"
  fi
else
  fail "a two-platform index is pushed" "$(tail -5 "$work/multi.log")"
fi

# --- a registry that wants credentials: they come through impureEnvVars ---------------
if AREG=$(start_registry "$work/auth" puller:s3cret); then
  if AD=$("$HOST_BIN" push "$AREG/test/private:1" --plain-http --quiet --creds puller:s3cret --config "$work/config.json" \
    --closure $(nix-store -qR "$TOOL") --contents "$TOOL" 2>"$work/auth-push.log"); then
    priv() { echo "import $REPO/nix/pull-image.nix { nixLayer = builtins.storePath $NIX_LAYER; }
      { imageName = \"$AREG/test/private\"; imageDigest = \"$AD\"; plainHttp = true; }"; }
    if out=$(nix-build --no-out-link -E "$(priv)" 2>&1); then fail "without credentials, a private image is refused" "built: $out"
    elif grep -qi "401\|unauthori\|credentials" <<<"$out"; then pass "without credentials, a private image is refused (401)"
    else fail "without credentials, a private image is refused with a clear message" "$(grep -i error <<<"$out" | tail -2)"; fi
    if L=$(NIX_LAYER_REGISTRY_CREDS=puller:s3cret nix-build --no-out-link -E "$(priv)" 2>"$work/auth-pull.log"); then
      expect_eq "NIX_LAYER_REGISTRY_CREDS reaches the fetch (impureEnvVars): the private image is pulled" \
        "$(skopeo inspect --raw "oci:$L:base" | sha256sum | cut -d' ' -f1)" "${AD#sha256:}"
    else
      fail "NIX_LAYER_REGISTRY_CREDS reaches the fetch (impureEnvVars)" "$(tail -5 "$work/auth-pull.log")"
    fi
  else
    fail "an image is pushed to the registry with htpasswd" "$(tail -5 "$work/auth-push.log")"
  fi
else
  fail "a registry with htpasswd auth starts" "$(tail -5 "$work/auth/registry.log")"
fi
