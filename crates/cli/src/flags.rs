//! Command-line arguments → the contract's inputs. Only field mapping:
//! defaults, limits and validation live in `nix-layer-contract`.

use nix_layer_contract::settings::{self, BuildFlags, GraphSource, PlanFlags, PlanInputs, Request, Settings};
use nix_layer_contract::Result;
use nix_layer_pipeline::BuildRequest;

use crate::args::{BuildArgs, GraphArgs, PlanArgs};

fn graph_source(g: &GraphArgs) -> Result<GraphSource> {
    GraphSource::from_flags(g.graph.clone(), g.graph_key.clone(), g.closure.clone(), g.nix_store.clone())
}

/// `--from-image`: a path as given, or a registry image fetched (once) into a local layout.
fn base_image(a: &BuildArgs) -> anyhow::Result<Option<String>> {
    let Some(arg) = a.from_image.as_ref().map(|p| p.display().to_string()) else { return Ok(None) };
    if !crate::pull::is_registry_reference(&arg) {
        return Ok(Some(arg));
    }
    let client = crate::pull::client(a.plain_http, a.creds.as_deref())?;
    let arch = a.arch.clone().unwrap_or_else(|| nix_layer_image::go_arch(std::env::consts::ARCH).to_owned());
    let platform = nix_layer_registry::platform("linux", &arch, a.variant.as_deref());
    let layout = crate::pull::fetch_base(&client, &arg, &platform, a.cache.as_deref())?;
    Ok(Some(layout.display().to_string()))
}

/// `nix-layer build`.
pub fn build_request(a: BuildArgs) -> anyhow::Result<BuildRequest> {
    Ok(settings::request_from_flags(build_flags(a)?)?)
}

/// `nix-layer push` and `load`: the image, which they send elsewhere (`-o` is not used).
pub fn image_request(a: BuildArgs) -> anyhow::Result<Request> {
    Ok(settings::image_from_flags(build_flags(a)?)?)
}

fn build_flags(a: BuildArgs) -> anyhow::Result<BuildFlags> {
    let from_image = base_image(&a)?;
    let (graph, settings) = if a.settings.is_some() {
        // A stream script's settings: only the flags given override them.
        let s = Settings {
            name: a.name,
            format: a.format,
            compression: a.compression,
            sbom: Some(a.sbom),
            ..Settings::default()
        };
        (None, s)
    } else {
        let config = a.config.as_deref().map(|p| settings::read_json_file(p, "config")).transpose()?;
        let top_layer =
            a.top_layer.as_deref().map(|p| settings::read_json_file(p, "top-layer spec")).transpose()?;
        let s = Settings {
            name: a.name,
            format: a.format,
            compression: a.compression,
            max_layers: Some(a.graph.max_layers),
            strategy: Some(a.graph.strategy.clone()),
            store_dir: Some(a.graph.store_dir.clone()),
            config,
            top_layer,
            contents: a.contents,
            from_image,
            architecture: a.arch,
            variant: a.variant,
            allow_host_files: Some(a.allow_host_files),
            sbom: Some(a.sbom),
            created: Some(a.created),
            mtime: Some(a.mtime),
            uid: Some(a.uid),
            gid: Some(a.gid),
            uname: Some(a.uname),
            gname: Some(a.gname),
            include_nix_db: Some(a.nix_db),
            include_store_paths: Some(!a.no_store_paths),
            ..Settings::default()
        };
        (Some(graph_source(&a.graph)?), s)
    };
    let mut settings = settings;
    for kv in &a.annotation {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                settings.annotations.insert(k.to_owned(), v.to_owned());
            }
            _ => anyhow::bail!("--annotation `{kv}`: expected KEY=VALUE"),
        }
    }
    Ok(BuildFlags {
        settings,
        settings_file: a.settings,
        graph,
        family: a.graph.family,
        roots: a.graph.root,
        jobs: a.jobs,
        cache: a.cache,
        output: a.output,
    })
}

/// `nix-layer plan`.
pub fn plan_inputs(a: &PlanArgs) -> Result<PlanInputs> {
    settings::plan_inputs(PlanFlags {
        graph: graph_source(&a.graph)?,
        store_dir: a.graph.store_dir.clone(),
        roots: a.graph.root.clone(),
        strategy: a.graph.strategy.clone(),
        max_layers: a.graph.max_layers,
        base_layers: a.base_layers,
        family: a.graph.family.clone(),
    })
}
