//! The `shared` strategy: layers that come out the same in different images
//! for the paths those images have in common.
//!
//! A layer is reused across images only if its path list is the same in
//! both, so a layer's contents must depend on its paths, not on the rest of
//! the image. Popularity and auto-layer fail this: a rank cut moves when a
//! package is added, and auto-layer's labels follow whatever uses a path.
//!
//! 1. **Big paths alone.** Every path of at least T bytes is a layer of its
//!    own, where T is the lowest rung of a fixed ladder (0, then 64 KiB
//!    growing by √2) that leaves at least one layer for the smaller paths
//!    (or at which every path fits alone). The ladder is the same for every
//!    image, so similar images pick the same T, and a big path makes the same
//!    layer everywhere. Most bytes are in big paths.
//! 2. **Small paths by anchor.** A smaller path joins the group of its
//!    *anchor*: of the paths it depends on that weigh at least
//!    [`SharedOptions::anchor_min`], the one with the largest closure (e.g.
//!    `libssl3` for `curl`, the Python library for a Python package). This
//!    depends only on the path's own closure, never on its users, so a path
//!    has the same anchor in every image; and when the anchor or anything
//!    below it changes (a security update), the whole group changes with it,
//!    so an update re-sends little besides what changed. Paths with no
//!    anchor share one group.
//! 3. **Budget.** If there are more groups than layers left, groups are
//!    merged along the anchor forest (an anchor's parent is its own anchor):
//!    every group below depth d joins its ancestor at depth d, for the
//!    deepest d that fits. A merged group still sits on one chain of
//!    dependencies, so it still changes as one. Only if even the groups of
//!    the forest's roots do not fit are they bucketed by a stable hash of
//!    the anchor's package name (its name without the version, as
//!    `builtins.parseDrvName` splits it, so a version bump keeps the bucket).
//!
//! Layers go in ascending order of their closure size (dependencies, which
//! change least often, first), ties by path list; paths in a layer are sorted
//! by (name, hash) like auto-layer's. Nothing depends on input order or on
//! hash-map order, so a plan is a pure function of the graph.
//!
//! On the benchmark corpus (`examples/sharing.rs`), at a budget of 98, a
//! family of three nested images stores 1.3% more than its distinct paths
//! (popularity 38%, auto-layer 17%), and an OpenSSL update re-sends 1.04×
//! the bytes that changed. At a budget of 48 the family stores 5% more: the
//! larger image must group paths that the smaller ones keep apart, and no
//! rule that looks at one image at a time can know which.

use std::collections::HashMap;

use nix_layer_graph::Graph;

use crate::bits::{closure_size, descendants, BitMatrix};
use crate::{layers_by_closure_size, Error, Plan};

/// How the small paths are grouped: by their anchor's ancestor at a depth
/// of the anchor forest, or, as a last resort, by hash into buckets.
#[derive(Clone, Copy)]
enum Grouping {
    Cut(usize),
    Hash(u64),
}

/// Tuning of [`plan_shared`]; the defaults are what the corpus favours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOptions {
    /// First non-zero rung of the singleton ladder; each next rung is √2
    /// times bigger.
    pub ladder_start: u64,
    /// Paths at least this big anchor the groups of the smaller paths that
    /// depend on them.
    pub anchor_min: u64,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions { ladder_start: 64 << 10, anchor_min: 4 << 20 }
    }
}

/// The rungs of the ladder: 0, then `start`, `start·√2`, `start·2`, …, and
/// last a rung above `max`, where every path is small. (u128, so that rung
/// exists even for `max = u64::MAX`.)
fn ladder(start: u64, max: u64) -> Vec<u128> {
    let start = start.max(1) as u128;
    // start·√2 in integers: 46341/32768 ≈ √2 to 1e-5, identical everywhere.
    let odd = start * 46341 / 32768;
    let mut rungs = vec![0];
    for k in 0.. {
        let rung = (if k % 2 == 0 { start } else { odd }) << (k / 2);
        if rung > max as u128 {
            rungs.push(max as u128 + 1);
            break;
        }
        rungs.push(rung);
    }
    rungs.dedup(); // tiny starts repeat rungs
    rungs
}

