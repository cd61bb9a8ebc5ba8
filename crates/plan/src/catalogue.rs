//! The family catalogue: the closures of a family's members in one file, and
//! the history of which store names changed between its regenerations.
//!
//! ```json
//! { "nixLayerFamily": { "base": [ {"path": …, "narSize": …, "references": […]}, … ], … },
//!   "nixLayerHistory": { "regenerations": 12,
//!                        "changes": { "openssl": { "count": 4, "last": 12 }, … } } }
//! ```
//!
//! The weekly nixpkgs update regenerates it from the package sets' new
//! graphs and the previous catalogue ([`Catalogue::regenerate`]): a name
//! counts as changed when one of its paths is new and either its name
//! (version) is new or none of its references changed, so the libraries a
//! security fix patches are counted, not everything that merely depends on
//! them. The history keeps at most [`History::MAX_NAMES`] names. The
//! `shared` strategy reads it ([`History::volatility`]) to keep the
//! dependents of the libraries that change often apart from the stable bulk;
//! before any history exists it uses [`PRIOR`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix_layer_graph::Graph;
use nix_layer_store::{StoreDir, StorePath};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::shared::package_base_name;

/// The key of a catalogue's members.
pub const CATALOGUE_KEY: &str = "nixLayerFamily";
/// The key of a catalogue's update history.
pub const HISTORY_KEY: &str = "nixLayerHistory";

/// Libraries whose security fixes nixpkgs ships most often (openssl, curl,
/// glibc, zlib, libxml2, python), used until a catalogue has history. Each
/// entry is one library: the stems of its packages, in nixpkgs' names and
/// the library package names of distributions (one update changes all of
/// them). A store name matches a stem if its package name is the stem or
/// the stem followed by a digit or a dot (`libssl3`, `zlib1g`, `python3.12`).
pub const PRIOR: &[&[&str]] = &[
    &["openssl", "libssl"],
    &["curl", "libcurl"],
    &["glibc", "libc"],
    &["zlib"],
    &["libxml"],
    &["python3", "libpython3"],
];

/// Everything that can go wrong reading or writing a catalogue.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read family file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("family file {path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("member `{name}` of family file {path}: {source}")]
    Member { name: String, path: PathBuf, source: nix_layer_graph::Error },
    #[error("family file {path}: {source}")]
    Graph { path: PathBuf, source: nix_layer_graph::Error },
    #[error("family file {path}: `{HISTORY_KEY}` is malformed: {source}")]
    History { path: PathBuf, source: serde_json::Error },
    #[error("family member `{name}`: its graph is not a list of store paths (exportReferencesGraph)")]
    NotAGraph { name: String },
    #[error("nixLayer.family must map member names to exportReferencesGraph keys")]
    BadMembers,
    #[error("family member `{name}`: no exportReferencesGraph under `{key}`")]
    MissingGraph { name: String, key: String },
    #[error(transparent)]
    StoreDir(#[from] nix_layer_store::Error),
}

/// How often one store name changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameChanges {
    /// Regenerations in which it changed.
    pub count: u64,
    /// The regeneration in which it last changed.
    pub last: u64,
}

/// Which store names changed between a catalogue's regenerations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// How many times the catalogue was regenerated from a previous one.
    pub regenerations: u64,
    /// Package names (`openssl`, not `openssl-3.0.13`) that changed.
    pub changes: BTreeMap<String, NameChanges>,
}

impl History {
    /// The most names a history keeps: those that changed most often, then
    /// most recently.
    pub const MAX_NAMES: usize = 64;

    /// Records one regeneration from the members `old` to `new`.
    pub fn record(&mut self, old: &[(String, Graph)], new: &[(String, Graph)]) {
        self.regenerations += 1;
        let now = self.regenerations;
        for name in changed_names(old, new) {
            let e = self.changes.entry(name).or_insert(NameChanges { count: 0, last: now });
            e.count += 1;
            e.last = now;
        }
        if self.changes.len() > Self::MAX_NAMES {
            let mut ranked: Vec<(&String, &NameChanges)> = self.changes.iter().collect();
            ranked.sort_by(|a, b| (b.1.count, b.1.last, a.0).cmp(&(a.1.count, a.1.last, b.0)));
            let keep: BTreeSet<String> =
                ranked[..Self::MAX_NAMES].iter().map(|(n, _)| (*n).clone()).collect();
            self.changes.retain(|n, _| keep.contains(n));
        }
    }

