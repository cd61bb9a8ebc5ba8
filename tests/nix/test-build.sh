#!/usr/bin/env bash
# Real builds through the Nix wrapper, in Nix's sandbox: a statically linked
# nix-layer from cargo is put into the store, fixture packages are made with
# builtins.derivation and a static busybox, images are built by `nix-build`,
# loaded into Docker and checked by running them. Needs Nix and a Docker
# engine. Where a build differs without the sandbox (the structured-attrs
# path, a dynamically linked binary), a second pass builds without it.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

command -v docker >/dev/null && docker info >/dev/null 2>&1 || { skip "image builds" "no Docker engine"; exit 0; }
command -v busybox >/dev/null || [ -x /bin/busybox ] || { skip "image builds" "no busybox (apt-get install busybox-static)"; exit 0; }

work=$(mktemp -d)
# Images this script loaded (a file: `load` runs in command substitutions).
: >"$work/loaded"
cleanup() {
  while IFS= read -r ref; do docker image rm -f "$ref" >/dev/null 2>&1; done <"$work/loaded"
  rm -rf "$work"
}
trap cleanup EXIT

# --- the sandbox is really on ----------------------------------------------
# A sandboxed build sees /build as its build directory and no /usr.
if probe=$(nix-build --no-out-link -E 'let fx = import ./fixtures/packages.nix { }; in derivation {
    name = "sandbox-probe"; system = builtins.currentSystem; builder = fx.busybox + "/bin/busybox";
    args = [ "sh" "-c" "echo $NIX_BUILD_TOP $(test -e /usr && echo usr || echo no-usr) > $out" ];
    nonce = builtins.toString builtins.currentTime; }' 2>"$work/probe.log"); then
  if [ "${NIX_LAYER_TEST_SANDBOX:-true}" != true ] || [ "$(cat "$probe")" = "/build no-usr" ]; then
    pass "builds run with sandbox = ${NIX_LAYER_TEST_SANDBOX:-true} (the probe saw: $(cat "$probe"))"
  else
    fail "builds run in the sandbox" "the probe saw: $(cat "$probe")"
  fi
else
  fail "a fixture builds (sandbox probe)" "$(tail -5 "$work/probe.log")"
fi

# --- nix-layer into the store ------------------------------------------
# Statically linked: inside the sandbox there is no /lib for a dynamic one.
echo "# building a static nix-layer (target/static)"
if ! static=$(static_nix_layer "$work" "$work/cargo.log"); then
  fail "a static nix-layer builds" "$(tail -20 "$work/cargo.log")"; exit 0
fi
if ldd "$static" 2>&1 | grep -qE "not a dynamic executable|statically linked"; then pass "nix-layer is statically linked (ldd)"
else fail "nix-layer is statically linked (ldd)" "$(ldd "$static" 2>&1 | head -3)"; fi
NIX_LAYER=$(to_store "$work" "$static")
pass "nix-layer in the store: $NIX_LAYER"

# The sudo stand-in, compiled here (the sandbox has no compiler).
printf '%s\n' '#include <stdio.h>' '#include <unistd.h>' \
  'int main(void) { printf("euid=%d uid=%d\n", (int) geteuid(), (int) getuid()); return 0; }' >"$work/euid.c"
gcc -static -O1 -o "$work/euid" "$work/euid.c" || { fail "the sudo stand-in compiles (gcc -static)"; exit 0; }

# A foreign binary, as VS Code's server is: Debian's own /usr/bin/id
# (dynamically linked against Debian's glibc, libselinux and libpcre2), its
# libraries, and the nix-ld stand-in the devcontainer wires in.
mkdir -p "$work/foreign/bin" "$work/foreign/lib" "$work/foreign/libexec"
cp /usr/bin/id "$work/foreign/bin/id"
for lib in $(ldd /usr/bin/id | grep -oE '/[^ ]+\.so[^ ]*'); do cp -L "$lib" "$work/foreign/lib/"; done
gcc -static -nostdlib -fno-stack-protector -O1 -o "$work/foreign/libexec/nix-ld" "$TESTS_DIR/fixtures/nix-ld-standin.c" ||
  { fail "the nix-ld stand-in compiles"; exit 0; }
NIXARGS=(--argstr nixLayer "$NIX_LAYER" --arg euidBin "$work/euid" --arg foreign "$work/foreign")

