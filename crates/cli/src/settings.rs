//! One place that turns what the user gave (flags, the Nix wrapper's
//! structured attrs, a stream script's embedded settings) into a
//! `BuildRequest`. Flags and attrs both become [`Settings`] first.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix_layer_build::{BuildRequest, Output, OutputFormat, Timestamp};
use nix_layer_graph::Graph;
use nix_layer_image::{ConfigSpec, ImageRef};
use nix_layer_plan::{Catalogue, Family, Strategy};
use nix_layer_store::StoreDir;
use nix_layer_tar::{Ownership, TopLayerSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::args::{BuildArgs, GraphArgs, PlanArgs};

/// The line after which a stream script carries its settings as JSON.
const SETTINGS_MARKER: &str = "__NIX_LAYER_SETTINGS__";

/// Image settings in the Nix wrapper's spelling (camelCase, dockerTools' names).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub mode: Option<String>,
    pub name: Option<String>,
    pub tag: Option<String>,
    pub format: Option<String>,
    pub compression: Option<String>,
    pub max_layers: Option<usize>,
    pub strategy: Option<String>,
    pub config: Option<Value>,
    #[serde(default)]
    pub contents: Vec<String>,
    pub top_layer: Option<Value>,
    pub from_image: Option<String>,
    pub architecture: Option<String>,
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
    /// A family catalogue file (see [`nix_layer_plan::catalogue`]).
    pub family_file: Option<String>,
}

enum GraphSource {
    File { path: PathBuf, key: String },
    Closure { paths: Vec<String>, nix_store: PathBuf },
    Inline(Value),
}

fn load_graph(source: &GraphSource, store_dir: &StoreDir) -> Result<Graph> {
    Ok(match source {
        GraphSource::File { path, key } => Graph::from_json_file(path, store_dir, key)?,
        GraphSource::Closure { paths, nix_store } => {
            let parsed = paths.iter().map(|p| store_dir.parse(p)).collect::<Result<Vec<_>, _>>()?;
            Graph::query_nix_store(&parsed, nix_store)?
        }
        GraphSource::Inline(v) => Graph::from_json_slice(&serde_json::to_vec(v)?, store_dir, "graph")?,
    })
}

fn graph_source(g: &GraphArgs) -> Result<GraphSource> {
    match &g.graph {
        Some(path) => Ok(GraphSource::File { path: path.clone(), key: g.graph_key.clone() }),
        None if g.closure.is_empty() => {
            bail!("say which closure to use: --graph FILE, or --closure $(nix-store -qR ROOT)")
        }
        None => Ok(GraphSource::Closure { paths: g.closure.clone(), nix_store: g.nix_store.clone() }),
    }
}

/// The host's architecture in Go's spelling, as dockerTools defaults to.
fn host_arch() -> String {
    nix_layer_image::go_arch(std::env::consts::ARCH).to_owned()
}

fn default_jobs() -> usize {
    std::env::var("NIX_BUILD_CORES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn read_json_file(path: &Path, what: &str) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{what} {} is not valid JSON", path.display()))
}

/// The pieces of a request that come from outside [`Settings`].
struct Extra {
    graph: GraphSource,
    family: Vec<PathBuf>,
    roots: Vec<String>,
    jobs: usize,
    cache: Option<PathBuf>,
    output: Output,
}

