//! One place that turns what the user gave (flags, the Nix wrapper's
//! structured attrs, a stream script's embedded settings) into a
//! `BuildRequest`. Flags and attrs both become [`Settings`] first; defaults
//! and limits come from [`crate::contract`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix_layer_blob::Compression;
use nix_layer_graph::Graph;
use nix_layer_image::{ConfigSpec, ImageRef};
use nix_layer_pipeline::{BuildRequest, ImageRequest, Output, OutputFormat, Timestamp, WriteRequest};
use nix_layer_plan::{Family, Strategy};
use nix_layer_store::StoreDir;
use nix_layer_tar::{HostFiles, Ownership, TopLayerSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::contract::{self, GRAPH_KEY, SETTINGS_KEY, SETTINGS_MARKER};
use crate::error::{invalid, json_err, Context, Error, Result};

/// Image settings in the Nix wrapper's spelling (camelCase, dockerTools'
/// names): the contract's `image` and `internal` arguments.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub contract_version: Option<u64>,
    pub mode: Option<String>,
    pub name: Option<String>,
    pub tag: Option<String>,
    pub format: Option<String>,
    pub compression: Option<String>,
    /// The level for `compression` (gzip 1-12, zstd 1-19); null for its default.
    pub compression_level: Option<i64>,
    pub max_layers: Option<usize>,
    pub strategy: Option<String>,
    pub config: Option<Value>,
    #[serde(default)]
    pub contents: Vec<String>,
    pub top_layer: Option<Value>,
    pub from_image: Option<String>,
    pub architecture: Option<String>,
    /// CPU variant (`v8`, `v7`).
    pub variant: Option<String>,
    /// Manifest annotations (`org.opencontainers.image.source`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Top-layer `copy` sources may be host files outside the store.
    pub allow_host_files: Option<bool>,
    /// A CycloneDX SBOM beside the image.
    pub sbom: Option<bool>,
    pub created: Option<String>,
    pub mtime: Option<String>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub include_store_paths: Option<bool>,
    #[serde(rename = "includeNixDB")]
    pub include_nix_db: Option<bool>,
    pub store_dir: Option<String>,
    /// Family members: name → the top-level attribute holding its
    /// exportReferencesGraph (resolved into `family_graphs` on load).
    #[serde(default)]
    pub family: BTreeMap<String, String>,
    #[serde(skip)]
    pub family_graphs: Vec<(String, Value)>,
    /// A family catalogue file (see [`crate::family`]).
    pub family_file: Option<String>,
}

/// Where the image's reference graph comes from.
pub enum GraphSource {
    File { path: PathBuf, key: String },
    Closure { paths: Vec<String>, nix_store: PathBuf },
    Inline(Value),
}

impl GraphSource {
    /// From `--graph FILE [--graph-key KEY]` or `--closure PATH…`.
    pub fn from_flags(
        graph: Option<PathBuf>,
        key: String,
        closure: Vec<String>,
        nix_store: PathBuf,
    ) -> Result<GraphSource> {
        match graph {
            Some(path) => Ok(GraphSource::File { path, key }),
            None if closure.is_empty() => {
                invalid("say which closure to use: --graph FILE, or --closure $(nix-store -qR ROOT)")
            }
            None => Ok(GraphSource::Closure { paths: closure, nix_store }),
        }
    }

    fn load(&self, store_dir: &StoreDir) -> Result<Graph> {
        Ok(match self {
            GraphSource::File { path, key } => Graph::from_json_file(path, store_dir, key)?,
            GraphSource::Closure { paths, nix_store } => {
                let parsed = paths.iter().map(|p| store_dir.parse(p)).collect::<Result<Vec<_>, _>>()?;
                Graph::query_nix_store(&parsed, nix_store)?
            }
            GraphSource::Inline(v) => Graph::from_json_slice(&to_vec(v), store_dir, GRAPH_KEY)?,
        })
    }
}

