# The image library: dockerTools' buildLayeredImage / streamLayeredImage,
# built by nix-layer.
#
# Needs only builtins and the nix-layer binary: each image is one
# `builtins.derivation` whose builder is nix-layer itself. Nix hands it the
# closure (structured attrs + exportReferencesGraph); nix-layer plans the
# layers and writes the tar layers, config and manifest. No stdenv, no shell,
# no fakeroot, no Python.
#
# Arguments are validated against the binary's contract (./contract.json) in
# ./image/validate.nix; the copy helpers are in ./image/copy-helpers.nix.
#
#   nixLayer  the nix-layer package (a store path with bin/nix-layer)
#   system    the Nix system the image derivations are built on
#   mkScript  optional `name: text: derivation with bin/<name>`, e.g.
#             nixpkgs' writeShellScriptBin; when given, images get the
#             passthru helpers copyToDockerDaemon, copyToPodman,
#             copyToRegistry and copyTo (these are shell scripts, so they
#             need a writer from the caller: the flake passes nixpkgs' one)
#   tools     optional { skopeo, docker, podman } commands for those helpers
#             (default: looked up on PATH)
{
  nixLayer,
  system ? builtins.currentSystem,
  mkScript ? null,
  tools ? { },
}:
let
  inherit (builtins) attrNames hashString isAttrs isList toJSON;
  util = import ./util.nix;
  inherit (util) storePathsIn unique;
  validate = import ./image/validate.nix { inherit system; };
  inherit (validate) contract normalise fail;
  copyHelpers = import ./image/copy-helpers.nix { inherit mkScript tools; };

  # Family member NAME's graph arrives in its own exportReferencesGraph key.
  familyKey = name: "${contract.familyKeyPrefix}${name}";
  familyGraphs =
    sets:
    builtins.listToAttrs (
      map (name: {
        name = familyKey name;
        value = map (p: "${p}") sets.${name};
      }) (attrNames sets)
    );

  # The last component of the name, for store path names.
  baseName = name: builtins.baseNameOf (builtins.replaceStrings [ ":" ] [ "-" ] name);

  # Builds one image derivation. mode: "image" or "stream".
  mkImage =
    fn: mode: args:
    let
      a = normalise fn args;
      contents = map (p: "${p}") a.contents;
      # The closure roots: every store path that contents, config and the top
      # layer mention. Their strings carry context, so all of them are inputs.
      roots = unique (storePathsIn (toJSON [
        contents
        a.config
        a.topLayer
      ]));
      # What the binary reads: the contract's `image` arguments, in the
      # binary's form (paths as strings, family members as graph keys).
      settings = builtins.intersectAttrs (util.genAttrs validate.imageArgs (_: null)) a // {
        inherit mode contents;
        ${contract.versionKey} = contract.version;
        topLayer = if a.topLayer == null then { entries = [ ]; rules = [ ]; } else a.topLayer;
        family = builtins.mapAttrs (name: _: familyKey name) a.family;
        familyFile = if a.familyFile == null then null else "${a.familyFile}";
        fromImage = if a.fromImage == null then null else "${a.fromImage}";
        storeDir = builtins.storeDir;
      };
      # As in dockerTools, a missing tag is a hash of everything the image is
      # made of, so it is known at evaluation time (passthru.imageTag).
      tag =
        if a.tag != null then
          a.tag
        else
          builtins.substring 0 32 (
            hashString "sha256" (
              builtins.unsafeDiscardStringContext (toJSON {
                inherit roots;
                family = builtins.mapAttrs (_: map (p: "${p}")) a.family;
                familyFile = if a.familyFile == null then null else "${a.familyFile}";
                # The same image in another format or compression keeps its tag.
                settings = removeAttrs settings [
                  "mode"
                  "format"
                  "compression"
                  contract.versionKey
                ];
                nixLayer = "${nixLayer}";
              })
            )
          );
      suffix =
        {
          docker-archive = ".tar";
          oci = "-oci";
          oci-archive = ".oci.tar";
        }
        .${a.format};
      drvName = if mode == "stream" then "stream-${baseName a.name}" else "${baseName a.name}${suffix}";
      drv = derivation {
        name = drvName;
        inherit system;
        builder = "${nixLayer}/bin/nix-layer";
        args = [ "nix-build" ];
        __structuredAttrs = true;
        exportReferencesGraph = {
          ${contract.graphKey} = roots;
        }
        // familyGraphs a.family;
        ${contract.settingsKey} = settings // { inherit tag; };
      };
      # The stream of the same image (as a docker-archive, which streams), for
      # `passthru.stream` and the copy helpers.
      stream =
        if mode == "stream" then
          drv
        else
          mkImage "streamLayeredImage" "stream" (
            args
            // {
              format = "docker-archive";
              compression = null;
            }
          );
      helpers = util.optionalAttrs (mkScript != null) (copyHelpers {
        inherit stream tag;
        inherit (a) name sign;
      });
      self =
        drv
        // helpers
        // a.passthru
        // {
          imageName = a.name;
          imageTag = tag;
          passthru = helpers // a.passthru // { imageName = a.name; imageTag = tag; } // util.optionalAttrs (mode != "stream") { inherit stream; };
          inherit (a) meta;
          # Re-run with some arguments changed: `image.override { tag = "v2"; }`.
          override = newArgs: mkImage fn mode (args // newArgs);
        }
        // util.optionalAttrs (mode != "stream") { inherit stream; }
        // util.optionalAttrs (mode == "stream") { isExe = true; };
    in
    self;

  # The image functions' arguments, written out so that builtins.functionArgs
  # (nix repl, documentation tools, wrappers) sees them: the contract's user
  # arguments and dockerTools' ones that are accepted at their no-op values
  # (a test keeps this list equal to the contract's). The defaults shown are
  # the contract's, which normalise applies; only given arguments are passed
  # on, so that an error names what the caller wrote.
  withFormals =
    f:
    {
      name,
      tag ? null,
      contents ? [ ],
      config ? { },
      architecture ? validate.defaults.architecture,
      variant ? null,
      annotations ? { },
      allowHostFiles ? false,
      sbom ? false,
      created ? validate.defaults.created,
      mtime ? validate.defaults.mtime,
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
      maxLayers ? validate.defaults.maxLayers,
      fromImage ? null,
      includeStorePaths ? true,
      includeNixDB ? false,
      strategy ? validate.defaults.strategy,
      family ? { },
      familyFile ? null,
      topLayer ? null,
      format ? validate.defaults.format,
      compression ? null,
      compressionLevel ? null,
      passthru ? { },
      meta ? { },
      # { key = "/run/secrets/cosign.key"; provenance = true; flakeLock = ./flake.lock; }:
      # copyToRegistry signs the pushed digest (see image/validate.nix).
      sign ? null,
      # dockerTools' own, accepted at their defaults (see image/validate.nix).
      compressor ? null,
      extraCommands ? "",
      fakeRootCommands ? "",
      enableFakechroot ? false,
      layeringPipeline ? null,
      debug ? false,
      ...
    }@args:
    f args;
