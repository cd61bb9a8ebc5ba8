#!/usr/bin/env bash
# Installs what nix-layer's build, tests and quick start need on Debian 12.
# Idempotent. Runs as root, or as a user with passwordless sudo (a GitHub
# runner). It never writes a Nix configuration: a multi-user install's
# /etc/nix/nix.conf (build-users-group, trusted-users) stays as it is, and
# the scripts pass what they need per command (NIX_CONFIG, --option).
set -euo pipefail

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust 1.80 or newer (rustup.rs), then run this again" >&2
  exit 1
fi

need=()
for pkg in skopeo umoci docker-registry openssl podman runc busybox-static sqlite3 gcc libc6-dev jq python3-venv gawk patch make bzip2 xz-utils; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || need+=("$pkg")
done
# gawk … xz-utils: the tools of nixpkgs' stdenv, for tests/package.
# Debian's Nix only where no Nix is installed (a runner's comes from its installer).
command -v nix-build >/dev/null || need+=(nix-bin)
# containerd and ctr for `load --engine containerd`: Debian's package (docker.io's
# dependency) only when none is there, as Docker CE's containerd.io conflicts with it.
{ command -v containerd && command -v ctr; } >/dev/null || need+=(containerd)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Nix: Debian's nix-bin (single-user as root), or the multi-user install that
# is already there (a GitHub runner's, with its daemon). Nothing is written
# to its configuration; scripts/test.sh sets NIX_CONFIG.
# Docker where its daemon runs; the tests fall back to Podman otherwise.
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null; then
    ($SUDO sh -c 'dockerd >/var/log/nix-layer-dockerd.log 2>&1 &') || true
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
docker info >/dev/null 2>&1 && echo "setup: docker engine ready" >&2 || echo "setup: no docker engine; tests use podman" >&2
