# What nixpkgs would provide to a Rust package's build, made from the host
# and added to the store (sourced by run.sh and tests/ci/run.sh). Each
# function prints a store path; same content, same path, so a second run
# reuses it. WORK is a scratch directory.

# stdenv's tools (coreutils findutils diffutils sed grep gawk tar gzip bzip2
# make bash patch xz), sh as bash, and gcc/binutils: Debian's binaries.
add_stdenv_tools() { # WORK
  local dir=$1/stdenv-tools pkg f t p
  rm -rf "$dir" && mkdir -p "$dir/bin" || return 1
  for pkg in coreutils findutils diffutils sed grep gawk tar gzip bzip2 make bash patch xz-utils; do
    dpkg-query -L "$pkg" >/dev/null 2>&1 || { echo "Debian package $pkg is not installed" >&2; return 1; }
    for f in $(dpkg-query -L "$pkg" | grep -E '^(/usr)?/s?bin/[^/]+$'); do
      [ -f "$f" ] && cp -L "$f" "$dir/bin/"
    done
  done
  ln -sf bash "$dir/bin/sh"
  for t in cc gcc c++ g++ cpp as ld ar nm ranlib strip objcopy objdump readelf; do
    p=$(command -v "$t") || { echo "$t is not installed (gcc, binutils)" >&2; return 1; }
    cp -L "$p" "$dir/bin/$t"
  done
  nix-store --add "$dir"
}

# The host's Rust toolchain (rustup's or any other): cargo, rustc, rustdoc,
# their libraries and the host target's std.
add_toolchain() { # WORK
  local dir=$1/rust-toolchain sysroot host
  sysroot=$(rustc --print sysroot) && host=$(rustc -vV | sed -n 's/^host: //p') || return 1
  rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/lib/rustlib" || return 1
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$sysroot/bin/rustdoc" "$dir/bin/" &&
    cp -a "$sysroot"/lib/*.so* "$dir/lib/" &&
    cp -a "$sysroot/lib/rustlib/$host" "$dir/lib/rustlib/" || return 1
  nix-store --add "$dir"
}

# `cargo vendor` of REPO's Cargo.lock, with that Cargo.lock beside the crates
# (the shim checks it against the source's). Log: WORK/vendor.log.
add_vendored_crates() { # WORK REPO
  local dir=$1/cargo-vendor-dir
  rm -rf "$dir"
  (cd "$2" && cargo vendor --locked --versioned-dirs "$dir" >/dev/null 2>"$1/vendor.log") || return 1
  cp "$2/Cargo.lock" "$dir/Cargo.lock" && nix-store --add "$dir"
}

# Build users as a multi-user install has them: nixbld1..4 in group nixbld
# (needs root or passwordless sudo; nothing is done when they exist).
ensure_build_users() {
  local sudo="" i
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  getent group nixbld >/dev/null || $sudo groupadd --system nixbld || return 1
  for i in 1 2 3 4; do
    id "nixbld$i" >/dev/null 2>&1 ||
      $sudo useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
        --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i" || return 1
  done
}
