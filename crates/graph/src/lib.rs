//! The reference graph of a Nix closure: which store paths an image holds, how
//! big each one is, and which paths each one needs.
//!
//! Layering strategies (crate `nix-layer-plan`) only see this graph, so it is
//! checked once here: every path is a valid store path, appears once, only
//! references paths of the same graph (the graph is *closed*, or a layer would
//! point at files the image does not have), and the references form no cycle
//! apart from a path referring to itself, which Nix allows and which is kept as
//! a flag. The graph is read from exportReferencesGraph JSON, `nix path-info
//! --json` or `nix-store --dump-db` (see [`Graph::from_json_slice`] and
//! [`Graph::query_nix_store`]).

mod dump_db;
mod json;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;

pub use nix_layer_store::{NarHash, StoreDir, StorePath};

/// Everything that can be wrong with a closure graph or its sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store path {0} appears more than once in the graph")]
    Duplicate(String),
    #[error("graph is not closed: {path} references {reference} which is not in the graph")]
    NotClosed { path: String, reference: String },
    #[error("the references form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("input is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("unexpected JSON: {0}")]
    Shape(String),
    #[error("{path}: field `{field}` {reason}")]
    Field { path: String, field: &'static str, reason: String },
    #[error("{0} is not a valid path in the Nix store it was queried from")]
    InvalidPath(String),
    #[error(transparent)]
    Store(#[from] nix_layer_store::Error),
    #[error("{file}: {source}")]
    InFile { file: PathBuf, source: Box<Error> },
    #[error("cannot read {file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("cannot run {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("`{program} --dump-db` failed ({status}): {stderr}")]
    NixStore { program: PathBuf, status: String, stderr: String },
    #[error("unexpected `nix-store --dump-db` output: {0}")]
    DumpDb(String),
    #[error(
        "the paths given are not a whole closure: {path} references {reference}, which was not \
         given; pass every path of the closure, e.g. `$(nix-store -qR ROOT)`"
    )]
    NotAClosure { path: String, reference: String },
}

/// What Nix knows about one store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// Other paths this one refers to: without itself, sorted, no duplicates.
    pub references: Vec<StorePath>,
    /// Whether the path refers to itself (common: binaries with an rpath into
    /// their own output). Kept apart so the graph stays acyclic.
    pub self_reference: bool,
    /// Size of the NAR serialisation; the layering strategies weigh by it.
    pub nar_size: u64,
    pub nar_hash: Option<NarHash>,
    /// The `.drv` that built the path, when the source says so.
    pub deriver: Option<String>,
}

impl PathInfo {
    /// Builds an info from raw references that may include the path itself,
    /// in any order and with repeats, as every Nix source prints them.
    pub fn from_raw_references(path: StorePath, references: Vec<StorePath>, nar_size: u64) -> PathInfo {
        let mut info =
            PathInfo { path, references, self_reference: false, nar_size, nar_hash: None, deriver: None };
        info.normalise();
        info
    }

    fn normalise(&mut self) {
        let before = self.references.len();
        let own = &self.path;
        self.references.retain(|r| r != own);
        self.self_reference |= self.references.len() != before;
        self.references.sort();
        self.references.dedup();
    }
}

/// A closed, acyclic closure graph. Nodes keep their input order (the order
/// the source listed them), which some strategies use to break ties, and are
/// addressed by that index.
#[derive(Debug, Clone)]
pub struct Graph {
    infos: Vec<PathInfo>,
    index: HashMap<StorePath, usize>,
    refs: Vec<Vec<usize>>,
    referrers: Vec<Vec<usize>>,
    topo: Vec<usize>,
}