    /// How volatile the package of a store name is: `None` if stable, else
    /// the library it belongs to (paths of one library change together:
    /// its [`PRIOR`] entry's first stem, or its package name) and a score,
    /// twice the times it changed plus 1 if it matches the prior. The prior
    /// alone decides until history exists; then history soon dominates.
    pub fn volatility(&self, store_name: &str) -> Option<(String, u64)> {
        let base = package_base_name(store_name);
        let seen = self.changes.get(base).map_or(0, |c| 2 * c.count);
        match prior_library(base) {
            Some(lib) => Some((lib.to_owned(), seen + 1)),
            None if seen > 0 => Some((base.to_owned(), seen)),
            None => None,
        }
    }

    /// Merges another history (several catalogue files): counts and
    /// regenerations are the larger of the two.
    pub fn merge(&mut self, other: &History) {
        self.regenerations = self.regenerations.max(other.regenerations);
        for (name, c) in &other.changes {
            let e = self.changes.entry(name.clone()).or_insert(*c);
            e.count = e.count.max(c.count);
            e.last = e.last.max(c.last);
        }
    }
}

/// The [`PRIOR`] library a package name belongs to, by its first stem.
fn prior_library(base: &str) -> Option<&'static str> {
    let matches = |stem: &str| {
        base.strip_prefix(stem)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    };
    PRIOR.iter().find(|stems| stems.iter().any(|s| matches(s))).map(|stems| stems[0])
}

/// Package names of `new` that changed since `old` by themselves (see the
/// module docs); names that are new to the family are additions, not
/// changes.
fn changed_names(old: &[(String, Graph)], new: &[(String, Graph)]) -> BTreeSet<String> {
    let paths = |members: &[(String, Graph)]| -> BTreeMap<StorePath, Vec<StorePath>> {
        let mut all = BTreeMap::new();
        for (_, g) in members {
            for info in g.infos() {
                all.entry(info.path.clone()).or_insert_with(|| info.references.clone());
            }
        }
        all
    };
    let (old, new) = (paths(old), paths(new));
    let old_names: BTreeSet<&str> = old.keys().map(|p| p.name()).collect();
    let old_bases: BTreeSet<&str> = old_names.iter().map(|n| package_base_name(n)).collect();
    let mut out = BTreeSet::new();
    for (p, refs) in &new {
        let base = package_base_name(p.name());
        if old.contains_key(p) || !old_bases.contains(base) {
            continue;
        }
        let renamed = !old_names.contains(p.name());
        let deps_unchanged = refs.iter().filter(|r| *r != p).all(|r| old.contains_key(r));
        if renamed || deps_unchanged {
            out.insert(base.to_owned());
        }
    }
    out
}

/// A family read from files: its members and the history of its catalogue.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub members: Vec<(String, Graph)>,
    pub history: History,
}

