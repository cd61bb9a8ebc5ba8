# Argument handling of the image library, as data: used by test-args.sh
# here (with a stand-in nix-layer) and by the flake's `eval` check on a real
# Nix machine. `ok` cases must evaluate to `expect`; `bad` cases must fail
# (test-args.sh also checks the message).
{ image }:
let
  pkg = derivation {
    name = "pkg-1.0";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo > $out" ];
  };
  attrs = img: img.drvAttrs.nixLayer;
  base = { name = "example"; };
  build = args: image.buildLayeredImage (base // args);
in
{
  ok = {
    "created defaults to 1970-01-01T00:00:01Z" = {
      expr = (attrs (build { })).created;
      expect = "1970-01-01T00:00:01Z";
    };
    "mtime defaults to 1970-01-01T00:00:01Z" = {
      expr = (attrs (build { })).mtime;
      expect = "1970-01-01T00:00:01Z";
    };
    "maxLayers defaults to 100" = {
      expr = (attrs (build { })).maxLayers;
      expect = 100;
    };
    "strategy defaults to popularity (drop-in)" = {
      expr = (attrs (build { })).strategy;
      expect = "popularity";
    };
    "owner defaults to root 0:0" = {
      expr = with attrs (build { }); [ uid gid uname gname ];
      expect = [ 0 0 "root" "root" ];
    };
    "docker-archive is uncompressed, OCI gzip by default" = {
      expr = [
        (attrs (build { })).compression
        (attrs (image.buildLayeredImageOCI base)).compression
        (attrs (image.buildLayeredImageOCI base)).format
      ];
      expect = [ "none" "gzip" "oci" ];
    };
    "compressionLevel reaches nix-layer; null is the codec's default" = {
      expr = [
        (attrs (image.buildLayeredImageOCI (base // { compressionLevel = 9; }))).compressionLevel
        ((attrs (image.buildLayeredImageOCI base)).compressionLevel or null)
      ];
      expect = [ 9 null ];
    };
    "tag is computed: 32 characters" = {
      expr = builtins.stringLength (build { contents = [ pkg ]; }).imageTag;
      expect = 32;
    };
    "tag is stable" = {
      expr = (build { contents = [ pkg ]; }).imageTag == (build { contents = [ pkg ]; }).imageTag;
      expect = true;
    };
    "tag changes with the contents" = {
      expr = (build { contents = [ pkg ]; }).imageTag == (build { }).imageTag;
      expect = false;
    };
    "tag is what nix-layer gets" = {
      expr = let i = build { contents = [ pkg ]; }; in (attrs i).tag == i.imageTag;
      expect = true;
    };
    "imageName and an explicit tag" = {
      expr = let i = build { name = "ghcr.io/org/app"; tag = "v1.2"; }; in [ i.imageName i.imageTag i.passthru.imageTag ];
      expect = [ "ghcr.io/org/app" "v1.2" "v1.2" ];
    };
    "stream and image share name and tag" = {
      expr = let i = build { contents = [ pkg ]; }; in [ (i.stream.imageTag == i.imageTag) (attrs i.stream).mode (attrs i).mode ];
      expect = [ true "stream" "image" ];
    };
    "an OCI image and its stream share the tag; the stream is a docker-archive" = {
      expr = let i = image.buildLayeredImageOCI (base // { compression = "zstd"; }); in [ (i.stream.imageTag == i.imageTag) (attrs i.stream).format (attrs i.stream).compression ];
      expect = [ true "docker-archive" "none" ];
    };
    "streamLayeredImage is an executable" = {
      expr = (image.streamLayeredImage base).isExe or false;
      expect = true;
    };
    "store paths in config and topLayer are closure roots" = {
      expr =
        let
          i = build {
            config.Cmd = [ "${pkg}/bin/x" ];
            topLayer.entries = [ { path = "/usr/bin/x"; type = "symlink"; target = "${pkg}/bin/x"; } ];
          };
        in
        i.drvAttrs.exportReferencesGraph.graph == [ "${builtins.unsafeDiscardStringContext pkg.outPath}" ];
      expect = true;
    };
    "contents are roots, once each" = {
      expr = builtins.length (build { contents = [ pkg pkg ]; }).drvAttrs.exportReferencesGraph.graph;
      expect = 1;
    };
    "architecture follows the system" = {
      expr = (attrs (build { })).architecture;
      expect = "amd64";
    };
    "passthru and meta" = {
      expr = let i = build { passthru.foo = 1; meta.description = "d"; }; in [ i.foo i.passthru.foo i.meta.description ];
      expect = [ 1 1 "d" ];
    };
    "override changes one argument" = {
      expr = ((build { }).override { tag = "b"; }).imageTag;
      expect = "b";
    };
    "a single derivation is accepted as contents" = {
      expr = (attrs (build { contents = pkg; })).contents == [ "${pkg}" ];
      expect = true;
    };
    "family members get their own exportReferencesGraph keys" = {
      expr =
        let
          d = (build { strategy = "shared"; family.base = [ pkg ]; }).drvAttrs;
        in
        [ (builtins.attrNames d.exportReferencesGraph) d.nixLayer.family.base ];
      expect = [ [ "family-base" "graph" ] "family-base" ];
    };
    "the family changes the computed tag" = {
      expr = (build { strategy = "shared"; }).imageTag != (build { strategy = "shared"; family.base = [ pkg ]; }).imageTag;
      expect = true;
    };
    "familyCatalogue writes one key per set" = {
      expr = builtins.attrNames (image.familyCatalogue { sets = { base = [ pkg ]; dev = [ pkg ]; }; }).drvAttrs.exportReferencesGraph;
      expect = [ "family-base" "family-dev" ];
    };
    # A drop-in: what dockerTools.buildLayeredImage accepts, with its meaning.
    "config = null is no config" = {
      expr = (attrs (build { config = null; })).config;
      expect = { };
    };
    "created and mtime in every form the binary takes" = {
      expr = map (t: with attrs (build { created = t; mtime = t; }); [ created mtime ]) [
        "now"
        "1700000000"
        "2023-11-14T22:13:20+01:00"
        "2023-11-14t22:13:20.5z"
      ];
      expect = [
        [ "now" "now" ]
        [ "1700000000" "1700000000" ]
        [ "2023-11-14T22:13:20+01:00" "2023-11-14T22:13:20+01:00" ]
        [ "2023-11-14t22:13:20.5z" "2023-11-14t22:13:20.5z" ]
      ];
    };
    "dockerTools' no-op defaults written out are accepted" = {
      expr = (attrs (build {
        extraCommands = "";
        fakeRootCommands = "";
        enableFakechroot = false;
        layeringPipeline = null;
        debug = false;
        includeStorePaths = true;
        includeNixDB = false;
        passthru = { };
        meta = { };
      })).strategy;
      expect = "popularity";
    };
    "compressor maps to compression" = {
      expr = map (c: (attrs (build { compressor = c; })).compression) [ "none" "gz" "zstd" ];
      expect = [ "none" "gzip" "zstd" ];
    };
    "compression wins over compressor" = {
      expr = (attrs (build { compressor = "gz"; compression = "zstd"; })).compression;
      expect = "zstd";
    };
    "ArgsEscaped and engine-ignored config keys are accepted" = {
      expr = (attrs (build { config = { ArgsEscaped = true; Memory = 0; Cmd = [ "/bin/x" ]; }; })).config.Cmd;
      expect = [ "/bin/x" ];
    };
    # Signing happens in copyToRegistry (the digest exists only once pushed): the
    # image derivation, and so its tag, never see the key's location.
    "sign leaves the image derivation and tag as they are" = {
      expr =
        let
          signed = build { contents = [ pkg ]; sign = { key = "/run/secrets/cosign.key"; flakeLock = "/srv/flake.lock"; }; };
          plain = build { contents = [ pkg ]; };
        in
        [ (signed.drvPath == plain.drvPath) (signed.imageTag == plain.imageTag) (signed.stream.drvPath == plain.stream.drvPath) ];
      expect = [ true true true ];
    };
    "uses structured attrs and builtins only" = {
      expr = let d = (build { }).drvAttrs; in [ d.__structuredAttrs (builtins.elem "nix-build" d.args) ];
      expect = [ true true ];
    };
  };

  # name -> [ arguments, a substring of the error message ]
  bad = {
    "unknown argument" = [ { contents = [ ]; colour = "red"; } "unknown argument(s) 'colour'" ];
    "extraCommands points to topLayer" = [ { extraCommands = "mkdir tmp"; } "use `topLayer`" ];
    "an unknown compressor points to compression" = [ { compressor = "xz"; } "or use `compression`" ];
    "extraCommands that do something have no equivalent" = [ { extraCommands = "mkdir x"; } "(\"\", its default, is accepted)" ];
    "enableFakechroot = true has no equivalent" = [ { enableFakechroot = true; } "'enableFakechroot' = true has no equivalent" ];
    "debug = true points to nix-layer plan" = [ { debug = true; } "nix-layer plan --json" ];
    "a created date without time" = [ { created = "2024-01-01"; } "seconds since the epoch" ];
    "maxLayers below 2" = [ { maxLayers = 1; } "`maxLayers` must be an integer of at least 2" ];
    "maxLayers over 125" = [ { maxLayers = 200; } "more than overlayfs can mount" ];
    "bad format" = [ { format = "tarball"; } "`format` must be one of 'docker-archive', 'oci', 'oci-archive'" ];
    "bad compression" = [ { compression = "xz"; } "`compression` must be one of 'none', 'gzip', 'zstd'" ];
    "bad strategy" = [ { strategy = "random"; } "`strategy` must be one of 'popularity', 'auto', 'shared'" ];
    "family without shared" = [ { family.base = [ pkg ]; } "only apply to strategy \"shared\"" ];
    "familyFile without shared" = [ { familyFile = "/nix/store/x"; } "only apply to strategy \"shared\"" ];
    "family of non-lists" = [ { strategy = "shared"; family.base = pkg; } "`family` must be an attribute set of lists" ];
    "upper-case name" = [ { name = "Example/App"; } "`name` must be lower-case" ];
    "missing name" = [ { name = ""; } "`name` (a string such as" ];
    "bad tag" = [ { tag = "no spaces"; } "`tag` must be null or a string" ];
    "bad created" = [ { created = "yesterday"; } "`created` must be an RFC 3339 time" ];
    "unknown config key" = [ { config.cmd = [ "x" ]; } "`config` has unknown keys 'cmd'" ];
    "bad Env" = [ { config.Env = [ "NOVALUE" ]; } "`config.Env` must be a list of \"NAME=value\" strings" ];
    "numeric mode in topLayer" = [
      { topLayer.entries = [ { path = "/tmp"; type = "dir"; mode = 1777; } ]; }
      "`mode` must be an octal string"
    ];
    "unknown topLayer entry type" = [
      { topLayer.entries = [ { path = "/x"; type = "fifo"; } ]; }
      "`type` must be one of 'dir', 'symlink', 'copy', 'text'"
    ];
    "relative topLayer path" = [
      { topLayer.entries = [ { path = "tmp"; type = "dir"; } ]; }
      "`path` must be an absolute path string"
    ];
    # A private key must never be copied into the world-readable store.
    "sign.key as a Nix path" = [ { sign.key = ./cosign.key; } "is a Nix path, which would copy the private key into the world-readable Nix store" ];
    "sign.key in the Nix store" = [ { sign.key = "${builtins.storeDir}/0000000000000000000000000000000a-cosign.key"; } "is in the Nix store, where every user can read it" ];
    "sign.key carrying a store path" = [ { sign.key = "${pkg}/cosign.key"; } "is in the Nix store, where every user can read it" ];
    "sign.key relative" = [ { sign.key = "cosign.key"; } "`sign.key` must be an absolute path" ];
    "sign without a key" = [ { sign.provenance = true; } "`sign` needs `key`" ];
    "sign with an unknown key" = [ { sign = { key = "/k"; password = "x"; }; } "`sign` has unknown keys 'password'" ];
    "sign.flakeLock without provenance" = [ { sign = { key = "/k"; provenance = false; flakeLock = "/srv/flake.lock"; }; } "it needs `sign.provenance = true`" ];
    "symlink without target" = [
      { topLayer.entries = [ { path = "/x"; type = "symlink"; } ]; }
      "a symlink entry needs 'target'"
    ];
  };

  inherit build base;
}