IMAGES="$TESTS_DIR/fixtures/images.nix"
build() { # build ATTR [nix-build options…] -> prints the out path
  local attr=$1; shift
  nix-build "$IMAGES" "${NIXARGS[@]}" -A "$attr" -o "$work/result-$attr" "$@" >/dev/null 2>"$work/build-$attr.log" &&
    readlink -f "$work/result-$attr"
}
attr_of() { nix-instantiate --eval --strict --json "$IMAGES" "${NIXARGS[@]}" -A "$1" | tr -d '"'; }
ref_of() { echo "$(attr_of "$1.imageName"):$(attr_of "$1.imageTag")"; }
load() { # load ATTR: docker load the built archive, remember the ref
  local ref
  ref=$(ref_of "$1")
  echo "$ref" >>"$work/loaded"
  docker load -i "$work/result-$1" >/dev/null && echo "$ref"
}
run_as() { docker run --rm --entrypoint "" "$@" 2>&1; }

# --- runtime ---------------------------------------------------------------
if build runtime >/dev/null; then pass "runtime builds with nix-build"; else fail "runtime builds with nix-build" "$(tail -20 "$work/build-runtime.log")"; fi
if RT=$(load runtime); then pass "runtime loads into docker ($RT)"; else fail "runtime loads into docker"; RT=; fi
if [ -n "$RT" ]; then
  expect_eq "runtime: the user is uid 1000, gid 1000" "$(run_as "$RT" id -u):$(run_as "$RT" id -g)" "1000:1000"
  expect_eq "runtime: the user's name resolves (app)" "$(run_as "$RT" id -un)" "app"
  expect_eq "runtime: image config User is numeric" "$(docker inspect -f '{{.Config.User}}' "$RT")" "1000:1000"
  expect_eq "runtime: the user can write its home (/app)" "$(run_as "$RT" sh -c 'touch "$HOME/x" && echo "$HOME" writable')" "/app writable"
  expect_eq "runtime: /tmp is 1777" "$(run_as "$RT" stat -c %a /tmp)" "1777"
  expect_eq "runtime: /usr/bin/env works" "$(run_as "$RT" /usr/bin/env sh -c 'echo env-ok')" "env-ok"
  expect_eq "runtime: /bin/sh (from the bash package)" "$(run_as "$RT" /bin/sh -c 'echo sh-ok')" "sh-ok"
  expect_eq "runtime: passwd has root, app and nobody" \
    "$(run_as "$RT" sh -c 'cut -d: -f1,3 /etc/passwd | sort | tr "\n" " "')" "app:1000 nobody:65534 root:0 "
  expect_eq "runtime: group and shadow (0600 root)" \
    "$(run_as -u 0 "$RT" sh -c 'grep -c "^app:x:1000:" /etc/group; grep -c "^app:!" /etc/shadow; stat -c "%a %u" /etc/shadow')" $'1\n1\n600 0'
  expect_eq "runtime: SSL_CERT_FILE exists" "$(run_as "$RT" sh -c 'test -f "$SSL_CERT_FILE" && echo yes')" "yes"
  expect_eq "runtime: os-release and nsswitch.conf" "$(run_as "$RT" sh -c 'grep -c ^ID= /etc/os-release; grep -c "^passwd: *files" /etc/nsswitch.conf')" $'1\n1'
  expect_eq "runtime: PATH is sane (~/.local/bin first)" "$(run_as "$RT" sh -c 'echo $PATH')" "/app/.local/bin:/usr/local/bin:/usr/bin:/bin"
  expect_eq "runtime: no setuid or setgid file anywhere" "$(docker run --rm --entrypoint "" -u 0 "$RT" find / -xdev \( -perm -4000 -o -perm -2000 \) -print)" ""
  expect_eq "runtime: Cmd runs the app" "$(docker run --rm "$RT")" "hello from the fixture"
  expect_eq "runtime: /nix/store is 0755 root" "$(run_as "$RT" stat -c '%a %u' /nix/store)" "755 0"
  expect_eq "runtime: created is 1970-01-01T00:00:01Z" "$(docker inspect -f '{{.Created}}' "$RT")" "1970-01-01T00:00:01Z"
fi

  expect_eq "runtime: the user cannot read /etc/shadow" "$(run_as "$RT" sh -c 'cat /etc/shadow >/dev/null 2>&1 && echo readable || echo denied')" "denied"
# --- same inputs, same bytes -----------------------------------------------
if nix-build "$IMAGES" "${NIXARGS[@]}" -A runtime --check >"$work/check.log" 2>&1; then
  pass "runtime: a second build is bit-identical (nix-build --check)"
