//! nixpkgs' popularity layering (`references-by-popularity/closure-graph.py`
//! plus the split of `buildLayeredImage`), reproduced exactly.
//!
//! The script expands the DAG into a tree and counts; the count it ends up
//! with is pop(x) = Σ over every ancestor-or-self a of x of the number of
//! distinct root→a paths. That is computed here without the expansion: a
//! topological pass counts root→a paths, an ancestor bitset per node sums them.
//!
//! Path counts grow exponentially with depth (a chain of n diamonds has 2^n
//! paths to its bottom). Python's integers are unbounded, so ours are too:
//! 128-bit arithmetic first, exact big integers when that overflows.

use std::cmp::Ordering;

use nix_layer_graph::Graph;

use crate::bits::{ancestors, BitMatrix};
use crate::{Error, Plan};

/// Paths by popularity, most popular first; ties by closure-graph.py's
/// `package_name` (the path with its `/nix/store/<hash>` part moved to the
/// end) ascending. Exact on any graph: counts that overflow 128 bits are
/// redone with big integers.
pub fn popularity_order(graph: &Graph) -> Vec<usize> {
    let anc = ancestors(graph);
    let names: Vec<String> = graph.infos().iter().map(|i| package_name(i.path.as_str())).collect();
    let mut order: Vec<usize> = (0..graph.len()).collect();
    match popularity::<u128>(graph, &anc) {
        Some(pop) => order.sort_by(|&a, &b| by_pop(&pop, &names, a, b)),
        None => {
            let pop = popularity::<BigUint>(graph, &anc).expect("big integers do not overflow");
            order.sort_by(|&a, &b| by_pop(&pop, &names, a, b));
        }
    }
    order
}

/// More popular first, then by name.
fn by_pop<C: Count>(pop: &[C], names: &[String], a: usize, b: usize) -> Ordering {
    pop[b].cmp(&pop[a]).then_with(|| names[a].cmp(&names[b]))
}

/// pop(x) for every node, or `None` if a count does not fit in `C`.
fn popularity<C: Count>(graph: &Graph, anc: &BitMatrix) -> Option<Vec<C>> {
    let n = graph.len();
    // Number of distinct paths from any root to each node, dependents first.
    let mut paths = vec![C::zero(); n];
    for i in graph.topo_order().into_iter().rev() {
        let mut count = if graph.referrers(i).is_empty() { C::one() } else { C::zero() };
        for &u in graph.referrers(i) {
            count.add(&paths[u])?;
        }
        paths[i] = count;
    }
    (0..n)
        .map(|x| {
            let mut p = paths[x].clone();
            for a in anc.ones(x) {
                p.add(&paths[a])?;
            }
            Some(p)
        })
        .collect()
}

/// A non-negative count: what the popularity sums need.
trait Count: Clone + Ord {
    fn zero() -> Self;
    fn one() -> Self;
    /// `self += other`; `None` on overflow (then `self` is unspecified).
    fn add(&mut self, other: &Self) -> Option<()>;
}

impl Count for u128 {
    fn zero() -> Self {
        0
    }

    fn one() -> Self {
        1
    }

    fn add(&mut self, other: &Self) -> Option<()> {
        *self = self.checked_add(*other)?;
        Some(())
    }
}

/// An unbounded unsigned integer: little-endian 64-bit limbs without
/// trailing zero limbs, so comparing lengths first orders them. Only
/// addition and comparison are needed, so no big-integer crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BigUint(Vec<u64>);

impl Count for BigUint {
    fn zero() -> Self {
        BigUint(Vec::new())
    }

    fn one() -> Self {
        BigUint(vec![1])
    }

