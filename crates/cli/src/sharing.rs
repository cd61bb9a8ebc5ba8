//! `nix-layer sharing`: how much of a family of images is stored once.
//!
//! A layer's identity is its digest (for images) or its ordered path list
//! (for plans, which fixes its bytes). Images are compared in the order
//! given: each one after the first is "pulled onto a host holding the one
//! before it", which is what a family like runtime ⊂ devcontainer ⊂ xl, or an
//! image and its update, asks.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use nix_layer_graph::Graph;
use nix_layer_plan::sharing::{self, ImageLayers};
use nix_layer_store::StoreDir;
use serde_json::json;

use crate::args::SharingArgs;
use crate::progress::human_bytes;

pub fn run(a: SharingArgs) -> Result<()> {
    let mut path_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut images = Vec::new();
    let store_dir = StoreDir::new(&a.store_dir)?;
    let family = nix_layer_contract::family::family(&a.family, &store_dir, vec![])?;
    for input in &a.inputs {
        let name = input.display().to_string();
        let image = if a.plan {
            let graph = Graph::from_json_file(input, &store_dir, "graph")?;
            let budget = nix_layer_plan::store_layer_budget(a.max_layers, 0)?;
            let plan = match &family {
                Some(f) => nix_layer_plan::plan_with_family(&graph, a.strategy.parse()?, budget, f)?,
                None => nix_layer_plan::plan(&graph, a.strategy.parse()?, budget)?,
            };
            for i in 0..graph.len() {
                let info = graph.info(i);
                path_bytes.insert(info.path.to_string(), info.nar_size);
            }
            sharing::plan_layers(&name, &plan, &graph)
        } else {
            image_layers(&name, input, &mut path_bytes)?
        };
        images.push(image);
    }
    let bytes_of = |p: &str| path_bytes.get(p).copied().unwrap_or(0);
    let family = sharing::family_report(&images, &bytes_of);
    let pulls: Vec<_> = images
        .windows(2)
        .map(|w| {
            let pulled = sharing::pull_bytes(&w[0], &w[1]);
            let added = sharing::added_path_bytes(&w[0], &w[1], &bytes_of);
            (w[0].name.clone(), w[1].name.clone(), pulled, added)
        })
        .collect();
    if a.json {
        let v = json!({
            "images": images.iter().map(|i| &i.name).collect::<Vec<_>>(),
            "totalImageBytes": family.total_image_bytes,
            "uniqueClosureBytes": family.unique_closure_bytes,
            "storedBytes": family.stored_bytes,
            "efficiency": family.efficiency,
            "pulls": pulls.iter().map(|(h, w, p, ad)| json!({
                "have": h, "want": w, "pullBytes": p, "addedPathBytes": ad,
                "ratio": if *ad == 0 { serde_json::Value::Null } else { json!(*p as f64 / *ad as f64) },
            })).collect::<Vec<_>>(),
        });
        return crate::print_report(&(serde_json::to_string_pretty(&v)? + "\n"));
    }
    use std::fmt::Write;
    let mut text = String::new();
    writeln!(text, "images:               {}", images.len())?;
    writeln!(text, "total image bytes:    {}", human_bytes(family.total_image_bytes))?;
    writeln!(text, "unique closure bytes: {}", human_bytes(family.unique_closure_bytes))?;
    writeln!(text, "stored bytes:         {}", human_bytes(family.stored_bytes))?;
    writeln!(text, "efficiency E:         {:.3}", family.efficiency)?;
    for (have, want, pulled, added) in pulls {
        let ratio =
            if added == 0 { "n/a".to_owned() } else { format!("{:.2}×", pulled as f64 / added as f64) };
        let (pulled, added) = (human_bytes(pulled), human_bytes(added));
        writeln!(text, "{want} onto {have}: pulls {pulled} for {added} of new paths ({ratio})")?;
    }
    crate::print_report(&text)
}

/// Reads an image's layers: digest, size, and the store paths each holds
/// (with their file bytes, standing in for NAR sizes).
fn image_layers(name: &str, path: &Path, path_bytes: &mut BTreeMap<String, u64>) -> Result<ImageLayers> {
    let image = nix_layer_image::BaseImage::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let mut layers = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let mut paths: BTreeMap<String, u64> = BTreeMap::new();
        let size = image.for_each_entry(i, &mut |entry_path: &str, size: u64| {
            if let Some(p) = store_path_of(entry_path) {
                *paths.entry(p).or_default() += size;
            }
        })?;
        for (p, b) in &paths {
            path_bytes.insert(p.clone(), *b);
        }
        layers.push(sharing::LayerRef {
            id: layer.diff_id.to_string(),
            bytes: size,
            paths: paths.into_keys().collect(),
        });
    }
    Ok(ImageLayers { name: name.to_owned(), layers })
}

/// `/nix/store/<hash>-name/…` or `nix/store/…` → `/nix/store/<hash>-name`.
fn store_path_of(entry: &str) -> Option<String> {
    let rest = entry.trim_start_matches("./").trim_start_matches('/').strip_prefix("nix/store/")?;
    let base = rest.split('/').next().filter(|b| b.len() > 33)?;
    Some(format!("/nix/store/{base}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_store_path_of_an_entry() {
        let p = "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-hello";
        assert_eq!(store_path_of(&format!("{p}/bin/hello")).as_deref(), Some(p));
        assert_eq!(store_path_of(&p[1..]).as_deref(), Some(p));
        assert_eq!(store_path_of("/nix/store/"), None);
        assert_eq!(store_path_of("etc/passwd"), None);
    }
}
