#!/usr/bin/env bash
# pullImage (nix/pull-image.nix) against a real registry: Debian's
# docker-registry on 127.0.0.1, images pushed into it by nix-layer, then
# pulled in Nix's sandbox by a lock file (`nix-layer lock-image`) with
# import-from-derivation off, or by the manifest digest alone (no other hash),
# used as fromImage of an image built by nix/image.nix, and run by Docker.
# Fetches go through a forward proxy on 127.0.0.1 when http(s)_proxy says so.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

# A missing tool skips these checks, except under CI, where it fails them.
missing() { if [ -n "${CI:-}" ]; then fail "pullImage: $1"; else skip "pullImage" "$1"; fi; exit 0; }
REGISTRY_BIN=/usr/bin/docker-registry
[ -x "$REGISTRY_BIN" ] || missing "no $REGISTRY_BIN (apt-get install docker-registry)"
command -v docker >/dev/null && docker info >/dev/null 2>&1 || missing "no Docker engine"
command -v busybox >/dev/null || [ -x /bin/busybox ] || missing "no busybox (apt-get install busybox-static)"
# Fetches here go to 127.0.0.1 directly, unless a check sets a proxy itself.
unset http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY

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
# The same binary pushes, indexes and locks on the host.
HOST_BIN=$static

# --- the registry ------------------------------------------------------------
source "$TESTS_DIR/registry.sh"
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
  "$HOST_BIN" push "$REG/$ref" --plain-http --quiet --config "${PUSH_CONFIG:-$work/config.json}" \
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

