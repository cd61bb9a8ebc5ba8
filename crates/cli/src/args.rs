//! Command-line arguments. Spellings of `build` and `plan` are a contract
//! shared with the flake wrapper and the docs; keep them stable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nix_layer_contract::contract;

const EXAMPLES: &str = "\
Examples:
  # A layered image of a closure, loaded into Docker
  nix-layer build --closure $(nix-store -qR ./result) --name hello:latest -o hello.tar
  docker load < hello.tar

  # Stream straight into Docker or Podman, no file
  nix-layer build --closure $(nix-store -qR ./result) --name hello -o - | docker load

  # An OCI layout with zstd layers, then push it
  nix-layer build --graph closure.json --name registry.example/hello:1 --format oci \\
      --compression zstd -o ./oci && skopeo copy oci:./oci:1 docker://registry.example/hello:1

  # Show the layer plan that nixpkgs' popularity split would make
  nix-layer plan --closure $(nix-store -qR ./result) --max-layers 10 --json";

#[derive(Parser)]
#[command(name = "nix-layer", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build an image from a closure.
    #[command(after_help = EXAMPLES)]
    Build(Box<BuildArgs>),
    /// Print the layer plan for a closure (which store paths go in which layer).
    Plan(PlanArgs),
    /// Report how much layers are shared between images or plans.
    Sharing(SharingArgs),
    /// Builder entry point for the Nix wrapper: reads `.attrs.json` (structured attrs).
    #[command(hide = true)]
    NixBuild(NixBuildArgs),
    /// Check every blob of a layer cache and drop corrupt entries.
    CacheVerify(CacheArgs),
    /// The Nix library ↔ binary contract (image arguments, defaults, limits, version).
    Contract(ContractArgs),
    /// Write an SBOM (CycloneDX or SPDX JSON) of a closure: every store path and its references.
    Sbom(Box<crate::sbom::SbomArgs>),
    /// Combine per-platform images of an OCI layout into one multi-platform index.
    Index(IndexArgs),
    /// Build an image straight into Docker, Podman or containerd, with no archive on disk.
    #[command(
        mut_arg("output", |a| a.hide(true)),
        mut_arg("format", |a| a.hide(true)),
        mut_arg("compression", |a| a.hide(true))
    )]
    Load(Box<crate::load::LoadArgs>),
    /// Push an image (built from a closure, or from an OCI layout) to a registry, sending
    /// only what it lacks.
    Push(Box<crate::push::PushArgs>),
    /// Write one tag for per-platform images already in a registry (an OCI index or a
    /// Docker manifest list).
    PushIndex(crate::push::PushIndexArgs),
    /// Write a new cosign key pair (PREFIX.key, encrypted; PREFIX.pub).
    Keygen(crate::sign::KeygenArgs),
    /// Sign an image in a registry with a cosign key (read by cosign, podman, skopeo).
    Sign(crate::sign::SignArgs),
    /// Check that an image's manifest digest is signed by a key; non-zero if not.
    Verify(crate::sign::VerifyArgs),
    /// Write a lock file of a registry image for the flake's `pullImage { lockFile; }`: the
    /// manifests of the platforms asked for, and each blob's digest, size and media type.
    LockImage(crate::fetch::LockImageArgs),
    /// Builder of the flake's pullImage: one manifest or blob by digest, verified.
    #[command(hide = true)]
    FetchBlob(crate::fetch::FetchBlobArgs),
    /// Builder of the flake's pullImage: an OCI layout of fetched blobs.
    #[command(hide = true)]
    AssembleLayout(crate::fetch::AssembleLayoutArgs),
}