impl Catalogue {
    /// Reads family files: each is either one graph (any form `--graph`
    /// takes; the member is named after the file) or a catalogue. Their
    /// histories are merged.
    pub fn load(files: &[PathBuf], store_dir: &StoreDir) -> Result<Catalogue, CatalogueError> {
        let mut out = Catalogue::default();
        for f in files {
            let bytes =
                std::fs::read(f).map_err(|source| CatalogueError::Read { path: f.clone(), source })?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|source| CatalogueError::Json { path: f.clone(), source })?;
            match v.get(CATALOGUE_KEY).and_then(Value::as_object) {
                Some(members) => {
                    for (name, graph) in members {
                        let g = graph_of(graph, store_dir).map_err(|source| CatalogueError::Member {
                            name: name.clone(),
                            path: f.clone(),
                            source,
                        })?;
                        out.members.push((name.clone(), g));
                    }
                    if let Some(h) = v.get(HISTORY_KEY) {
                        let h: History = serde_json::from_value(h.clone())
                            .map_err(|source| CatalogueError::History { path: f.clone(), source })?;
                        out.history.merge(&h);
                    }
                }
                None => {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let g = Graph::from_json_slice(&bytes, store_dir, "graph")
                        .map_err(|source| CatalogueError::Graph { path: f.clone(), source })?;
                    out.members.push((name, g));
                }
            }
        }
        Ok(out)
    }

    /// The catalogue a `family-catalogue` derivation builds, from its
    /// structured attrs: `nixLayer.family` maps member names to the keys of
    /// their exportReferencesGraph; `nixLayer.previous`, if set, is the
    /// previous catalogue, whose history the new one continues.
    pub fn from_structured_attrs(attrs: &Value) -> Result<String, CatalogueError> {
        let members: BTreeMap<String, String> = match attrs.pointer("/nixLayer/family") {
            Some(f) => serde_json::from_value(f.clone()).map_err(|_| CatalogueError::BadMembers)?,
            None => BTreeMap::new(),
        };
        let mut graphs = BTreeMap::new();
        for (name, key) in members {
            let g = attrs
                .get(&key)
                .cloned()
                .ok_or_else(|| CatalogueError::MissingGraph { name: name.clone(), key })?;
            graphs.insert(name, g);
        }
        let previous = attrs.pointer("/nixLayer/previous").and_then(Value::as_str).map(Path::new);
        let store_dir = StoreDir::new(
            attrs.pointer("/nixLayer/storeDir").and_then(Value::as_str).unwrap_or("/nix/store"),
        )?;
        Catalogue::regenerate(&graphs, previous, &store_dir)
    }

    /// The catalogue of `members` (name → exportReferencesGraph JSON, as
    /// Nix writes it into structured attrs), continuing the history of
    /// `previous` if there is one.
    pub fn regenerate(
        members: &BTreeMap<String, Value>,
        previous: Option<&Path>,
        store_dir: &StoreDir,
    ) -> Result<String, CatalogueError> {
        let mut graphs = Vec::new();
        let mut catalogue = serde_json::Map::new();
        for (name, graph) in members {
            let nodes = graph.as_array().ok_or_else(|| CatalogueError::NotAGraph { name: name.clone() })?;
            // Only what planning reads, sorted by path.
            let mut nodes: Vec<Value> = nodes
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
            let nodes = Value::Array(nodes);
            let g = graph_of(&nodes, store_dir).map_err(|source| CatalogueError::Member {
                name: name.clone(),
                path: PathBuf::from("<structured attrs>"),
                source,
            })?;
            graphs.push((name.clone(), g));
            catalogue.insert(name.clone(), nodes);
        }
        let mut history = History::default();
        if let Some(prev) = previous {
            let old = Catalogue::load(&[prev.to_path_buf()], store_dir)?;
            history = old.history;
            history.record(&old.members, &graphs);
        }
        let doc = serde_json::json!({ CATALOGUE_KEY: catalogue, HISTORY_KEY: history });
        Ok(serde_json::to_string(&doc).expect("JSON values serialise") + "\n")
    }
}