fn request(s: Settings, extra: Extra) -> Result<BuildRequest> {
    let store_dir = StoreDir::new(s.store_dir.as_deref().unwrap_or("/nix/store"))?;
    let graph = load_graph(&extra.graph, &store_dir)?;
    let parse_paths = |v: &[String], what: &str| -> Result<Vec<_>> {
        v.iter().map(|p| store_dir.parse(p).with_context(|| format!("in {what}"))).collect()
    };
    let name = s.name.as_deref().context("an image name is required (--name NAME[:TAG])")?;
    let (name, mut tag) = ImageRef::split(name)?;
    if let Some(t) = s.tag {
        tag = Some(t);
    }
    if let Some(t) = &tag {
        ImageRef::new(&name, t)?;
    }
    let config: ConfigSpec = match s.config {
        Some(v) => serde_json::from_value(v).context("invalid image config")?,
        None => ConfigSpec::default(),
    };
    let top_layer: TopLayerSpec = match s.top_layer {
        Some(v) => nix_layer_tar::parse_spec(&serde_json::to_vec(&v)?)?,
        None => TopLayerSpec::default(),
    };
    let time = |v: Option<String>, what: &str| -> Result<Timestamp> {
        match v {
            None => Ok(Timestamp::default_image_time()),
            Some(t) => Timestamp::parse(&t).map_err(|e| anyhow::anyhow!("{what}: {e}")),
        }
    };
    let strategy: Strategy = s.strategy.as_deref().unwrap_or("popularity").parse()?;
    let mut members = Vec::new();
    for (name, g) in &s.family_graphs {
        let graph = Graph::from_json_slice(&serde_json::to_vec(g)?, &store_dir, "graph")
            .with_context(|| format!("family member `{name}`"))?;
        members.push((name.clone(), graph));
    }
    let mut files = extra.family.clone();
    files.extend(s.family_file.iter().map(PathBuf::from));
    let catalogue = Catalogue::load(&files, &store_dir)?;
    members.extend(catalogue.members);
    let family = (!members.is_empty()).then(|| Family::new(members).with_history(catalogue.history));
    let format: OutputFormat =
        s.format.as_deref().unwrap_or("docker-archive").parse().map_err(anyhow::Error::msg)?;
    let compression = s.compression.as_deref().unwrap_or("none").parse()?;
    let max_layers = s.max_layers.unwrap_or(100);
    if max_layers < 2 {
        bail!("--max-layers must be at least 2 (one store layer and the top layer), got {max_layers}");
    }
    Ok(BuildRequest {
        roots: if extra.roots.is_empty() { None } else { Some(parse_paths(&extra.roots, "--root")?) },
        contents: parse_paths(&s.contents, "--contents")?,
        graph,
        store_dir,
        name,
        tag,
        max_layers,
        strategy,
        family,
        format,
        compression,
        config,
        top_layer,
        from_image: s.from_image.map(PathBuf::from),
        architecture: s.architecture.unwrap_or_else(host_arch),
        created: time(s.created, "--created")?,
        mtime: time(s.mtime, "--mtime")?,
        owner: Ownership {
            uid: s.uid.unwrap_or(0),
            gid: s.gid.unwrap_or(0),
            uname: s.uname.unwrap_or_else(|| "root".into()),
            gname: s.gname.unwrap_or_else(|| "root".into()),
        },
        nix_db: s.include_nix_db.unwrap_or(false),
        include_store_paths: s.include_store_paths.unwrap_or(true),
        jobs: extra.jobs,
        cache: extra.cache,
        output: extra.output,
    })
}

/// `nix-layer build` flags, optionally on top of `--settings`.
pub fn request_from_build_args(a: Box<BuildArgs>) -> Result<BuildRequest> {
    let a = *a;
    let output = match a.output.as_deref() {
        Some("-") => Output::Stdout,
        Some(p) => Output::Path(PathBuf::from(p)),
        // A stream script streams by default, like dockerTools' streamLayeredImage.
        None if a.settings.is_some() => Output::Stdout,
        None => bail!("say where the image goes: -o FILE, -o DIR for --format oci, or -o - for stdout"),
    };
    let (mut s, graph) = match &a.settings {
        Some(path) => {
            let (s, graph) = read_settings(path)?;
            (s, GraphSource::Inline(graph))
        }
        None => (Settings::default(), graph_source(&a.graph)?),
    };
    // Flags override settings; flags with defaults override only when given.
    if let Some(name) = a.name {
        s.name = Some(name);
        s.tag = None;
    }
    s.format = a.format.or(s.format);
    s.compression = a.compression.or(s.compression);
    if a.settings.is_none() {
        s.max_layers = Some(a.graph.max_layers);
        s.strategy = Some(a.graph.strategy.clone());
        s.store_dir = Some(a.graph.store_dir.clone());
        s.config = a.config.as_deref().map(|p| read_json_file(p, "config")).transpose()?;
        s.top_layer = a.top_layer.as_deref().map(|p| read_json_file(p, "top-layer spec")).transpose()?;
        s.contents = a.contents;
        s.from_image = a.from_image.map(|p| p.display().to_string());
        s.architecture = a.arch;
        s.created = Some(a.created);
        s.mtime = Some(a.mtime);
        s.uid = Some(a.uid);
        s.gid = Some(a.gid);
        s.uname = Some(a.uname);
        s.gname = Some(a.gname);
        s.include_nix_db = Some(a.nix_db);
        s.include_store_paths = Some(!a.no_store_paths);
    }
    let jobs = a.jobs.unwrap_or_else(default_jobs);
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    request(s, Extra { graph, family: a.graph.family, roots: a.graph.root, jobs, cache: a.cache, output })
}

/// Reads settings from a stream script (JSON after the marker line) or a
/// plain JSON file holding `{"graph": …, "nixLayer": …}`.
fn read_settings(path: &Path) -> Result<(Settings, Value)> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read settings {}", path.display()))?;
    let json = match text.find(&format!("\n{SETTINGS_MARKER}\n")) {
        Some(i) => &text[i + SETTINGS_MARKER.len() + 2..],
        None => &text,
    };
    let v: Value = serde_json::from_str(json)
        .with_context(|| format!("settings in {} are not valid JSON", path.display()))?;
    split_attrs(v)
}

fn split_attrs(mut v: Value) -> Result<(Settings, Value)> {
    let graph = v
        .get_mut("graph")
        .map(Value::take)
        .context("the settings have no `graph` (exportReferencesGraph)")?;
    let nl = v.get_mut("nixLayer").map(Value::take).context("the settings have no `nixLayer` object")?;
    let mut s: Settings = serde_json::from_value(nl).context("invalid `nixLayer` settings")?;
    for (name, key) in &s.family {
        let g = v.get_mut(key).map(Value::take).with_context(|| {
            format!(
                "family member `{name}` names the attribute `{key}`, which holds no exportReferencesGraph"
            )
        })?;
        s.family_graphs.push((name.clone(), g));
    }
    Ok((s, graph))
}

