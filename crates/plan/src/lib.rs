//! Layering strategies: how the store paths of a closure are split into at
//! most `budget` image layers, and metrics of how well the layers of several
//! images are shared.
//!
//! - [`Strategy::Popularity`] and [`Strategy::Auto`] reproduce nixpkgs'
//!   `buildLayeredImage` layerings exactly (the old default, and auto-layer,
//!   the current one), so an image built by nix-layer can share layers with,
//!   or be compared against, one built by nixpkgs.
//! - [`Strategy::Shared`] is nix-layer's own: it aims at identical layers for
//!   the paths that different images have in common (see [`shared`]).
//!
//! Every plan holds every path exactly once in non-empty layers and never
//! more layers than the budget (nixpkgs once lost paths past its limit,
//! #78744): [`plan`] checks this before returning. Plans depend only on the
//! graph, never on hash-map order.

mod auto;
mod bits;
pub mod catalogue;
pub mod family;
mod popularity;
pub mod shared;
pub mod sharing;

use std::fmt;
use std::str::FromStr;

use nix_layer_graph::Graph;
use nix_layer_store::StorePath;

pub use catalogue::{Catalogue, CatalogueError, History};
pub use family::{plan_shared_with_family, plan_with_family, Family};
pub use popularity::popularity_order;
pub use shared::{plan_shared, SharedOptions};

/// Everything that can go wrong when planning layers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown layering strategy `{0}`; valid strategies are: popularity, auto, shared")]
    UnknownStrategy(String),
    #[error("max-layers must be at least 2 (one store layer and the top layer), got {0}")]
    TooFewLayers(usize),
    #[error(
        "max-layers {max_layers} leaves no layer for the store: the base image uses {base_layers} \
         layer(s) and the top layer takes 1"
    )]
    NoStoreLayers { max_layers: usize, base_layers: usize },
    #[error("the layer budget must be at least 1")]
    ZeroBudget,
    #[error("the family's closures disagree about a store path: {0}")]
    InconsistentFamily(String),
    #[error("internal error, the plan is wrong: {0}")]
    BadPlan(String),
}

/// A layering strategy, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// nixpkgs' `referencesByPopularity` split (default before late 2024).
    Popularity,
    /// nixpkgs' auto-layer (`pkgs/build-support/docker/auto-layer.py`).
    Auto,
    /// nix-layer's cross-image sharing strategy ([`shared`]).
    Shared,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Popularity, Strategy::Auto, Strategy::Shared];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Popularity => "popularity",
            Strategy::Auto => "auto",
            Strategy::Shared => "shared",
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| Error::UnknownStrategy(s.to_owned()))
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Store layers, bottom first; each layer's paths in the order they are
/// written. Serialises as a JSON list of lists of path strings, the format
/// of nixpkgs' layering scripts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Plan {
    pub layers: Vec<Vec<StorePath>>,
}

impl Plan {
    /// Checks that the plan holds every path of `graph` exactly once, has no
    /// empty layer and at most `budget` layers.
    pub fn validate(&self, graph: &Graph, budget: usize) -> Result<(), Error> {
        if self.layers.len() > budget {
            return Err(Error::BadPlan(format!("{} layers for a budget of {budget}", self.layers.len())));
        }
        let mut seen = vec![false; graph.len()];
        for (k, layer) in self.layers.iter().enumerate() {
            if layer.is_empty() {
                return Err(Error::BadPlan(format!("layer {k} is empty")));
            }
            for p in layer {
                let i =
                    graph.index_of(p).ok_or_else(|| Error::BadPlan(format!("{p} is not in the graph")))?;
                if std::mem::replace(&mut seen[i], true) {
                    return Err(Error::BadPlan(format!("{p} is in more than one layer")));
                }
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(Error::BadPlan(format!("{} is in no layer", graph.info(i).path)));
        }
        Ok(())
    }

    fn from_indices(graph: &Graph, layers: Vec<Vec<usize>>) -> Plan {
        Plan {
            layers: layers
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(|l| l.into_iter().map(|i| graph.info(i).path.clone()).collect())
                .collect(),
        }
    }
}

/// How many store layers an image may have: `max_layers` minus the top
/// (customisation) layer minus the layers of the base image.
pub fn store_layer_budget(max_layers: usize, base_layers: usize) -> Result<usize, Error> {
    if max_layers < 2 {
        return Err(Error::TooFewLayers(max_layers));
    }
    match max_layers - 1 {
        room if room > base_layers => Ok(room - base_layers),
        _ => Err(Error::NoStoreLayers { max_layers, base_layers }),
    }
}

/// Splits the paths of `graph` into at most `budget` layers with `strategy`.
pub fn plan(graph: &Graph, strategy: Strategy, budget: usize) -> Result<Plan, Error> {
    if budget == 0 {
        return Err(Error::ZeroBudget);
    }
    let plan = match strategy {
        Strategy::Popularity => popularity::plan(graph, budget)?,
        Strategy::Auto => auto::plan(graph, budget),
        Strategy::Shared => plan_shared(graph, budget, &SharedOptions::default())?,
    };
    plan.validate(graph, budget)?;
    Ok(plan)
}

/// nixpkgs' sort key `path_key` of auto-layer: `hash, name = path.split("-", 1)`
/// on the full path string, compared as `(name, hash)`.
pub(crate) fn path_key(p: &str) -> (&str, &str) {
    match p.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => ("", p),
    }
}

