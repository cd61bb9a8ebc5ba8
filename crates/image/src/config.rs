#![allow(non_snake_case)] // ConfigSpec's fields are Docker's config keys, spelled as users write them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use crate::{Digest, Error};

/// The runtime part of an image config (the `config` object of the OCI/Docker image
/// config), as users write it in Nix: Docker's capitalised keys, each optional.
///
/// Deserialising checks more than serde's defaults: unknown keys are rejected with a hint
/// (`cmd` → "did you mean `Cmd`?"), errors name the offending key (`Healthcheck.Interval`),
/// `ExposedPorts`/`Volumes` may be a `{"80/tcp": {}}` map or a plain list, and `Env`
/// entries must be `NAME=value`.
///
/// Serialising omits unset and empty fields and writes sorted keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSpec {
    pub User: Option<String>,
    /// Ports such as `80/tcp`; written as `{"80/tcp": {}}`.
    pub ExposedPorts: Option<BTreeSet<String>>,
    /// `NAME=value` entries.
    pub Env: Option<Vec<String>>,
    pub Entrypoint: Option<Vec<String>>,
    pub Cmd: Option<Vec<String>>,
    /// Paths such as `/data`; written as `{"/data": {}}`.
    pub Volumes: Option<BTreeSet<String>>,
    pub WorkingDir: Option<String>,
    pub Labels: Option<BTreeMap<String, String>>,
    pub StopSignal: Option<String>,
    pub Healthcheck: Option<Healthcheck>,
    pub OnBuild: Option<Vec<String>>,
    pub Shell: Option<Vec<String>>,
}

/// Docker's `Healthcheck`; durations are integers in nanoseconds, as in Docker's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub Test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub Interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub Timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub StartPeriod: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub StartInterval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub Retries: Option<i64>,
}

/// The config keys nix-layer accepts (Docker's casing); the Nix library's list comes from here.
pub const KNOWN_KEYS: [&str; 12] = [
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "Labels",
    "OnBuild",
    "Shell",
    "StopSignal",
    "User",
    "Volumes",
    "WorkingDir",
];

/// Everything but the two set-valued keys, which accept two shapes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    User: Option<String>,
    Env: Option<Vec<String>>,
    Entrypoint: Option<Vec<String>>,
    Cmd: Option<Vec<String>>,
    WorkingDir: Option<String>,
    Labels: Option<BTreeMap<String, String>>,
    StopSignal: Option<String>,
    Healthcheck: Option<Healthcheck>,
    OnBuild: Option<Vec<String>>,
    Shell: Option<Vec<String>>,
}

impl ConfigSpec {
    /// Parses a config from JSON bytes (e.g. `builtins.toJSON config`).
    pub fn from_json(bytes: &[u8]) -> Result<ConfigSpec, Error> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::BadConfig(format!("not valid JSON: {e}")))?;
        Self::from_value(value).map_err(Error::BadConfig)
    }

    fn from_value(value: Value) -> Result<ConfigSpec, String> {
        let mut map = match value {
            Value::Object(map) => map,
            Value::Null => return Ok(ConfigSpec::default()),
            other => return Err(format!("expected an object of Docker config keys, found {}", kind(&other))),
        };
        if let Some(key) = map.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(unknown_key(key));
        }
        let ExposedPorts =
            map.remove("ExposedPorts").map(|v| string_set("ExposedPorts", v)).transpose()?.flatten();
        let Volumes = map.remove("Volumes").map(|v| string_set("Volumes", v)).transpose()?.flatten();
        let p: Plain = serde_path_to_error::deserialize(Value::Object(map))
            .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
        for entry in p.Env.iter().flatten() {
            match entry.split_once('=') {
                Some((name, _)) if !name.is_empty() => {}
                _ => return Err(format!("`Env` entry `{entry}` is not of the form `NAME=value`")),
            }
        }
        Ok(ConfigSpec {
            User: p.User,
            ExposedPorts,
            Env: p.Env,
            Entrypoint: p.Entrypoint,
            Cmd: p.Cmd,
            Volumes,
            WorkingDir: p.WorkingDir,
            Labels: p.Labels,
            StopSignal: p.StopSignal,
            Healthcheck: p.Healthcheck,
            OnBuild: p.OnBuild,
            Shell: p.Shell,
        })
    }

    /// The `config` object of an image config: set, non-empty fields only, sets as
    /// `{"key": {}}` maps.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        let mut put = |key: &str, v: Value| {
            let empty = match &v {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if !empty {
                m.insert(key.to_owned(), v);
            }
        };
        let set = |s: &Option<BTreeSet<String>>| -> Value {
            s.iter().flatten().map(|k| (k.clone(), json!({}))).collect::<Map<_, _>>().into()
        };
        put("User", json!(self.User));
        put("ExposedPorts", set(&self.ExposedPorts));
        put("Env", json!(self.Env));
        put("Entrypoint", json!(self.Entrypoint));
        put("Cmd", json!(self.Cmd));
        put("Volumes", set(&self.Volumes));
        put("WorkingDir", json!(self.WorkingDir));
        put("Labels", json!(self.Labels));
        put("StopSignal", json!(self.StopSignal));
        put("Healthcheck", json!(self.Healthcheck));
        put("OnBuild", json!(self.OnBuild));
        put("Shell", json!(self.Shell));
        Value::Object(m)
    }
}