pub fn read_nix_attrs(path: Option<&Path>) -> Result<Value> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            std::env::var_os("NIX_ATTRS_JSON_FILE").map(PathBuf::from).unwrap_or_else(|| ".attrs.json".into())
        }
    };
    read_json_file(&path, "structured attrs")
}

pub enum NixBuild {
    Image(Box<BuildRequest>),
    /// A file to write: a stream script, or a family catalogue.
    File {
        path: PathBuf,
        text: String,
        executable: bool,
    },
}

/// The builder of the Nix wrapper's derivations.
pub fn nix_build(mut attrs: Value) -> Result<NixBuild> {
    let out = attrs
        .pointer("/outputs/out")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .context("structured attrs have no outputs.out; is __structuredAttrs = true set?")?;
    // A stream script carries what `nix-build` read: the graph, the settings
    // and the graphs of family members.
    let mut embedded = serde_json::json!({
        "graph": attrs.get("graph").cloned().unwrap_or(Value::Null),
        "nixLayer": attrs.get("nixLayer").cloned().unwrap_or(Value::Null),
    });
    if let Some(family) = attrs.pointer("/nixLayer/family").and_then(Value::as_object) {
        for key in family.values().filter_map(Value::as_str) {
            embedded[key] = attrs.get(key).cloned().unwrap_or(Value::Null);
        }
    }
    if attrs.pointer("/nixLayer/mode").and_then(Value::as_str) == Some("family-catalogue") {
        let text = nix_layer_plan::Catalogue::from_structured_attrs(&attrs)?;
        return Ok(NixBuild::File { path: out, text, executable: false });
    }
    let (s, graph) = split_attrs(attrs.take())?;
    match s.mode.as_deref().unwrap_or("image") {
        "image" => {
            let extra = Extra {
                graph: GraphSource::Inline(graph),
                family: vec![],
                roots: vec![],
                jobs: default_jobs(),
                cache: None,
                output: Output::Path(out),
            };
            Ok(NixBuild::Image(Box::new(request(s, extra)?)))
        }
        "stream" => {
            // Validate now, so a bad argument fails the build, not the first run.
            let extra = Extra {
                graph: GraphSource::Inline(graph),
                family: vec![],
                roots: vec![],
                jobs: 1,
                cache: None,
                output: Output::Stdout,
            };
            let req = request(s, extra)?;
            let exe = std::env::current_exe().context("cannot find the nix-layer executable")?;
            let script = format!(
                "#!/bin/sh\n# Streams the image {} as a docker-archive to stdout: ./result | docker load\n# Options: -o PATH, --format oci|oci-archive, --compression gzip|zstd, --cache DIR, --jobs N\nexec {} build --settings \"$0\" \"$@\"\nexit 1\n{SETTINGS_MARKER}\n{}\n",
                req.name,
                exe.display(),
                serde_json::to_string(&embedded)?
            );
            Ok(NixBuild::File { path: out, text: script, executable: true })
        }
        other => bail!("unknown nixLayer.mode `{other}`; use image, stream or family-catalogue"),
    }
}

/// Writes a build's output file through a temporary name.
pub fn write_output_file(path: &Path, text: &str, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(if executable { 0o555 } else { 0o444 }))?;
    fs::rename(&tmp, path)
}

/// The graph, strategy and store-layer budget for `nix-layer plan`.
pub fn plan_inputs(a: &PlanArgs) -> Result<(Graph, Strategy, usize, Option<Family>)> {
    let store_dir = StoreDir::new(&a.graph.store_dir)?;
    let mut graph = load_graph(&graph_source(&a.graph)?, &store_dir)?;
    if !a.graph.root.is_empty() {
        let mut keep = Vec::new();
        for r in &a.graph.root {
            let p = store_dir.parse(r)?;
            keep.push(graph.index_of(&p).with_context(|| format!("--root {p} is not in the graph"))?);
        }
        let closure = graph.closure(&keep);
        graph = graph.subgraph(&closure)?;
    }
    let strategy: Strategy = a.graph.strategy.parse()?;
    if a.graph.max_layers < 2 {
        bail!(
            "--max-layers must be at least 2 (one store layer and the top layer), got {}",
            a.graph.max_layers
        );
    }
    let budget = nix_layer_plan::store_layer_budget(a.graph.max_layers, a.base_layers)?;
    Ok((graph, strategy, budget, family(&a.graph.family, &store_dir)?))
}

/// The family in graph or catalogue files, with the catalogues' history.
pub fn family(files: &[PathBuf], store_dir: &StoreDir) -> Result<Option<Family>> {
    let c = Catalogue::load(files, store_dir)?;
    Ok((!c.members.is_empty()).then(|| Family::new(c.members).with_history(c.history)))
}
