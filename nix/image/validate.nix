# Argument validation for the image library, driven by the contract the
# nix-layer binary defines (../contract.json, generated from the Rust crate
# nix-layer-contract; a cargo test keeps it current). Keys, types, defaults,
# choices and limits come from there; this file adds only the checks Nix can
# make earlier or explain better (image names, times, topLayer shapes) and
# the dockerTools migration hints.
{ system }:
let
  inherit (builtins)
    all
    attrNames
    attrValues
    elem
    filter
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    match
    removeAttrs
    toJSON
    typeOf
    ;
  util = import ../util.nix;
  inherit (util) quoteList subtractLists;

  contract = builtins.fromJSON (builtins.readFile ../contract.json);
  specs = contract.arguments;
  # The arguments a user may give (the wrapper sets the internal ones).
  userArgs = filter (n: specs.${n}.scope != "internal") (attrNames specs);

  fail = fn: msg: throw "nix-layer: ${fn}: ${msg}";

  # dockerTools arguments that have no equivalent here, and what to use
  # instead. Given with the value that does nothing (their dockerTools
  # default, `noOps`), they are accepted, so that calls written for
  # dockerTools with every default spelled out work unchanged.
  replaced = {
    extraCommands = "use `topLayer` (dir, symlink, copy and text entries; see docs/flake.md)";
    fakeRootCommands = "use `topLayer`: entries and rules carry owners and modes, no fakeroot is needed";
    enableFakechroot = "use `topLayer`: nothing runs inside the image at build time";
    layeringPipeline = "use `strategy` (\"popularity\", \"auto\" or \"shared\")";
    debug = "nix-layer prints its plan with `nix-layer plan --json`";
    diskSize = "not needed: no VM is used";
    buildVMMemorySize = "not needed: no VM is used";
    runAsRoot = "use `topLayer`: nothing runs inside the image at build time";
  };
  noOps = {
    extraCommands = "";
    fakeRootCommands = "";
    enableFakechroot = false;
    layeringPipeline = null;
    debug = false;
    runAsRoot = null;
  };
  # buildLayeredImage's `compressor` has an equivalent: `compression`.
  compressors = {
    none = "none";
    gz = "gzip";
    zstd = "zstd";
  };

  # Why a limit exists, for the messages.
  limitNotes = {
    maxLayers = {
      min = " (one store layer and the top layer)";
      max = ": more than that is more than overlayfs can mount";
    };
  };

  isPackage = p: isAttrs p || isPath p || isString p;
  typeChecks = {
    string = isString;
    int = isInt;
    bool = isBool;
    attrs = isAttrs;
    package = isPackage;
    packages = p: isPackage p || (isList p && all isPackage p);
    sets = s: isAttrs s && all isList (attrValues s);
  };
  typeNames = {
    string = "a string";
    int = "an integer";
    bool = "a boolean";
    attrs = "an attribute set";
    package = "a package (derivation or store path)";
    packages = "a package or a list of packages";
    sets = "an attribute set of lists of packages, e.g. { base = [ pkgs.bash ]; }";
  };

  # One argument against its contract entry: type, null, choices, limits.
  checkArg =
    fn: n: v:
    let
      s = specs.${n};
      note = limitNotes.${n} or { };
    in
    if v == null then
      (if s.nullable then v else fail fn "`${n}` must not be null")
    else if !(typeChecks.${s.type} v) then
      fail fn "`${n}` must be ${typeNames.${s.type}}${if s.nullable then " or null" else ""}, got a ${typeOf v}"
    else if s ? choices && !(elem v s.choices) then
      fail fn "`${n}` must be one of ${quoteList s.choices}, got ${toJSON v}"
    else if s ? min && v < s.min then
      fail fn "`${n}` must be an integer of at least ${toString s.min}${note.min or ""}, got ${toJSON v}"
    else if s ? max && v > s.max then
      fail fn "`${n}` = ${toString v} is more than ${toString s.max}${note.max or ""}; use at most ${toString s.max}"
    else
      v;

  # The contract's defaults; `format`-dependent ones once the format is known.
  defaults = builtins.listToAttrs (
    map (n: {
      name = n;
      value =
        let
          s = specs.${n};
        in
        if s ? default then
          s.default
        else if (s.defaultFrom or null) == "system" then
          util.goArch system
        else
          null;
    }) (filter (n: !(specs.${n}.required or false)) userArgs)
  );

  isRfc3339 =
    t:
    match "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})" t
    != null;
  # Every form the binary's time parser takes: "now", seconds since the
  # epoch, RFC 3339 (the binary checks the calendar).
  isTime = t: t == "now" || match "[0-9]{1,12}" t != null || isRfc3339 t;
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
    else if !(elem type contract.topLayer.entryTypes) then
      fail fn "${where}: `type` must be one of ${quoteList contract.topLayer.entryTypes}"
    else if filter (k: !(e ? ${k})) (required.${type} or [ ]) != [ ] then
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
    let
      unknown = subtractLists contract.topLayer.keys (attrNames t);
    in
    if t == null then
      null
    else if unknown != [ ] then
      fail fn "`topLayer` has unknown keys ${quoteList unknown}; it takes ${quoteList contract.topLayer.keys}"
    else
      {
        entries = map (checkEntry fn) (t.entries or [ ]);
        rules = map (checkRule fn) (t.rules or [ ]);
      };

  checkConfig =
    fn: c:
    let
      unknown = subtractLists (contract.configKeys ++ attrNames contract.ignoredConfigKeys) (attrNames c);
    in
    if c == null then
      { }
    else if unknown != [ ] then
      fail fn "`config` has unknown keys ${quoteList unknown}; known keys (Docker's casing): ${quoteList contract.configKeys}"
    else if c ? Env && !(isList c.Env && all (e: isString e && match "[^=]+=.*" e != null) c.Env) then
      fail fn "`config.Env` must be a list of \"NAME=value\" strings"
    else
      c;

  # `sign`: what copyToRegistry signs the pushed image with. The private key stays
  # where it is: a path literal (or a string carrying one) would copy it into the
  # world-readable store, and a key already there is readable by every user.
  signKeys = [ "key" "provenance" "flakeLock" ];
  checkSign =
    fn: s:
    let
      unknown = subtractLists signKeys (attrNames s);
      key = s.key or null;
      lock = s.flakeLock or null;
      where = "`sign.key`";
      storeHint = "keep the key outside the Nix store and give its location as a string, e.g. \"/run/secrets/cosign.key\"";
    in
    if s == null then
      null
    else if unknown != [ ] then
      fail fn "`sign` has unknown keys ${quoteList unknown}; it takes ${quoteList signKeys}"
    else if key == null then
      fail fn "`sign` needs `key`: the location of a cosign private key, e.g. \"/run/secrets/cosign.key\" (its password comes from COSIGN_PASSWORD when pushing)"
    else if isPath key then
      fail fn "${where} is a Nix path, which would copy the private key into the world-readable Nix store; ${storeHint}"
    else if !(isString key) then
      fail fn "${where} must be a string (the key's location), got a ${typeOf key}"
    else if builtins.hasContext key || util.hasPrefix "${builtins.storeDir}/" key then
      fail fn "${where} '${builtins.unsafeDiscardStringContext key}' is in the Nix store, where every user can read it; ${storeHint}"
    else if !(util.hasPrefix "/" key) then
      fail fn "${where} must be an absolute path, got ${toJSON key}"
    else if !(isBool (s.provenance or true)) then
      fail fn "`sign.provenance` must be a boolean"
    else if lock != null && !(isPath lock || (isString lock && util.hasPrefix "/" (builtins.unsafeDiscardStringContext lock)) || (isAttrs lock && lock ? outPath)) then
      fail fn "`sign.flakeLock` must be a path (e.g. ./flake.lock) or an absolute path string, got ${toJSON lock}"
    else if lock != null && !(s.provenance or true) then
      fail fn "`sign.flakeLock` lists the flake's inputs in the provenance: it needs `sign.provenance = true`"
    else
      {
        inherit key;
        provenance = s.provenance or true;
        flakeLock = if lock == null then null else "${lock}";
      };

  lower = builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  # Validates the arguments of `fn` and fills in the contract's defaults.
  normalise =
    fn: args0:
    let
      # dockerTools arguments given with the value that does nothing.
      given0 = attrNames args0;
      noOpGiven = filter (n: noOps ? ${n} && args0.${n} == noOps.${n}) given0;
      compressor = args0.compressor or null;
      args =
        removeAttrs args0 (noOpGiven ++ [ "compressor" ])
        // util.optionalAttrs (compressor != null && compressors ? ${compressor} && !(args0 ? compression)) {
          compression = compressors.${compressor};
        };
      given = attrNames args;
      obsolete = filter (n: replaced ? ${n}) given;
      unknown = subtractLists (userArgs ++ obsolete) given;
      checked = builtins.mapAttrs (checkArg fn) (removeAttrs args obsolete);
      a = defaults // checked;
      sign = checkSign fn a.sign;
    in
    if !(isAttrs args0) then
      fail fn "takes one attribute set of arguments"
    else if compressor != null && !(compressors ? ${compressor}) then
      fail fn "`compressor` must be one of ${quoteList (attrNames compressors)} (or use `compression`), got ${toJSON compressor}"
    else if obsolete != [ ] then
      let
        n = builtins.head obsolete;
      in
      fail fn "the dockerTools argument '${n}' = ${toJSON args.${n}} has no equivalent here: ${replaced.${n}}${
        if noOps ? ${n} then " (${toJSON noOps.${n}}, its default, is accepted)" else ""
      }"
    else if unknown != [ ] then
      fail fn "unknown argument(s) ${quoteList unknown}; known arguments: ${quoteList userArgs}"
    else if !(args ? name) || !(isString args.name) || args.name == "" then
      fail fn "`name` (a string such as \"ghcr.io/org/app\") is required"
    # Every given argument against the contract, before the specific checks.
    else if !(all (n: builtins.seq checked.${n} true) given) then
      throw "unreachable"
    else if lower a.name != a.name then
      fail fn "`name` must be lower-case (image references are), got '${a.name}'; use '${lower a.name}'"
    else if match "[a-z0-9][a-z0-9._/:-]*" a.name == null then
      fail fn "`name` '${a.name}' is not a valid image name (lower-case letters, digits, '.', '_', '-', '/', and ':' only before a registry port)"
    else if a.tag != null && match "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" a.tag == null then
      fail fn "`tag` must be null or a string of letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-'), got ${toJSON a.tag}"
    else if !(isTime a.created) then
      fail fn "`created` must be an RFC 3339 time such as \"1970-01-01T00:00:01Z\", seconds since the epoch (\"1700000000\") or \"now\", got ${toJSON a.created}"
    else if !(isTime a.mtime) then
      fail fn "`mtime` must be an RFC 3339 time, seconds since the epoch or \"now\", got ${toJSON a.mtime}"
    else if (a.family != { } || a.familyFile != null) && a.strategy != "shared" then
      fail fn "`family` and `familyFile` only apply to strategy \"shared\", got ${toJSON a.strategy}"
    # Checked with the rest (the image derivation itself never reads it).
    else if builtins.seq sign false then
      throw "unreachable"
    else
      a
      // {
        contents = if isList a.contents then a.contents else [ a.contents ];
        config = checkConfig fn a.config;
        topLayer = checkTopLayer fn a.topLayer;
        inherit sign;
        compression = if a.compression != null then a.compression else specs.compression.defaultByFormat.${a.format};
      };
in
{
  inherit contract normalise defaults fail;
  # The arguments sent to the binary (the contract's `image` scope).
  imageArgs = filter (n: specs.${n}.scope == "image") userArgs;
}
