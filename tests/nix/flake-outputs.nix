# flake.nix's outputs, evaluated with the fake nixpkgs input
# (fixtures/nixpkgs.nix). Each attribute is a check: true, or a string that
# says what was found instead.
let
  repo = ../..;
  flake = import (repo + "/flake.nix");
  fake = import ./fixtures/nixpkgs.nix;
  self = flake.outputs { inherit self; nixpkgs = fake; } // { outPath = repo; };

  linux = [ "x86_64-linux" "aarch64-linux" ];
  all = linux ++ [ "aarch64-darwin" ]; # x86_64-darwin: deprecated in nixpkgs 26.05
  names = builtins.attrNames;
  sorted = builtins.sort builtins.lessThan;
  expect = got: want: if got == want then true else "expected ${builtins.toJSON want}, got ${builtins.toJSON got}";
  forLinux = f: builtins.foldl' (acc: s: if acc != true then acc else f s) true linux;

  sets = [ "base" "devTools" "go" "goDev" "nixTools" "node" "nodeDev" "python" "pythonDev" "rust" "rustDev" ];
  images = [
    "example-go-runtime"
    "example-node-devcontainer"
    "example-node-runtime"
    "example-python-devcontainer"
    "example-python-runtime"
    "example-rust-runtime"
  ];
  drvName = p: (builtins.parseDrvName p.name).name;
