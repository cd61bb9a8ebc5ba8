# Package sets: the building blocks images and devShells are composed from.
#
# Every project that follows the infrastructure's nixpkgs gets the same store
# paths for the same set, so images built from the same sets share layers.
# Attribute names are checked against nixpkgs 26.05 (nodePackages is gone:
# typescript, typescript-language-server, prettier and eslint are top-level).
pkgs:
let
  py = pkgs.python312Packages;
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
    shadow # useradd, usermod (Dev Containers' updateRemoteUserUID)
    sudo # mkDevContainer installs it setuid
  ];

  # Nix tooling, for containers that run `nix develop`.
  nixTools = with pkgs; [
    nix
    direnv
    nix-direnv
  ];

  python = with pkgs; [ python312 ];
  pythonDev = [
    py.pip
    py.virtualenv
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
