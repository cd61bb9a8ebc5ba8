//! `nix-layer load`: arguments only; `nix-layer-load` builds the image straight into the
//! engine's loader.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use nix_layer_load::{Engine, Target};

use crate::args::BuildArgs;

#[derive(Args)]
pub struct LoadArgs {
    /// The engine to load into.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: EngineArg,
    /// containerd namespace (default `default`; Kubernetes, kind and k3s use `k8s.io`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The engine's socket: docker's --host, podman's --url, ctr's --address
    /// (k3s: /run/k3s/containerd/containerd.sock).
    #[arg(long, value_name = "SOCK")]
    pub address: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Docker,
    Podman,
    Containerd,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Docker => Engine::Docker,
            EngineArg::Podman => Engine::Podman,
            EngineArg::Containerd => Engine::Containerd,
        }
    }
}

pub fn run(a: LoadArgs, show_bar: bool, show_summary: bool) -> Result<()> {
    if a.build.output.is_some() {
        bail!("load writes no file: -o/--output is not used (use `nix-layer build -o` for an archive)");
    }
    if a.namespace.is_some() && a.engine != EngineArg::Containerd {
        bail!("--namespace is for --engine containerd only");
    }
    if a.build.format.as_deref().is_some_and(|f| f != "docker-archive") {
        bail!("load streams a docker-archive into the engine: --format is not used");
    }
    let target = Target { engine: a.engine.into(), address: a.address, namespace: a.namespace };
    let image = crate::flags::image_request(a.build)?.image;
    let started = Instant::now();
    let bar = crate::progress::Bar::new(show_bar);
    let loaded = nix_layer_load::load(&image, &target, &bar)?;
    if show_summary {
        eprintln!(
            "loaded {}: sent {} bytes to {} ({} layers already there), {} layers in {:.2} s",
            loaded.summary.image,
            loaded.sent,
            target.engine.name(),
            loaded.skipped,
            loaded.summary.layers.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