    fn add(&mut self, other: &Self) -> Option<()> {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut carry = false;
        for (i, limb) in self.0.iter_mut().enumerate() {
            let b = other.0.get(i).copied().unwrap_or(0);
            if i >= other.0.len() && !carry {
                break;
            }
            let (sum, c1) = limb.overflowing_add(b);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
        if carry {
            self.0.push(1);
        }
        Some(())
    }
}

impl Ord for BigUint {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

impl PartialOrd for BigUint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// closure-graph.py's tie-break key: the path split at `-`, its first part
/// (`/nix/store/<hash>`) moved to the end: `name-version-/nix/store/<hash>`.
pub(crate) fn package_name(path: &str) -> String {
    match path.split_once('-') {
        Some((first, rest)) => format!("{rest}-{first}"),
        None => path.to_owned(),
    }
}

/// The first `budget - 1` paths by popularity get a layer each; the rest
/// share one last layer, in popularity order.
pub(crate) fn plan(graph: &Graph, budget: usize) -> Result<Plan, Error> {
    let order = popularity_order(graph);
    let singles = (budget - 1).min(order.len());
    let mut layers: Vec<Vec<usize>> = order[..singles].iter().map(|&i| vec![i]).collect();
    layers.push(order[singles..].to_vec());
    Ok(Plan::from_indices(graph, layers))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nix_layer_graph::PathInfo;

    use super::*;
    use crate::tests::{doc, graph, names, random_dag, sp};
    use crate::{plan as plan_with, Strategy};

    fn order_names(g: &Graph) -> Vec<&str> {
        popularity_order(g).into_iter().map(|i| g.info(i).path.name()).collect()
    }

    /// closure-graph.py's counting, emulated literally on the expanded tree:
    /// a forest's contest counts each of its nodes once, plus, for each path
    /// counted below a node, that count plus one. Memoised per node as the
    /// script does, so it stays cheap on small random graphs.
    fn brute_pop(g: &Graph) -> Vec<u128> {
        fn below(
            g: &Graph,
            v: usize,
            memo: &mut Vec<Option<BTreeMap<usize, u128>>>,
        ) -> BTreeMap<usize, u128> {
            if let Some(m) = &memo[v] {
                return m.clone();
            }
            let m = contest(g, g.references(v), memo);
            memo[v] = Some(m.clone());
            m
        }
        fn contest(
            g: &Graph,
            forest: &[usize],
            memo: &mut Vec<Option<BTreeMap<usize, u128>>>,
        ) -> BTreeMap<usize, u128> {
            let mut pop = BTreeMap::new();
            for &v in forest {
                *pop.entry(v).or_default() += 1;
                for (p, c) in below(g, v, memo) {
                    *pop.entry(p).or_default() += c + 1;
                }
            }
            pop
        }
        let mut memo = vec![None; g.len()];
        let pop = contest(g, &g.roots(), &mut memo);
        (0..g.len()).map(|i| pop[&i]).collect()
    }

    #[test]
    fn doc_graph_popularity() {
        let g = doc();
        let want = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 9), ("g", 2)];
        let pop = brute_pop(&g);
        for (n, p) in want {
            assert_eq!(pop[crate::tests::idx(&g, n)], p, "{n}");
        }
        assert_eq!(order_names(&g), ["f", "e", "d", "c", "b", "g", "a"]);
        let p = plan_with(&g, Strategy::Popularity, 2, None).unwrap();
        assert_eq!(names(&p), [vec!["f"], vec!["e", "d", "c", "b", "g", "a"]]);
        let p = plan_with(&g, Strategy::Popularity, 1, None).unwrap();
        assert_eq!(names(&p), [vec!["f", "e", "d", "c", "b", "g", "a"]]);
        let p = plan_with(&g, Strategy::Popularity, 7, None).unwrap();
        assert_eq!(names(&p), [["f"], ["e"], ["d"], ["c"], ["b"], ["g"], ["a"]]);
        assert_eq!(plan_with(&g, Strategy::Popularity, 100, None).unwrap(), p);
    }

    #[test]
    fn ties_go_by_package_name() {
        // Two roots and a shared leaf: pop(r1) = pop(r2) = 1, pop(leaf) = 3.
        let g = graph(&[("zeta-1", &["leaf"], 1), ("alpha-2", &["leaf"], 1), ("leaf", &[], 1)]);
        assert_eq!(order_names(&g), ["leaf", "alpha-2", "zeta-1"]);
        assert_eq!(package_name("/nix/store/abc-zeta-1.0"), "zeta-1.0-/nix/store/abc");
        // The name decides before the version: "foo-1" < "foo-bar".
        assert!(package_name("/nix/store/zzz-foo-1") < package_name("/nix/store/aaa-foo-bar"));
    }

    #[test]
    fn diamond() {
        // top -> {l, r} -> bottom: paths(top)=1, l=1, r=1, bottom=2;
        // pop(bottom) = 1 + 1 + 1 + 2 = 5, pop(l) = pop(r) = 2, pop(top) = 1.
        let g = graph(&[
            ("top", &["l", "r"], 1),
            ("l", &["bottom"], 1),
            ("r", &["bottom"], 1),
            ("bottom", &[], 1),
        ]);
        assert_eq!(brute_pop(&g), [1, 2, 2, 5]);
        assert_eq!(order_names(&g), ["bottom", "l", "r", "top"]);
    }

    #[test]
    fn several_roots_and_self_references() {
        // r1 -> m -> x; r2 -> x; r2 and m refer to themselves (dropped).
        // paths: r1=1, r2=1, m=1, x=2; pop(x) = 1 + 1 + 1 + 2 = 5, pop(m) = 2.
        let g = graph(&[("r1", &["m"], 1), ("r2", &["x", "r2"], 1), ("m", &["x", "m"], 1), ("x", &[], 1)]);
        assert!(g.info(1).self_reference);
        assert_eq!(brute_pop(&g), [1, 1, 2, 5]);
        assert_eq!(order_names(&g), ["x", "m", "r1", "r2"]);
    }

    #[test]
    fn matches_brute_force_on_random_graphs() {
        for seed in 0..20 {
            let g = random_dag(30, seed);
            let pop = brute_pop(&g);
            let order = popularity_order(&g);
            for w in order.windows(2) {
                let (a, b) = (w[0], w[1]);
                assert!(pop[a] >= pop[b], "seed {seed}");
                if pop[a] == pop[b] {
                    assert!(package_name(g.info(a).path.as_str()) < package_name(g.info(b).path.as_str()));
                }
            }
        }
    }