# --- a lock file: no import-from-derivation --------------------------------------
NOIFD=(--option allow-import-from-derivation false)
# locked LOCKFILE [EXTRA ATTRS]: the expression of the layout pulled by a lock
locked() {
  echo "import $REPO/nix/pull-image.nix { nixLayer = builtins.storePath $NIX_LAYER; }
    { lockFile = $1; plainHttp = true; ${2:-} }"
}
# A fresh image (its own label): none of its manifests or blobs is in the store.
echo "{\"Cmd\": [\"/bin/hello\"], \"Labels\": {\"run\": \"locked-$(date +%s%N)\"}}" >"$work/config-locked.json"
if LDIGEST=$(PUSH_CONFIG=$work/config-locked.json push test/locked:1 "$HELLO" "$BASH_PKG") && [[ "$LDIGEST" == sha256:* ]]; then
  # The digest form reads the manifest at evaluation time: with IFD off, Nix refuses it.
  if out=$(nix-instantiate "${NOIFD[@]}" -E "$(pulled "$LDIGEST" test/locked)" 2>&1); then
    fail "the digest-only form needs import-from-derivation" "evaluated with it off: $out"
  elif grep -q "allow-import-from-derivation" <<<"$out" && grep -q "oci-manifest-${LDIGEST#sha256:}" <<<"$out"; then
    pass "the digest-only form is refused with allow-import-from-derivation = false, naming the option and the manifest"
  else
    fail "the digest-only form is refused without IFD, with a clear message" "$(grep -i error <<<"$out" | tail -3)"
  fi
  if "$HOST_BIN" lock-image "$REG/test/locked@$LDIGEST" --plain-http -o "$work/locked.lock.json" 2>"$work/lock.log" &&
    [ "$(jq -r '[.imageName, .imageDigest, (.manifests | length), .manifests[0].manifest.digest, (.index == null)] | join(" ")' "$work/locked.lock.json")" = "$REG/test/locked $LDIGEST 1 $LDIGEST true" ]; then
    pass "nix-layer lock-image REF@DIGEST -o FILE writes the manifest, config and layers"
  else
    fail "nix-layer lock-image REF@DIGEST -o FILE" "$(tail -3 "$work/lock.log")" "$(head -c 600 "$work/locked.lock.json" 2>&1)"
  fi
  if "$HOST_BIN" lock-image "$REG/test/locked:1" --plain-http 2>>"$work/lock.log" | cmp -s - "$work/locked.lock.json"; then
    pass "lock-image of the tag, to stdout: the same bytes as the file (the tag resolved to its digest)"
  else fail "lock-image of the tag, to stdout: the same bytes as the file" "$(tail -3 "$work/lock.log")"; fi
  expect_eq "the lock lists the registry's blobs (digest, size, media type)" \
    "$(jq -c '.manifests[0] | [.config] + .layers | map([.digest, .size, .mediaType])' "$work/locked.lock.json")" \
    "$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/test/locked/manifests/$LDIGEST" | jq -c '[.config] + .layers | map([.digest, .size, .mediaType])')"
  before=$(gets)
  if LL=$(nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$work/locked.lock.json")" 2>"$work/locked.log"); then
    pass "pullImage { lockFile; } evaluates and builds with allow-import-from-derivation = false ($(($(gets) - before)) registry GETs)"
    got=$(skopeo inspect --raw "oci:$LL:base" | sha256sum | cut -d' ' -f1)
    expect_eq "the locked layout's manifest has the locked digest" "sha256:$got" "$LDIGEST"
    expect_eq "the locked layout's config is the pushed one" "$(skopeo inspect --config "oci:$LL:base" 2>&1 | jq -r '.config.Labels.run')" \
      "$(jq -r .Labels.run "$work/config-locked.json")"
    # The same fixed-output fetches and layout as the digest form (now that they are in the store).
    expect_eq "the lock form and the digest form are the same store path" \
      "$(nix-build --no-out-link -E "$(pulled "$LDIGEST" test/locked)" 2>&1)" "$LL"
    # What `nix flake check` does to an image on a locked base: evaluate it, IFD off.
    onlock="let image = import $REPO/nix/image.nix { nixLayer = builtins.storePath $NIX_LAYER; };
      fx = import ./fixtures/packages.nix { };
    in image.buildLayeredImage { name = \"nix-layer-test/on-locked\"; tag = \"1\"; contents = [ fx.tool ];
      fromImage = $(locked "$work/locked.lock.json"); }"
    if out=$(nix-instantiate "${NOIFD[@]}" -E "$onlock" 2>"$work/onlock.log") && [[ "$out" == /nix/store/*.drv ]]; then
      pass "an image with fromImage = pullImage { lockFile; } evaluates with IFD off"
    else
      fail "an image with fromImage = pullImage { lockFile; } evaluates with IFD off" "$out" "$(tail -3 "$work/onlock.log")"
    fi
    expect_eq "passthru of the lock form: imageName, imageDigest, lockFile" \
      "$(nix-instantiate "${NOIFD[@]}" --eval --strict --json -E "let p = $(locked "$work/locked.lock.json"); in [ p.imageName p.imageDigest (toString p.lockFile) ]" 2>&1)" \
      "[\"$REG/test/locked\",\"$LDIGEST\",\"$work/locked.lock.json\"]"
  else
    fail "pullImage { lockFile; } builds with allow-import-from-derivation = false" "$(tail -15 "$work/locked.log")"
  fi
  # The lock is not trusted beyond its digests: a lock whose first layer is another
  # blob (the config) is refused when the layout is assembled from the real manifest.
  jq '.manifests[0].layers[0] = .manifests[0].config' "$work/locked.lock.json" >"$work/swapped.lock.json"
  if out=$(nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$work/swapped.lock.json")" 2>&1); then
    fail "a lock naming other blobs than its manifest is refused" "built: $out"
  elif grep -q "but the manifest names" <<<"$out"; then pass "a lock naming other blobs than its manifest is refused (the layout is checked against the manifest)"
  else fail "a lock naming other blobs than its manifest is refused with a clear message" "$(grep -i error <<<"$out" | tail -3)"; fi
  jq '.lockVersion = 2' "$work/locked.lock.json" >"$work/v2.lock.json"
  if out=$(nix-instantiate "${NOIFD[@]}" -E "$(locked "$work/v2.lock.json")" 2>&1); then fail "a lock of another version is refused" "evaluated: $out"
  elif grep -q "lockVersion 2, not 1): write it again with \`nix-layer lock-image\`" <<<"$out"; then pass "a lock of another version is refused at evaluation"
  else fail "a lock of another version is refused with a clear message" "$(grep -i error <<<"$out" | tail -3)"; fi
  if out=$(nix-instantiate "${NOIFD[@]}" -E "$(locked "$work/locked.lock.json" "imageDigest = \"$LDIGEST\";")" 2>&1); then
    fail "lockFile and imageDigest together are refused" "evaluated: $out"
  elif grep -q "give \`lockFile\` or \`imageDigest\`, not both" <<<"$out"; then pass "lockFile and imageDigest together are refused"
  else fail "lockFile and imageDigest together are refused with a clear message" "$(grep -i error <<<"$out" | tail -3)"; fi
  if out=$(nix-instantiate "${NOIFD[@]}" -E "$(locked "$work/locked.lock.json" 'arch = "arm64";')" 2>&1); then
    fail "a lock without the platform is refused" "evaluated: $out"
  elif grep -q "has no image for linux/arm64; it has: linux/amd64 (add \`--platform linux/arm64\` to \`nix-layer lock-image\`)" <<<"$out"; then
    pass "a lock without the wanted platform is refused at evaluation, naming what it has"
  else fail "a lock without the platform is refused with a clear message" "$(grep -i error <<<"$out" | tail -3)"; fi
else
  fail "a third image pushes" "$(tail -5 "$work/push.log")"
fi
if out=$("$HOST_BIN" lock-image "$REG/test/locked@sha256:$(printf none | sha256sum | cut -d' ' -f1)" --plain-http -o "$work/none.lock.json" 2>&1); then
  fail "lock-image of an unknown digest fails" "$out"
elif [ ! -e "$work/none.lock.json" ] && grep -qi "not found" <<<"$out"; then pass "lock-image of an unknown digest fails and writes nothing"
else fail "lock-image of an unknown digest fails with a clear message and writes nothing" "$out"; fi

# --- proxies: the fetches honour http(s)_proxy and no_proxy (impureEnvVars) -----------
mkdir -p "$work/proxy"
python3 "$TESTS_DIR/fixtures/connect-proxy.py" "$work/proxy/port" "$work/proxy/log" 600 2>"$work/proxy/err" &
echo $! >"$work/proxy/pid"
for _ in $(seq 50); do [ -s "$work/proxy/port" ] && break; sleep 0.1; done
: >>"$work/proxy/log"
tunnels() { grep -c "^CONNECT $REG\$" "$work/proxy/log"; }
# Two fresh images (their own labels), locked on the host without a proxy.
fresh_lock() { # fresh_lock NAME: pushes test/NAME:1, prints its lock file
  echo "{\"Cmd\": [\"/bin/hello\"], \"Labels\": {\"run\": \"$1-$(date +%s%N)\"}}" >"$work/config-$1.json"
  local d
  d=$(PUSH_CONFIG=$work/config-$1.json push "test/$1:1" "$TOOL") &&
    "$HOST_BIN" lock-image "$REG/test/$1@$d" --plain-http -o "$work/$1.lock.json" 2>>"$work/lock.log" && echo "$work/$1.lock.json"
}
if [ -s "$work/proxy/port" ] && P1=$(fresh_lock proxied) && P2=$(fresh_lock bypassed); then
  PROXY=http://127.0.0.1:$(cat "$work/proxy/port")
  # A proxy that is not there: the fetch must fail, so the variable is really used.
  if out=$(https_proxy=http://127.0.0.1:9 nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$P1")" 2>&1); then
    fail "https_proxy reaches the fetch: a dead proxy fails it" "built: $out"
  else
    pass "https_proxy reaches the fetch: with a dead proxy it fails ($(grep -o 'nix-layer: error: .*' <<<"$out" | head -1 | cut -c1-140))"
  fi
  before=$(tunnels)
  if L=$(https_proxy=$PROXY nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$P1")" 2>"$work/proxied.log"); then
    n=$(($(tunnels) - before))
    if [ "$n" -ge 3 ]; then pass "through the proxy in https_proxy: pulled, $n CONNECT tunnels to $REG (the manifest, config and new layers)"
    else fail "the fetches go through the proxy in https_proxy" "$n CONNECT tunnels to $REG: $(tail -3 "$work/proxy/log")"; fi
  else
    fail "a pull through the proxy in https_proxy" "$(tail -5 "$work/proxied.log")"
  fi
  before=$(tunnels)
  if L=$(HTTP_PROXY=$PROXY no_proxy=127.0.0.1 nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$P2")" 2>"$work/bypassed.log"); then
    expect_eq "no_proxy=127.0.0.1 bypasses the proxy in HTTP_PROXY (no tunnel)" "$(($(tunnels) - before))" 0
  else
    fail "a pull with no_proxy bypassing the proxy" "$(tail -5 "$work/bypassed.log")"
  fi
else
  fail "a forward proxy starts and two fresh images are locked" "$(tail -3 "$work/proxy/err" "$work/lock.log" 2>&1)"
fi

# --- a custom CA: a registry over HTTPS with a certificate of its own CA --------------
# Two registries serve one storage: plain HTTP to push and lock, HTTPS (a CA made here)
# to pull from; the lock's imageName is overridden to the HTTPS one.
tls=$work/tls
mkdir -p "$tls"
if openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=nix-layer test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>"$tls/openssl.log" &&
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$tls/server.key" -out "$tls/server.csr" 2>>"$tls/openssl.log" &&
  printf 'subjectAltName = IP:127.0.0.1\n' >"$tls/ext" &&
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
    -extfile "$tls/ext" -out "$tls/server.pem" 2>>"$tls/openssl.log" &&
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') &&
  printf '%s\n' "version: 0.1" "storage:" "  filesystem:" "    rootdirectory: $work/reg/storage" "http:" "  addr: 127.0.0.1:$port" \
    "  tls:" "    certificate: $tls/server.pem" "    key: $tls/server.key" >"$tls/config.yml"; then
  "$REGISTRY_BIN" serve "$tls/config.yml" >"$tls/access.log" 2>"$tls/registry.log" &
  echo $! >"$tls/pid"
  for _ in $(seq 100); do curl -s --cacert "$tls/ca.pem" -o /dev/null "https://127.0.0.1:$port/v2/" && break; sleep 0.1; done
  TLOCK=$(fresh_lock tls)
  curl -s --cacert "$tls/ca.pem" -o /dev/null "https://127.0.0.1:$port/v2/" || fail "the HTTPS registry starts" "$(tail -3 "$tls/registry.log")"
  viatls() {
    echo "import $REPO/nix/pull-image.nix { nixLayer = builtins.storePath $NIX_LAYER; }
      { lockFile = $TLOCK; imageName = \"127.0.0.1:$port/test/tls\"; $1 }"
  }
  if [ -z "$TLOCK" ]; then fail "an image for the HTTPS registry is pushed and locked" "$(tail -3 "$work/lock.log")"
  elif out=$(nix-build --no-out-link "${NOIFD[@]}" -E "$(viatls "")" 2>&1); then
    fail "a registry whose CA is not trusted is refused" "built: $out"
  elif grep -qi "certificate\|tls" <<<"$out"; then
    pass "a registry whose CA is not trusted is refused ($(grep -o 'nix-layer: error: .*' <<<"$out" | head -1 | cut -c1-140))"
    if L=$(nix-build --no-out-link "${NOIFD[@]}" -E "$(viatls "sslCertFile = $tls/ca.pem;")" 2>"$tls/pull.log"); then
      expect_eq "sslCertFile = CA: pulled over HTTPS from the registry of that CA" \
        "$(jq -r '.manifests[0].manifest.digest' "$TLOCK")" "sha256:$(skopeo inspect --raw "oci:$L:base" | sha256sum | cut -d' ' -f1)"
    else
      fail "sslCertFile = CA: pulled over HTTPS (needs the registry client to trust SSL_CERT_FILE)" "$(grep 'nix-layer: error' "$tls/pull.log" | tail -1)"
    fi
  else
    fail "a registry whose CA is not trusted is refused with a TLS message" "$(grep -i error <<<"$out" | tail -2)"
  fi
else
  fail "a CA and a server certificate are made" "$(tail -3 "$tls/openssl.log")"
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
  if "$HOST_BIN" lock-image "$REG/test/multi@$IDX" --plain-http --platform linux/arm64 --platform linux/amd64 -o "$work/multi.lock.json" 2>"$work/multi-lock.log"; then
    expect_eq "lock-image of an index: the index and each platform's manifest, in the order asked" \
      "$(jq -c '[.index.digest, (.manifests | map(.platform.architecture + "=" + .manifest.digest))]' "$work/multi.lock.json")" \
      "[\"$IDX\",[\"arm64=$(digest_of "$multi:test/multi:arm64")\",\"amd64=$(digest_of "$multi:test/multi:amd64")\"]]"
    for a in amd64 arm64; do
      if L=$(nix-build --no-out-link "${NOIFD[@]}" -E "$(locked "$work/multi.lock.json" "arch = \"$a\";")" 2>"$work/lpull-$a.log"); then
        expect_eq "an index's lock, arch = $a, IFD off: its manifest is pulled" "$(digest_of "$L:base")" "$(digest_of "$multi:test/multi:$a")"
      else
        fail "an index's lock, arch = $a: pullImage builds with IFD off" "$(tail -5 "$work/lpull-$a.log")"
      fi
    done
    expect_eq "an index's lock: passthru.index is the index" \
      "$(nix-instantiate --eval --strict --json -E "builtins.hashFile \"sha256\" ($(locked "$work/multi.lock.json")).index" 2>&1)" "\"${IDX#sha256:}\""
  else
    fail "lock-image of an index with two platforms" "$(tail -3 "$work/multi-lock.log")"
  fi
  if out=$("$HOST_BIN" lock-image "$REG/test/multi@$IDX" --plain-http 2>&1); then fail "lock-image of an index without --platform fails" "$out"
  elif grep -qF "name the platforms to lock with --platform (it has: linux/amd64, linux/arm64)" <<<"$out"; then pass "lock-image of an index without --platform fails, naming its platforms"
  else fail "lock-image of an index without --platform fails with a clear message" "$out"; fi
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
