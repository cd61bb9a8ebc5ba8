//! `nix-layer sbom`: a CycloneDX or SPDX document of a closure, the same
//! one the build writes next to an image, for closures built elsewhere.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use nix_layer_image::{ImageRef, Timestamp};
use nix_layer_sbom::{Format, Image, Sbom, SbomTime};
use nix_layer_store::StoreDir;

use crate::args::{GraphArgs, PlanArgs};

#[derive(Args)]
// GraphArgs' layering options mean nothing here.
#[command(mut_arg("max_layers", |a| a.hide(true)), mut_arg("strategy", |a| a.hide(true)))]
#[command(mut_arg("family", |a| a.hide(true)))]
pub struct SbomArgs {
    #[command(flatten)]
    pub graph: GraphArgs,
    /// Document format: CycloneDX 1.5 JSON or SPDX 2.3 JSON.
    #[arg(long, value_name = "FORMAT", value_parser = ["cyclonedx", "spdx"], default_value = "cyclonedx")]
    pub format: String,
    /// The image the document describes (default: name and version of the first root).
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,
    /// The image's creation time, the document's timestamp: RFC 3339, seconds since the epoch, or `now`.
    #[arg(long, value_name = "TIME", default_value = "1970-01-01T00:00:01Z")]
    pub created: String,
    /// The image manifest's digest (sha256:…); adds a pkg:oci purl for the image.
    #[arg(long, value_name = "DIGEST")]
    pub image_digest: Option<String>,
    /// Architecture in Go's spelling, for the image's purl.
    #[arg(long, value_name = "GOARCH")]
    pub arch: Option<String>,
    /// Where to write the document; `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "PATH|-")]
    pub output: String,
}

pub fn run(a: SbomArgs) -> Result<()> {
    let format: Format = a.format.parse()?;
    // `plan`'s loading: the graph from --graph or --closure, cut to --root.
    let plan_args = PlanArgs { graph: a.graph.clone(), base_layers: 0, json: false };
    let graph = crate::flags::plan_inputs(&plan_args)?.graph;
    let store_dir = StoreDir::new(&a.graph.store_dir)?;
    let roots = a.graph.root.iter().map(|r| store_dir.parse(r)).collect::<Result<Vec<_>, _>>()?;
    let (name, tag) = match &a.name {
        Some(n) => ImageRef::split(n)?,
        None => {
            let mut candidates: Vec<_> = if roots.is_empty() {
                graph.roots().into_iter().map(|i| graph.info(i).path.clone()).collect()
            } else {
                roots.clone()
            };
            candidates.sort();
            let first = candidates.first().context("the closure is empty; nothing to describe")?;
            let parsed = nix_layer_sbom::parse_store_name(first.name());
            (parsed.name.to_owned(), (!parsed.version.is_empty()).then(|| parsed.version.to_owned()))
        }
    };
    // SPDX wants UTC to the second; the same instant as the image's `created`.
    let created = Timestamp::parse(&a.created).map_err(|e| anyhow::anyhow!("--created: {e}"))?;
    let image = Image {
        name,
        tag,
        created: SbomTime::parse(&Timestamp::from_epoch(created.epoch).map_err(anyhow::Error::msg)?.rfc3339)?,
        digest: a.image_digest,
        architecture: a.arch,
    };
    let sbom = Sbom::new(&graph, (!roots.is_empty()).then_some(roots.as_slice()), image)?;
    if a.output == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&sbom.to_bytes(format)).and_then(|()| out.flush()).context("cannot write to stdout")?;
    } else {
        sbom.write(format, Path::new(&a.output))?;
    }
    Ok(())
}
