# Package sets: the building blocks images and devShells are composed from.
#
# Every project that follows the infrastructure's nixpkgs gets the same store
# paths for the same set, so images built from the same sets share layers.
# Attribute names are checked against nixpkgs 26.05 (nodePackages is gone:
# typescript, typescript-language-server, prettier and eslint are top-level).
pkgs:
let
  # One interpreter with pip and virtualenv in its environment, so that
  # `python3 -m pip` and `python3 -m venv` / `virtualenv` work (separate
  # pip and virtualenv packages next to a bare python312 find no modules).
  # Runtime and dev images share it, so it is one set of layers.
  python = pkgs.python312.withPackages (ps: [
    ps.pip
    ps.virtualenv
  ]);
in
{
  # Foundation, in every image.
  base = with pkgs; [
    bashInteractive
    coreutils
    findutils
    gnugrep
    gnused
    gawk
    cacert # TLS certificates
    tzdata # time zones
  ];

  # Development tools, for devcontainers. gnutar, gzip, procps and which are
  # what VS Code's server needs to unpack and manage itself.
  devTools = with pkgs; [
    git
    curl
    jq
    ripgrep
    fd
    fzf
    bat
    less
    openssh
    gnutar
    gzip
    procps
    which
    shadow # useradd, usermod, … (features and users, under sudo)
    sudo # mkDevContainer installs it setuid
  ];

  # Nix tooling, for containers that run `nix develop`.
  nixTools = with pkgs; [
    nix
    direnv
    nix-direnv
  ];

  python = [ python ];
  pythonDev = [
    pkgs.uv
    pkgs.ruff
    pkgs.pyright
  ];

  node = with pkgs; [ nodejs_22 ];
  nodeDev = with pkgs; [
    bun
    typescript
    typescript-language-server
    prettier
    eslint
  ];

  go = with pkgs; [ go ];
  goDev = with pkgs; [
    gopls
    golangci-lint
  ];

  rust = with pkgs; [
    rustc
    cargo
  ];
  rustDev = with pkgs; [
    rust-analyzer
    clippy
    rustfmt
  ];
}