else
  fail "runtime: a second build is bit-identical (nix-build --check)" "$(tail -5 "$work/check.log")"
fi
if [ -n "$RT" ]; then
  id1=$(docker inspect -f '{{.Id}}' "$RT")
  docker image rm -f "$RT" >/dev/null
  docker load -i "$work/result-runtime" >/dev/null
  expect_eq "runtime: the same image digest after reloading" "$(docker inspect -f '{{.Id}}' "$RT")" "$id1"
fi

# --- devcontainer ----------------------------------------------------------
if build devcontainer >/dev/null; then pass "devcontainer builds with nix-build"; else fail "devcontainer builds with nix-build" "$(tail -20 "$work/build-devcontainer.log")"; fi
if DC=$(load devcontainer); then pass "devcontainer loads into docker ($DC)"; else fail "devcontainer loads into docker"; DC=; fi
if [ -n "$DC" ]; then
  expect_eq "devcontainer: runs as vscode, uid 1000" "$(run_as "$DC" sh -c 'echo $(id -un) $(id -u) $(id -g)')" "vscode 1000 1000"
  expect_eq "devcontainer: the user can write its home" "$(run_as "$DC" sh -c 'touch ~/x && mkdir -p ~/.cache/a && echo ok')" "ok"
  expect_eq "devcontainer: home files belong to the user" "$(run_as "$DC" stat -c '%u:%g' /home/vscode /home/vscode/.bashrc /home/vscode/.config/direnv/direnvrc | sort -u)" "1000:1000"
  expect_eq "devcontainer: /tmp is 1777" "$(run_as "$DC" stat -c %a /tmp)" "1777"
  expect_eq "devcontainer: /usr/bin/env works" "$(run_as "$DC" /usr/bin/env sh -c 'echo env-ok')" "env-ok"
  expect_eq "devcontainer: setuid-root copy at /usr/bin/sudo" "$(run_as "$DC" stat -c '%a %u %g' /usr/bin/sudo)" "4755 0 0"
  expect_eq "devcontainer: /usr/bin/sudo runs with euid 0 for the user" "$(run_as "$DC" /usr/bin/sudo)" "euid=0 uid=1000"
  # (The control for the runtime's "no setuid file" check: find sees this one.)
  expect_eq "devcontainer: the only setuid file is /usr/bin/sudo" "$(docker run --rm --entrypoint "" -u 0 "$DC" find / -xdev \( -perm -4000 -o -perm -2000 \) -print)" "/usr/bin/sudo"
  expect_eq "devcontainer: sudo on PATH is the setuid one" "$(run_as "$DC" sh -c 'command -v sudo')" "/usr/bin/sudo"
  expect_eq "devcontainer: /etc/sudoers is 0440 root and includes sudoers.d" \
    "$(run_as -u 0 "$DC" sh -c 'stat -c "%a %u" /etc/sudoers; grep -c "^@includedir /etc/sudoers.d" /etc/sudoers; cat /etc/sudoers.d/vscode')" \
    $'440 0\n1\nvscode ALL=(ALL:ALL) NOPASSWD: ALL'
  expect_eq "devcontainer: PAM configuration for sudo" "$(run_as "$DC" sh -c 'grep -c pam_unix.so /etc/pam.d/sudo')" "4"
  # shadow's tools under sudo: each has a service letting root through
  # (else PAM falls through to `other`, which denies).
  expect_eq "devcontainer: PAM services for shadow's account tools, root first" \
    "$(run_as "$DC" sh -c 'for t in useradd usermod userdel groupadd groupmod groupdel chsh chfn chpasswd newusers passwd chage; do head -1 /etc/pam.d/$t | sed "s|/nix/store/[^/]*/|STORE/|"; done | sort | uniq -c | sed "s/^ *//"')" \
    "12 auth     sufficient STORE/lib/security/pam_rootok.so"
  expect_eq "devcontainer: every PAM module named exists in the image" \
    "$(run_as "$DC" sh -c 'for m in $(grep -ho "/nix/store/[^ ]*\.so" /etc/pam.d/*| sort -u); do test -e $m || echo missing $m; done; echo checked')" "checked"
  # What VS Code's Dev Containers read: the user, its home and shell.
  expect_eq "devcontainer: vscode's home and login shell (passwd), the shell is executable" \
    "$(run_as "$DC" sh -c 'e=$(grep ^vscode: /etc/passwd); home=$(echo $e | cut -d: -f6); sh=$(echo $e | cut -d: -f7); echo $home $(basename $sh); test -x $sh && echo shell-ok')" \
    $'/home/vscode bash\nshell-ok'
  # A foreign, dynamically linked binary (Debian's id, as VS Code's server
  # downloads its node) runs through nix-ld; without NIX_LD it cannot.
  expect_eq "devcontainer: a Debian binary runs through nix-ld" \
    "$(docker run --rm --entrypoint "" -v "$work/foreign/bin/id:/home/vscode/.vscode-server/bin/id:ro" "$DC" /home/vscode/.vscode-server/bin/id -un 2>&1)" "vscode"
  expect_eq "devcontainer: …and not without NIX_LD (control)" \
    "$(docker run --rm --entrypoint "" -e NIX_LD= -v "$work/foreign/bin/id:/x:ro" "$DC" /x -un >/dev/null 2>&1; echo $?)" "127"
  expect_eq "devcontainer: /nix, /nix/store, /nix/var/nix owned by the user" \
    "$(run_as "$DC" stat -c '%n %u' /nix /nix/store /nix/var/nix /nix/var/nix/db /nix/var/nix/profiles)" \
    $'/nix 1000\n/nix/store 1000\n/nix/var/nix 1000\n/nix/var/nix/db 1000\n/nix/var/nix/profiles 1000'
  expect_eq "devcontainer: the user can write the store and the Nix DB" \
    "$(run_as "$DC" sh -c 'mkdir /nix/store/probe && test -w /nix/var/nix/db/db.sqlite && echo ok')" "ok"
  expect_eq "devcontainer: nix.conf for single-user flakes" \
    "$(run_as "$DC" sh -c 'grep -E "^(experimental-features|build-users-group|sandbox)" /etc/nix/nix.conf')" \
    $'experimental-features = nix-command flakes\nbuild-users-group =\nsandbox = false'
  expect_eq "devcontainer: direnv hook in .bashrc" "$(run_as "$DC" grep -c 'direnv hook bash' /home/vscode/.bashrc)" "1"
  expect_eq "devcontainer: devcontainer.metadata label names remoteUser and the uid-sync entrypoint" \
    "$(docker inspect -f '{{index .Config.Labels "devcontainer.metadata"}}' "$DC")" '[{"containerUser":"vscode","entrypoint":"/usr/local/libexec/nix-layer/reown-nix","remoteUser":"vscode"}]'
  expect_eq "devcontainer: nix-ld at the glibc loader path, NIX_LD set" \
    "$(run_as "$DC" sh -c 'readlink /lib64/ld-linux-x86-64.so.2 | sed "s|.*/libexec/|libexec/|"; test -n "$NIX_LD" && test -n "$NIX_LD_LIBRARY_PATH" && echo env')" $'libexec/nix-ld\nenv'
  expect_eq "devcontainer: PATH has the user's Nix profile first" \
    "$(run_as "$DC" sh -c 'echo $PATH')" "/home/vscode/.local/bin:/home/vscode/.nix-profile/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin"
  expect_eq "devcontainer: the sudo package's own /bin/sudo is not merged" "$(run_as "$DC" sh -c 'test -e /bin/sudo && echo present || echo absent')" "absent"

  # The Nix database registers every store path of the image.
  cid=$(docker create "$DC" /bin/true)
  docker cp "$cid:/nix/var/nix/db/db.sqlite" "$work/db.sqlite" >/dev/null 2>&1
  docker rm "$cid" >/dev/null
  run_as "$DC" ls /nix/store | grep -v '^probe$' | sed 's|^|/nix/store/|' | sort >"$work/in-image"
  if ! command -v sqlite3 >/dev/null; then { apt-get install -y sqlite3 || { apt-get update -qq && apt-get install -y sqlite3; }; } >/dev/null 2>&1 || true; fi
  if [ -s "$work/db.sqlite" ] && command -v sqlite3 >/dev/null; then
    sqlite3 "$work/db.sqlite" 'select path from ValidPaths' | sort >"$work/in-db"
    if [ -s "$work/in-db" ] && diff "$work/in-image" "$work/in-db" >"$work/db.diff"; then
      pass "devcontainer: the Nix DB lists every store path in the image ($(wc -l <"$work/in-db") paths)"
    else
      fail "devcontainer: the Nix DB lists every store path in the image" "$(head -10 "$work/db.diff")"
    fi
    # …with their references (bash refers to busybox).
    bash_path=$(grep -- '-bash-5.2$' "$work/in-image")
    refs=$(sqlite3 "$work/db.sqlite" "select v2.path from Refs r join ValidPaths v1 on r.referrer = v1.id join ValidPaths v2 on r.reference = v2.id where v1.path = '$bash_path'")
    if printf '%s' "$refs" | grep -q -- '-busybox-1.36$'; then pass "devcontainer: the Nix DB has references"; else fail "devcontainer: the Nix DB has references" "refs of $bash_path: $refs"; fi
    expect_eq "devcontainer: the Nix DB agrees with the host's store (closure)" \
      "$(nix-store -qR $(sqlite3 "$work/db.sqlite" 'select path from ValidPaths') | sort -u | diff - "$work/in-db" && echo same)" "same"
  else
    fail "devcontainer: the Nix DB lists every store path in the image" "no db.sqlite in the image or no sqlite3"
  fi