impl serde::Serialize for ConfigSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ConfigSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ConfigSpec::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn unknown_key(key: &str) -> String {
    match KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        Some(k) => {
            format!("unknown key `{key}`: did you mean `{k}`? (keys are case-sensitive, as in Docker)")
        }
        None => format!("unknown key `{key}`; the known keys are {}", KNOWN_KEYS.join(", ")),
    }
}

/// `{"a": {}, "b": {}}` or `["a", "b"]` → {a, b}.
fn string_set(key: &str, v: Value) -> Result<Option<BTreeSet<String>>, String> {
    let shape = || format!("`{key}` must be a map like {{\"80/tcp\": {{}}}} or a list of strings");
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(format!("{}, found {} in the list", shape(), kind(&other))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Value::Object(map) => {
            for (k, v) in &map {
                let empty = v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
                if !empty {
                    return Err(format!(
                        "`{key}.{k}` must be {{}} (Docker ignores the value), found {}",
                        kind(v)
                    ));
                }
            }
            Ok(Some(map.into_iter().map(|(k, _)| k).collect()))
        }
        other => Err(format!("{}, found {}", shape(), kind(&other))),
    }
}

/// One `history` entry of the image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339 time.
    pub created: String,
    pub comment: String,
    pub created_by: Option<String>,
}

/// Everything the image config is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfigInput {
    /// RFC 3339 time, e.g. `1970-01-01T00:00:01Z` (dockerTools' default).
    pub created: String,
    /// GOARCH spelling (`amd64`, `arm64`); see [`go_arch`].
    pub architecture: String,
    pub os: String,
    /// CPU variant (`v8` for arm64, `v7` for arm), when there is one.
    pub variant: Option<String>,
    pub config: ConfigSpec,
    /// One per layer, bottom first (or none).
    pub history: Vec<HistoryEntry>,
}

impl ImageConfigInput {
    /// Checks what clients would reject later: times that are not RFC 3339, an empty
    /// architecture or OS.
    pub fn validate(&self) -> Result<(), Error> {
        let time = |what: &str, t: &str| {
            crate::time::parse_rfc3339(t).map(drop).map_err(|e| {
                Error::BadConfig(format!(
                    "{what} `{t}` is not an RFC 3339 time like `1970-01-01T00:00:01Z`: {e}"
                ))
            })
        };
        time("created", &self.created)?;
        for h in &self.history {
            time("history created", &h.created)?;
        }
        let variant = self.variant.as_ref();
        for (what, v) in [("architecture", &self.architecture), ("os", &self.os)]
            .into_iter()
            .chain(variant.map(|v| ("variant", v)))
        {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return Err(Error::BadConfig(format!(
                    "{what} `{v}` must be a Go-style name such as `amd64` / `linux`"
                )));
            }
        }
        Ok(())
    }
}