fn graph_of(v: &Value, store_dir: &StoreDir) -> Result<Graph, nix_layer_graph::Error> {
    Graph::from_json_slice(&serde_json::to_vec(v).expect("JSON values serialise"), store_dir, "graph")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::graph;
    use nix_layer_graph::PathInfo;

    #[test]
    fn prior_matches_library_spellings() {
        let h = History::default();
        let cases = [
            ("openssl-3.0.13", "openssl"),
            ("openssl-3.0.13-bin", "openssl"),
            ("libssl3-3.0.19-1", "openssl"),
            ("zlib1g-1.2.13", "zlib"),
            ("python3.11-minimal-3.11.2", "python3"),
            ("libpython3.11-stdlib-3.11.2", "python3"),
            ("glibc-2.40-66", "glibc"),
            ("libc6+libgcc-s1-2.36-9", "glibc"),
            ("libcurl3-gnutls-7.88", "curl"),
            ("curl-8.9.1", "curl"),
            ("libxml2-2.13.4", "libxml"),
        ];
        for (name, lib) in cases {
            assert_eq!(h.volatility(name), Some((lib.to_owned(), 1)), "{name}");
        }
        for name in [
            "libssl-dev-3.0.19",
            "libcap2-2.66",
            "python3-pip-23.0",
            "libcom-err2-1.47",
            "bash-5.2",
            "zlibx-1",
        ] {
            assert_eq!(h.volatility(name), None, "{name}");
        }
        // History adds to the prior.
        let mut h = History::default();
        h.changes.insert("openssl".into(), NameChanges { count: 3, last: 3 });
        h.changes.insert("expat".into(), NameChanges { count: 1, last: 2 });
        assert_eq!(h.volatility("openssl-3.0.14"), Some(("openssl".to_owned(), 7)));
        assert_eq!(h.volatility("expat-2.6.2"), Some(("expat".to_owned(), 2)));
    }

    fn members(g: Graph) -> Vec<(String, Graph)> {
        vec![("m".to_owned(), g)]
    }

    #[test]
    fn history_counts_origins_not_cascades() {
        // lzma changes version; tool depends on it and only gets a new hash
        // (same name): lzma is counted, tool is not.
        let v1 =
            graph(&[("tool-1.0", &["liblzma-5.4"], 10), ("liblzma-5.4", &[], 10), ("bash-5.2", &[], 10)]);
        let v2 =
            graph(&[("tool-1.0", &["liblzma-5.6"], 10), ("liblzma-5.6", &[], 10), ("bash-5.2", &[], 10)]);
        // Then bash is patched in place: same name, new hash, no reference
        // changed.
        let patched =
            StoreDir::default().parse("/nix/store/00000000000000000000000000000000-bash-5.2").unwrap();
        let mut infos: Vec<PathInfo> =
            v2.infos().iter().filter(|i| i.path.name() != "bash-5.2").cloned().collect();
        infos.push(PathInfo::from_raw_references(patched, vec![], 10));
        let v3 = Graph::new(infos).unwrap();
        let mut h = History::default();
        h.record(&members(v1), &members(v2.clone()));
        assert_eq!(h.regenerations, 1);
        assert_eq!(h.changes.keys().collect::<Vec<_>>(), ["liblzma"]);
        h.record(&members(v2), &members(v3));
        assert_eq!(h.changes.keys().collect::<Vec<_>>(), ["bash", "liblzma"]);
        assert_eq!(h.changes["bash"], NameChanges { count: 1, last: 2 });
        assert_eq!(h.changes["liblzma"], NameChanges { count: 1, last: 1 });
        assert_eq!(h.volatility("liblzma-5.8"), Some(("liblzma".to_owned(), 2)));
        assert_eq!(h.volatility("tool-1.0"), None);
        // A name new to the family is an addition, not a change.
        let mut h2 = History::default();
        let v4 = graph(&[("new-tool-1", &[], 1)]);
        h2.record(&members(graph(&[("old-1", &[], 1)])), &members(v4));
        assert!(h2.changes.is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        let gen = |k: usize| {
            let names: Vec<String> = (0..100).map(|i| format!("lib{i}x-{k}.0")).collect();
            let nodes: Vec<(&str, &[&str], u64)> = names.iter().map(|n| (n.as_str(), &[][..], 1)).collect();
            members(graph(&nodes))
        };
        for k in 0..5 {
            h.record(&gen(k), &gen(k + 1));
            assert!(h.changes.len() <= History::MAX_NAMES, "{}", h.changes.len());
        }
        assert_eq!(h.regenerations, 5);
        assert_eq!(h.changes.len(), History::MAX_NAMES);
        // Ties keep the first names; a name that changes more often wins.
        assert!(h.changes.contains_key("lib0x"));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
    }

    #[test]
    fn structured_attrs_name_the_members_and_the_previous_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = graph(&[("app-1", &["zlib-1.3"], 5), ("zlib-1.3", &[], 7)]);
        let v2 = graph(&[("app-1", &["zlib-1.3.1"], 5), ("zlib-1.3.1", &[], 7)]);
        let attrs = |g: &Graph, previous: Option<&Path>| {
            let mut a = serde_json::json!({
                "nixLayer": { "mode": "family-catalogue", "family": { "base": "family-base" } },
                "family-base": node(g),
            });
            if let Some(p) = previous {
                a["nixLayer"]["previous"] = p.to_str().unwrap().into();
            }
            a
        };
        let old = dir.path().join("old.json");
        std::fs::write(&old, Catalogue::from_structured_attrs(&attrs(&v1, None)).unwrap()).unwrap();
        let new = Catalogue::from_structured_attrs(&attrs(&v2, Some(&old))).unwrap();
        let v: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v[CATALOGUE_KEY]["base"].as_array().unwrap().len(), 2);
        assert_eq!(v[HISTORY_KEY]["regenerations"], 1);
        assert_eq!(v[HISTORY_KEY]["changes"]["zlib"]["count"], 1);
        let mut bad = attrs(&v1, None);
        bad["nixLayer"]["family"]["dev"] = "family-dev".into();
        let e = Catalogue::from_structured_attrs(&bad).unwrap_err().to_string();
        assert_eq!(e, "family member `dev`: no exportReferencesGraph under `family-dev`");
        let missing = attrs(&v2, Some(&dir.path().join("nope.json")));
        let e = Catalogue::from_structured_attrs(&missing).unwrap_err().to_string();
        assert!(e.contains("cannot read family file") && e.contains("nope.json"), "{e}");
    }

    /// A graph as exportReferencesGraph writes it.
    fn node(g: &Graph) -> Value {
        Value::Array(
            g.infos()
                .iter()
                .map(|i| {
                    serde_json::json!({"path": i.path.as_str(), "narSize": i.nar_size, "narHash": "x",
                        "references": i.references.iter().map(|r| r.as_str()).collect::<Vec<_>>()})
                })
                .collect(),
        )
    }

    #[test]
    fn regenerate_continues_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let store = StoreDir::default();
        let v1 = graph(&[("app-1", &["libssl3-3.0"], 5), ("libssl3-3.0", &[], 7)]);
        let v2 = graph(&[("app-1", &["libssl3-3.1"], 5), ("libssl3-3.1", &[], 7)]);
        let first =
            Catalogue::regenerate(&BTreeMap::from([("base".into(), node(&v1))]), None, &store).unwrap();
        let path = dir.join("cat.json");
        std::fs::write(&path, &first).unwrap();
        let c = Catalogue::load(std::slice::from_ref(&path), &store).unwrap();
        assert_eq!(c.history, History::default());
        assert_eq!(c.members[0].1.len(), 2);
        let second =
            Catalogue::regenerate(&BTreeMap::from([("base".into(), node(&v2))]), Some(&path), &store)
                .unwrap();
        std::fs::write(&path, &second).unwrap();
        let c = Catalogue::load(std::slice::from_ref(&path), &store).unwrap();
        assert_eq!(c.history.regenerations, 1);
        assert_eq!(c.history.changes["libssl3"].count, 1);
        // Deterministic bytes.
        assert_eq!(
            Catalogue::regenerate(&BTreeMap::from([("base".into(), node(&v2))]), Some(&path), &store)
                .unwrap(),
            Catalogue::regenerate(&BTreeMap::from([("base".into(), node(&v2))]), Some(&path), &store)
                .unwrap()
        );
        std::fs::write(&path, "{\"nixLayerFamily\": {}, \"nixLayerHistory\": 3}").unwrap();
        let e = Catalogue::load(std::slice::from_ref(&path), &store).unwrap_err().to_string();
        assert!(e.contains("nixLayerHistory") && e.contains("cat.json"), "{e}");
    }
}