fi

# --- layer sharing -----------------------------------------------------------
if [ -n "$RT" ] && [ -n "$DC" ]; then
  docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$RT" | sed '/^$/d' | sort >"$work/layers-rt"
  docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$DC" | sed '/^$/d' | sort >"$work/layers-dc"
  shared=$(comm -12 "$work/layers-rt" "$work/layers-dc" | wc -l)
  # Common store paths: busybox, bash, coreutils, tzdata, cacert.
  if [ "$shared" -ge 1 ]; then
    pass "runtime and devcontainer share $shared layer diff_ids (of $(wc -l <"$work/layers-rt") and $(wc -l <"$work/layers-dc"))"
  else
    fail "runtime and devcontainer share layers" "no common diff_id"
  fi
  # Each common store path sits in a layer both images have.
  common_paths=$(comm -12 <(run_as "$RT" ls /nix/store | sort) <(run_as "$DC" ls /nix/store | sort))
  expect_eq "the common store paths are the five shared packages" "$(printf '%s\n' "$common_paths" | sed 's/^[a-z0-9]*-//' | sort | tr '\n' ' ')" \
    "bash-5.2 busybox-1.36 coreutils-9.5 nss-cacert-3.100 tzdata-2025b "
fi

# --- streamLayeredImage ------------------------------------------------------
if out=$(build runtimeStream); then
  pass "stream variant builds"
  ref=$(ref_of runtimeStream)
  if [ -x "$out" ] && "$out" | docker load >/dev/null 2>"$work/stream.err"; then
    echo "$ref" >>"$work/loaded"
    pass "stream variant: ./result | docker load"
    expect_eq "stream variant: runs as uid 1000" "$(run_as "$ref" id -u)" "1000"
  else
    fail "stream variant: ./result | docker load" "$(tail -5 "$work/stream.err")"
  fi