impl Graph {
    /// Checks and indexes `infos`. References are normalised (self-references
    /// become [`PathInfo::self_reference`], the rest sorted and deduplicated).
    ///
    /// Fails on a path listed twice, a reference to a path that is not in
    /// `infos`, or a reference cycle (naming the paths on it).
    pub fn new(mut infos: Vec<PathInfo>) -> Result<Graph, Error> {
        let mut index = HashMap::with_capacity(infos.len());
        for (i, info) in infos.iter_mut().enumerate() {
            info.normalise();
            if index.insert(info.path.clone(), i).is_some() {
                return Err(Error::Duplicate(info.path.to_string()));
            }
        }
        let mut refs = Vec::with_capacity(infos.len());
        let mut referrers = vec![Vec::new(); infos.len()];
        for (i, info) in infos.iter().enumerate() {
            let mut row = Vec::with_capacity(info.references.len());
            for r in &info.references {
                let j = *index.get(r).ok_or_else(|| Error::NotClosed {
                    path: info.path.to_string(),
                    reference: r.to_string(),
                })?;
                row.push(j);
                referrers[j].push(i);
            }
            refs.push(row);
        }
        let topo = topo_sort(&refs, &referrers)
            .map_err(|cycle| Error::Cycle(cycle.into_iter().map(|i| infos[i].path.to_string()).collect()))?;
        Ok(Graph { infos, index, refs, referrers, topo })
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The node at input position `i`. Panics if `i >= len()`.
    pub fn info(&self, i: usize) -> &PathInfo {
        &self.infos[i]
    }

    /// All nodes in input order.
    pub fn infos(&self) -> &[PathInfo] {
        &self.infos
    }

    pub fn index_of(&self, p: &StorePath) -> Option<usize> {
        self.index.get(p).copied()
    }

    /// Direct references of `i` (without itself), in store-path order.
    pub fn references(&self, i: usize) -> &[usize] {
        &self.refs[i]
    }

    /// Direct referrers of `i` (without itself), ascending.
    pub fn referrers(&self, i: usize) -> &[usize] {
        &self.referrers[i]
    }

    /// Paths no other path refers to, in input order: what the user asked for.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.referrers[i].is_empty()).collect()
    }