in
{
  "nixpkgs input is nixos-26.05-small" = expect flake.inputs.nixpkgs.url "github:NixOS/nixpkgs/nixos-26.05-small";
  "no flake-utils input" = expect (names flake.inputs) [ "nixpkgs" ];

  "packageSets under legacyPackages, on the Linux systems only" = expect (names self.legacyPackages) (sorted linux);
  "no top-level packageSets (nix flake check warns on unknown outputs)" = expect (self ? packageSets) false;
  "only outputs nix flake check knows" = expect (builtins.filter (n: !(builtins.elem n [ "apps" "checks" "devShells" "formatter" "legacyPackages" "lib" "overlays" "packages" "templates" ])) (names (removeAttrs self [ "outPath" ]))) [ ];
  "packageSets has the 11 sets" = forLinux (s: expect (sorted (names self.legacyPackages.${s}.packageSets)) sets);
  "every set is a non-empty list of derivations" = forLinux (
    s:
    expect (builtins.all (n: let l = self.legacyPackages.${s}.packageSets.${n}; in builtins.isList l && l != [ ] && builtins.all (p: p.type or null == "derivation") l) sets) true
  );
  "nodeDev uses top-level node tools (no nodePackages)" = expect (map drvName self.legacyPackages.x86_64-linux.packageSets.nodeDev) [
    "bun" "typescript" "typescript-language-server" "prettier" "eslint"
  ];
  "base set as in the plan" = expect (map drvName self.legacyPackages.x86_64-linux.packageSets.base) [
    "bashInteractive" "coreutils" "findutils" "gnugrep" "gnused" "gawk" "cacert" "tzdata"
  ];
  "python is one interpreter environment with pip and virtualenv" = expect (
    let p = builtins.head self.legacyPackages.x86_64-linux.packageSets.python; in [ (builtins.length self.legacyPackages.x86_64-linux.packageSets.python) (map drvName p.packages) ]
  ) [ 1 [ "python3.12-pip" "python3.12-virtualenv" ] ];
  "devTools has what VS Code's server needs" = expect (
    builtins.all (n: builtins.elem n (map drvName self.legacyPackages.x86_64-linux.packageSets.devTools)) [ "gnutar" "gzip" "procps" "sudo" "git" ]
  ) true;

  "lib has the builders" = forLinux (
    s:
    expect (sorted (names self.lib.${s})) [
      "buildLayeredImage" "buildLayeredImageOCI" "familyCatalogue" "mkDevContainer" "mkRuntime" "mkUser" "pullImage" "streamLayeredImage"
    ]
  );
  "lib on the Linux systems only" = expect (names self.lib) (sorted linux);

  "packages: nix-layer, default, family-catalogue and the six example images" = forLinux (
    s: expect (sorted (names self.packages.${s})) (sorted ([ "default" "family-catalogue" "nix-layer" ] ++ images))
  );
  "nix-layer comes from nix/package.nix through overlays.default" =
    expect (builtins.baseNameOf self.packages.x86_64-linux.nix-layer.fromFile) "package.nix";
  "example images instantiate" = forLinux (
    s: expect (builtins.all (i: builtins.isString self.packages.${s}.${i}.drvPath) images) true
  );
  "example images are named under the registry, tag latest" = expect (map (i: "${self.packages.x86_64-linux.${i}.imageName}:${self.packages.x86_64-linux.${i}.imageTag}") images) (
    map (i: "ghcr.io/nix-layer/nix-layer/${i}:latest") images
  );
  "aarch64 images say arm64" = expect self.packages.aarch64-linux.example-python-runtime.drvAttrs.nixLayer.architecture "arm64";
  "images have the copy helpers" = expect (builtins.all (h: self.packages.x86_64-linux.example-python-runtime ? ${h}) [
    "copyToDockerDaemon" "copyToPodman" "copyToRegistry" "copyTo" "stream"
  ]) true;
  "devcontainers and runtimes use the shared strategy" = expect (map (i: self.packages.x86_64-linux.${i}.drvAttrs.nixLayer.strategy) images) (map (_: "shared") images);
  "devcontainers include the Nix DB, runtimes do not" = expect (map (i: self.packages.x86_64-linux.${i}.drvAttrs.nixLayer.includeNixDB) images) [
    false true false true false false
  ];
  "devcontainer pins nixpkgs in /etc/nix/registry.json" = expect (
    builtins.any (e: e.path == "/etc/nix/registry.json") self.packages.x86_64-linux.example-python-devcontainer.drvAttrs.nixLayer.topLayer.entries
  ) true;
  "nix-ld loader path per architecture" = expect (map (s: builtins.any (e: e.type == "symlink" && builtins.match "/lib(64)?/ld-linux.so" e.path != null) self.packages.${s}.example-python-devcontainer.drvAttrs.nixLayer.topLayer.entries) linux) [ true true ];

  # Before the first update run commits nix/family/<system>.json, images plan
  # with plain `shared` (no family file), not against a missing file.
  "without a committed catalogue, images plan without familyFile" = expect (
    map (i: self.packages.x86_64-linux.${i}.drvAttrs.nixLayer.familyFile != null) images
  ) (map (_: builtins.pathExists (repo + "/nix/family/x86_64-linux.json")) images);
  "apps on Linux" = forLinux (s: expect (sorted (names self.apps.${s})) [ "default" "nix-layer" ]);
  "apps run nix-layer" = expect (builtins.match ".*/bin/nix-layer" self.apps.x86_64-linux.default.program != null) true;

  "devShells on all systems" = expect (sorted (names self.devShells)) (sorted all);
  "devShells: default python node go rust" = expect (builtins.all (s: sorted (names self.devShells.${s}) == [ "default" "go" "node" "python" "rust" ]) all) true;
  "formatter on all systems" = expect (sorted (names self.formatter)) (sorted all);

  "templates" = expect (sorted (names self.templates)) [ "default" "go-project" "node-project" "python-project" "rust-project" ];
  "templates have a path with a flake.nix and a description" = expect (
    builtins.all (t: builtins.pathExists (self.templates.${t}.path + "/flake.nix") && builtins.isString self.templates.${t}.description) (names self.templates)
  ) true;
  "templates follow infra/nixpkgs" = expect (
    builtins.all (t: (import (self.templates.${t}.path + "/flake.nix")).inputs.nixpkgs.follows or null == "infra/nixpkgs") (names self.templates)
  ) true;

  # A bare `nix build` in a project made from a template builds packages.default.
  "templates have packages.default" = expect (
    builtins.filter (
      t:
      let
        o = (import (self.templates.${t}.path + "/flake.nix")).outputs { self = o; infra = self; nixpkgs = fake; };
      in
      !(builtins.all (s: o.packages.${s} ? default && o.packages.${s}.default.type or null == "derivation") linux)
    ) (names self.templates)
  ) [ ];

  "overlays: default and infra" = expect (sorted (names self.overlays)) [ "default" "infra" ];
  "checks on Linux" = forLinux (s: expect (names self.checks.${s} != [ ]) true);
}