in
{
  # dockerTools.buildLayeredImage: the image in the store
  # (a docker-archive by default: `docker load < result`).
  buildLayeredImage = withFormals (mkImage "buildLayeredImage" "image");

  # dockerTools.streamLayeredImage: an executable that writes the image to
  # stdout (`./result | docker load`), or elsewhere with `-o PATH --format F`.
  streamLayeredImage = withFormals (mkImage "streamLayeredImage" "stream");

  # An OCI image layout directory in the store (gzip-compressed layers).
  buildLayeredImageOCI = withFormals (args: mkImage "buildLayeredImageOCI" "image" ({ format = "oci"; } // args));

  # A family catalogue: the reference graphs of package sets, in one JSON
  # file, for images' `familyFile`. Building it realises the sets once (e.g.
  # in the weekly nixpkgs update); images that use the file realise nothing
  # of the family.  sets: { name = [ packages ]; }
  # previous: the catalogue this one replaces (e.g. the committed file), or
  # null; the new one continues its update history (which package names
  # changed between regenerations, and how often), which the "shared"
  # strategy uses to keep often-updated libraries' dependents apart.
  familyCatalogue =
    {
      sets,
      name ? "family-catalogue.json",
      previous ? null,
    }:
    if !(isAttrs sets && builtins.all isList (builtins.attrValues sets)) then
      fail "familyCatalogue" "`sets` must be an attribute set of lists of packages"
    else
      derivation {
        inherit name system;
        builder = "${nixLayer}/bin/nix-layer";
        args = [ "nix-build" ];
        __structuredAttrs = true;
        exportReferencesGraph = familyGraphs sets;
        ${contract.settingsKey} = {
          mode = "family-catalogue";
          ${contract.versionKey} = contract.version;
          family = builtins.mapAttrs (n: _: familyKey n) sets;
        }
        // (if previous == null then { } else { previous = "${previous}"; });
      };

  # For tests and tools: the arguments' defaults and the contract itself.
  inherit (validate) defaults contract;
}