    /// Everything reachable from `roots`, the roots included, ascending.
    pub fn closure(&self, roots: &[usize]) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<usize> = Vec::new();
        for &r in roots {
            if !seen[r] {
                seen[r] = true;
                stack.push(r);
            }
        }
        while let Some(i) = stack.pop() {
            for &j in &self.refs[i] {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        (0..self.len()).filter(|&i| seen[i]).collect()
    }

    /// The graph of the nodes `keep` (any order, repeats ignored), in input
    /// order. Fails with [`Error::NotClosed`] if a kept path references one
    /// that is not kept.
    pub fn subgraph(&self, keep: &[usize]) -> Result<Graph, Error> {
        let mut keep = keep.to_vec();
        keep.sort_unstable();
        keep.dedup();
        Graph::new(keep.into_iter().map(|i| self.infos[i].clone()).collect())
    }

    /// Every node once, each after all of its references (dependencies
    /// first). Among the nodes ready at a time the lowest input index goes
    /// first, so the order only depends on the input.
    pub fn topo_order(&self) -> Vec<usize> {
        self.topo.clone()
    }

    /// Sum of all NAR sizes (saturating; no real closure comes near 2^64).
    pub fn total_nar_size(&self) -> u64 {
        self.infos.iter().fold(0u64, |acc, i| acc.saturating_add(i.nar_size))
    }
}

/// Kahn's algorithm, dependencies first; on failure returns one cycle.
fn topo_sort(refs: &[Vec<usize>], referrers: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = refs.len();
    let mut pending: Vec<usize> = refs.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| pending[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &referrers[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every node left has a reference to another node left: walking such
    // references must come back to a node already seen, which closes a cycle.
    let start = (0..n).find(|&i| pending[i] > 0).expect("some node is left");
    let mut pos = vec![usize::MAX; n];
    let mut walk = Vec::new();
    let mut i = start;
    while pos[i] == usize::MAX {
        pos[i] = walk.len();
        walk.push(i);
        i = *refs[i].iter().find(|&&j| pending[j] > 0).expect("a left node references a left node");
    }
    let mut cycle = walk.split_off(pos[i]);
    cycle.push(i);
    Err(cycle)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store path whose name is `name`, with a hash derived from it, so
    /// fixtures read like the letters they stand for.
    pub(crate) fn sp(name: &str) -> StorePath {
        StoreDir::default().parse(&fake_path(name)).unwrap()
    }

    pub(crate) fn fake_path(name: &str) -> String {
        const A: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let seed = name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let hash: String = (0..32).map(|k| A[((seed >> (k % 27)) as usize + k) % 32] as char).collect();
        format!("/nix/store/{hash}-{name}")
    }

    pub(crate) fn node(name: &str, refs: &[&str], size: u64) -> PathInfo {
        PathInfo::from_raw_references(sp(name), refs.iter().map(|r| sp(r)).collect(), size)
    }

    /// The "doc" graph of nixpkgs' closure-graph.py.
    pub(crate) fn doc() -> Graph {
        Graph::new(vec![
            node("a", &["b", "g"], 10),
            node("b", &["c", "e"], 20),
            node("c", &["d", "e"], 30),
            node("d", &["f"], 40),
            node("e", &["f"], 50),
            node("f", &[], 60),
            node("g", &[], 70),
        ])
        .unwrap()
    }

    fn names(g: &Graph, ix: &[usize]) -> Vec<String> {
        ix.iter().map(|&i| g.info(i).path.name().to_owned()).collect()
    }

    #[test]
    fn indexes_and_navigates() {
        let g = doc();
        assert_eq!(g.len(), 7);
        assert!(!g.is_empty());
        let b = g.index_of(&sp("b")).unwrap();
        assert_eq!(names(&g, g.references(b)), ["c", "e"]);
        let e = g.index_of(&sp("e")).unwrap();
        assert_eq!(names(&g, g.referrers(e)), ["b", "c"]);
        assert_eq!(names(&g, &g.roots()), ["a"]);
        assert_eq!(names(&g, &g.closure(&[2])), ["c", "d", "e", "f"]);
        assert_eq!(g.total_nar_size(), 280);
        assert!(g.index_of(&sp("zzz")).is_none());
    }

    #[test]
    fn topo_order_puts_dependencies_first() {
        let g = doc();
        let order = g.topo_order();
        assert_eq!(names(&g, &order), ["f", "d", "e", "c", "b", "g", "a"]);
        let mut pos = vec![0; g.len()];
        for (k, &i) in order.iter().enumerate() {
            pos[i] = k;
        }
        for i in 0..g.len() {
            for &j in g.references(i) {
                assert!(pos[j] < pos[i]);
            }
        }
    }

    #[test]
    fn normalises_references() {
        let g = Graph::new(vec![node("x", &["y", "x", "y"], 1), node("y", &[], 2)]).unwrap();
        assert!(g.info(0).self_reference);
        assert_eq!(g.info(0).references, vec![sp("y")]);
        assert!(!g.info(1).self_reference);
        assert_eq!(g.roots(), [0]);
    }

    #[test]
    fn rejects_duplicates() {
        let e = Graph::new(vec![node("x", &[], 1), node("x", &[], 1)]).unwrap_err();
        assert!(matches!(e, Error::Duplicate(_)));
        assert!(e.to_string().contains(&fake_path("x")), "{e}");
    }

    #[test]
    fn rejects_open_graphs() {
        let e = Graph::new(vec![node("x", &["y"], 1)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("graph is not closed: {} references {} which is not in the graph", sp("x"), sp("y"))
        );
    }

    #[test]
    fn rejects_cycles_and_names_them() {
        let e = Graph::new(vec![
            node("r", &["p"], 1),
            node("p", &["q"], 1),
            node("q", &["s"], 1),
            node("s", &["p"], 1),
        ])
        .unwrap_err();
        let Error::Cycle(cycle) = &e else { panic!("{e}") };
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        assert_eq!(cycle.first(), cycle.last());
        for n in ["p", "q", "s"] {
            assert!(cycle.contains(&fake_path(n)), "{cycle:?}");
        }
        assert!(!cycle.contains(&fake_path("r")));
        assert!(e.to_string().contains(" -> "));
    }

    #[test]
    fn subgraph_keeps_order_and_must_be_closed() {
        let g = doc();
        let c = g.index_of(&sp("c")).unwrap();
        let keep = g.closure(&[c]);
        let mut shuffled = keep.clone();
        shuffled.reverse();
        shuffled.push(keep[0]);
        let s = g.subgraph(&shuffled).unwrap();
        assert_eq!(names(&s, &(0..s.len()).collect::<Vec<_>>()), ["c", "d", "e", "f"]);
        assert_eq!(names(&s, &s.roots()), ["c"]);
        let e = g.subgraph(&[c]).unwrap_err();
        assert!(matches!(e, Error::NotClosed { .. }), "{e}");
    }

    #[test]
    fn empty_graph() {
        let g = Graph::new(Vec::new()).unwrap();
        assert!(g.is_empty());
        assert!(g.roots().is_empty());
        assert!(g.topo_order().is_empty());
        assert_eq!(g.total_nar_size(), 0);
    }
}
