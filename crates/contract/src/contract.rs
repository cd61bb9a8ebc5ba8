//! The contract itself: every image argument the Nix library takes, with its
//! type, default and limits, and the names both sides use on the wire.
//!
//! This is the one definition. `nix-layer contract --json` prints it,
//! `nix/contract.json` is a copy that `nix/image/validate.nix` validates
//! arguments from (a test checks that the copy is current), and the request
//! builder in [`crate::settings`] takes its defaults and limits from here.

use nix_layer_blob::Compression;
use nix_layer_pipeline::OutputFormat;
use nix_layer_plan::Strategy;
use serde_json::{json, Map, Value};

/// Bumped whenever a key, type, default or limit changes meaning. The Nix
/// library sends it as `nixLayer.contractVersion`; `nix-build` mode refuses
/// any other version.
pub const VERSION: u64 = 1;

/// The structured attribute holding the image settings.
pub const SETTINGS_KEY: &str = "nixLayer";
/// The settings key carrying [`VERSION`].
pub const VERSION_KEY: &str = "contractVersion";
/// The exportReferencesGraph key of the image's closure.
pub const GRAPH_KEY: &str = "graph";
/// Family member `NAME`'s graph arrives under `family-NAME`.
pub const FAMILY_KEY_PREFIX: &str = "family-";
/// The line after which a stream script carries its settings as JSON.
pub const SETTINGS_MARKER: &str = "__NIX_LAYER_SETTINGS__";
/// The top-level key of a family catalogue file.
pub const CATALOGUE_KEY: &str = "nixLayerFamily";
/// What a `nix-build` derivation produces.
pub const MODES: [&str; 3] = ["image", "stream", "family-catalogue"];

/// Layer budget limits: one store layer plus the top layer at least; at most
/// what overlayfs mounts (its lowerdir option caps near 128 layers, and
/// Docker refuses more than 125 in practice).
pub const MIN_LAYERS: usize = 2;
pub const MAX_LAYERS: usize = 125;
pub const DEFAULT_MAX_LAYERS: usize = 100;
/// dockerTools' fixed image time.
pub const DEFAULT_TIME: &str = "1970-01-01T00:00:01Z";
pub const DEFAULT_STRATEGY: Strategy = Strategy::Popularity;
pub const DEFAULT_STRATEGY_NAME: &str = "popularity";
pub const DEFAULT_FORMAT: OutputFormat = OutputFormat::DockerArchive;
pub const DEFAULT_STORE_DIR: &str = "/nix/store";
pub const DEFAULT_USER: &str = "root";

/// Config keys dockerTools passes through that have no effect on a Linux
/// image, with why: accepted (so configs written for dockerTools work) and
/// left out of the image config. `ArgsEscaped` only means something to
/// Windows containers; the Docker v1 image spec's resource keys are never
/// applied by engines (limits come from `docker run`).
pub const IGNORED_CONFIG_KEYS: [(&str, &str); 4] = [
    ("ArgsEscaped", "only Windows containers read it"),
    ("CpuShares", "engines take resource limits from the run command, not the image"),
    ("Memory", "engines take resource limits from the run command, not the image"),
    ("MemorySwap", "engines take resource limits from the run command, not the image"),
];

/// The top-layer spec's keys and entry types.
pub const TOP_LAYER_KEYS: [&str; 2] = ["entries", "rules"];
pub const ENTRY_TYPES: [&str; 4] = ["dir", "symlink", "copy", "text"];

pub const FORMATS: [OutputFormat; 3] =
    [OutputFormat::DockerArchive, OutputFormat::Oci, OutputFormat::OciArchive];

pub fn format_name(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::DockerArchive => "docker-archive",
        OutputFormat::Oci => "oci",
        OutputFormat::OciArchive => "oci-archive",
    }
}

/// Layers of a docker-archive stay uncompressed (engines load them as they
/// are); OCI layouts and archives are for registries, so gzip by default.
pub fn default_compression(format: OutputFormat) -> Compression {
    match format {
        OutputFormat::DockerArchive => Compression::None,
        OutputFormat::Oci | OutputFormat::OciArchive => Compression::Gzip,
    }
}

/// Who sets an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The user, in Nix; the binary reads it from the settings.
    Image,
    /// The user, in Nix; the wrapper keeps it (never sent to the binary).
    Wrapper,
    /// The wrapper itself; the binary reads it.
    Internal,
}

/// An argument's Nix type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Int,
    Bool,
    Attrs,
    /// A derivation, store path or path.
    Package,
    /// A package or a list of them.
    Packages,
    /// `{ name = [ packages ]; }`
    Sets,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Int => "int",
            Type::Bool => "bool",
            Type::Attrs => "attrs",
            Type::Package => "package",
            Type::Packages => "packages",
            Type::Sets => "sets",
        }
    }
}

