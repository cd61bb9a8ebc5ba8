# The image library: dockerTools' buildLayeredImage / streamLayeredImage,
# built by nix-layer.
#
# Needs only builtins and the nix-layer binary: each image is one
# `builtins.derivation` whose builder is nix-layer itself. Nix hands it the
# closure (structured attrs + exportReferencesGraph); nix-layer plans the
# layers and writes the tar layers, config and manifest. No stdenv, no shell,
# no fakeroot, no Python.
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
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    hashString
    isAttrs
    isBool
    isInt
    isList
    isString
    match
    removeAttrs
    toJSON
    typeOf
    ;
  util = import ./util.nix;
  inherit (util) quoteList storePathsIn subtractLists unique;

  fail = fn: msg: throw "nix-layer: ${fn}: ${msg}";

  formats = [
    "docker-archive"
    "oci"
    "oci-archive"
  ];
  compressions = [
    "none"
    "gzip"
    "zstd"
  ];
  strategies = [
    "popularity"
    "auto"
    "shared"
  ];
  configKeys = [
    "Cmd"
    "Entrypoint"
    "Env"
    "User"
    "WorkingDir"
    "ExposedPorts"
    "Volumes"
    "Labels"
    "StopSignal"
  ];
  entryTypes = [
    "dir"
    "symlink"
    "copy"
    "text"
  ];

  # Arguments every image function takes, with their defaults.
  defaults = {
    tag = null;
    contents = [ ];
    config = { };
    architecture = util.goArch system;
    created = "1970-01-01T00:00:01Z";
    mtime = "1970-01-01T00:00:01Z";
    uid = 0;
    gid = 0;
    uname = "root";
    gname = "root";
    maxLayers = 100;
    fromImage = null;
    includeStorePaths = true;
    includeNixDB = false;
    passthru = { };
    meta = { };
    # nix-layer's own
    strategy = "popularity";
    # { name = [ packages ]; }: sibling closures (package sets) that the
    # "shared" strategy plans against, so every image built with the same
    # family gets identical layers for what it shares with it.
    family = { };
    # A family catalogue file (`familyCatalogue`'s output, or one committed
    # to a repository): the same planning without realising the members.
    familyFile = null;
    topLayer = null;
    format = "docker-archive";
    compression = null; # "none" for docker-archive, "gzip" for the OCI formats
  };
  known = [ "name" ] ++ attrNames defaults;

  # dockerTools arguments that have no meaning here, and what to use instead.
  replaced = {
    extraCommands = "use `topLayer` (dir, symlink, copy and text entries; see docs/flake.md)";
    fakeRootCommands = "use `topLayer`: entries and rules carry owners and modes, no fakeroot is needed";
    enableFakechroot = "use `topLayer`: nothing runs inside the image at build time";
    compressor = "use `compression` (\"none\", \"gzip\" or \"zstd\"); a docker-archive's layers are stored uncompressed";
    layeringPipeline = "use `strategy` (\"popularity\", \"auto\" or \"shared\")";
    debug = "nix-layer prints its plan with `nix-layer plan --json`";
    diskSize = "not needed: no VM is used";
    buildVMMemorySize = "not needed: no VM is used";
    runAsRoot = "use `topLayer`: nothing runs inside the image at build time";
  };

  isRfc3339 =
    t:
    match "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})" t
    != null;
  isMode = m: isString m && match "[0-7]{3,4}" m != null;

  checkEntry =
    fn: e:
    let
      where = "topLayer entry ${toJSON (removeAttrs e [ "text" ])}";
      type = e.type or null;
      required = {
        dir = [ ];
        symlink = [ "target" ];
        copy = [ "source" ];
        text = [ "text" ];
      };
    in
    if !(isAttrs e) then
      fail fn "topLayer entries must be attribute sets, got a ${typeOf e}"
    else if !(e ? path) || !(isString e.path) || !(util.hasPrefix "/" e.path) then
      fail fn "${where}: `path` must be an absolute path string"
    else if !(elem type entryTypes) then
      fail fn "${where}: `type` must be one of ${quoteList entryTypes}"
    else if filter (k: !(e ? ${k})) required.${type} != [ ] then
      fail fn "${where}: a ${type} entry needs ${quoteList required.${type}}"
    else if e ? mode && !(isMode e.mode) then
      fail fn "${where}: `mode` must be an octal string such as \"0755\" or \"4755\", got ${toJSON e.mode}"
    else if (e ? uid && !(isInt e.uid)) || (e ? gid && !(isInt e.gid)) then
      fail fn "${where}: `uid` and `gid` must be integers"
    else
      e;

  checkRule =
    fn: r:
    if !(isAttrs r) || !(r ? path) || !(util.hasPrefix "/" r.path) then
      fail fn "topLayer rules need an absolute `path`, got ${toJSON r}"
    else if r ? mode && !(isMode r.mode) then
      fail fn "topLayer rule for ${r.path}: `mode` must be an octal string, got ${toJSON r.mode}"
    else
      r;

  checkTopLayer =
    fn: t:
    if t == null then
      null
    else if !(isAttrs t) then
      fail fn "`topLayer` must be an attribute set { entries = [ … ]; rules = [ … ]; } or null"
    else if attrNames (removeAttrs t [ "entries" "rules" ]) != [ ] then
      fail fn "`topLayer` has unknown keys ${quoteList (attrNames (removeAttrs t [ "entries" "rules" ]))}; it takes `entries` and `rules`"
    else
      {
        entries = map (checkEntry fn) (t.entries or [ ]);
        rules = map (checkRule fn) (t.rules or [ ]);
      };

  checkConfig =
    fn: c:
    let
      unknown = subtractLists configKeys (attrNames c);
    in
    if !(isAttrs c) then
      fail fn "`config` must be an attribute set"
    else if unknown != [ ] then
      fail fn "`config` has unknown keys ${quoteList unknown}; known keys (Docker's casing): ${quoteList configKeys}"
    else if c ? Env && !(isList c.Env && builtins.all (e: isString e && match "[^=]+=.*" e != null) c.Env) then
      fail fn "`config.Env` must be a list of \"NAME=value\" strings"
    else
      c;

  # Validates the arguments of `fn` and fills in defaults.
  normalise =
    fn: args:
    let
      given = attrNames args;
      obsolete = filter (n: replaced ? ${n}) given;
      unknown = subtractLists (known ++ obsolete) given;
      a = defaults // args;
      lower = builtins.replaceStrings
        [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
        [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
    in
    if !(isAttrs args) then
      fail fn "takes one attribute set of arguments"
    else if obsolete != [ ] then
      let
        n = builtins.head obsolete;
      in
      fail fn "the dockerTools argument '${n}' is not supported: ${replaced.${n}}"
    else if unknown != [ ] then
      fail fn "unknown argument(s) ${quoteList unknown}; known arguments: ${quoteList known}"
    else if !(args ? name) || !(isString args.name) || args.name == "" then
      fail fn "`name` (a string such as \"ghcr.io/org/app\") is required"
    else if lower a.name != a.name then
      fail fn "`name` must be lower-case (image references are), got '${a.name}'; use '${lower a.name}'"
    else if match "[a-z0-9][a-z0-9._/:-]*" a.name == null then
      fail fn "`name` '${a.name}' is not a valid image name (lower-case letters, digits, '.', '_', '-', '/', and ':' only before a registry port)"
    else if a.tag != null && !(isString a.tag && match "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" a.tag != null) then
      fail fn "`tag` must be null or a string of letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-'), got ${toJSON a.tag}"
    else if !(isInt a.maxLayers) || a.maxLayers < 2 then
      fail fn "`maxLayers` must be an integer of at least 2 (one store layer and the top layer), got ${toJSON a.maxLayers}"
    else if a.maxLayers > 125 then
      fail fn "`maxLayers` = ${toString a.maxLayers} is more than overlayfs can mount (about 125 layers); use at most 125"
    else if !(elem a.format formats) then
      fail fn "`format` must be one of ${quoteList formats}, got ${toJSON a.format}"
    else if a.compression != null && !(elem a.compression compressions) then
      fail fn "`compression` must be one of ${quoteList compressions}, got ${toJSON a.compression}"
    else if !(elem a.strategy strategies) then
      fail fn "`strategy` must be one of ${quoteList strategies}, got ${toJSON a.strategy}"
    else if !(isString a.created && (a.created == "now" || isRfc3339 a.created)) then
      fail fn "`created` must be an RFC 3339 time such as \"1970-01-01T00:00:01Z\" or \"now\", got ${toJSON a.created}"
    else if !(isString a.mtime && (a.mtime == "now" || isRfc3339 a.mtime)) then
      fail fn "`mtime` must be an RFC 3339 time or \"now\", got ${toJSON a.mtime}"
    else if !(isInt a.uid && a.uid >= 0 && isInt a.gid && a.gid >= 0) then
      fail fn "`uid` and `gid` must be non-negative integers"
    else if !(isString a.uname && isString a.gname) then
      fail fn "`uname` and `gname` must be strings"
    else if !(isString a.architecture) then
      fail fn "`architecture` must be a Go architecture name such as \"amd64\" or \"arm64\""
    else if !(isBool a.includeStorePaths && isBool a.includeNixDB) then
      fail fn "`includeStorePaths` and `includeNixDB` must be booleans"
    else if !(isAttrs a.passthru && isAttrs a.meta) then
      fail fn "`passthru` and `meta` must be attribute sets"
    else if !(isAttrs a.family && builtins.all isList (builtins.attrValues a.family)) then
      fail fn "`family` must be an attribute set of lists of packages, e.g. { base = [ pkgs.bash ]; }"
    else if (a.family != { } || a.familyFile != null) && a.strategy != "shared" then
      fail fn "`family` and `familyFile` only apply to strategy \"shared\", got ${toJSON a.strategy}"
    else
      a
      // {
        contents = if isList a.contents then a.contents else [ a.contents ];
        config = checkConfig fn a.config;
        topLayer = checkTopLayer fn a.topLayer;
        compression =
          if a.compression != null then
            a.compression
          else if a.format == "docker-archive" then
            "none"
          else
            "gzip";
      };

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
      settings = {
        inherit mode contents;
        inherit (a)
          name
          format
          compression
          maxLayers
          strategy
          config
          architecture
          created
          mtime
          uid
          gid
          uname
          gname
          includeStorePaths
          includeNixDB
          ;
        topLayer = if a.topLayer == null then { entries = [ ]; rules = [ ]; } else a.topLayer;
        # Each member's graph arrives in its own exportReferencesGraph key.
        family = builtins.mapAttrs (name: _: "family-${name}") a.family;
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
          graph = roots;
        }
        // builtins.listToAttrs (
          map (name: {
            name = "family-${name}";
            value = map (p: "${p}") a.family.${name};
          }) (attrNames a.family)
        );
        nixLayer = settings // { inherit tag; };
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
        inherit (a) name;
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

  # Scripts that put an image somewhere. They run the image's stream, so
  # nothing but the stream executable has to be in the store.
  copyHelpers =
    { stream, name, tag }:
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
    in
    {
      # nix run .#image.copyToDockerDaemon
      copyToDockerDaemon = mkScript "copy-to-docker-daemon" ''
        set -eu
        ${stream} | ${docker} load
      '';
      # nix run .#image.copyToPodman
      copyToPodman = mkScript "copy-to-podman" ''
        set -eu
        ${stream} | ${podman} load
      '';
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
    };

in
{
  # dockerTools.buildLayeredImage: the image in the store
  # (a docker-archive by default: `docker load < result`).
  buildLayeredImage = mkImage "buildLayeredImage" "image";

  # dockerTools.streamLayeredImage: an executable that writes the image to
  # stdout (`./result | docker load`), or elsewhere with `-o PATH --format F`.
  streamLayeredImage = mkImage "streamLayeredImage" "stream";

  # An OCI image layout directory in the store (gzip-compressed layers).
  buildLayeredImageOCI = args: mkImage "buildLayeredImageOCI" "image" ({ format = "oci"; } // args);

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
        exportReferencesGraph = builtins.listToAttrs (
          map (n: {
            name = "family-${n}";
            value = map (p: "${p}") sets.${n};
          }) (attrNames sets)
        );
        nixLayer = {
          mode = "family-catalogue";
          family = builtins.mapAttrs (n: _: "family-${n}") sets;
        }
        // (if previous == null then { } else { previous = "${previous}"; });
      };

  # For tests and tools: the argument names and their defaults.
  inherit defaults;
}