else
  fail "stream variant builds" "$(tail -20 "$work/build-runtimeStream.log")"
fi

# --- the copy helper ---------------------------------------------------------
if helper=$(build runtime.copyToDockerDaemon); then
  docker image rm -f "$RT" >/dev/null 2>&1
  if "$helper/bin/copy-to-docker-daemon" >"$work/helper.log" 2>&1 && docker image inspect "$RT" >/dev/null 2>&1; then
    pass "copyToDockerDaemon loads the image"
  else
    fail "copyToDockerDaemon loads the image" "$(tail -5 "$work/helper.log")"
  fi
else
  fail "copyToDockerDaemon builds" "$(tail -10 "$work/build-runtime.copyToDockerDaemon.log")"
fi

# --- OCI layout ----------------------------------------------------------------
if out=$(build oci); then
  pass "OCI layout builds"
  if [ -f "$out/index.json" ] && [ -f "$out/oci-layout" ]; then pass "OCI layout has index.json and oci-layout"; else fail "OCI layout has index.json and oci-layout" "$(ls "$out")"; fi
  if command -v skopeo >/dev/null; then
    check "OCI layout: skopeo inspect" skopeo inspect --raw "oci:$out"
  fi
else
  fail "OCI layout builds" "$(tail -20 "$work/build-oci.log")"
fi