/// The config without the keys dockerTools accepts that mean nothing in a
/// Linux image ([`contract::IGNORED_CONFIG_KEYS`]).
fn without_ignored_keys(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        for (k, _) in contract::IGNORED_CONFIG_KEYS {
            map.remove(k);
        }
    }
    v
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serialises")
}

/// The host's architecture in Go's spelling, as dockerTools defaults to.
fn host_arch() -> String {
    nix_layer_image::go_arch(std::env::consts::ARCH).to_owned()
}

/// Worker threads: Nix's `NIX_BUILD_CORES` inside a build, else all cores.
pub fn default_jobs() -> usize {
    std::env::var("NIX_BUILD_CORES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Reads and parses a JSON file; errors say what the file was for.
pub fn read_json_file(path: &Path, what: &'static str) -> Result<Value> {
    let bytes = fs::read(path).map_err(|source| Error::Read { what, path: path.to_owned(), source })?;
    serde_json::from_slice(&bytes).map_err(json_err(format!("{what} {}", path.display())))
}

/// The contract's layer limits, for `build` and `plan` alike.
pub fn check_max_layers(n: usize) -> Result<usize> {
    if n < contract::MIN_LAYERS {
        return invalid(format!(
            "--max-layers (maxLayers) must be at least {} (one store layer and the top layer), got {n}",
            contract::MIN_LAYERS
        ));
    }
    if n > contract::MAX_LAYERS {
        return invalid(format!(
            "--max-layers (maxLayers) = {n} is more than overlayfs can mount; use at most {}",
            contract::MAX_LAYERS
        ));
    }
    Ok(n)
}

/// The pieces of a request that come from outside [`Settings`].
pub struct Inputs {
    pub graph: GraphSource,
    /// `--family` files.
    pub family: Vec<PathBuf>,
    /// `--root` paths.
    pub roots: Vec<String>,
    pub jobs: usize,
    pub cache: Option<PathBuf>,
}

/// A validated image, and how the settings say to write it; where it goes is the
/// caller's: `build` names an output ([`Request::write_to`]), push and load send the
/// image elsewhere.
pub struct Request {
    pub image: ImageRequest,
    pub format: OutputFormat,
    pub compression: Compression,
    pub sbom: bool,
}

impl Request {
    pub fn write_to(self, output: Output) -> BuildRequest {
        let Request { image, format, compression, sbom } = self;
        BuildRequest { image, write: WriteRequest { format, compression, sbom, output } }
    }
}

/// Settings and inputs → a validated request, with the contract's defaults.
pub fn request(s: Settings, inputs: Inputs) -> Result<Request> {
    let store_dir = StoreDir::new(s.store_dir.as_deref().unwrap_or(contract::DEFAULT_STORE_DIR))?;
    let graph = inputs.graph.load(&store_dir)?;
    let parse_paths = |v: &[String], what: &str| -> Result<Vec<_>> {
        v.iter().map(|p| store_dir.parse(p).context(|| format!("in {what}"))).collect()
    };
    let Some(name) = s.name.as_deref() else {
        return invalid("an image name is required (--name NAME[:TAG])");
    };
    let (name, mut tag) = ImageRef::split(name)?;
    if let Some(t) = s.tag {
        tag = Some(t);
    }
    if let Some(t) = &tag {
        ImageRef::new(&name, t)?;
    }
    let config: ConfigSpec = match s.config {
        Some(v) => {
            serde_json::from_value(without_ignored_keys(v)).map_err(json_err("the image config (config)"))?
        }
        None => ConfigSpec::default(),
    };
    let top_layer: TopLayerSpec = match s.top_layer {
        Some(v) => nix_layer_tar::parse_spec(&to_vec(&v))?,
        None => TopLayerSpec::default(),
    };
    let time = |v: Option<String>, what: &str| -> Result<Timestamp> {
        Timestamp::parse(v.as_deref().unwrap_or(contract::DEFAULT_TIME))
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))
    };
    let strategy: Strategy = match s.strategy.as_deref() {
        Some(v) => v.parse()?,
        None => contract::DEFAULT_STRATEGY,
    };
    let mut members = Vec::new();
    for (name, g) in &s.family_graphs {
        let graph = Graph::from_json_slice(&to_vec(g), &store_dir, GRAPH_KEY)
            .context(|| format!("family member `{name}`"))?;
        members.push((name.clone(), graph));
    }
    let mut files = inputs.family.clone();
    files.extend(s.family_file.iter().map(PathBuf::from));
    let family = crate::family::family(&files, &store_dir, members)?;
    let format: OutputFormat = match s.format.as_deref() {
        Some(v) => v.parse().map_err(Error::Invalid)?,
        None => contract::DEFAULT_FORMAT,
    };
    let mut compression: Compression = match s.compression.as_deref() {
        Some(v) => v.parse()?,
        None => contract::default_compression(format),
    };
    if let Some(level) = s.compression_level {
        compression = compression.with_level(level)?;
    }
    let max_layers = check_max_layers(s.max_layers.unwrap_or(contract::DEFAULT_MAX_LAYERS))?;
    let user = || contract::DEFAULT_USER.to_owned();
    let image = ImageRequest {
        roots: if inputs.roots.is_empty() { None } else { Some(parse_paths(&inputs.roots, "--root")?) },
        contents: parse_paths(&s.contents, "--contents")?,
        graph,
        store_dir,
        name,
        tag,
        max_layers,
        strategy,
        family,
        config,
        top_layer,
        from_image: s.from_image.map(PathBuf::from),
        architecture: s.architecture.unwrap_or_else(host_arch),
        variant: s.variant,
        annotations: s.annotations,
        host_files: if s.allow_host_files == Some(true) { HostFiles::Allow } else { HostFiles::Refuse },
        created: time(s.created, "--created")?,
        mtime: time(s.mtime, "--mtime")?,
        owner: Ownership {
            uid: s.uid.unwrap_or(0),
            gid: s.gid.unwrap_or(0),
            uname: s.uname.unwrap_or_else(user),
            gname: s.gname.unwrap_or_else(user),
        },
        nix_db: s.include_nix_db.unwrap_or(false),
        include_store_paths: s.include_store_paths.unwrap_or(true),
        jobs: inputs.jobs,
        cache: inputs.cache,
    };
    Ok(Request { image, format, compression, sbom: s.sbom.unwrap_or(false) })
}