/// The image config JSON for layers with `diff_ids` (bottom first): sorted keys, compact,
/// empty fields omitted, so the same input always gives the same bytes (and digest).
/// [`Image::new`](crate::Image::new) is the one caller: config and layers are made together.
pub(crate) fn image_config_json(input: &ImageConfigInput, diff_ids: &[Digest]) -> Vec<u8> {
    let mut root = Map::new();
    root.insert("architecture".into(), input.architecture.clone().into());
    root.insert("os".into(), input.os.clone().into());
    if let Some(v) = &input.variant {
        root.insert("variant".into(), v.clone().into());
    }
    root.insert("created".into(), input.created.clone().into());
    let config = input.config.to_value();
    if config.as_object().is_some_and(|o| !o.is_empty()) {
        root.insert("config".into(), config);
    }
    let diff_ids: Vec<Value> = diff_ids.iter().map(|d| d.to_string().into()).collect();
    root.insert("rootfs".into(), json!({ "type": "layers", "diff_ids": diff_ids }));
    if !input.history.is_empty() {
        let history: Vec<Value> = input
            .history
            .iter()
            .map(|h| {
                let mut e = Map::new();
                e.insert("created".into(), h.created.clone().into());
                if !h.comment.is_empty() {
                    e.insert("comment".into(), h.comment.clone().into());
                }
                if let Some(by) = h.created_by.as_ref().filter(|s| !s.is_empty()) {
                    e.insert("created_by".into(), by.clone().into());
                }
                Value::Object(e)
            })
            .collect();
        root.insert("history".into(), history.into());
    }
    // serde_json's Map is a BTreeMap (the `preserve_order` feature must stay off).
    serde_json::to_vec(&Value::Object(root)).expect("a JSON value serialises")
}

/// The GOARCH name (used in image configs) for a Rust `target_arch` or the CPU part of a
/// Nix system (`x86_64` → `amd64`, `aarch64` → `arm64`, `armv7l` → `arm`, …). Unknown names
/// are returned unchanged.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "x86" | "i386" | "i486" | "i586" | "i686" => "386",
        "arm" | "armv5tel" | "armv6l" | "armv7l" | "armv7a" => "arm",
        "powerpc64le" => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "riscv64" | "riscv64gc" => "riscv64",
        "s390x" => "s390x",
        "mips" => "mips",
        "mipsel" => "mipsle",
        "mips64" => "mips64",
        "mips64el" => "mips64le",
        "loongarch64" => "loong64",
        "wasm32" => "wasm",
        other => other,
    }
}

