//! nixpkgs' auto-layer (`pkgs/build-support/docker/auto-layer.py`, the
//! default of `buildLayeredImage` since late 2024), reproduced exactly.
//!
//! Paths are taken largest first as *primaries*; every path is labelled with
//! the set of primaries that own it, and each distinct label is a layer. With
//! a new primary P, each dependency D of P drops from its label the primaries
//! that use P, then gains P if its label holds none of P's dependencies. The
//! last primary that would make more labels than the budget is not taken.
//!
//! The script copies a dict of frozensets per primary, O(V·(V+E)); here labels
//! are interned, reachability is a bitset, and the label count is kept
//! incrementally, so one primary costs O(V/64 + |deps(P)|).

use std::collections::HashMap;

use nix_layer_graph::Graph;

use crate::bits::descendants;
use crate::{layers_by_closure_size, Plan};

/// Interned labels: sorted primary ordinals (a new primary always has the
/// highest ordinal, so pushing keeps them sorted).
struct Labels {
    sets: Vec<Vec<u32>>,
    ids: HashMap<Vec<u32>, u32>,
    nodes_with: Vec<usize>,
    distinct: usize,
}

impl Labels {
    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        self.nodes_with.push(0);
        id
    }

    fn relabel(&mut self, old: u32, new: u32) {
        let o = &mut self.nodes_with[old as usize];
        *o -= 1;
        if *o == 0 {
            self.distinct -= 1;
        }
        let n = &mut self.nodes_with[new as usize];
        if *n == 0 {
            self.distinct += 1;
        }
        *n += 1;
    }
}

pub(crate) fn plan(graph: &Graph, budget: usize) -> Plan {
    let n = graph.len();
    if n == 0 {
        return Plan { layers: Vec::new() };
    }
    let desc = descendants(graph);
    if budget >= n {
        // Every path ends up a primary labelled by itself alone (a later
        // primary never relabels an earlier one, which is not among its
        // users and is among its dependencies), so the labelling is known
        // without running it: one layer per path.
        return layers_by_closure_size(graph, &desc, (0..n).map(|i| vec![i]).collect());
    }
    // `sorted(graph, key=narSize)` is stable, and `pop()` takes from the end:
    // the largest first, and among equal sizes the last in input order.
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| graph.info(i).nar_size);

    let mut labels = Labels { sets: Vec::new(), ids: HashMap::new(), nodes_with: Vec::new(), distinct: 1 };
    let empty = labels.intern(Vec::new());
    labels.nodes_with[empty as usize] = n;
    let mut label = vec![empty; n];
    let mut primaries: Vec<usize> = Vec::new();
    let mut changes: Vec<(usize, u32)> = Vec::new();
    // New label per old label for the current primary, valid when the
    // stamp matches the primary's ordinal.
    let mut memo: Vec<(u32, u32)> = Vec::new();

    while let Some(p) = by_size.pop() {
        let ord = primaries.len() as u32;
        primaries.push(p);
        changes.clear();
        changes.push((p, labels.intern(vec![ord])));
        for d in desc.ones(p) {
            let old = label[d];
            memo.resize(labels.sets.len(), (u32::MAX, 0));
            let new = match memo[old as usize] {
                (stamp, id) if stamp == ord => id,
                _ => {
                    // Drop the primaries that use P (P is among their
                    // dependencies); add P unless one of P's dependencies
                    // is still in the label.
                    let mut set: Vec<u32> = labels.sets[old as usize]
                        .iter()
                        .copied()
                        .filter(|&q| !desc.get(primaries[q as usize], p))
                        .collect();
                    if !set.iter().any(|&q| desc.get(p, primaries[q as usize])) {
                        set.push(ord);
                    }
                    let id = labels.intern(set);
                    memo[old as usize] = (ord, id);
                    id
                }
            };
            if new != old {
                changes.push((d, new));
            }
        }
        for &(node, new) in &changes {
            labels.relabel(label[node], new);
        }
        if labels.distinct > budget {
            break; // the counts are now stale, but nothing reads them again
        }
        for &(node, new) in &changes {
            label[node] = new;
        }
    }

    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &l) in label.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    layers_by_closure_size(graph, &desc, groups.into_values().collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::tests::{doc, graph, names, random_dag};
    use crate::{plan as plan_with, Strategy};

    fn auto(g: &Graph, budget: usize) -> Vec<Vec<String>> {
        let p = plan_with(g, Strategy::Auto, budget, None).unwrap();
        names(&p).into_iter().map(|l| l.into_iter().map(str::to_owned).collect()).collect()
    }

    #[test]
    fn doc_graph_vectors() {
        let g = doc();
        assert_eq!(auto(&g, 3), [vec!["f"], vec!["g"], vec!["a", "b", "c", "d", "e"]]);
        assert_eq!(auto(&g, 5), [vec!["f"], vec!["g"], vec!["d"], vec!["e"], vec!["a", "b", "c"]]);
        assert_eq!(auto(&g, 100), [["f"], ["g"], ["d"], ["e"], ["c"], ["b"], ["a"]]);
        assert_eq!(auto(&g, 7), auto(&g, 100));
        assert_eq!(auto(&g, 1), [vec!["a", "b", "c", "d", "e", "f", "g"]]);
    }

    #[test]
    fn equal_sizes_take_the_last_listed_first() {
        // x and y weigh the same; y is listed last, so it becomes the first
        // primary and takes the shared dependency z when only two labels fit.
        // (Both layers weigh 6 with their closure, so compare them unordered.)
        let sorted = |mut l: Vec<Vec<String>>| {
            l.sort();
            l
        };
        let g = graph(&[("x", &["z"], 5), ("y", &["z"], 5), ("z", &[], 1)]);
        assert_eq!(sorted(auto(&g, 2)), [vec!["x"], vec!["y", "z"]]);
        let g = graph(&[("y", &["z"], 5), ("x", &["z"], 5), ("z", &[], 1)]);
        assert_eq!(sorted(auto(&g, 2)), [vec!["x", "z"], vec!["y"]]);
    }

    #[test]
    fn shared_dependencies_get_their_own_layer() {
        // Two big apps share a library: three labels {app1}, {app2}, {app1, app2}.
        let g = graph(&[
            ("app1", &["lib"], 100),
            ("app2", &["lib"], 90),
            ("lib", &["libc"], 5),
            ("libc", &[], 50),
        ]);
        assert_eq!(auto(&g, 3), [vec!["lib", "libc"], vec!["app2"], vec!["app1"]]);
        // libc is the third primary; it would make a fourth label.
        assert_eq!(auto(&g, 4), [vec!["libc"], vec!["lib"], vec!["app2"], vec!["app1"]]);
    }

    /// A Python version of auto-layer written for this test (set-based, as
    /// the script works), run on random graphs when python3 is available.
    const PY: &str = r#"
import json, sys
g = json.load(sys.stdin); limit = g["limit"]; nodes = {x["path"]: x for x in g["graph"]}
users = {p: set() for p in nodes}
for p, x in nodes.items():
    for r in x["references"]:
        users[r].add(p)
def reach(p, nxt):
    seen, todo = set(), [p]
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x); todo.extend(nxt(x))
    return seen