/// `nix-layer build`: `flags` holds what the command line gave; with a
/// settings file (a stream script), those settings are the base and only the
/// flags that were given (name, format, compression) override them.
pub struct BuildFlags {
    pub settings: Settings,
    pub settings_file: Option<PathBuf>,
    /// `None` with a settings file (its graph is used).
    pub graph: Option<GraphSource>,
    pub family: Vec<PathBuf>,
    pub roots: Vec<String>,
    pub jobs: Option<usize>,
    pub cache: Option<PathBuf>,
    pub output: Option<String>,
}

pub fn request_from_flags(f: BuildFlags) -> Result<BuildRequest> {
    let output = match f.output.as_deref() {
        Some("-") => Output::Stdout,
        Some(p) => Output::Path(PathBuf::from(p)),
        // A stream script streams by default, like dockerTools' streamLayeredImage.
        None if f.settings_file.is_some() => Output::Stdout,
        None => {
            return invalid("say where the image goes: -o FILE, -o DIR for --format oci, or -o - for stdout")
        }
    };
    Ok(image_from_flags(f)?.write_to(output))
}

/// The image the flags describe, for commands that send it elsewhere (push, load):
/// `f.output` is not used.
pub fn image_from_flags(f: BuildFlags) -> Result<Request> {
    let (s, graph) = match (&f.settings_file, f.graph) {
        (Some(path), _) => {
            let (mut s, graph) = read_settings(path)?;
            let flags = f.settings;
            if let Some(name) = flags.name {
                s.name = Some(name);
                s.tag = None;
            }
            s.format = flags.format.or(s.format);
            if flags.compression.is_some() {
                // `--compression gzip:9` carries its own level; the image's level was for
                // the image's codec.
                s.compression_level = None;
            }
            s.compression = flags.compression.or(s.compression);
            // Annotations known only when publishing (a revision, a source URL) add to the
            // image's own.
            s.annotations.extend(flags.annotations);
            s.sbom = flags.sbom.filter(|&b| b).or(s.sbom);
            (s, GraphSource::Inline(graph))
        }
        (None, Some(graph)) => (f.settings, graph),
        (None, None) => {
            return invalid("say which closure to use: --graph FILE, or --closure $(nix-store -qR ROOT)")
        }
    };
    let jobs = f.jobs.unwrap_or_else(default_jobs);
    if jobs == 0 {
        return invalid("--jobs must be at least 1");
    }
    request(s, Inputs { graph, family: f.family, roots: f.roots, jobs, cache: f.cache })
}