/// A package's name without its version, split as `builtins.parseDrvName`
/// does: at the first `-` not followed by a letter (`gcc-12-base-12.2` →
/// `gcc`, `python3.11-minimal-3.11.2` → `python3.11-minimal`).
pub(crate) fn package_base_name(name: &str) -> &str {
    let b = name.as_bytes();
    (0..b.len())
        .find(|&k| b[k] == b'-' && !b.get(k + 1).is_some_and(|c| c.is_ascii_alphabetic()))
        .map_or(name, |k| &name[..k])
}

/// FNV-1a: a tiny hash whose value is fixed forever (std's is not).
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Plans `graph` with the shared strategy into at most `budget` layers.
pub fn plan_shared(graph: &Graph, budget: usize, opts: &SharedOptions) -> Result<Plan, Error> {
    if budget == 0 {
        return Err(Error::ZeroBudget);
    }
    if graph.is_empty() {
        return Ok(Plan { layers: Vec::new() });
    }
    let ctx = Context::new(graph, opts);
    let all: Vec<usize> = (0..graph.len()).collect();
    let layers = ctx.groups(&all, budget);
    Ok(layers_by_closure_size(graph, &ctx.desc, layers))
}

/// What the rules need to know about every path of a graph: its closure
/// (as reachability), its anchor and the depth of that anchor in the
/// anchor forest. All of it depends only on each path's own closure.
pub(crate) struct Context<'g> {
    graph: &'g Graph,
    pub(crate) desc: BitMatrix,
    anchor: Vec<Option<usize>>,
    depth: Vec<usize>,
    max_depth: usize,
    ladder_start: u64,
}

impl<'g> Context<'g> {
    pub(crate) fn new(graph: &'g Graph, opts: &SharedOptions) -> Self {
        let n = graph.len();
        let desc = descendants(graph);
        let mut scratch = vec![0u64; desc.words()];
        let anchor = anchors(graph, &desc, opts.anchor_min, &mut scratch);
        // Anchors form a forest (an anchor's own anchor is its parent);
        // cutting it at depth d merges each group into its ancestor at
        // depth d.
        let mut depth = vec![0usize; n];
        for i in graph.topo_order() {
            depth[i] = anchor[i].map_or(0, |a| depth[a] + 1);
        }
        let max_depth = depth.iter().copied().max().unwrap_or(0);
        Context { graph, desc, anchor, depth, max_depth, ladder_start: opts.ladder_start }
    }

    fn cut(&self, a: Option<usize>, d: usize) -> Option<usize> {
        let mut a = a;
        while let Some(x) = a {
            if self.depth[x] <= d {
                break;
            }
            a = self.anchor[x];
        }
        a
    }

    /// The rungs of the ladder at which `subset` fits `budget >= 1` layers:
    /// every path alone, or at least one layer left for the small paths;
    /// ascending.
    pub(crate) fn rungs(&self, subset: &[usize], budget: usize) -> Vec<u128> {
        let graph = self.graph;
        let count = subset.len();
        let max_size = subset.iter().map(|&i| graph.info(i).nar_size).max().unwrap_or(0);
        let big_at = |t: u128| subset.iter().filter(|&&i| graph.info(i).nar_size as u128 >= t).count();
        ladder(self.ladder_start, max_size)
            .into_iter()
            .filter(|&t| {
                let big = big_at(t);
                big < budget || (big == count && count <= budget)
            })
            .collect()
    }

    /// Splits the paths `subset` (distinct indices of the graph) into at
    /// most `budget >= 1` groups by the rules of the module docs; the
    /// groups come out unordered.
    pub(crate) fn groups(&self, subset: &[usize], budget: usize) -> Vec<Vec<usize>> {
        // The lowest rung at which every path fits alone, or that leaves at
        // least one layer for the small paths: once paths must be grouped, a
        // singleton is worth more than finer groups. The top rung is above
        // every path, so no path is big there and `budget >= 1` layers are
        // left.
        let t = self.rungs(subset, budget)[0];
        self.groups_at(subset, budget, t)
    }