/// Sorts each layer's paths by (name, hash) and the layers by the size of
/// their closure, as auto-layer does; its ties fall in hash-random set
/// order, ours by the layer's sorted path list.
pub(crate) fn layers_by_closure_size(graph: &Graph, desc: &bits::BitMatrix, layers: Vec<Vec<usize>>) -> Plan {
    Plan::from_indices(graph, order_by_closure_size(graph, desc, layers))
}

/// The order of [`layers_by_closure_size`], on indices.
pub(crate) fn order_by_closure_size(
    graph: &Graph,
    desc: &bits::BitMatrix,
    layers: Vec<Vec<usize>>,
) -> Vec<Vec<usize>> {
    let mut scratch = vec![0u64; desc.words()];
    let mut keyed: Vec<(u64, Vec<&str>, Vec<usize>)> = layers
        .into_iter()
        .map(|mut members| {
            members.sort_by(|&a, &b| {
                path_key(graph.info(a).path.as_str()).cmp(&path_key(graph.info(b).path.as_str()))
            });
            let size = bits::closure_size(graph, desc, &members, &mut scratch);
            let key = members.iter().map(|&i| graph.info(i).path.as_str()).collect();
            (size, key, members)
        })
        .collect();
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    keyed.into_iter().map(|(_, _, m)| m).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use nix_layer_graph::PathInfo;
    use nix_layer_store::StoreDir;

    use super::*;

    /// A store path named `name`; the hash is derived from the name, so
    /// paths sort by name as the letters of the fixtures do.
    pub(crate) fn sp(name: &str) -> StorePath {
        const A: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let seed = name.bytes().fold(17u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
        let hash: String = (0..32).map(|k| A[((seed >> (k % 50)) as usize + 7 * k) % 32] as char).collect();
        StoreDir::default().parse(&format!("/nix/store/{hash}-{name}")).unwrap()
    }

    pub(crate) fn graph(nodes: &[(&str, &[&str], u64)]) -> Graph {
        Graph::new(
            nodes
                .iter()
                .map(|(n, refs, size)| {
                    PathInfo::from_raw_references(sp(n), refs.iter().map(|r| sp(r)).collect(), *size)
                })
                .collect(),
        )
        .unwrap()
    }

    /// The "doc" graph of nixpkgs' closure-graph.py, with the narSizes of
    /// dockertools.md.
    pub(crate) fn doc() -> Graph {
        graph(&[
            ("a", &["b", "g"], 10),
            ("b", &["c", "e"], 20),
            ("c", &["d", "e"], 30),
            ("d", &["f"], 40),
            ("e", &["f"], 50),
            ("f", &[], 60),
            ("g", &[], 70),
        ])
    }

    pub(crate) fn idx(g: &Graph, name: &str) -> usize {
        g.index_of(&sp(name)).unwrap()
    }

    /// A plan as names, e.g. `[["f"], ["e", "d"]]`.
    pub(crate) fn names(plan: &Plan) -> Vec<Vec<&str>> {
        plan.layers.iter().map(|l| l.iter().map(|p| p.name()).collect()).collect()
    }

    /// A deterministic pseudo-random DAG: node k references only nodes
    /// after it, so it is acyclic; sizes spread over six orders of magnitude.
    pub(crate) fn random_dag(n: usize, seed: u64) -> Graph {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let names: Vec<String> = (0..n).map(|k| format!("p{k:05}-{}", next() % 1000)).collect();
        let infos = (0..n)
            .map(|k| {
                let nrefs = if k + 1 < n { (next() % 6) as usize } else { 0 };
                let refs = (0..nrefs).map(|_| sp(&names[k + 1 + (next() as usize % (n - k - 1))])).collect();
                let size = 1000 + next() % (1 << (10 + next() % 20));
                PathInfo::from_raw_references(sp(&names[k]), refs, size)
            })
            .collect();
        Graph::new(infos).unwrap()
    }

    #[test]
    fn strategy_names() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        let e = "layered".parse::<Strategy>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown layering strategy `layered`; valid strategies are: popularity, auto, shared"
        );
    }

    #[test]
    fn budgets() {
        assert_eq!(store_layer_budget(100, 0), Ok(99));
        assert_eq!(store_layer_budget(100, 1), Ok(98));
        assert_eq!(store_layer_budget(2, 0), Ok(1));
        assert_eq!(store_layer_budget(1, 0), Err(Error::TooFewLayers(1)));
        assert_eq!(store_layer_budget(0, 0), Err(Error::TooFewLayers(0)));
        let e = store_layer_budget(4, 3).unwrap_err();
        assert_eq!(e, Error::NoStoreLayers { max_layers: 4, base_layers: 3 });
        assert!(e.to_string().contains("the base image uses 3 layer(s)"), "{e}");
        assert!(store_layer_budget(4, 10).is_err());
        assert_eq!(store_layer_budget(4, 2), Ok(1));
    }

    #[test]
    fn plan_rejects_zero_budget() {
        for s in Strategy::ALL {
            assert_eq!(plan(&doc(), s, 0), Err(Error::ZeroBudget));
        }
    }

    #[test]
    fn plans_serialise_as_lists_of_lists() {
        let p = Plan { layers: vec![vec![sp("f")], vec![sp("e"), sp("d")]] };
        let json = serde_json::to_value(&p).unwrap();
        let want = serde_json::json!([[sp("f").as_str()], [sp("e").as_str(), sp("d").as_str()]]);
        assert_eq!(json, want);
    }

    #[test]
    fn validate_catches_bad_plans() {
        let g = graph(&[("x", &["y"], 1), ("y", &[], 1)]);
        let ok = Plan { layers: vec![vec![sp("x")], vec![sp("y")]] };
        assert_eq!(ok.validate(&g, 2), Ok(()));
        let cases = [
            (Plan { layers: vec![vec![sp("x")], vec![sp("y")]] }, 1, "2 layers for a budget of 1"),
            (Plan { layers: vec![vec![sp("x"), sp("y")], vec![]] }, 2, "layer 1 is empty"),
            (Plan { layers: vec![vec![sp("x"), sp("y"), sp("x")]] }, 2, "in more than one layer"),
            (Plan { layers: vec![vec![sp("x")]] }, 2, "is in no layer"),
            (Plan { layers: vec![vec![sp("x"), sp("y"), sp("z")]] }, 2, "is not in the graph"),
        ];
        for (p, budget, want) in cases {
            let e = p.validate(&g, budget).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn every_strategy_keeps_every_path_on_a_large_graph() {
        let g = random_dag(3000, 7);
        for s in Strategy::ALL {
            for budget in [1, 2, 3, 48, 98, 2999, 3000, 5000] {
                let p = plan(&g, s, budget).unwrap();
                p.validate(&g, budget).unwrap();
                let want = budget.min(g.len());
                if budget >= g.len() {
                    assert_eq!(p.layers.len(), g.len(), "{s} {budget}");
                } else if s == Strategy::Popularity {
                    assert_eq!(p.layers.len(), want, "{s} {budget}");
                }
                assert_eq!(plan(&g, s, budget).unwrap(), p, "{s} is not deterministic");
            }
        }
    }

    #[test]
    fn empty_graph_gives_empty_plan() {
        let g = Graph::new(Vec::new()).unwrap();
        for s in Strategy::ALL {
            assert!(plan(&g, s, 5).unwrap().layers.is_empty());
        }
    }

    #[test]
    fn path_key_splits_at_the_first_dash() {
        assert_eq!(path_key("/nix/store/abc-hello-2.1"), ("hello-2.1", "/nix/store/abc"));
        assert_eq!(path_key("nodash"), ("", "nodash"));
    }
}
