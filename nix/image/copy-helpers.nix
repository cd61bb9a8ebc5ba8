# Scripts that put an image somewhere. They run the image's stream, so
# nothing but the stream executable has to be in the store.
#   mkScript  `name: text: derivation with bin/<name>` (nixpkgs' writeShellScriptBin)
#   tools     { skopeo, docker, podman } commands (default: looked up on PATH)
{ mkScript, tools }:
{
  stream,
  name,
  tag,
}:
let
  skopeo = tools.skopeo or "skopeo";
  docker = tools.docker or "docker";
  podman = tools.podman or "podman";
  ref = "${name}:${tag}";
  viaLayout = dest: ''
    set -eu
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    ${stream} -o "$tmp/layout" --format oci
    ${skopeo} --insecure-policy copy "$@" "oci:$tmp/layout" ${dest}
  '';
  load = engine: ''
    set -eu
    ${stream} | ${engine} load
  '';
in
{
  # nix run .#image.copyToDockerDaemon
  copyToDockerDaemon = mkScript "copy-to-docker-daemon" (load docker);
  # nix run .#image.copyToPodman
  copyToPodman = mkScript "copy-to-podman" (load podman);
  # nix run .#image.copyToRegistry -- [skopeo copy options]
  # pushes to docker://<imageName>:<imageTag>
  copyToRegistry = mkScript "copy-to-registry" (viaLayout "\"docker://${ref}\"");
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
