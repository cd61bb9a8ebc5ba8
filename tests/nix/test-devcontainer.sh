#!/usr/bin/env bash
# Devcontainers as VS Code and developers use them, built for real through
# the Nix wrapper and run in Docker:
# - Dev Containers' uid sync (updateRemoteUserUID): on a Linux host whose
#   user is not uid 1000 it rewrites the user's uid/gid in /etc/passwd and
#   /etc/group and re-owns $HOME only. Done here as the Dev Containers CLI
#   does it (a derived image, as root), then, as the user: add to the store,
#   build a derivation, delete a path, and the shell the template uses. Nix
#   is Debian's own (loader-wrapped, tests/nix/fixtures/packages.nix).
# - Python: Debian's python3 with its PEP 668 marker standing in for
#   nixpkgs' (which is externally managed too): venvs, `pip install --user`,
#   ~/.local/bin on PATH.
# Needs Nix, a Docker engine, busybox, gcc; with CI set, a missing one fails.
source "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR"

missing() { if [ -n "${CI:-}" ]; then fail "devcontainer tests: $1"; else skip "devcontainer tests" "$1"; fi; exit 0; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 || missing "no Docker engine"
command -v busybox >/dev/null || [ -x /bin/busybox ] || missing "no busybox (apt-get install busybox-static)"
command -v gcc >/dev/null || missing "no gcc"
[ -x /usr/bin/nix ] && [ -x /usr/bin/python3.11 ] || missing "no Debian nix-bin or python3.11"

work=$(mktemp -d)
: >"$work/loaded"
cleanup() {
  while IFS= read -r ref; do docker image rm -f "$ref" >/dev/null 2>&1; done <"$work/loaded"
  rm -rf "$work"
}
trap cleanup EXIT

echo "# building a static nix-layer (target/static)"
static=$(static_nix_layer "$work" "$work/cargo.log") || { fail "a static nix-layer builds" "$(tail -20 "$work/cargo.log")"; exit 0; }
NIX_LAYER=$(to_store "$work" "$static")

gcc -static -O1 -o "$work/sudo" "$TESTS_DIR/fixtures/sudo-standin.c" || { fail "the sudo stand-in compiles"; exit 0; }

# A Debian program as a directory: libexec/main and its libraries (with
# Debian's loader) in lib/.
foreign_dir() { # foreign_dir DIR PROGRAM [MORE ELF FILES WHOSE LIBRARIES ARE NEEDED…]
  local dir=$1 prog=$2; shift 2
  mkdir -p "$dir/libexec" "$dir/lib"
  cp -L "$prog" "$dir/libexec/main"
  for f in "$prog" "$@"; do ldd "$f" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*'; done | sort -u |
    while read -r lib; do cp -L "$lib" "$dir/lib/"; done
}
foreign_dir "$work/nix" /usr/bin/nix
foreign_dir "$work/python" /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so
cp -a /usr/lib/python3.11 "$work/python/lib/"
mkdir -p "$work/python/lib/python3/dist-packages" "$work/python/share"
for p in pip setuptools pkg_resources _distutils_hack distutils-precedence.pth; do
  cp -a "/usr/lib/python3/dist-packages/$p" "$work/python/lib/python3/dist-packages/"
done
cp -a /usr/share/python-wheels "$work/python/share/"
expect_eq "the Python stand-in carries the PEP 668 marker" "$(test -f "$work/python/lib/python3.11/EXTERNALLY-MANAGED" && echo yes)" "yes"

IMAGES="$TESTS_DIR/fixtures/images.nix"
NIXARGS=(--argstr nixLayer "$NIX_LAYER" --arg euidBin "$work/sudo" --arg debianNix "$work/nix" --arg debianPython "$work/python")
build() {
  nix-build "$IMAGES" "${NIXARGS[@]}" -A "$1" -o "$work/result-$1" >/dev/null 2>"$work/build-$1.log" && readlink -f "$work/result-$1"
}
attr_of() { nix-instantiate --eval --strict --json "$IMAGES" "${NIXARGS[@]}" -A "$1" | tr -d '"'; }
load() {
  local ref
  ref="$(attr_of "$1.imageName"):$(attr_of "$1.imageTag")"
  echo "$ref" >>"$work/loaded"
  docker load -i "$work/result-$1" >/dev/null && echo "$ref"
}
run() { docker run --rm --entrypoint "" "$@" 2>&1; }

# --- Dev Containers' uid sync --------------------------------------------------
NEW_UID=4242 NEW_GID=4343
if build devcontainerNix >/dev/null && DC=$(load devcontainerNix); then
  pass "devcontainer with Nix builds and loads ($DC)"
else
  fail "devcontainer with Nix builds and loads" "$(tail -20 "$work/build-devcontainerNix.log")"; exit 0
fi
# What updateRemoteUserUID's Dockerfile runs, as root, in a derived image.
sync='eval $(sed -n "s/^vscode:[^:]*:\([^:]*\):\([^:]*\):[^:]*:\([^:]*\).*/OLD_UID=\1;OLD_GID=\2;HOME_FOLDER=\3/p" /etc/passwd)
sed -i -e "s/^\(vscode:[^:]*:\)[^:]*:[^:]*/\1'$NEW_UID:$NEW_GID'/" /etc/passwd
sed -i -e "s/^\([^:]*:[^:]*:\)$OLD_GID:/\1'$NEW_GID':/" /etc/group
chown -R '$NEW_UID:$NEW_GID' "$HOME_FOLDER"'
SYNCED="nix-layer-test/devcontainer-nix:uid-synced"
echo "$SYNCED" >>"$work/loaded"
cid=$(docker create -u 0 --entrypoint "" "$DC" sh -c "$sync")
if docker start -a "$cid" >"$work/sync.log" 2>&1 && docker commit --change 'USER vscode' "$cid" "$SYNCED" >/dev/null; then
  pass "the uid sync runs on the image (derived image, as root)"
else
  fail "the uid sync runs on the image" "$(cat "$work/sync.log")"
fi
docker rm "$cid" >/dev/null
expect_eq "after the sync: vscode is $NEW_UID:$NEW_GID, home re-owned, /nix still 1000" \
  "$(run "$SYNCED" sh -c 'echo $(id -u):$(id -g) $(stat -c %u:%g $HOME $HOME/.bashrc /nix/store | tr "\n" " ")')" \
  "$NEW_UID:$NEW_GID $NEW_UID:$NEW_GID $NEW_UID:$NEW_GID 1000:1000"
# The control: without the image's re-own step, Nix cannot write the store.
expect_eq "control: without re-owning /nix, nix-store --add fails (permission denied)" \
  "$(run "$SYNCED" sh -c 'echo x > /tmp/x; nix-store --add /tmp/x >/tmp/log 2>&1 && echo added || grep -o "Permission denied" /tmp/log | head -1')" "Permission denied"

# Dev Containers start the container with /bin/sh running the image
# entrypoints from devcontainer.metadata, as the container user, then "$@".
ep=$(docker inspect -f '{{index .Config.Labels "devcontainer.metadata"}}' "$SYNCED" | jq -r '.[0].entrypoint // empty')
expect_eq "devcontainer.metadata names the re-own entrypoint" "$ep" "/usr/local/libexec/nix-layer/reown-nix"
start="echo Container started
trap 'exit 0' 15
$ep
exec \"\$@\""
# Debian's Nix runs through the loader here, so /proc/self/exe (Nix's default
# build hook) is the loader: the hook is named instead. No substituters (no
# network); Nix's warnings (glibc's nss_dns is not in the stand-in) are
# dropped from the outputs compared.
nix_bin=$(run "$DC" readlink -f /bin/nix)
NIXCONF="build-hook = ${nix_bin%/nix}/build-remote
substituters ="
nowarn() { grep -v '^warning:'; }
busybox_path=$(run "$DC" readlink -f /bin/sh)
cat >"$work/drv.nix" <<NIX
derivation { name = "built-in-the-container"; system = builtins.currentSystem;
  builder = "$busybox_path"; args = [ "sh" "-c" "echo built by \$(id -u) > \$out" ]; }
NIX
out=$(docker run --rm --entrypoint /bin/sh -e NIX_CONFIG="$NIXCONF" -v "$work/drv.nix:/tmp/drv.nix:ro" "$SYNCED" -c "$start" - sh -c '
  echo hello > /tmp/f
  p=$(nix-store --add /tmp/f) && echo "added $(cat $p)"
  if b=$(nix-build --no-out-link /tmp/drv.nix 2>/tmp/build.log); then cat "$b"; else tail -3 /tmp/build.log; fi
  nix-store --delete "$p" >/dev/null 2>&1 && test ! -e "$p" && echo deleted
  stat -c "%u:%g" /nix /nix/store /nix/var/nix/db /nix/var/nix/db/db.sqlite | sort -u
  echo "image dirs not re-owned: $(find /nix/store -mindepth 1 -type d ! -user '$NEW_UID' | wc -l)"' 2>&1 | nowarn)
expect_eq "after the uid sync, as the user: nix-store --add, nix-build, nix-store --delete" \
  "$(printf '%s\n' "$out" | grep -v '^Container started')" \
  "added hello
built by $NEW_UID
deleted
$NEW_UID:$NEW_GID
image dirs not re-owned: 0"
# The same through the user's shell alone (docker exec, terminals): .bashrc
# runs the step; then the shell tools of the template (direnv's hook). The
# stand-in bash is busybox's ash (as `sh`: busybox has no `bash` applet),
# which reads no .bashrc by itself, so it is sourced as real bash does for
# an interactive shell.
expect_eq "after the uid sync, the user's .bashrc re-owns /nix too (no entrypoint)" \
  "$(docker run --rm --entrypoint "" -e NIX_CONFIG="$NIXCONF" "$SYNCED" sh -c '. ~/.bashrc >/dev/null; echo x > /tmp/x; nix-store --add /tmp/x >/dev/null && stat -c %u /nix/store' 2>&1 | nowarn)" "$NEW_UID"
expect_eq "after the uid sync: .bashrc runs the direnv hook, nix-direnv's direnvrc is readable" \
  "$(run "$SYNCED" sh -c '. ~/.bashrc >/dev/null && echo "hooked=$direnv_hooked" && grep -c nix-direnv ~/.config/direnv/direnvrc')" "hooked=1
1"
expect_eq "without a uid change the step changes nothing" \
  "$(run "$DC" sh -c '/usr/local/libexec/nix-layer/reown-nix && stat -c %u /nix/store /nix/var/nix/db/db.sqlite | sort -u')" "1000"

# --- Python --------------------------------------------------------------------
# A wheel with a console script, built on the host (no network inside).
mkdir -p "$work/pkg/hello_nl" "$work/wheels"
printf 'def main():\n    print("hello from pip")\n' >"$work/pkg/hello_nl/__init__.py"
printf '[project]\nname = "hello-nl"\nversion = "1.0"\n[project.scripts]\nhello-nl = "hello_nl:main"\n[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n' >"$work/pkg/pyproject.toml"
/usr/bin/python3 -m pip wheel --quiet --no-deps --no-build-isolation --no-index -w "$work/wheels" "$work/pkg" >"$work/wheel.log" 2>&1 ||
  fail "a test wheel builds on the host" "$(tail -5 "$work/wheel.log")"
whl=/wheels/$(basename "$(ls "$work"/wheels/*.whl)")
for attr in devcontainerPython runtimePython; do
  if build "$attr" >/dev/null && PY=$(load "$attr"); then pass "$attr builds and loads"
  else fail "$attr builds and loads" "$(tail -20 "$work/build-$attr.log")"; continue; fi
  pyrun() { docker run --rm --entrypoint "" -v "$work/wheels:/wheels:ro" "$@" 2>&1; }
  expect_eq "$attr: ~/.local/bin is on PATH" "$(pyrun "$PY" sh -c 'case ":$PATH:" in *":$HOME/.local/bin:"*) echo yes;; esac')" "yes"
  expect_eq "$attr: pip install --user installs into ~/.local, its command runs from PATH" \
    "$(pyrun "$PY" sh -c "python3 -m pip install --quiet --user --no-index $whl >/tmp/log 2>&1 || cat /tmp/log; hello-nl; command -v hello-nl")" \
    "hello from pip
$(run "$PY" sh -c 'echo $HOME')/.local/bin/hello-nl"
  expect_eq "$attr: a plain pip install falls back to --user (the store is read-only)" \
    "$(pyrun "$PY" sh -c "python3 -m pip install --quiet --no-index $whl >/dev/null 2>&1; hello-nl")" "hello from pip"
  # The control: the interpreter is externally managed (PEP 668); the
  # image's PIP_BREAK_SYSTEM_PACKAGES is what lets --user installs through.
  expect_eq "$attr: control: without PIP_BREAK_SYSTEM_PACKAGES pip refuses (externally-managed-environment)" \
    "$(pyrun -e PIP_BREAK_SYSTEM_PACKAGES=0 "$PY" sh -c "python3 -m pip install --user --no-index $whl 2>&1 | grep -o externally-managed-environment | head -1")" \
    "externally-managed-environment"
  expect_eq "$attr: a venv works: pip installs into it, its command runs" \
    "$(pyrun "$PY" sh -c "cd && python3 -m venv v >/tmp/log 2>&1 || cat /tmp/log; v/bin/python -m pip install --quiet --no-index $whl >/tmp/log 2>&1 || cat /tmp/log; v/bin/hello-nl; v/bin/python -c 'import sys; print(sys.prefix != sys.base_prefix)'")" \
    "hello from pip
True"
done