deps = lambda p: reach(p, lambda x: nodes[x]["references"]) - {p}
ups = lambda p: reach(p, lambda x: users[x]) - {p}
queue = sorted(g["graph"], key=lambda x: x["narSize"])
label = {p: frozenset() for p in nodes}
while queue:
    P = queue.pop()["path"]
    new = dict(label); new[P] = frozenset([P]); d = deps(P); u = ups(P)
    for x in d:
        new[x] = new[x] - u
        if not new[x] & d:
            new[x] = new[x] | {P}
    if len(set(new.values())) > limit:
        break
    label = new
key = lambda p: (p.split("-", 1)[1], p.split("-", 1)[0])
out = []
for l in set(label.values()):
    ps = sorted((p for p in nodes if label[p] == l), key=key)
    cl = set().union(*(reach(p, lambda x: nodes[x]["references"]) for p in ps))
    out.append((sum(nodes[p]["narSize"] for p in cl), ps))
print(json.dumps([ps for _, ps in sorted(out)]))
"#;

    #[test]
    fn matches_a_python_model_on_random_graphs() {
        if Command::new("python3").arg("--version").output().is_err() {
            eprintln!("note: python3 not found; skipping the comparison with the Python model");
            return;
        }
        for (seed, n, budget) in [(1, 30, 4), (2, 40, 8), (3, 60, 12), (4, 25, 100), (5, 50, 3), (6, 80, 20)]
        {
            let g = random_dag(n, seed);
            let graph_json: Vec<serde_json::Value> = g
                .infos()
                .iter()
                .map(|i| {
                    serde_json::json!({"path": i.path.as_str(), "narSize": i.nar_size,
                        "references": i.references.iter().map(|r| r.as_str()).collect::<Vec<_>>()})
                })
                .collect();
            let input = serde_json::json!({"limit": budget, "graph": graph_json}).to_string();
            let mut child = Command::new("python3")
                .args(["-c", PY])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "python failed");
            let want: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
            let got = plan_with(&g, Strategy::Auto, budget, None).unwrap();
            let got: Vec<Vec<String>> =
                got.layers.iter().map(|l| l.iter().map(|p| p.to_string()).collect()).collect();
            assert_eq!(got, want, "seed {seed}, {n} paths, budget {budget}");
        }
    }
}
