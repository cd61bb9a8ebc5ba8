#!/usr/bin/env bash
# Installs what nix-layer's build, tests and quick start need on Debian 12,
# and configures Nix for a machine without a binary cache. Idempotent.
set -euo pipefail

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust 1.80 or newer (rustup.rs), then run this again" >&2
  exit 1
fi

need=()
for pkg in nix-bin skopeo umoci docker-registry openssl podman runc busybox-static sqlite3 gcc libc6-dev jq python3-venv; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || need+=("$pkg")
done
# containerd and ctr for `load --engine containerd`: Debian's package (docker.io's
# dependency) only when none is there, as Docker CE's containerd.io conflicts with it.
{ command -v containerd && command -v ctr; } >/dev/null || need+=(containerd)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Nix 2.8 from Debian, single-user as root: no substituters (no network), no
# build users. The sandbox is off by default here because the Rust
# end-to-end fixtures (tests/e2e/fixtures.nix) use the host's /bin/sh as
# builder; tests/nix turns it on for every image build (tests/nix/lib.sh).
conf=/etc/nix/nix.conf
want='sandbox = false
substituters =
build-users-group =
experimental-features = nix-command flakes'
if [ ! -f "$conf" ] || ! grep -q '^substituters =$' "$conf"; then
  mkdir -p /etc/nix
  printf '%s\n' "$want" > "$conf"
fi

# Docker where its daemon runs; the tests fall back to Podman otherwise.
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null; then
    (dockerd >/var/log/nix-layer-dockerd.log 2>&1 &) || true
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
docker info >/dev/null 2>&1 && echo "setup: docker engine ready" >&2 || echo "setup: no docker engine; tests use podman" >&2
