# The few nixpkgs `lib` functions nix/package.nix calls, with nixpkgs'
# meaning, so that the package recipe itself is evaluated without nixpkgs.
let
  inherit (builtins) any stringLength substring;
  isPrefix = p: s: substring 0 (stringLength p) s == p;
in
{
  importTOML = path: builtins.fromTOML (builtins.readFile path);

  fileset = {
    # A file set is kept as the list of the paths it holds (files or whole
    # directories).
    unions = paths: paths;
    # The store path holding exactly the file set's files, laid out as under
    # `root`; everything else under `root` is left out.
    toSource =
      { root, fileset }:
      let
        kept = map toString fileset;
      in
      builtins.path {
        name = "source";
        path = root;
        filter =
          path: type:
          any (
            k:
            path == k
            || isPrefix (k + "/") path # inside a kept directory
            || (type == "directory" && isPrefix (path + "/") k) # on the way to one
          ) kept;
      };
  };

  licenses = {
    mit.spdxId = "MIT";
    asl20.spdxId = "Apache-2.0";
  };
  platforms = {
    linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
    darwin = [
      "x86_64-darwin"
      "aarch64-darwin"
    ];
  };
}
