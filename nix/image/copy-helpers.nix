# Scripts that put an image somewhere, with nix-layer itself: `push` sends only
# the blobs the registry lacks (and, when asked, an SBOM referrer and
# annotations), `load` leaves out the bytes of layers Docker already holds.
# Both read the image's stream script (its settings), so nothing but the stream
# executable has to be in the store, and they run the nix-layer that script
# runs: the one the image was built with.
#   mkScript  `name: text: derivation with bin/<name>` (nixpkgs' writeShellScriptBin)
#   tools     { skopeo, docker, podman } commands (default: looked up on PATH);
#             docker and podman are what `nix-layer load` runs, skopeo is copyTo's
{ mkScript, tools }:
{
  stream,
  name,
  tag,
  # null, or the checked `sign` argument: { key; provenance; flakeLock; }
  sign ? null,
}:
let
  skopeo = tools.skopeo or "skopeo";
  quote = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";
  # The key is read (and its password from COSIGN_PASSWORD) when the script runs: only
  # its location is in the store.
  signArgs =
    if sign == null then
      ""
    else
      "--sign ${quote sign.key}"
      + (if sign.provenance then " --provenance" else "")
      + (if sign.flakeLock != null then " --flake-lock ${quote sign.flakeLock}" else "");
  ref = "${name}:${tag}";
  # The stream script is `exec <nix-layer> build --settings "$0" "$@"`.
  nixLayer = ''
    set -eu
    nix_layer=
    while IFS= read -r line; do
      case $line in
        "exec /"*"/bin/nix-layer build --settings "*)
          nix_layer=''${line#exec }
          nix_layer=''${nix_layer%% *}
          break
          ;;
      esac
    done <${stream}
    if [ -z "$nix_layer" ]; then
      echo "error: no nix-layer command in the stream script ${stream}" >&2
      exit 1
    fi
  '';
  # `nix-layer load` runs the engine's client by name: a given one goes first on PATH.
  enginePath = engine: if tools ? ${engine} then ''export PATH="${dirOf tools.${engine}}:$PATH"'' else "";
  load = engine: ''
    ${nixLayer}
    ${enginePath engine}
    exec "$nix_layer" load --engine ${engine} --settings ${stream} "$@"
  '';
  viaLayout = dest: ''
    set -eu
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    ${stream} -o "$tmp/layout" --format oci
    ${skopeo} --insecure-policy copy "$@" "oci:$tmp/layout" ${dest}
  '';
in
{
  # nix run .#image.copyToDockerDaemon [-- nix-layer load options: --address, --verbose]
  copyToDockerDaemon = mkScript "copy-to-docker-daemon" (load "docker");
  # nix run .#image.copyToPodman [-- nix-layer load options]
  copyToPodman = mkScript "copy-to-podman" (load "podman");
  # nix run .#image.copyToRegistry -- [nix-layer push options: --creds, --tag,
  #   --sbom, --annotation K=V, --cache-repo, --plain-http, --verbose]
  # pushes to <imageName>:<imageTag>; with the image's `sign`, signs the pushed
  # digest (and attaches provenance listing the flake lock's inputs)
  copyToRegistry = mkScript "copy-to-registry" ''
    ${nixLayer}
    exec "$nix_layer" push "${ref}" --settings ${stream} ${signArgs} "$@"
  '';
  # nix run .#image.copyTo -- DESTINATION [skopeo copy options]
  # DESTINATION is any skopeo transport: docker://host/repo:tag,
  # oci-archive:file.tar, docker-daemon:name:tag, …
  copyTo = mkScript "copy-to" ''
    if [ $# -lt 1 ]; then
      echo "usage: copy-to DESTINATION [skopeo copy options]" >&2
      echo "  e.g. copy-to docker://${ref}" >&2
      exit 2
    fi
    dest=$1
    shift
    ${viaLayout "\"$dest\""}
  '';
}
