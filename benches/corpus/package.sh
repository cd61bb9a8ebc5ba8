# Builder of one corpus store path (POSIX sh): a Debian package's installed
# files, copied from the host, plus the store paths of its dependencies (so
# that Nix records them as references). Needs sandbox = false.
set -eu
umask 022
mkdir -p "$out/nix-support"
# setuid/setgid bits are dropped on the way in: the build may not set them
# and the store could not keep them.
tar -C / --no-recursion --verbatim-files-from --mode=ug-s -cf - -T "$fileList" |
  tar -xf - --no-same-owner -C "$out"
: > "$out/nix-support/depends"
for d in $depends; do echo "$d" >> "$out/nix-support/depends"; done
echo "$debPackages $debVersion" > "$out/nix-support/debian"
# A simulated update: a new version whose shared objects differ, as after
# a rebuild with a security patch (the store path changes anyway, through
# the name and this marker; the bytes change too, a little).
if [ -n "$update" ]; then
  echo "$update" > "$out/nix-support/update"
  find "$out" -type f -name '*.so*' | while read -r f; do
    chmod u+w "$f"
    printf '\n/* nix-layer corpus update %s */\n' "$update" >> "$f"
  done
fi
