//! Property tests of the graph JSON readers: any input gives a graph or an
//! error, never a panic; generated closures read back as they were written,
//! in every spelling; open or cyclic ones are refused.

use std::collections::BTreeSet;

use nix_layer_graph::{Error, Graph, NarHash, StoreDir};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A valid store path base name for node `i`: a distinct hash (decimal
/// digits are Nix base-32 digits), then `name`.
fn base_name(i: usize, name: &str) -> String {
    format!("{i:0>32}-{name}")
}

/// A closure: names, sizes, and for node i references to nodes after it
/// (so it is acyclic), possibly with a self-reference.
#[derive(Debug, Clone)]
struct Closure {
    names: Vec<String>,
    sizes: Vec<u64>,
    refs: Vec<BTreeSet<usize>>,
    self_ref: Vec<bool>,
}

fn closure() -> impl Strategy<Value = Closure> {
    (1usize..24).prop_flat_map(|n| {
        let names = proptest::collection::vec("[a-z][a-z0-9+._?=-]{0,12}", n);
        let sizes = proptest::collection::vec(any::<u64>(), n);
        let refs = proptest::collection::vec(proptest::collection::btree_set(0usize..n, 0..5), n);
        let self_ref = proptest::collection::vec(any::<bool>(), n);
        (names, sizes, refs, self_ref).prop_map(move |(names, sizes, refs, self_ref)| {
            // Keep only forward references: node i may refer to j > i.
            let refs = refs
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.into_iter().filter(|&j| j > i).collect())
                .collect();
            Closure { names, sizes, refs, self_ref }
        })
    })
}

fn path(c: &Closure, i: usize) -> String {
    format!("/nix/store/{}", base_name(i, &c.names[i]))
}

const HASH: &str = "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6";

/// The references Nix prints for node i: itself if self-referring, the rest.
fn raw_refs(c: &Closure, i: usize, full: bool) -> Vec<String> {
    let shown = |j: usize| if full { path(c, j) } else { base_name(j, &c.names[j]) };
    let mut out: Vec<String> = c.refs[i].iter().map(|&j| shown(j)).collect();
    if c.self_ref[i] {
        out.push(shown(i));
    }
    out
}

/// The four spellings the reader accepts.
fn spellings(c: &Closure) -> Vec<Value> {
    let n = c.names.len();
    let export: Vec<Value> = (0..n)
        .map(|i| {
            json!({"path": path(c, i), "references": raw_refs(c, i, true), "narSize": c.sizes[i],
                        "narHash": format!("sha256:{HASH}"), "closureSize": 1})
        })
        .collect();
    let old: Vec<Value> = (0..n)
        .map(|i| {
            json!({"path": path(c, i), "references": raw_refs(c, i, true), "narSize": c.sizes[i],
                        "narHash": format!("sha256:{HASH}"), "valid": true, "deriver": null})
        })
        .collect();
    let new: serde_json::Map<String, Value> = (0..n)
        .map(|i| {
            let v = json!({"references": raw_refs(c, i, false), "narSize": c.sizes[i],
                           "narHash": format!("sha256:{HASH}"), "deriver": format!("{}.drv", base_name(i, "d"))});
            (base_name(i, &c.names[i]), v)
        })
        .collect();
    vec![Value::Array(export.clone()), json!({"graph": export}), Value::Array(old), Value::Object(new)]
}

fn read(bytes: &[u8]) -> Result<Graph, Error> {
    Graph::from_json_slice(bytes, &StoreDir::default(), "graph")
}

/// Every way a graph read from anything must hold together.
fn assert_consistent(g: &Graph) {
    let mut position = vec![0; g.len()];
    for (k, &i) in g.topo_order().iter().enumerate() {
        position[i] = k;
    }
    for i in 0..g.len() {
        assert_eq!(g.index_of(&g.info(i).path), Some(i));
        for &j in g.references(i) {
            assert_ne!(i, j);
            assert!(g.referrers(j).contains(&i));
            // Dependencies come first in topological order.
            assert!(position[j] < position[i]);
        }
    }
}

/// A JSON value of any shape, with strings that sometimes look like paths.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        (0usize..50, "[a-z0-9.-]{0,8}")
            .prop_map(|(i, n)| Value::String(format!("/nix/store/{}", base_name(i, &n)))),
        prop_oneof![Just("sha256:"), Just("sha256-"), Just("")]
            .prop_map(|p| Value::String(format!("{p}{HASH}"))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("path".to_string()),
            Just("references".to_string()),
            Just("narSize".to_string()),
            Just("narHash".to_string()),
            Just("deriver".to_string()),
            Just("valid".to_string()),
            Just("graph".to_string()),
            "[a-z]{1,6}",
            (0usize..50).prop_map(|i| base_name(i, "x")),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    // No regression files: a failure prints its minimal case.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read(&bytes);
    }

    #[test]
    fn arbitrary_json_gives_a_consistent_graph_or_an_error(v in any_json()) {
        if let Ok(g) = read(&serde_json::to_vec(&v).unwrap()) {
            assert_consistent(&g);
        }
    }

    #[test]
    fn generated_closures_read_back_in_every_spelling(c in closure()) {
        for v in spellings(&c) {
            let g = read(&serde_json::to_vec(&v).unwrap()).unwrap();
            assert_consistent(&g);
            prop_assert_eq!(g.len(), c.names.len());
            for i in 0..c.names.len() {
                let k = g.infos().iter().position(|info| info.path.as_str() == path(&c, i)).unwrap();
                let info = g.info(k);
                prop_assert_eq!(info.nar_size, c.sizes[i]);
                prop_assert_eq!(info.self_reference, c.self_ref[i]);
                prop_assert_eq!(info.nar_hash, Some(NarHash::parse(&format!("sha256:{HASH}")).unwrap()));
                let got: BTreeSet<String> = info.references.iter().map(|r| r.to_string()).collect();
                let want: BTreeSet<String> = c.refs[i].iter().map(|&j| path(&c, j)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn mutated_closures_never_panic(
        c in closure(),
        edits in nix_layer_testkit::edits(7),
        which in 0usize..4,
    ) {
        let mut bytes = serde_json::to_vec(&spellings(&c)[which]).unwrap();
        nix_layer_testkit::mutate(&mut bytes, &edits);
        if let Ok(g) = read(&bytes) {
            assert_consistent(&g);
        }
    }

    #[test]
    fn a_missing_reference_is_refused(c in closure()) {
        // Drop a node that something refers to: the graph is not closed.
        let Some(victim) = (0..c.names.len()).find(|&j| c.refs.iter().any(|r| r.contains(&j))) else {
            return Ok(());
        };
        let Value::Array(mut entries) = spellings(&c).swap_remove(0) else { unreachable!() };
        entries.remove(victim);
        let err = read(&serde_json::to_vec(&entries).unwrap()).unwrap_err();
        prop_assert!(matches!(err, Error::NotClosed { .. }), "{}", err);
        prop_assert!(err.to_string().contains(&path(&c, victim)));
    }

    #[test]
    fn a_back_reference_makes_a_cycle(c in closure()) {
        // Node j > i referring back to i closes a cycle whenever i reaches j.
        let Some((i, j)) = c.refs.iter().enumerate().find_map(|(i, r)| r.iter().next().map(|&j| (i, j))) else {
            return Ok(());
        };
        let mut cyclic = c.clone();
        cyclic.refs[j].insert(i);
        let err = read(&serde_json::to_vec(&spellings(&cyclic)[0]).unwrap()).unwrap_err();
        prop_assert!(matches!(err, Error::Cycle(_)), "{}", err);
    }
}
