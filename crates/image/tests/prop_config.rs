//! Property tests of the image config: any JSON gives a config or an error,
//! never a panic; a parsed config survives a round trip through its own
//! serialisation and through the image config `Image::new` writes, byte for byte.

use std::collections::BTreeMap;

use nix_layer_image::{
    BlobInfo, Compression, ConfigSpec, Digest, HistoryEntry, Image, ImageConfigInput, ImageRef,
};
use proptest::prelude::*;
use serde_json::{json, Value};

const KEYS: [&str; 12] = nix_layer_image::CONFIG_KEYS;

/// JSON of any shape, with Docker's config keys (and near misses) as keys.
fn config_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        "[A-Z_]{0,5}=?.{0,5}".prop_map(Value::String),
        "[0-9]{1,5}/(tcp|udp)".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            proptest::sample::select(KEYS.to_vec()).prop_map(String::from),
            proptest::sample::select(KEYS.to_vec()).prop_map(|k| k.to_lowercase()),
            prop_oneof![Just("Test"), Just("Interval"), Just("Retries"), Just("Timeout")]
                .prop_map(String::from),
            "[a-zA-Z/0-9]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn strings(max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(".{0,12}", 0..max)
}

/// A config every field of which is valid.
fn valid_config() -> impl Strategy<Value = Value> {
    let env = proptest::collection::vec("[A-Z_][A-Z0-9_]{0,6}=.{0,10}", 0..4);
    let ports = proptest::collection::btree_set("[0-9]{1,5}/(tcp|udp)", 0..3);
    let labels = proptest::collection::btree_map("[a-z.]{1,10}", ".{0,10}", 0..3);
    let health = (strings(3), proptest::option::of(any::<i64>()), proptest::option::of(0i64..10));
    (
        (proptest::option::of(".{0,10}"), env, strings(3), strings(3), proptest::option::of(".{0,10}")),
        (ports, any::<bool>(), labels, proptest::option::of(health), strings(2)),
    )
        .prop_map(|((user, env, entry, cmd, wd), (ports, ports_as_list, labels, health, vols))| {
            let ports: Value = if ports_as_list {
                json!(ports)
            } else {
                Value::Object(ports.into_iter().map(|p| (p, json!({}))).collect())
            };
            let mut v = json!({"User": user, "Env": env, "Entrypoint": entry, "Cmd": cmd, "WorkingDir": wd,
                               "ExposedPorts": ports, "Labels": labels, "Volumes": vols});
            if let Some((test, interval, retries)) = health {
                v["Healthcheck"] = json!({"Test": test, "Interval": interval, "Retries": retries});
            }
            v
        })
}

fn image_config(config: ConfigSpec) -> Vec<u8> {
    let input = ImageConfigInput {
        created: "1970-01-01T00:00:01Z".into(),
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        config,
        history: vec![HistoryEntry {
            created: "1970-01-01T00:00:01Z".into(),
            comment: "c".into(),
            created_by: None,
        }],
    };
    let d = Digest::of(b"layer");
    let layer =
        BlobInfo { diff_id: d, uncompressed_size: 5, digest: d, size: 5, compression: Compression::None };
    let image = Image::new(ImageRef::new("x", "1").unwrap(), &input, vec![layer], &BTreeMap::new()).unwrap();
    image.config().bytes().to_vec()
}

/// A parsed config must serialise, parse back to itself, and give the same
/// image config bytes both times (the digest depends on them).
fn assert_round_trips(spec: &ConfigSpec) {
    let written = serde_json::to_vec(spec).unwrap();
    let again = ConfigSpec::from_json(&written).unwrap();
    // Empty lists and maps are omitted when written: compare what is written.
    assert_eq!(serde_json::to_vec(&again).unwrap(), written);
    assert_eq!(image_config(again), image_config(spec.clone()));
    let doc: Value = serde_json::from_slice(&image_config(spec.clone())).unwrap();
    assert_eq!(doc["rootfs"]["type"], "layers");
    for entry in spec.Env.iter().flatten() {
        assert!(entry.split_once('=').is_some_and(|(name, _)| !name.is_empty()), "{entry}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(spec) = ConfigSpec::from_json(&bytes) {
            assert_round_trips(&spec);
        }
    }

    #[test]
    fn config_like_json_parses_and_round_trips_or_is_refused(v in config_like()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let parsed = ConfigSpec::from_json(&bytes);
        // The serde path (the Nix wrapper's settings) agrees with from_json.
        let via_serde: Result<ConfigSpec, _> = serde_json::from_slice(&bytes);
        prop_assert_eq!(parsed.is_ok(), via_serde.is_ok());
        if let Ok(spec) = parsed {
            prop_assert_eq!(&spec, &via_serde.unwrap());
            assert_round_trips(&spec);
        }
    }

    #[test]
    fn valid_configs_parse_and_round_trip(v in valid_config()) {
        let spec = ConfigSpec::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        prop_assert_eq!(spec.Env.clone().unwrap_or_default(), v["Env"].as_array().unwrap().iter()
            .map(|s| s.as_str().unwrap().to_owned()).collect::<Vec<_>>());
        assert_round_trips(&spec);
    }

    #[test]
    fn unknown_keys_are_refused_by_name(v in valid_config(), key in "[a-z][a-zA-Z]{0,8}") {
        let mut v = v;
        v[key.as_str()] = json!(1);
        let err = ConfigSpec::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err().to_string();
        prop_assert!(err.contains(&format!("unknown key `{key}`")), "{}", err);
    }
}