/// Reads settings from a stream script (JSON after the marker line) or a
/// plain JSON file holding `{"graph": …, "nixLayer": …}`.
pub fn read_settings(path: &Path) -> Result<(Settings, Value)> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read {
        what: "settings",
        path: path.to_owned(),
        source,
    })?;
    let json = match text.find(&format!("\n{SETTINGS_MARKER}\n")) {
        Some(i) => &text[i + SETTINGS_MARKER.len() + 2..],
        None => &text,
    };
    let v: Value =
        serde_json::from_str(json).map_err(json_err(format!("the settings in {}", path.display())))?;
    split_attrs(v)
}

/// Structured attrs (or embedded settings) → the settings, with each family
/// member's graph resolved, and the image's graph.
pub(crate) fn split_attrs(mut v: Value) -> Result<(Settings, Value)> {
    let Some(graph) = v.get_mut(GRAPH_KEY).map(Value::take) else {
        return invalid(format!("the settings have no `{GRAPH_KEY}` (exportReferencesGraph)"));
    };
    let Some(nl) = v.get_mut(SETTINGS_KEY).map(Value::take) else {
        return invalid(format!("the settings have no `{SETTINGS_KEY}` object"));
    };
    let mut s: Settings =
        serde_json::from_value(nl).map_err(json_err(format!("`{SETTINGS_KEY}` settings")))?;
    for (name, key) in &s.family {
        let Some(g) = v.get_mut(key).map(Value::take) else {
            return invalid(format!(
                "family member `{name}` names the attribute `{key}`, which holds no exportReferencesGraph"
            ));
        };
        s.family_graphs.push((name.clone(), g));
    }
    Ok((s, graph))
}

/// The graph, strategy, store-layer budget and family for `nix-layer plan`.
pub struct PlanInputs {
    pub graph: Graph,
    pub strategy: Strategy,
    pub budget: usize,
    pub family: Option<Family>,
}

pub struct PlanFlags {
    pub graph: GraphSource,
    pub store_dir: String,
    pub roots: Vec<String>,
    pub strategy: String,
    pub max_layers: usize,
    pub base_layers: usize,
    pub family: Vec<PathBuf>,
}

