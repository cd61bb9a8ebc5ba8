//! nixpkgs' popularity layering (`references-by-popularity/closure-graph.py`
//! plus the split of `buildLayeredImage`), reproduced exactly.
//!
//! The script expands the DAG into a tree and counts; the count it ends up
//! with is pop(x) = Σ over every ancestor-or-self a of x of the number of
//! distinct root→a paths. That is computed here without the expansion: a
//! topological pass counts root→a paths, an ancestor bitset per node sums them.

use nix_layer_graph::Graph;

use crate::bits::ancestors;
use crate::{Error, Plan};

/// Paths by popularity, most popular first; ties by closure-graph.py's
/// `package_name` (the path with its `/nix/store/<hash>` part moved to the
/// end) ascending. Fails only if a count overflows 128 bits.
pub fn popularity_order(graph: &Graph) -> Result<Vec<usize>, Error> {
    let n = graph.len();
    let overflow = |i: usize| Error::PopularityOverflow(graph.info(i).path.to_string());
    // Number of distinct paths from any root to each node, dependents first.
    let mut paths = vec![0u128; n];
    for i in graph.topo_order().into_iter().rev() {
        paths[i] = if graph.referrers(i).is_empty() {
            1
        } else {
            graph
                .referrers(i)
                .iter()
                .try_fold(0u128, |acc, &u| acc.checked_add(paths[u]))
                .ok_or_else(|| overflow(i))?
        };
    }
    let anc = ancestors(graph);
    let mut pop = vec![0u128; n];
    for (x, p) in pop.iter_mut().enumerate() {
        *p = anc.ones(x).try_fold(paths[x], |acc, a| acc.checked_add(paths[a])).ok_or_else(|| overflow(x))?;
    }
    let names: Vec<String> = graph.infos().iter().map(|i| package_name(i.path.as_str())).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| pop[b].cmp(&pop[a]).then_with(|| names[a].cmp(&names[b])));
    Ok(order)
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
    let order = popularity_order(graph)?;
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
        popularity_order(g).unwrap().into_iter().map(|i| g.info(i).path.name()).collect()
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
        let p = plan_with(&g, Strategy::Popularity, 2).unwrap();
        assert_eq!(names(&p), [vec!["f"], vec!["e", "d", "c", "b", "g", "a"]]);
        let p = plan_with(&g, Strategy::Popularity, 1).unwrap();
        assert_eq!(names(&p), [vec!["f", "e", "d", "c", "b", "g", "a"]]);
        let p = plan_with(&g, Strategy::Popularity, 7).unwrap();
        assert_eq!(names(&p), [["f"], ["e"], ["d"], ["c"], ["b"], ["g"], ["a"]]);
        assert_eq!(plan_with(&g, Strategy::Popularity, 100).unwrap(), p);
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
            let order = popularity_order(&g).unwrap();
            for w in order.windows(2) {
                let (a, b) = (w[0], w[1]);
                assert!(pop[a] >= pop[b], "seed {seed}");
                if pop[a] == pop[b] {
                    assert!(package_name(g.info(a).path.as_str()) < package_name(g.info(b).path.as_str()));
                }
            }
        }
    }

    #[test]
    fn overflow_is_an_error() {
        // A chain of 130 diamonds: 2^130 distinct paths reach the bottom.
        let n = 130;
        let s = |k: usize| sp(&format!("s{k:03}"));
        let mut infos = Vec::new();
        for k in 0..n {
            let (l, r) = (sp(&format!("l{k:03}")), sp(&format!("r{k:03}")));
            infos.push(PathInfo::from_raw_references(s(k), vec![l.clone(), r.clone()], 1));
            infos.push(PathInfo::from_raw_references(l, vec![s(k + 1)], 1));
            infos.push(PathInfo::from_raw_references(r, vec![s(k + 1)], 1));
        }
        infos.push(PathInfo::from_raw_references(s(n), vec![], 1));
        let g = Graph::new(infos).unwrap();
        let e = popularity_order(&g).unwrap_err();
        assert_eq!(e, Error::PopularityOverflow(s(128).to_string()));
        assert!(e.to_string().contains("128 bits"), "{e}");
        assert!(plan_with(&g, Strategy::Popularity, 10).is_err());
        // 122 diamonds fit: 2^122 paths to the bottom, popularity below 2^125.
        let g = g.subgraph(&g.closure(&[g.index_of(&s(8)).unwrap()])).unwrap();
        let order = popularity_order(&g).unwrap();
        assert_eq!(g.info(order[0]).path, s(n));
    }
}