/// Where an argument's default comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DefaultValue {
    Required,
    Value(Value),
    /// The Go architecture of the build system (`go_arch`).
    System,
    /// [`default_compression`] of the chosen format.
    ByFormat,
}

#[derive(Clone, Debug)]
pub struct Argument {
    pub name: &'static str,
    pub ty: Type,
    pub scope: Scope,
    pub nullable: bool,
    pub default: DefaultValue,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub choices: Vec<&'static str>,
}

fn arg(name: &'static str, ty: Type, default: DefaultValue) -> Argument {
    Argument {
        name,
        ty,
        scope: Scope::Image,
        nullable: false,
        default,
        min: None,
        max: None,
        choices: vec![],
    }
}

impl Argument {
    fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
    fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    fn range(mut self, min: i64, max: Option<i64>) -> Self {
        (self.min, self.max) = (Some(min), max);
        self
    }
    fn choices(mut self, choices: Vec<&'static str>) -> Self {
        self.choices = choices;
        self
    }
}

/// Every argument, in the Nix library's spelling (dockerTools' names).
pub fn arguments() -> Vec<Argument> {
    use DefaultValue::{ByFormat, Required, System};
    let v = |x: Value| DefaultValue::Value(x);
    let null = || DefaultValue::Value(Value::Null);
    let time = || v(json!(DEFAULT_TIME));
    let id = |name| arg(name, Type::Int, v(json!(0))).range(0, None);
    vec![
        arg("name", Type::String, Required),
        arg("tag", Type::String, null()).nullable(),
        arg("contents", Type::Packages, v(json!([]))),
        // null as in dockerTools (`config = null`): no config keys.
        arg("config", Type::Attrs, v(json!({}))).nullable(),
        arg("architecture", Type::String, System),
        arg("variant", Type::String, null()).nullable(),
        arg("annotations", Type::Attrs, v(json!({}))),
        arg("allowHostFiles", Type::Bool, v(json!(false))),
        arg("sbom", Type::Bool, v(json!(false))),
        arg("created", Type::String, time()),
        arg("mtime", Type::String, time()),
        id("uid"),
        id("gid"),
        arg("uname", Type::String, v(json!(DEFAULT_USER))),
        arg("gname", Type::String, v(json!(DEFAULT_USER))),
        arg("maxLayers", Type::Int, v(json!(DEFAULT_MAX_LAYERS)))
            .range(MIN_LAYERS as i64, Some(MAX_LAYERS as i64)),
        arg("fromImage", Type::Package, null()).nullable(),
        arg("includeStorePaths", Type::Bool, v(json!(true))),
        arg("includeNixDB", Type::Bool, v(json!(false))),
        arg("strategy", Type::String, v(json!(DEFAULT_STRATEGY_NAME)))
            .choices(Strategy::ALL.iter().map(|s| s.name()).collect()),
        arg("family", Type::Sets, v(json!({}))),
        arg("familyFile", Type::Package, null()).nullable(),
        arg("topLayer", Type::Attrs, null()).nullable(),
        arg("format", Type::String, v(json!(format_name(DEFAULT_FORMAT))))
            .choices(FORMATS.iter().map(|&f| format_name(f)).collect()),
        arg("compression", Type::String, ByFormat)
            .nullable()
            .choices(Compression::ALL.iter().map(|c| c.as_str()).collect()),
        // gzip 1-12, zstd 1-19: the Rust side checks the codec's own range.
        arg("compressionLevel", Type::Int, null()).nullable().range(1, Some(19)),
        arg("passthru", Type::Attrs, v(json!({}))).scope(Scope::Wrapper),
        arg("meta", Type::Attrs, v(json!({}))).scope(Scope::Wrapper),
        // `{ key; provenance; flakeLock; }`: what copyToRegistry signs with. The image
        // bytes do not depend on it, so the image derivation never sees it.
        arg("sign", Type::Attrs, null()).nullable().scope(Scope::Wrapper),
        arg("mode", Type::String, v(json!(MODES[0]))).scope(Scope::Internal).choices(MODES.to_vec()),
        arg("storeDir", Type::String, v(json!(DEFAULT_STORE_DIR))).scope(Scope::Internal),
        arg(VERSION_KEY, Type::Int, Required)
            .scope(Scope::Internal)
            .range(VERSION as i64, Some(VERSION as i64)),
    ]
}

