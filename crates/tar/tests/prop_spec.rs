//! Property tests of the top-layer spec: whatever JSON comes in, parsing
//! gives a spec that validates or an error, never a panic; valid specs build
//! a layer whose members are exactly the entries and their parents.

use std::collections::BTreeSet;
use std::io::Read;

use nix_layer_store::StoreDir;
use nix_layer_tar::{parse_spec, write_top_layer, HostFiles, SpecKind, TopLayerInput, TopLayerSpec};
use proptest::prelude::*;
use serde_json::{json, Value};

fn build(spec: &TopLayerSpec) -> Result<Vec<u8>, nix_layer_tar::Error> {
    let store = StoreDir::default();
    let input = TopLayerInput {
        contents: &[],
        spec,
        generated: &[],
        store_dir: &store,
        host_files: HostFiles::Refuse,
        mtime: 1,
    };
    write_top_layer(&input, Vec::new())
}

/// Members of a tar stream as (name, type byte, data), read by the `tar` crate.
fn members(bytes: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            (name, e.header().entry_type().as_byte(), data)
        })
        .collect()
}

fn octal() -> impl Strategy<Value = String> {
    (0u32..0o10000).prop_map(|m| format!("{m:04o}"))
}

/// A valid entry without `copy` (no file system needed), as JSON.
fn entry(path: String) -> impl Strategy<Value = Value> {
    let owner = (proptest::option::of(0u64..=u32::MAX as u64), proptest::option::of("[a-z]{0,40}"));
    let kind = prop_oneof![
        proptest::option::of(octal()).prop_map(|mode| json!({"type": "dir", "mode": mode})),
        "[a-z/.]{1,30}".prop_map(|target| json!({"type": "symlink", "target": target})),
        (".{0,40}", proptest::option::of(octal()))
            .prop_map(|(text, mode)| json!({"type": "text", "text": text, "mode": mode})),
    ];
    (kind, owner).prop_map(move |(mut v, (uid, uname))| {
        let obj = v.as_object_mut().unwrap();
        obj.insert("path".into(), json!(path));
        obj.retain(|_, v| !v.is_null());
        if let Some(uid) = uid {
            obj.insert("uid".into(), json!(uid));
            obj.insert("gid".into(), json!(uid));
        }
        if let Some(uname) = uname {
            obj.insert("uname".into(), json!(uname));
        }
        v
    })
}

/// A valid spec: distinct leaf paths (no entry below another's file), and
/// rules on some of those paths.
fn valid_spec() -> impl Strategy<Value = Value> {
    proptest::collection::btree_set("(/[a-z][a-z0-9_.-]{0,8}){1,4}", 0..10).prop_flat_map(|paths| {
        // Drop paths below another path: that one may become a file.
        let paths: Vec<String> = paths
            .iter()
            .filter(|p| !paths.iter().any(|q| q != *p && p.starts_with(&format!("{q}/"))))
            .cloned()
            .collect();
        let entries: Vec<_> = paths.iter().map(|p| entry(p.clone())).collect();
        let rule_paths = proptest::sample::subsequence(paths.clone(), 0..=paths.len());
        (entries, rule_paths, proptest::option::of(octal())).prop_map(|(entries, rule_paths, mode)| {
            let rules: Vec<Value> = rule_paths
                .into_iter()
                .map(|p| match &mode {
                    Some(m) => json!({"path": p, "uid": 7, "mode": m}),
                    None => json!({"path": p, "gname": "grp"}),
                })
                .collect();
            json!({"entries": entries, "rules": rules})
        })
    })
}

/// JSON of any shape with the spec's keys and values that are nearly right.
fn spec_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        "(/[a-z.]{0,3}){0,3}/?".prop_map(Value::String),
        "[0-9]{0,7}".prop_map(Value::String),
        prop_oneof![Just("dir"), Just("symlink"), Just("copy"), Just("text"), Just("fifo")]
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("entries"),
            Just("rules"),
            Just("path"),
            Just("type"),
            Just("target"),
            Just("source"),
            Just("text"),
            Just("mode"),
            Just("uid"),
            Just("gid"),
            Just("uname"),
            Just("gname"),
        ]
        .prop_map(String::from);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What every parsed spec must satisfy.
fn assert_sane(spec: &TopLayerSpec) {
    spec.validate().unwrap();
    for e in &spec.entries {
        assert!(e.path.starts_with('/') && !e.path.split('/').any(|c| c == ".."), "{}", e.path);
        assert!(e.mode.is_none_or(|m| m <= 0o7777));
        assert!(e.uid <= u64::from(u32::MAX) && e.gid <= u64::from(u32::MAX));
    }
    for r in &spec.rules {
        assert!(r.uid.is_none_or(|u| u <= u64::from(u32::MAX)));
        assert!(r.mode.is_none_or(|m| m <= 0o7777));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(spec) = parse_spec(&bytes) {
            assert_sane(&spec);
        }
    }

    #[test]
    fn spec_like_json_parses_sanely_or_not_at_all(v in spec_like()) {
        if let Ok(spec) = parse_spec(&serde_json::to_vec(&v).unwrap()) {
            assert_sane(&spec);
            // Copies would read the file system; the rest must build or fail cleanly.
            if !spec.entries.iter().any(|e| matches!(e.kind, SpecKind::Copy { .. })) {
                let _ = build(&spec);
            }
        }
    }

    #[test]
    fn valid_specs_build_exactly_their_entries(v in valid_spec()) {
        let spec = parse_spec(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_sane(&spec);
        let out = build(&spec).unwrap();
        prop_assert_eq!(out.len() % 10240, 0);
        let got = members(&out);
        let mut want = BTreeSet::new();
        for e in &spec.entries {
            let rel = e.path.trim_start_matches('/');
            let mut parent = String::new();
            for c in rel.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                parent.push_str(c);
                want.insert(format!("{parent}/"));
                parent.push('/');
            }
            want.insert(if e.kind == SpecKind::Dir { format!("{rel}/") } else { rel.to_string() });
        }
        let names: BTreeSet<String> = got.iter().map(|(n, _, _)| n.clone()).collect();
        prop_assert_eq!(names.len(), got.len(), "no member twice");
        prop_assert_eq!(names, want);
        for e in &spec.entries {
            if let SpecKind::Text { text } = &e.kind {
                let rel = e.path.trim_start_matches('/');
                let (_, kind, data) = got.iter().find(|(n, _, _)| n == rel).unwrap();
                prop_assert_eq!(*kind, b'0');
                prop_assert_eq!(data, text.as_bytes());
            }
        }
    }

    #[test]
    fn mutated_valid_specs_never_panic(
        v in valid_spec(),
        edits in nix_layer_testkit::edits(5),
    ) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        nix_layer_testkit::mutate(&mut bytes, &edits);
        if let Ok(spec) = parse_spec(&bytes) {
            assert_sane(&spec);
            if !spec.entries.iter().any(|e| matches!(e.kind, SpecKind::Copy { .. })) {
                let _ = build(&spec);
            }
        }
    }
}