#[derive(Args)]
pub struct IndexArgs {
    /// The OCI layout holding the per-platform images (built with --arch into it).
    #[arg(long, value_name = "DIR")]
    pub layout: PathBuf,
    /// The name the index gets in the layout, e.g. registry.example/app:1.
    #[arg(long, value_name = "NAME:TAG")]
    pub name: String,
    /// Write a Docker manifest list instead of an OCI image index.
    #[arg(long)]
    pub docker: bool,
    /// The per-platform images, by the names they have in the layout.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args, Clone)]
pub struct GraphArgs {
    /// Reference graph JSON: exportReferencesGraph output, a structured-attrs
    /// `.attrs.json`, or `nix path-info --json` output.
    #[arg(long, value_name = "FILE", conflicts_with = "closure")]
    pub graph: Option<PathBuf>,
    /// Key of the graph inside a structured-attrs file.
    #[arg(long, value_name = "KEY", default_value = contract::GRAPH_KEY)]
    pub graph_key: String,
    /// Store paths of a closed set, e.g. `$(nix-store -qR ROOT)`; references are read from Nix in one call.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub closure: Vec<String>,
    /// The image's roots (default: every path that nothing else references).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub root: Vec<String>,
    /// The store directory.
    #[arg(long, value_name = "DIR", default_value = contract::DEFAULT_STORE_DIR)]
    pub store_dir: String,
    /// The nix-store binary used with --closure.
    #[arg(long, value_name = "BIN", default_value = "nix-store")]
    pub nix_store: PathBuf,
    /// Most layers in the image (2 to 125), counting the base image's and the top layer.
    #[arg(long, value_name = "N", default_value_t = contract::DEFAULT_MAX_LAYERS)]
    pub max_layers: usize,
    /// Layering strategy: popularity (nixpkgs' default until 2024), auto (nixpkgs' auto-layer) or shared (nix-layer's, for cross-image sharing).
    #[arg(long, value_name = "NAME", default_value = contract::DEFAULT_STRATEGY_NAME)]
    pub strategy: String,
    /// Graphs of sibling closures (package sets or other images) that `shared` plans against, so
    /// every image built with the same family gets identical layers for what it shares.
    #[arg(long, value_name = "GRAPH", num_args = 1..)]
    pub family: Vec<PathBuf>,
}

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub graph: GraphArgs,
    /// Image name with optional tag (default tag: a hash of the image).
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,
    /// Output format.
    #[arg(long, value_name = "FORMAT", value_parser = ["docker-archive", "oci", "oci-archive"])]
    pub format: Option<String>,
    /// Layer compression for oci and oci-archive: none, gzip or zstd, with an optional level (gzip:9 of 1-12, zstd:19 of 1-19); default gzip (docker-archive layers are always uncompressed).
    #[arg(long, value_name = "ALGO[:LEVEL]", value_parser = compression_spec)]
    pub compression: Option<String>,
    /// Image config JSON (Cmd, Entrypoint, Env, User, WorkingDir, ExposedPorts, Volumes, Labels, StopSignal).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store paths merged like symlinkJoin into the top layer.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub contents: Vec<String>,
    /// Top-layer spec JSON: directories, symlinks, copies (setuid allowed), text files, owner rules.
    #[arg(long, value_name = "FILE")]
    pub top_layer: Option<PathBuf>,
    /// Let the top-layer spec's `copy` entries read files outside the Nix store.
    #[arg(long)]
    pub allow_host_files: bool,
    /// Base image: a docker-archive, an OCI layout, or a registry image pinned by digest
    /// (`registry.example/base@sha256:…`, fetched once and kept); its layers go first.
    #[arg(long, value_name = "PATH")]
    pub from_image: Option<PathBuf>,
    /// Architecture in Go's spelling (default: this machine's).
    #[arg(long, value_name = "GOARCH")]
    pub arch: Option<String>,
    /// CPU variant in the config and the index's platform (`v8` for arm64, `v7` for arm).
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// A manifest annotation, e.g. org.opencontainers.image.source=https://… (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Creation time: RFC 3339, seconds since the epoch, or `now`.
    #[arg(long, value_name = "TIME", default_value = contract::DEFAULT_TIME)]
    pub created: String,
    /// Modification time of store-layer entries.
    #[arg(long, value_name = "TIME", default_value = contract::DEFAULT_TIME)]
    pub mtime: String,
    /// Owner of store-layer entries.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub uid: u64,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gid: u64,
    #[arg(long, value_name = "NAME", default_value = contract::DEFAULT_USER)]
    pub uname: String,
    #[arg(long, value_name = "NAME", default_value = contract::DEFAULT_USER)]
    pub gname: String,
    /// Register the whole closure in a Nix database at /nix/var/nix/db in the top layer.
    #[arg(long)]
    pub nix_db: bool,
    /// Also write a CycloneDX SBOM of the closure: IMAGE.cdx.json beside an archive, a
    /// referrer of the image in an OCI layout (push: a referrer in the registry).
    #[arg(long)]
    pub sbom: bool,
    /// Leave store paths out: the image holds only the top layer.
    #[arg(long)]
    pub no_store_paths: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Layer cache directory: a rebuild writes only layers it has not seen.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Speak plain HTTP to registries (--from-image REF@sha256:…, push); never implied.
    #[arg(long)]
    pub plain_http: bool,
    /// Registry credentials `user:password` (default: Docker/Podman auth files, credential
    /// helpers, and GITHUB_TOKEN for ghcr.io).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Build settings written by the Nix wrapper (a stream script or JSON); -o, --name, --format,
    /// --compression, --jobs and --cache given here override them.
    #[arg(long, value_name = "FILE", hide = true)]
    pub settings: Option<PathBuf>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the summary line even when stderr is not a terminal.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Where to write the image; `-` streams it to stdout.
    #[arg(short = 'o', long = "output", value_name = "PATH|-")]
    pub output: Option<String>,
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub graph: GraphArgs,
    /// Layers of a base image to count against --max-layers.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub base_layers: usize,
    /// Print the plan as JSON: a list of layers, each a list of store paths, bottom first.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SharingArgs {
    /// Images (OCI layout directories or docker-archives) or, with --plan, graph JSON files.
    #[arg(required = true, value_name = "IMAGE")]
    pub inputs: Vec<PathBuf>,
    /// Treat inputs as reference graphs and compare the layer plans of a strategy.
    #[arg(long)]
    pub plan: bool,
    /// Strategy for --plan.
    #[arg(long, value_name = "NAME", default_value = contract::DEFAULT_STRATEGY_NAME)]
    pub strategy: String,
    /// --max-layers for --plan.
    #[arg(long, value_name = "N", default_value_t = contract::DEFAULT_MAX_LAYERS)]
    pub max_layers: usize,
    /// Store directory for --plan.
    #[arg(long, value_name = "DIR", default_value = contract::DEFAULT_STORE_DIR)]
    pub store_dir: String,
    /// Family graphs for --plan with --strategy shared (see `build --family`).
    #[arg(long, value_name = "GRAPH", num_args = 1..)]
    pub family: Vec<PathBuf>,
    /// Report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NixBuildArgs {
    /// The structured-attrs file (default: $NIX_ATTRS_JSON_FILE or ./.attrs.json).
    pub attrs: Option<PathBuf>,
}

#[derive(Args)]
pub struct ContractArgs {
    /// Print the contract as JSON (what nix/contract.json holds).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CacheArgs {
    /// The cache directory.
    pub dir: PathBuf,
}

/// Checks `--compression` early (codec and level), keeping the text for the settings.
fn compression_spec(s: &str) -> Result<String, String> {
    s.parse::<nix_layer_blob::Compression>().map(|_| s.to_owned()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