/// The contract as JSON (sorted keys, so the bytes are stable).
pub fn to_json() -> Value {
    let mut args = Map::new();
    for a in arguments() {
        let mut o = Map::new();
        o.insert("type".into(), json!(a.ty.name()));
        o.insert(
            "scope".into(),
            json!(match a.scope {
                Scope::Image => "image",
                Scope::Wrapper => "wrapper",
                Scope::Internal => "internal",
            }),
        );
        o.insert("nullable".into(), json!(a.nullable));
        match &a.default {
            DefaultValue::Required => {
                o.insert("required".into(), json!(true));
            }
            DefaultValue::Value(x) => {
                o.insert("default".into(), x.clone());
            }
            DefaultValue::System => {
                o.insert("defaultFrom".into(), json!("system"));
            }
            DefaultValue::ByFormat => {
                let by: Map<String, Value> = FORMATS
                    .iter()
                    .map(|&f| (format_name(f).to_owned(), json!(default_compression(f).as_str())))
                    .collect();
                o.insert("defaultFrom".into(), json!("format"));
                o.insert("defaultByFormat".into(), Value::Object(by));
            }
        }
        if let Some(min) = a.min {
            o.insert("min".into(), json!(min));
        }
        if let Some(max) = a.max {
            o.insert("max".into(), json!(max));
        }
        if !a.choices.is_empty() {
            o.insert("choices".into(), json!(a.choices));
        }
        args.insert(a.name.to_owned(), Value::Object(o));
    }
    json!({
        "version": VERSION,
        "settingsKey": SETTINGS_KEY,
        "versionKey": VERSION_KEY,
        "graphKey": GRAPH_KEY,
        "familyKeyPrefix": FAMILY_KEY_PREFIX,
        "settingsMarker": SETTINGS_MARKER,
        "catalogueKey": CATALOGUE_KEY,
        "modes": MODES,
        "arguments": args,
        "configKeys": nix_layer_image::CONFIG_KEYS,
        "ignoredConfigKeys": IGNORED_CONFIG_KEYS.iter().map(|(k, why)| (k.to_string(), json!(why))).collect::<Map<_, _>>(),
        "topLayer": { "keys": TOP_LAYER_KEYS, "entryTypes": ENTRY_TYPES },
    })
}

/// [`to_json`] as the text of `nix/contract.json`.
pub fn to_json_text() -> String {
    let mut s = serde_json::to_string_pretty(&to_json()).expect("the contract serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_strategy_name_is_the_strategys() {
        assert_eq!(DEFAULT_STRATEGY.name(), DEFAULT_STRATEGY_NAME);
    }

    #[test]
    fn argument_names_are_unique() {
        let mut names: Vec<_> = arguments().iter().map(|a| a.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn choices_parse_on_the_rust_side() {
        for a in arguments() {
            for c in &a.choices {
                let ok = match a.name {
                    "strategy" => c.parse::<Strategy>().is_ok(),
                    "format" => c.parse::<OutputFormat>().is_ok(),
                    "compression" => c.parse::<Compression>().is_ok(),
                    "mode" => MODES.contains(c),
                    other => panic!("choices for {other} are not checked here"),
                };
                assert!(ok, "{}: {c}", a.name);
            }
        }
    }

    #[test]
    fn every_entry_type_parses_as_a_top_layer_entry() {
        for t in ENTRY_TYPES {
            let extra = match t {
                "symlink" => r#","target":"/x""#,
                "copy" => r#","source":"/nix/store/00000000000000000000000000000000-x""#,
                "text" => r#","text":"x""#,
                _ => "",
            };
            let spec = format!(r#"{{"entries":[{{"path":"/a","type":"{t}"{extra}}}],"rules":[]}}"#);
            nix_layer_tar::parse_spec(spec.as_bytes()).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        let bad = br#"{"entries":[{"path":"/a","type":"fifo"}]}"#;
        assert!(nix_layer_tar::parse_spec(bad).is_err());
    }

    #[test]
    fn every_config_key_is_accepted_and_others_are_not() {
        for k in nix_layer_image::CONFIG_KEYS {
            let value = match k {
                "User" | "WorkingDir" | "StopSignal" => json!("x"),
                "Labels" | "Healthcheck" => json!({}),
                _ => json!([]),
            };
            serde_json::from_value::<nix_layer_image::ConfigSpec>(json!({ k: value }))
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        assert!(serde_json::from_value::<nix_layer_image::ConfigSpec>(json!({"Colour": 1})).is_err());
    }

    /// nix/contract.json is what the Nix library validates against: it must
    /// be this contract, byte for byte. Regenerate it with
    /// `nix-layer contract --json > nix/contract.json`.
    #[test]
    fn nix_contract_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../nix/contract.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        if std::env::var_os("NIX_LAYER_BLESS").is_some() {
            std::fs::write(path, to_json_text()).unwrap();
            return;
        }
        assert!(
            committed == to_json_text(),
            "nix/contract.json is out of date: run `NIX_LAYER_BLESS=1 cargo test -p nix-layer-contract` \
             or `nix-layer contract --json > nix/contract.json`"
        );
    }
}
