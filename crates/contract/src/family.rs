//! Family members from graph files and family catalogues.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use nix_layer_graph::Graph;
use nix_layer_store::StoreDir;
use serde_json::Value;

use crate::contract::CATALOGUE_KEY;
use crate::error::{json_err, Context, Error, Result};

/// Family members from graph files, named by file name.
///
/// A file is either one graph (any form `--graph` takes; the member is named
/// after the file) or a catalogue of several, `{"nixLayerFamily": {"NAME":
/// GRAPH, …}}`, as the flake's `family-catalogue` writes it.
pub fn load_family(files: &[PathBuf], store_dir: &StoreDir) -> Result<Vec<(String, Graph)>> {
    let mut members = Vec::new();
    for f in files {
        let bytes =
            fs::read(f).map_err(|source| Error::Read { what: "family file", path: f.clone(), source })?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(json_err(format!("family file {}", f.display())))?;
        match v.get(CATALOGUE_KEY).and_then(Value::as_object) {
            Some(catalogue) => {
                for (name, graph) in catalogue {
                    let g =
                        Graph::from_json_slice(&serde_json::to_vec(graph).expect("JSON"), store_dir, "graph")
                            .context(|| format!("member `{name}` of family file {}", f.display()))?;
                    members.push((name.clone(), g));
                }
            }
            None => {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                members.push((name, Graph::from_json_file(f, store_dir, "graph")?));
            }
        }
    }
    Ok(members)
}

/// A family catalogue from structured attrs: every member's
/// exportReferencesGraph, reduced to what planning reads, sorted by path.
pub fn family_catalogue(attrs: &Value, members: &BTreeMap<String, String>) -> Result<String> {
    let mut catalogue = serde_json::Map::new();
    for (name, key) in members {
        let Some(graph) = attrs.get(key).and_then(Value::as_array) else {
            return Err(Error::Invalid(format!(
                "family member `{name}`: no exportReferencesGraph under `{key}`"
            )));
        };
        let mut nodes: Vec<Value> = graph
            .iter()
            .map(|n| {
                serde_json::json!({
                    "path": n.get("path"),
                    "narSize": n.get("narSize"),
                    "references": n.get("references"),
                })
            })
            .collect();
        nodes.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        catalogue.insert(name.clone(), Value::Array(nodes));
    }
    Ok(serde_json::to_string(&serde_json::json!({ CATALOGUE_KEY: catalogue })).expect("JSON") + "\n")
}
