#!/usr/bin/env bash
# Makes a Debian trixie root holding skopeo, podman and cosign as Debian builds
# them there, skopeo and podman WITH sigstore support (bookworm's skopeo 1.9 and podman 4.3 carry a
# Debian patch that disables it), for tests/e2e/interop.rs's interoperability
# tests; scripts/sigstore-run runs them. Trixie's binaries need glibc 2.38, so
# they run in their own root (chroot), never on the host's libraries.
# Idempotent: an existing, checked root is kept. The host's apt sources are not
# touched (debootstrap fetches by itself). Root or passwordless sudo.
# NIX_LAYER_TRIXIE_ROOT overrides where the root lives.
set -euo pipefail

root=${NIX_LAYER_TRIXIE_ROOT:-/var/cache/nix-layer/trixie-sigstore}
mirror=${NIX_LAYER_TRIXIE_MIRROR:-http://deb.debian.org/debian}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
here=$(cd "$(dirname "$0")" && pwd)

# The proof the binaries are the right ones: skopeo signs a one-config image
# with a sigstore key (cosign's), which bookworm's refuses ("sigstore
# disabled"; its --sign-by-sigstore-private-key flag exists all the same).
check() {
  local t rc=0
  t=$(mktemp -d /tmp/nix-layer-sigstore-check.XXXXXX)
  mkdir "$t/a"
  printf '{}' >"$t/cfg"
  local h; h=$(sha256sum "$t/cfg" | cut -d' ' -f1)
  mv "$t/cfg" "$t/a/$h"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":2},"layers":[]}' "$h" >"$t/a/manifest.json"
  printf 'Directory Transport Version: 1.1\n' >"$t/a/version"
  echo check >"$t/pass"
  (cd "$t" && COSIGN_PASSWORD=check "$here/sigstore-run" cosign generate-key-pair >/dev/null 2>&1) &&
    "$here/sigstore-run" skopeo copy -q --sign-identity nix-layer.invalid/check:1 \
      --sign-by-sigstore-private-key "$t/cosign.key" --sign-passphrase-file "$t/pass" "dir:$t/a" "dir:$t/b" &&
    [ -s "$t/b/signature-1" ] &&
    "$here/sigstore-run" podman --version >/dev/null || rc=1
  $SUDO rm -rf "$t"
  return $rc
}

if [ -e "$root/.nix-layer-ready" ] && check; then
  exit 0
fi

start=$(date +%s)
# Debian's keyring checks trixie's Release file (an Ubuntu runner lacks it).
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if ! command -v debootstrap >/dev/null || [ ! -e "$keyring" ]; then
  echo "sigstore-tools: installing debootstrap" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null
fi

# Built beside its final place and renamed at the end, so a broken run leaves
# no root that looks ready.
tmp="$root.tmp"
$SUDO rm -rf "$tmp"
$SUDO mkdir -p "$tmp"
echo "sigstore-tools: debootstrap trixie into $root" >&2
$SUDO debootstrap --keyring="$keyring" --variant=minbase trixie "$tmp" "$mirror" >"${TMPDIR:-/tmp}/nix-layer-debootstrap.log" 2>&1 || {
  tail -n 30 "${TMPDIR:-/tmp}/nix-layer-debootstrap.log" >&2
  exit 1
}
# apt inside the root, in a private mount namespace: /proc and /dev bound
# there vanish with it, never showing on the host's mounts.
$SUDO unshare -m --propagation private sh -ec '
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  cp /etc/resolv.conf "$1/etc/resolv.conf"
  chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo podman cosign >/dev/null
  chroot "$1" apt-get clean
' sh "$tmp"
$SUDO touch "$tmp/.nix-layer-ready"
$SUDO rm -rf "$root"
$SUDO mv "$tmp" "$root"
check || {
  echo "sigstore-tools: trixie's skopeo in $root lacks sigstore signing" >&2
  exit 1
}
echo "sigstore-tools: ready in $(($(date +%s) - start))s:" \
  "$($SUDO chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' skopeo podman cosign | paste -sd, -)" >&2