# --- family planning: identical bottom layers at a tight budget -----------------
if build runtimeFamily >/dev/null && build devcontainerFamily >/dev/null && RF=$(load runtimeFamily) && DF=$(load devcontainerFamily); then
  pass "images planned against a family build and load"
  docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$RF" | sed '/^$/d' >"$work/fam-rt"
  docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$DF" | sed '/^$/d' >"$work/fam-dc"
  expect_eq "family: the bottom layer (paths of every set) is the same blob" "$(head -1 "$work/fam-rt")" "$(head -1 "$work/fam-dc")"
  if [ "$(wc -l <"$work/fam-rt")" -le 5 ] && [ "$(wc -l <"$work/fam-dc")" -le 5 ]; then
    pass "family: both images respect maxLayers = 5"
  else
    fail "family: both images respect maxLayers = 5" "$(wc -l "$work/fam-rt" "$work/fam-dc")"
  fi
  expect_eq "family: the runtime still runs" "$(docker run --rm "$RF")" "hello from the fixture"
else
  fail "images planned against a family build and load" "$(tail -20 "$work/build-runtimeFamily.log" "$work/build-devcontainerFamily.log" 2>/dev/null)"
fi

# --- the family as a committed catalogue file ----------------------------------
if cat_out=$(build catalogue); then
  pass "familyCatalogue builds"
  expect_eq "familyCatalogue lists the three sets" "$(jq -r '.nixLayerFamily | keys | join(" ")' "$cat_out")" "base dev runtime"
  if build runtimeCatalogue >/dev/null && RC=$(load runtimeCatalogue); then
    docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$RC" | sed '/^$/d' >"$work/cat-rt"
    # Same store layers as planning against the live family (the top layer
    # differs only if the images' settings do; compare the store layers).
    expect_eq "catalogue: the store layers equal those planned with the live family" \
      "$(sed '$d' "$work/cat-rt" | tr '\n' ' ')" "$(sed '$d' "$work/fam-rt" | tr '\n' ' ')"
  else
    fail "runtime with familyFile builds and loads" "$(tail -20 "$work/build-runtimeCatalogue.log")"
  fi
else
  fail "familyCatalogue builds" "$(tail -20 "$work/build-catalogue.log")"
fi

# --- no shell unless a package brings one ---------------------------------------
if build shellless >/dev/null && SL=$(load shellless); then
  cid=$(docker create "$SL" /x)
  docker export "$cid" | tar -t >"$work/shellless.list"
  docker rm "$cid" >/dev/null
  if grep -qE '^(\./)?bin/(sh|bash)$' "$work/shellless.list"; then
    fail "shell-less runtime has no /bin/sh" "$(grep -E 'bin/(sh|bash)' "$work/shellless.list")"
  else
    pass "shell-less runtime has no /bin/sh"
  fi
else
  fail "shell-less runtime builds and loads" "$(tail -20 "$work/build-shellless.log")"
fi

# --- without the sandbox ---------------------------------------------------------
# What differs: NIX_ATTRS_JSON_FILE names a file that exists, and the binary
# may be dynamically linked (the host's libraries are visible).
if [ "${NIX_LAYER_TEST_SANDBOX:-true}" = true ] && [ -x "$REPO/target/release/nix-layer" ]; then
  DYN=$(to_store "$work" "$REPO/target/release/nix-layer")
  nosandbox() { NIX_CONFIG="${NIX_CONFIG/sandbox = true/sandbox = false}" "$@"; }
  if out=$(nosandbox nix-build "$IMAGES" --argstr nixLayer "$DYN" "${NIXARGS[@]:3}" -A runtime \
    -o "$work/result-nosandbox" 2>"$work/nosandbox.log"); then
    ref="$(nosandbox nix-instantiate --eval --json "$IMAGES" --argstr nixLayer "$DYN" "${NIXARGS[@]:3}" -A runtime.imageName | tr -d '"'):$(nosandbox nix-instantiate --eval --json "$IMAGES" --argstr nixLayer "$DYN" "${NIXARGS[@]:3}" -A runtime.imageTag | tr -d '"')"
    echo "$ref" >>"$work/loaded"
    docker load -i "$out" >/dev/null
    expect_eq "sandbox off, dynamic nix-layer: the runtime builds and runs" "$(docker run --rm "$ref")" "hello from the fixture"
    # The same store layers as the sandboxed build (the binary's path only
    # changes the computed tag, which is in the config, not the layers).
    if [ -n "$RT" ]; then
      expect_eq "sandbox off and on: the same layer diff_ids" \
        "$(docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$ref" | sed '/^$/d' | tr '\n' ' ')" \
        "$(docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$RT" | sed '/^$/d' | tr '\n' ' ')"
    fi
  else
    fail "sandbox off, dynamic nix-layer: the runtime builds" "$(tail -10 "$work/nosandbox.log")"
  fi
fi