    /// A chain of `n` diamonds s_k -> {l_k, r_k} -> s_{k+1}: 2^n paths
    /// reach s_n. Below s_n, leaves `a` and `b`; an extra root `t` refers to
    /// `b`, so pop(b) = pop(a) + 2 exactly.
    fn diamond_chain(n: usize) -> Graph {
        let s = |k: usize| sp(&format!("s{k:03}"));
        let mut infos = Vec::new();
        for k in 0..n {
            let (l, r) = (sp(&format!("l{k:03}")), sp(&format!("r{k:03}")));
            infos.push(PathInfo::from_raw_references(s(k), vec![l.clone(), r.clone()], 1));
            infos.push(PathInfo::from_raw_references(l, vec![s(k + 1)], 1));
            infos.push(PathInfo::from_raw_references(r, vec![s(k + 1)], 1));
        }
        infos.push(PathInfo::from_raw_references(s(n), vec![sp("a"), sp("b")], 1));
        infos.push(PathInfo::from_raw_references(sp("a"), vec![], 1));
        infos.push(PathInfo::from_raw_references(sp("b"), vec![], 1));
        infos.push(PathInfo::from_raw_references(sp("t"), vec![sp("b")], 1));
        Graph::new(infos).unwrap()
    }

    #[test]
    fn deep_diamond_chain_is_exact_beyond_128_bits() {
        // pop(s_k) = 2^(k+2) - 3 and pop(l_k) = pop(r_k) = 5·2^k - 3, so the
        // order is b, a, s_n, l_(n-1), r_(n-1), s_(n-1), …, s_0, then t
        // (pop 1, like s_0, but "s000" < "t"). b beats a by 2 in ~2^302:
        // any rounding would tie them and put a first.
        let n = 300;
        let g = diamond_chain(n);
        assert!(popularity::<u128>(&g, &ancestors(&g)).is_none(), "the test must overflow 128 bits");
        let mut want = vec!["b".to_string(), "a".into(), format!("s{n:03}")];
        for k in (0..n).rev() {
            want.extend([format!("l{k:03}"), format!("r{k:03}"), format!("s{k:03}")]);
        }
        want.push("t".into());
        assert_eq!(order_names(&g), want);
        let p = plan_with(&g, Strategy::Popularity, 4, None).unwrap();
        assert_eq!(names(&p)[..3], [vec!["b"], vec!["a"], vec!["s300"]]);
        assert_eq!(p.layers[3].len(), g.len() - 3);
    }

    #[test]
    fn wide_lattice_orders_by_depth_then_name() {
        // Levels of 4 nodes, each referring to every node of the next level:
        // 4^70 = 2^140 paths reach the last level. Nodes of one level are
        // symmetric, so equally popular (ties by name); deeper is more popular.
        let (width, depth) = (4, 70);
        let name = |level: usize, i: usize| format!("n{level:02}-{i}");
        let mut nodes: Vec<(String, Vec<String>)> = Vec::new();
        for level in 0..depth {
            for i in 0..width {
                let refs =
                    if level + 1 < depth { (0..width).map(|j| name(level + 1, j)).collect() } else { vec![] };
                nodes.push((name(level, i), refs));
            }
        }
        let spec: Vec<(&str, Vec<&str>, u64)> =
            nodes.iter().map(|(n, r)| (n.as_str(), r.iter().map(String::as_str).collect(), 1)).collect();
        let refs: Vec<(&str, &[&str], u64)> = spec.iter().map(|(n, r, s)| (*n, r.as_slice(), *s)).collect();
        let g = graph(&refs);
        assert!(popularity::<u128>(&g, &ancestors(&g)).is_none());
        let want: Vec<String> = (0..depth).rev().flat_map(|l| (0..width).map(move |i| name(l, i))).collect();
        assert_eq!(order_names(&g), want);
    }

    #[test]
    fn big_and_128_bit_counts_agree() {
        let to_big = |v: u128| {
            let mut limbs = vec![v as u64, (v >> 64) as u64];
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
            BigUint(limbs)
        };
        for seed in 0..10 {
            let g = random_dag(60, seed);
            let anc = ancestors(&g);
            let small = popularity::<u128>(&g, &anc).unwrap();
            let big = popularity::<BigUint>(&g, &anc).unwrap();
            assert_eq!(big, small.iter().map(|&v| to_big(v)).collect::<Vec<_>>(), "seed {seed}");
        }
        // Carries across limbs, and order by length first.
        let mut x = BigUint(vec![u64::MAX, u64::MAX]);
        x.add(&BigUint::one()).unwrap();
        assert_eq!(x, BigUint(vec![0, 0, 1]));
        assert!(x > BigUint(vec![u64::MAX, u64::MAX]));
        assert!(BigUint(vec![0, 2]) > BigUint(vec![u64::MAX, 1]));
        let mut y = BigUint::zero();
        y.add(&BigUint(vec![5])).unwrap();
        assert_eq!(y, BigUint(vec![5]));
        assert_eq!(to_big(u128::MAX), BigUint(vec![u64::MAX, u64::MAX]));
    }
}