    /// [`Context::groups`] with the paths of at least `t` bytes alone; `t`
    /// is one of [`Context::rungs`].
    pub(crate) fn groups_at(&self, subset: &[usize], budget: usize, t: u128) -> Vec<Vec<usize>> {
        let graph = self.graph;
        let n = graph.len();
        let size = |i: usize| graph.info(i).nar_size as u128;
        let count = subset.len();
        let big = subset.iter().filter(|&&i| size(i) >= t).count();

        // There, the deepest cut that fits. The number of groups only grows
        // with the depth of the cut, so the depth is found by bisection,
        // counting the distinct cut anchors of the small paths.
        let grouping = if big == count {
            Grouping::Cut(self.max_depth)
        } else {
            let room = budget - big;
            let mut small_anchors: Vec<Option<usize>> =
                subset.iter().filter(|&&i| size(i) < t).map(|&i| self.anchor[i]).collect();
            small_anchors.sort_unstable();
            small_anchors.dedup();
            let mut mark = vec![0usize; n + 1]; // slot n: "no anchor"
            let mut generation = 0;
            let mut groups_at = |d: usize| {
                generation += 1;
                small_anchors
                    .iter()
                    .filter(|&&a| {
                        std::mem::replace(&mut mark[self.cut(a, d).unwrap_or(n)], generation) != generation
                    })
                    .count()
            };
            if groups_at(0) > room {
                Grouping::Hash(room as u64)
            } else {
                let (mut lo, mut hi) = (0, self.max_depth); // groups_at(lo) fits
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if groups_at(mid) <= room {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                Grouping::Cut(lo)
            }
        };

        let mut layers: Vec<Vec<usize>> = Vec::new();
        let mut groups: HashMap<u64, Vec<usize>> = HashMap::new();
        for &i in subset {
            if size(i) >= t {
                layers.push(vec![i]);
            } else {
                let a = self.anchor[i];
                let key = match grouping {
                    Grouping::Cut(d) => self.cut(a, d).map_or(u64::MAX, |a| a as u64),
                    Grouping::Hash(room) => {
                        let root = self.cut(a, 0);
                        let name = root.map_or("", |a| package_base_name(graph.info(a).path.name()));
                        stable_hash(name) % room
                    }
                };
                groups.entry(key).or_default().push(i);
            }
        }
        layers.extend(groups.into_values());
        layers
    }
}

/// Each path's anchor: among its proper dependencies of at least `min`
/// bytes, the one with the largest closure (ties: name, then path). A
/// dependency's candidates are a subset of its referrer's, so one pass in
/// dependency order suffices.
fn anchors(graph: &Graph, desc: &BitMatrix, min: u64, scratch: &mut [u64]) -> Vec<Option<usize>> {
    let n = graph.len();
    let weight: Vec<u64> = (0..n)
        .map(|i| if graph.info(i).nar_size >= min { closure_size(graph, desc, &[i], scratch) } else { 0 })
        .collect();
    let better = |a: usize, b: usize| {
        let key = |i: usize| (weight[i], graph.info(i).path.name(), graph.info(i).path.as_str());
        if key(a) >= key(b) {
            a
        } else {
            b
        }
    };
    let mut anchor: Vec<Option<usize>> = vec![None; n];
    for i in graph.topo_order() {
        let mut best: Option<usize> = None;
        for &c in graph.references(i) {
            let via = match anchor[c] {
                Some(a) if graph.info(c).nar_size >= min => Some(better(a, c)),
                None if graph.info(c).nar_size >= min => Some(c),
                other => other,
            };
            best = match (best, via) {
                (Some(x), Some(y)) => Some(better(x, y)),
                (x, None) => x,
                (None, y) => y,
            };
        }
        anchor[i] = best;
    }
    anchor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{doc, graph, idx, names, random_dag};
    use crate::{plan as plan_with, Strategy};

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;

    fn shared(g: &Graph, budget: usize) -> Vec<Vec<String>> {
        let p = plan_with(g, Strategy::Shared, budget, None).unwrap();
        names(&p).into_iter().map(|l| l.into_iter().map(str::to_owned).collect()).collect()
    }

    #[test]
    fn ladder_rungs() {
        let l = ladder(64 * K, 300 * K);
        assert_eq!(l, [0, 65536, 92682, 131072, 185364, 262144, 300 * K as u128 + 1]);
        let top = ladder(1, u64::MAX);
        assert_eq!(*top.last().unwrap(), u64::MAX as u128 + 1);
        assert!(top.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn base_names() {
        assert_eq!(package_base_name("gcc-12-base-12.2.0-14"), "gcc");
        assert_eq!(package_base_name("python3.11-minimal-3.11.2-6+deb12u6"), "python3.11-minimal");
        assert_eq!(package_base_name("libssl3-3.0.20-1_deb12u2"), "libssl3");
        assert_eq!(package_base_name("hello"), "hello");
        assert_eq!(package_base_name("trailing-"), "trailing");
        assert_eq!(stable_hash(""), 0xcbf29ce484222325);
        assert_eq!(stable_hash("a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn fits_budget_with_one_layer_per_path() {
        let g = doc();
        // Ascending closure size: f 60, g 70, d 100, e 110, c 180, b 200, a 280.
        let want = [["f"], ["g"], ["d"], ["e"], ["c"], ["b"], ["a"]];
        assert_eq!(shared(&g, 7), want);
        assert_eq!(shared(&g, 100), want);
        assert_eq!(shared(&g, 1), [["a", "b", "c", "d", "e", "f", "g"]]);
    }

    /// An app and a tool over libc and openssl, each with small helpers.
    fn stack() -> Graph {
        graph(&[
            ("app", &["curl", "py"], 9 * M),
            ("py", &["libpy"], 100 * K),
            ("libpy", &["openssl", "libc", "zlib"], 8 * M),
            ("curl", &["openssl", "zlib"], 300 * K),
            ("openssl", &["libc"], 5 * M),
            ("zlib", &["libc"], 100 * K),
            ("libc", &[], 13 * M),
        ])
    }

    #[test]
    fn small_paths_group_by_anchor() {
        let g = stack();
        // 7 paths, budget 5: big ones (>= 5 MiB: app, libpy, openssl, libc)
        // alone; py's anchor is libpy, curl's openssl, zlib's libc.
        // That is 3 groups for 1 layer left, so they are merged.
        let p = shared(&g, 5);
        assert_eq!(p.len(), 5);
        let opts = SharedOptions { anchor_min: 4 * M, ..SharedOptions::default() };
        let anchor = anchors(&g, &descendants(&g), opts.anchor_min, &mut [0; 1]);
        let name = |i: Option<usize>| i.map(|i| g.info(i).path.name());
        assert_eq!(name(anchor[idx(&g, "py")]), Some("libpy"));
        assert_eq!(name(anchor[idx(&g, "curl")]), Some("openssl"));
        assert_eq!(name(anchor[idx(&g, "zlib")]), Some("libc"));
        assert_eq!(name(anchor[idx(&g, "app")]), Some("libpy"));
        assert_eq!(name(anchor[idx(&g, "libc")]), None);
        // Budget 6: at T = 128 KiB curl is big too, leaving py and zlib
        // (two anchors) for one layer. Budget 7 gives each path a layer.
        assert!(shared(&g, 6).contains(&vec!["py".to_owned(), "zlib".to_owned()]));
        assert_eq!(shared(&g, 7).len(), 7);
        for budget in 1..=8 {
            let p = plan_with(&g, Strategy::Shared, budget, None).unwrap();
            p.validate(&g, budget).unwrap();
        }
    }

    #[test]
    fn groups_do_not_depend_on_the_rest_of_the_image() {
        // The same stack with another app using zlib: zlib's layer must not
        // change, nor any big path's.
        let g = stack();
        let mut infos = g.infos().to_vec();
        infos.push(nix_layer_graph::PathInfo::from_raw_references(
            crate::tests::sp("other"),
            vec![crate::tests::sp("zlib")],
            6 * M,
        ));
        let bigger = Graph::new(infos).unwrap();
        let a = plan_shared(&g, 6, &SharedOptions::default()).unwrap();
        let b = plan_shared(&bigger, 7, &SharedOptions::default()).unwrap();
        for layer in &a.layers {
            assert!(b.layers.contains(layer), "{layer:?} not in {b:?}");
        }
    }

    #[test]
    fn deterministic_and_input_order_free() {
        let g = random_dag(300, 11);
        let mut infos = g.infos().to_vec();
        infos.reverse();
        let reversed = Graph::new(infos).unwrap();
        for budget in [1, 5, 20, 60, 299, 300] {
            let a = plan_shared(&g, budget, &SharedOptions::default()).unwrap();
            let b = plan_shared(&reversed, budget, &SharedOptions::default()).unwrap();
            assert_eq!(a, b, "budget {budget}");
            a.validate(&g, budget).unwrap();
        }
    }
}
