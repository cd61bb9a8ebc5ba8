# Small helpers for image.nix and builders.nix, written with builtins only so
# that the image library evaluates and builds without nixpkgs.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    foldl'
    head
    isList
    match
    replaceStrings
    split
    storeDir
    ;

  # Characters of Nix's base-32 alphabet (no e, o, t, u) and of store path names.
  nix32 = "[0-9a-df-np-sv-z]";
  nameChars = "[-+._?=a-zA-Z0-9]";
  escapeRegex = replaceStrings [ "." "+" "*" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ] [
    "\\."
    "\\+"
    "\\*"
    "\\?"
    "\\("
    "\\)"
    "\\["
    "\\]"
    "\\{"
    "\\}"
    "\\|"
    "\\^"
    "\\$"
  ];
in
rec {
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;

  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  optionalString = cond: s: if cond then s else "";

  # Keeps the first occurrence of each element, in order.
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  subtractLists = remove: filter (x: !(elem x remove));

  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);

  # "a", "b", "c" -> "'a', 'b', 'c'" for error messages.
  quoteList = xs: concatStringsSep ", " (map (x: "'${x}'") xs);

  # Every store path (<storeDir>/<32 nix32 chars>-<name>) mentioned in a string,
  # in order of first appearance. The strings returned carry no context: the
  # string they were found in does, and that is what makes them inputs of a
  # derivation that holds it.
  storePathsIn =
    str:
    let
      re = "(${escapeRegex storeDir}/${nix32}{32}-${nameChars}+)";
    in
    unique (map head (filter isList (split re str)));

  # Go's spelling of the CPU architecture of a Nix system double.
  goArch =
    system:
    let
      cpu = head (builtins.match "([^-]+)-.*" system);
      table = {
        x86_64 = "amd64";
        aarch64 = "arm64";
        i686 = "386";
        armv7l = "arm";
        armv6l = "arm";
        riscv64 = "riscv64";
        powerpc64le = "ppc64le";
        s390x = "s390x";
        loongarch64 = "loong64";
        mips64el = "mips64le";
      };
    in
    table.${cpu} or (throw "nix-layer: no Go architecture is known for system '${system}'; pass `architecture` explicitly");

  # Merges attribute sets left to right; later values win.
  mergeAll = foldl' (a: b: a // b) { };

  # Env lists ("NAME=value"): later entries replace earlier ones of the same
  # name in place (first position kept, as Docker does with inherited Env).
  mergeEnv =
    base: extra:
    let
      nameOf = e: head (match "([^=]*)=?.*" e);
      all = base ++ extra;
      last = foldl' (acc: e: acc // { ${nameOf e} = e; }) { } all;
      order = unique (map nameOf all);
    in
    map (n: last.${n}) order;

  # Top-layer specs ({ entries, rules }) merged left to right. An entry for a
  # path replaces an earlier entry for the same path; rules are concatenated.
  # Entries come out sorted by path, so the spec (and the image) does not
  # depend on the order in which fragments were written.
  mergeTopLayers =
    specs:
    let
      byPath = foldl' (acc: e: acc // { ${e.path} = e; }) { } (
        builtins.concatMap (spec: spec.entries or [ ]) specs
      );
    in
    {
      entries = map (p: byPath.${p}) (attrNames byPath);
      rules = builtins.concatMap (spec: spec.rules or [ ]) specs;
    };
}