/// dockerTools' `Env` inheritance from a base image: the base's entries, then ours; for
/// each name the last value wins, and each name stays at the position where it first
/// appeared. Entries without `=` are names on their own.
pub fn inherit_env(base: &[String], ours: &[String]) -> Vec<String> {
    let name = |e: &str| e.split_once('=').map_or(e, |(n, _)| n).to_owned();
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, &String> = HashMap::new();
    for entry in base.iter().chain(ours) {
        let n = name(entry);
        if latest.insert(n.clone(), entry).is_none() {
            order.push(n);
        }
    }
    order.iter().map(|n| latest[n].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_json(input: &ImageConfigInput) -> Vec<u8> {
        image_config_json(input, &[Digest::of(b"layer 1"), Digest::of(b"layer 2")])
    }

    fn spec(json: &str) -> Result<ConfigSpec, String> {
        ConfigSpec::from_json(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn input(config: ConfigSpec) -> ImageConfigInput {
        ImageConfigInput {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config,
            history: vec![
                HistoryEntry {
                    created: "1970-01-01T00:00:01Z".into(),
                    comment: "store paths".into(),
                    created_by: None,
                },
                HistoryEntry {
                    created: "1970-01-01T00:00:01Z".into(),
                    comment: String::new(),
                    created_by: Some("nix-layer".into()),
                },
            ],
        }
    }

    #[test]
    fn parses_docker_keys_and_both_set_shapes() {
        let s = spec(
            r#"{"Cmd": ["/bin/sh"], "Entrypoint": null, "Env": ["A=1", "B="], "User": "1000:1000",
                "WorkingDir": "/app", "ExposedPorts": {"80/tcp": {}, "53/udp": null},
                "Volumes": ["/data"], "Labels": {"b": "2", "a": "1"}, "StopSignal": "SIGTERM",
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000, "Retries": 3},
                "OnBuild": [], "Shell": ["/bin/bash", "-c"]}"#,
        )
        .unwrap();
        assert_eq!(s.Cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
        assert_eq!(s.Entrypoint, None);
        assert_eq!(s.ExposedPorts.unwrap().into_iter().collect::<Vec<_>>(), ["53/udp", "80/tcp"]);
        assert_eq!(s.Volumes.unwrap().into_iter().collect::<Vec<_>>(), ["/data"]);
        assert_eq!(s.Healthcheck.unwrap().Interval, Some(30_000_000_000));
        assert_eq!(spec("null").unwrap(), ConfigSpec::default());
        assert_eq!(spec("{}").unwrap(), ConfigSpec::default());
    }

    #[test]
    fn errors_name_the_key_and_say_what_to_do() {
        let e = spec(r#"{"cmd": ["x"]}"#).unwrap_err();
        assert!(e.contains("unknown key `cmd`: did you mean `Cmd`?"), "{e}");
        let e = spec(r#"{"Memory": 1}"#).unwrap_err();
        assert!(e.contains("unknown key `Memory`") && e.contains("WorkingDir"), "{e}");
        let e = spec(r#"{"Cmd": "echo hi"}"#).unwrap_err();
        assert!(e.contains("`Cmd`") && e.contains("expected a sequence"), "{e}");
        let e = spec(r#"{"Healthcheck": {"Interval": "30s"}}"#).unwrap_err();
        assert!(e.contains("`Healthcheck.Interval`"), "{e}");
        let e = spec(r#"{"Healthcheck": {"interval": 1}}"#).unwrap_err();
        assert!(e.contains("Healthcheck") && e.contains("unknown field `interval`"), "{e}");
        let e = spec(r#"{"Env": ["NOVALUE"]}"#).unwrap_err();
        assert!(e.contains("`NOVALUE`") && e.contains("NAME=value"), "{e}");
        let e = spec(r#"{"Env": ["=x"]}"#).unwrap_err();
        assert!(e.contains("NAME=value"), "{e}");
        let e = spec(r#"{"ExposedPorts": {"80/tcp": 1}}"#).unwrap_err();
        assert!(e.contains("`ExposedPorts.80/tcp` must be {}"), "{e}");
        let e = spec(r#"{"Volumes": "/data"}"#).unwrap_err();
        assert!(e.contains("`Volumes` must be a map") && e.contains("found a string"), "{e}");
        let e = spec(r#"{"Labels": {"a": 1}}"#).unwrap_err();
        assert!(e.contains("`Labels.a`"), "{e}");
        let e = spec("[1]").unwrap_err();
        assert!(e.contains("expected an object"), "{e}");
        let e = spec("{").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        // The same checks apply through plain serde.
        let e = serde_json::from_str::<ConfigSpec>(r#"{"entrypoint": []}"#).unwrap_err();
        assert!(e.to_string().contains("did you mean `Entrypoint`?"), "{e}");
    }

    #[test]
    fn config_json_is_sorted_compact_and_omits_empties() {
        let config = ConfigSpec {
            Cmd: Some(vec!["/bin/hello".into()]),
            Env: Some(vec![]),
            User: Some(String::new()),
            ExposedPorts: Some(["8080/tcp".to_owned()].into()),
            Labels: Some([("z".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())].into()),
            ..Default::default()
        };
        let json = String::from_utf8(config_json(&input(config))).unwrap();
        let d1 = Digest::of(b"layer 1");
        let d2 = Digest::of(b"layer 2");
        assert_eq!(
            json,
            format!(
                r#"{{"architecture":"amd64","config":{{"Cmd":["/bin/hello"],"ExposedPorts":{{"8080/tcp":{{}}}},"Labels":{{"a":"2","z":"1"}}}},"created":"1970-01-01T00:00:01Z","history":[{{"comment":"store paths","created":"1970-01-01T00:00:01Z"}},{{"created":"1970-01-01T00:00:01Z","created_by":"nix-layer"}}],"os":"linux","rootfs":{{"diff_ids":["{d1}","{d2}"],"type":"layers"}}}}"#
            )
        );
        // An empty config and history are left out entirely.
        let mut bare = input(ConfigSpec::default());
        bare.history.clear();
        let v: Value = serde_json::from_slice(&config_json(&bare)).unwrap();
        assert!(v.get("config").is_none() && v.get("history").is_none());
        assert_eq!(v["rootfs"]["type"], "layers");
    }

    #[test]
    fn config_json_is_deterministic_whatever_the_input_order() {
        // The same labels and ports, given in different orders (as a HashMap would).
        let a = spec(r#"{"Labels": {"x": "1", "b": "2", "m": "3"}, "ExposedPorts": ["443/tcp", "80/tcp"], "Cmd": ["a"]}"#)
            .unwrap();
        let b = spec(r#"{"Cmd": ["a"], "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Labels": {"m": "3", "x": "1", "b": "2"}}"#)
            .unwrap();
        let ja = config_json(&input(a));
        assert_eq!(ja, config_json(&input(b)));
        assert_eq!(ja, config_json(&input(spec(std::str::from_utf8(&spec_json(&ja)).unwrap()).unwrap())));
        // Every object's keys are sorted.
        fn check_sorted(v: &Value) {
            match v {
                Value::Object(m) => {
                    let keys: Vec<&String> = m.keys().collect();
                    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
                    m.values().for_each(check_sorted);
                }
                Value::Array(a) => a.iter().for_each(check_sorted),
                _ => {}
            }
        }
        check_sorted(&serde_json::from_slice(&ja).unwrap());
    }

    /// The `config` object of a config JSON, re-serialised (round trip through ConfigSpec).
    fn spec_json(config_json: &[u8]) -> Vec<u8> {
        let v: Value = serde_json::from_slice(config_json).unwrap();
        serde_json::to_vec(&v["config"]).unwrap()
    }

    #[test]
    fn config_serialises_like_docker() {
        let s = spec(r#"{"Volumes": ["/b", "/a"], "Healthcheck": {"Test": ["NONE"]}, "Shell": []}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"Healthcheck":{"Test":["NONE"]},"Volumes":{"/a":{},"/b":{}}}"#
        );
    }

    #[test]
    fn validate_checks_times_and_platform() {
        let mut i = input(ConfigSpec::default());
        i.validate().unwrap();
        for ok in ["2024-02-29T23:59:59.123456789+05:30", "1970-01-01t00:00:00z", "2000-01-01T00:00:00-00:00"]
        {
            i.created = ok.into();
            i.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in
            ["now", "", "1970-01-01", "1970-01-01T00:00:01", "1970-13-01T00:00:01Z", "1970-01-01T00:00:01.Z"]
        {
            i.created = bad.into();
            let e = i.validate().unwrap_err().to_string();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
        i.created = "1970-01-01T00:00:01Z".into();
        i.history[1].created = "yesterday".into();
        assert!(i.validate().is_err());
        let mut i = input(ConfigSpec::default());
        i.architecture = "x86_64".into();
        assert!(i.validate().unwrap_err().to_string().contains("amd64"));
    }

    #[test]
    fn go_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("i686"), "386");
        assert_eq!(go_arch("armv7l"), "arm");
        assert_eq!(go_arch("powerpc64le"), "ppc64le");
        assert_eq!(go_arch("riscv64"), "riscv64");
        assert_eq!(go_arch("loongarch64"), "loong64");
        assert_eq!(go_arch("amd64"), "amd64");
        assert_eq!(go_arch("sparc64"), "sparc64");
        assert!(!go_arch(std::env::consts::ARCH).is_empty());
    }

    #[test]
    fn env_inheritance_follows_dockertools() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            inherit_env(
                &v(&["PATH=/base/bin", "LANG=C", "A=base"]),
                &v(&["A=ours", "PATH=/nix/bin", "NEW=1"])
            ),
            v(&["PATH=/nix/bin", "LANG=C", "A=ours", "NEW=1"])
        );
        // Duplicates within one list collapse too; the last value wins, first position kept.
        assert_eq!(inherit_env(&v(&["X=1", "Y=2", "X=3"]), &v(&[])), v(&["X=3", "Y=2"]));
        assert_eq!(inherit_env(&v(&[]), &v(&["K=a=b", "K=c"])), v(&["K=c"]));
        // A value containing `=` keeps it; a bare name counts as a name.
        assert_eq!(inherit_env(&v(&["FOO", "Q=x=y"]), &v(&["FOO=1"])), v(&["FOO=1", "Q=x=y"]));
        assert!(inherit_env(&[], &[]).is_empty());
    }
}
