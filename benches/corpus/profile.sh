# Builder of a profile's top path (POSIX sh): references the root packages
# and links their commands, like a Nix buildEnv.
set -eu
mkdir -p "$out/bin" "$out/nix-support"
# Listing every root makes Nix record it as a reference, commands or not.
: > "$out/nix-support/roots"
for r in $roots; do
  echo "$r" >> "$out/nix-support/roots"
  for d in "$r/usr/bin" "$r/usr/sbin" "$r/bin"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      n=${f##*/}
      [ -e "$out/bin/$n" ] || [ -L "$out/bin/$n" ] || ln -s "$f" "$out/bin/$n"
    done
  done
done