pub fn plan_inputs(a: PlanFlags) -> Result<PlanInputs> {
    let store_dir = StoreDir::new(&a.store_dir)?;
    let mut graph = a.graph.load(&store_dir)?;
    if !a.roots.is_empty() {
        let mut keep = Vec::new();
        for r in &a.roots {
            let p = store_dir.parse(r)?;
            match graph.index_of(&p) {
                Some(i) => keep.push(i),
                None => return invalid(format!("--root {p} is not in the graph")),
            }
        }
        let closure = graph.closure(&keep);
        graph = graph.subgraph(&closure)?;
    }
    let strategy: Strategy = a.strategy.parse()?;
    let budget = nix_layer_plan::store_layer_budget(check_max_layers(a.max_layers)?, a.base_layers)?;
    let family = crate::family::family(&a.family, &store_dir, vec![])?;
    Ok(PlanInputs { graph, strategy, budget, family })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{arguments, Scope};

    /// Settings accept exactly the contract's `image` and `internal`
    /// arguments (deny_unknown_fields rejects the rest).
    #[test]
    fn settings_take_exactly_the_contracts_arguments() {
        for a in arguments() {
            let value = match &a.default {
                contract::DefaultValue::Value(v) => v.clone(),
                _ => Value::Null,
            };
            let v = serde_json::json!({ a.name: value });
            let parsed = serde_json::from_value::<Settings>(v);
            match a.scope {
                Scope::Image | Scope::Internal => {
                    parsed.unwrap_or_else(|e| panic!("Settings does not take `{}`: {e}", a.name));
                }
                Scope::Wrapper => assert!(parsed.is_err(), "`{}` is the wrapper's, not the binary's", a.name),
            }
        }
        assert!(serde_json::from_value::<Settings>(serde_json::json!({"colour": 1})).is_err());
    }

    fn inline_request(settings: Value) -> Result<Request> {
        let (s, graph) = split_attrs(serde_json::json!({ "graph": [], "nixLayer": settings }))?;
        request(
            s,
            Inputs { graph: GraphSource::Inline(graph), family: vec![], roots: vec![], jobs: 1, cache: None },
        )
    }

    /// The defaults the request builder applies are the contract's.
    #[test]
    fn defaults_are_the_contracts() {
        let req = inline_request(serde_json::json!({ "name": "x" })).unwrap();
        let r = &req.image;
        for a in arguments().into_iter().filter(|a| a.scope == Scope::Image) {
            let contract::DefaultValue::Value(want) = &a.default else { continue };
            let got = match a.name {
                "tag" => serde_json::json!(r.tag),
                "contents" => serde_json::json!(r.contents),
                "config" => serde_json::to_value(&r.config).unwrap(),
                // Checked below: a Timestamp has no JSON form.
                "created" | "mtime" => continue,
                "uid" => serde_json::json!(r.owner.uid),
                "gid" => serde_json::json!(r.owner.gid),
                "uname" => serde_json::json!(r.owner.uname),
                "gname" => serde_json::json!(r.owner.gname),
                "maxLayers" => serde_json::json!(r.max_layers),
                "fromImage" => serde_json::json!(r.from_image),
                "includeStorePaths" => serde_json::json!(r.include_store_paths),
                "includeNixDB" => serde_json::json!(r.nix_db),
                "strategy" => serde_json::json!(r.strategy.name()),
                "family" => serde_json::json!(if r.family.is_some() { "some" } else { "{}" }),
                "familyFile" | "topLayer" => continue,
                // null: the codec's own default level (the request shows the level it chose).
                "compressionLevel" => serde_json::json!((req.compression.level()
                    != contract::default_compression(req.format).level())
                .then_some(req.compression.level())),
                "format" => serde_json::json!(contract::format_name(req.format)),
                "variant" => serde_json::json!(r.variant),
                "annotations" => serde_json::json!(r.annotations),
                "allowHostFiles" => serde_json::json!(r.host_files == nix_layer_tar::HostFiles::Allow),
                "sbom" => serde_json::json!(req.sbom),
                other => panic!("default of `{other}` is not checked"),
            };
            let want = if a.name == "family" { serde_json::json!("{}") } else { want.clone() };
            assert_eq!(got, want, "default of `{}`", a.name);
        }
        assert_eq!(r.created, Timestamp::parse(contract::DEFAULT_TIME).unwrap());
        assert_eq!(r.mtime, Timestamp::default_image_time());
        assert_eq!(req.compression, Compression::None);
        let oci = inline_request(serde_json::json!({ "name": "x", "format": "oci" })).unwrap();
        assert_eq!(oci.compression, Compression::Gzip);
    }

    #[test]
    fn compression_level_applies_to_the_codec_and_is_checked() {
        let req = |v: Value| inline_request(v).map(|r| r.compression);
        let gz9 = req(serde_json::json!({ "name": "x", "format": "oci", "compressionLevel": 9 })).unwrap();
        assert_eq!((gz9.as_str(), gz9.level()), ("gzip", 9));
        let zs =
            req(serde_json::json!({ "name": "x", "format": "oci", "compression": "zstd", "compressionLevel": 19 }))
                .unwrap();
        assert_eq!((zs.as_str(), zs.level()), ("zstd", 19));
        let spec = req(serde_json::json!({ "name": "x", "format": "oci", "compression": "gzip:2" })).unwrap();
        assert_eq!(spec.level(), 2);
        for (bad, says) in [
            (serde_json::json!({ "name": "x", "format": "oci", "compressionLevel": 13 }), "gzip:13"),
            (
                serde_json::json!({ "name": "x", "format": "oci", "compression": "zstd", "compressionLevel": 0 }),
                "zstd:0",
            ),
            (serde_json::json!({ "name": "x", "compressionLevel": 5 }), "none"),
            (serde_json::json!({ "name": "x", "format": "oci", "compression": "gzip:99" }), "gzip:99"),
        ] {
            let err = req(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("level"), "{bad}: {err}");
        }
    }

    #[test]
    fn limits_are_the_contracts() {
        for (n, ok) in [(1, false), (2, true), (125, true), (126, false)] {
            let r = inline_request(serde_json::json!({ "name": "x", "maxLayers": n }));
            assert_eq!(r.is_ok(), ok, "maxLayers {n}: {:?}", r.err().map(|e| e.to_string()));
        }
        let e =
            inline_request(serde_json::json!({ "name": "x", "maxLayers": 126 })).err().unwrap().to_string();
        assert!(e.contains("at most 125"), "{e}");
    }

    /// What dockerTools callers write: `config = null`, Windows-only or
    /// engine-ignored keys, and every time form the parser takes.
    #[test]
    fn dockertools_forms_are_accepted() {
        let r = inline_request(serde_json::json!({ "name": "x", "config": null })).unwrap();
        assert!(r.image.config.Cmd.is_none());
        let r = inline_request(serde_json::json!({
            "name": "x", "config": { "ArgsEscaped": true, "Memory": 0, "Cmd": ["/bin/x"] }
        }))
        .unwrap();
        assert_eq!(r.image.config.Cmd.unwrap(), ["/bin/x"]);
        for (t, epoch) in [("1700000000", 1_700_000_000), ("2023-11-14T22:13:20Z", 1_700_000_000)] {
            let r = inline_request(serde_json::json!({ "name": "x", "created": t, "mtime": t })).unwrap();
            assert_eq!((r.image.created.epoch, r.image.mtime.epoch), (epoch, epoch), "{t}");
        }
        assert!(inline_request(serde_json::json!({ "name": "x", "config": { "Colour": 1 } })).is_err());
    }

    #[test]
    fn healthcheck_is_accepted() {
        let r = inline_request(serde_json::json!({
            "name": "x", "config": { "Healthcheck": { "Test": ["CMD", "true"], "Interval": 1000000000 } }
        }))
        .unwrap();
        assert_eq!(r.image.config.Healthcheck.unwrap().Test.unwrap(), ["CMD", "true"]);
    }

    /// Flags given with a settings file (a stream script) add annotations and the SBOM.
    #[test]
    fn publishing_flags_add_to_a_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.json");
        let settings = serde_json::json!({ "graph": [], "nixLayer": {
            "name": "x", "contractVersion": contract::VERSION, "annotations": { "a": "1" } } });
        std::fs::write(&file, serde_json::to_vec(&settings).unwrap()).unwrap();
        let flags = Settings {
            annotations: BTreeMap::from([("org.opencontainers.image.revision".to_owned(), "abc".to_owned())]),
            sbom: Some(true),
            ..Settings::default()
        };
        let r = request_from_flags(BuildFlags {
            settings: flags,
            settings_file: Some(file),
            graph: None,
            family: vec![],
            roots: vec![],
            jobs: Some(1),
            cache: None,
            output: Some("out.tar".into()),
        })
        .unwrap();
        assert_eq!(r.image.annotations.len(), 2);
        assert_eq!(r.image.annotations["org.opencontainers.image.revision"], "abc");
        assert!(r.write.sbom);
    }
}
