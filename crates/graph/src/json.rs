//! Reading the JSON spellings of a closure that Nix tools print.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Graph, NarHash, PathInfo, StoreDir, StorePath};

impl Graph {
    /// Reads a closure graph from JSON, recognising by its shape:
    ///
    /// - exportReferencesGraph: an array of `{path, references, narSize,
    ///   narHash?, closureSize?}` (references include the path itself);
    /// - a structured-attrs `.attrs.json`: an object holding such an array
    ///   under `attrs_key` (the name given to `exportReferencesGraph`);
    /// - `nix path-info --json`, older Nix: an array of `{path, narHash,
    ///   narSize, references, deriver?, …}`;
    /// - `nix path-info --json`, newer Nix: an object keyed by store path
    ///   whose values are `{narHash, narSize, references, deriver, …}`, or
    ///   `null` for a path that is not valid (an error).
    ///
    /// Store paths may be full paths or base names (`<hash>-<name>`, as newer
    /// Nix prints references); both are checked against `store_dir`.
    pub fn from_json_slice(bytes: &[u8], store_dir: &StoreDir, attrs_key: &str) -> Result<Graph, Error> {
        let value: Value = serde_json::from_slice(bytes).map_err(Error::NotJson)?;
        let infos = match value {
            Value::Array(entries) => parse_array(&entries, store_dir)?,
            Value::Object(obj) => match obj.get(attrs_key) {
                Some(Value::Array(entries)) => parse_array(entries, store_dir)?,
                Some(other) => {
                    return Err(Error::Shape(format!(
                        "`{attrs_key}` should hold the closure as an array, found {}",
                        kind(other)
                    )))
                }
                None => parse_keyed(&obj, store_dir, attrs_key)?,
            },
            other => {
                return Err(Error::Shape(format!(
                    "expected an array or an object describing a closure, found {}",
                    kind(&other)
                )))
            }
        };
        Graph::new(infos)
    }

    /// [`Graph::from_json_slice`] on a file; every error names the file.
    pub fn from_json_file(path: &Path, store_dir: &StoreDir, attrs_key: &str) -> Result<Graph, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read { file: path.to_owned(), source })?;
        Graph::from_json_slice(&bytes, store_dir, attrs_key)
            .map_err(|e| Error::InFile { file: path.to_owned(), source: Box::new(e) })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A full store path, or a base name that newer Nix prints without the
/// store directory.
fn store_path(s: &str, store_dir: &StoreDir) -> Result<StorePath, Error> {
    if s.contains('/') {
        Ok(store_dir.parse(s)?)
    } else {
        Ok(store_dir.parse(&format!("{store_dir}/{s}"))?)
    }
}

fn parse_array(entries: &[Value], store_dir: &StoreDir) -> Result<Vec<PathInfo>, Error> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let obj = entry.as_object().ok_or_else(|| {
                Error::Shape(format!("entry {i} of the closure array is {}, not an object", kind(entry)))
            })?;
            let path = match obj.get("path") {
                Some(Value::String(p)) => p,
                _ => {
                    return Err(Error::Shape(format!("entry {i} of the closure array has no string `path`")))
                }
            };
            parse_entry(path, obj, store_dir)
        })
        .collect()
}

fn parse_keyed(
    obj: &Map<String, Value>,
    store_dir: &StoreDir,
    attrs_key: &str,
) -> Result<Vec<PathInfo>, Error> {
    if let Some(first) = obj.keys().find(|k| store_path(k, store_dir).is_err()) {
        return Err(Error::Shape(format!(
            "an object without a `{attrs_key}` array must be keyed by store paths, as `nix path-info \
             --json` prints it, but has the key `{first}`"
        )));
    }
    obj.iter()
        .map(|(path, v)| match v {
            Value::Object(entry) => parse_entry(path, entry, store_dir),
            Value::Null => Err(Error::InvalidPath(path.clone())),
            other => Err(Error::Shape(format!("the value for {path} is {}, not an object", kind(other)))),
        })
        .collect()
}

fn parse_entry(path: &str, obj: &Map<String, Value>, store_dir: &StoreDir) -> Result<PathInfo, Error> {
    let sp = store_path(path, store_dir)?;
    let field = |field: &'static str, reason: String| Error::Field { path: sp.to_string(), field, reason };
    // Older `nix path-info --json` lists an invalid path as `{"path": …, "valid": false}`.
    if obj.get("valid") == Some(&Value::Bool(false)) {
        return Err(Error::InvalidPath(sp.to_string()));
    }
    let nar_size = match obj.get("narSize") {
        Some(v) => v.as_u64().ok_or_else(|| field("narSize", format!("is {}, not a byte count", kind(v))))?,
        None => return Err(field("narSize", "is missing".into())),
    };
    let references = match obj.get("references") {
        Some(Value::Array(refs)) => refs
            .iter()
            .map(|r| match r {
                Value::String(s) => store_path(s, store_dir),
                other => Err(field("references", format!("holds {}, not a store path", kind(other)))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(field("references", format!("is {}, not an array", kind(other)))),
        None => return Err(field("references", "is missing".into())),
    };
    let nar_hash = match obj.get("narHash") {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => Some(NarHash::parse(h).map_err(|e| field("narHash", e.to_string()))?),
        Some(other) => return Err(field("narHash", format!("is {}, not a hash string", kind(other)))),
    };
    let deriver = match obj.get("deriver") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.contains('/') => Some(d.clone()),
        Some(Value::String(d)) => Some(format!("{store_dir}/{d}")),
        Some(other) => return Err(field("deriver", format!("is {}, not a string", kind(other)))),
    };
    let mut info = PathInfo::from_raw_references(sp, references, nar_size);
    info.nar_hash = nar_hash;
    info.deriver = deriver;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fake_path;

    const HEX: &str = "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6";
    const SRI: &str = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";

    fn hash() -> NarHash {
        NarHash::parse(HEX).unwrap()
    }

    fn read(json: &str) -> Result<Graph, Error> {
        Graph::from_json_slice(json.as_bytes(), &StoreDir::default(), "graph")
    }

    /// exportReferencesGraph output for `app -> lib`, `app` referring to itself.
    fn export_graph() -> String {
        let (app, lib) = (fake_path("app-1.0"), fake_path("lib-2"));
        let nix32 = hash().to_nix32();
        format!(
            r#"[
              {{"path": "{app}", "narHash": "{nix32}", "narSize": 100, "references": ["{app}", "{lib}"], "closureSize": 150}},
              {{"path": "{lib}", "narHash": "{SRI}", "narSize": 50, "references": []}}
            ]"#
        )
    }

    fn check_app_lib(g: &Graph) {
        assert_eq!(g.len(), 2);
        let app = g.info(0);
        assert_eq!(app.path.as_str(), fake_path("app-1.0"));
        assert!(app.self_reference);
        assert_eq!(app.references.len(), 1);
        assert_eq!(app.references[0].as_str(), fake_path("lib-2"));
        assert_eq!(app.nar_size, 100);
        assert_eq!(app.nar_hash, Some(hash()));
        assert_eq!(g.info(1).nar_hash, Some(hash()));
        assert_eq!(g.info(1).nar_size, 50);
        assert!(!g.info(1).self_reference);
    }

    #[test]
    fn export_references_graph() {
        let g = read(&export_graph()).unwrap();
        check_app_lib(&g);
        assert_eq!(g.info(0).deriver, None);
    }

    #[test]
    fn structured_attrs() {
        let json = format!(r#"{{"outputs": {{"out": "/x"}}, "closure": {}, "name": "img"}}"#, export_graph());
        let g = Graph::from_json_slice(json.as_bytes(), &StoreDir::default(), "closure").unwrap();
        check_app_lib(&g);
        let e = Graph::from_json_slice(json.as_bytes(), &StoreDir::default(), "graph").unwrap_err();
        assert!(e.to_string().contains("`graph`"), "{e}");
        let e = read(r#"{"graph": {"a": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("should hold the closure as an array"), "{e}");
    }

    #[test]
    fn path_info_old_array() {
        let (app, lib) = (fake_path("app-1.0"), fake_path("lib-2"));
        let drv = fake_path("app-1.0.drv");
        let json = format!(
            r#"[{{"path": "{app}", "narHash": "{SRI}", "narSize": 100, "references": ["{lib}", "{app}"],
                  "deriver": "{drv}", "registrationTime": 1, "valid": true, "signatures": []}},
                {{"path": "{lib}", "narHash": "sha256:{HEX}", "narSize": 50, "references": [], "deriver": null}}]"#
        );
        let g = read(&json).unwrap();
        check_app_lib(&g);
        assert_eq!(g.info(0).deriver.as_deref(), Some(drv.as_str()));
        assert_eq!(g.info(1).deriver, None);
    }

    #[test]
    fn path_info_keyed_object() {
        let (app, lib) = (fake_path("app-1.0"), fake_path("lib-2"));
        let lib_base = lib.trim_start_matches("/nix/store/");
        let drv_base = fake_path("app-1.0.drv").trim_start_matches("/nix/store/").to_owned();
        let json = format!(
            r#"{{"{app}": {{"narHash": "{SRI}", "narSize": 100, "references": ["{app}", "{lib_base}"], "deriver": "{drv_base}", "ca": null}},
                "{lib}": {{"narHash": "{SRI}", "narSize": 50, "references": []}}}}"#
        );
        let g = read(&json).unwrap();
        check_app_lib(&g);
        assert_eq!(g.info(0).deriver, Some(format!("/nix/store/{drv_base}")));
        assert!(read("{}").unwrap().is_empty());
    }

    #[test]
    fn invalid_paths_are_errors() {
        let p = fake_path("gone");
        let e = read(&format!(r#"{{"{p}": null}}"#)).unwrap_err();
        assert!(matches!(&e, Error::InvalidPath(x) if *x == p), "{e}");
        let e = read(&format!(r#"[{{"path": "{p}", "valid": false}}]"#)).unwrap_err();
        assert!(matches!(&e, Error::InvalidPath(x) if *x == p), "{e}");
    }

    #[test]
    fn missing_or_bad_fields() {
        let p = fake_path("x");
        let cases = [
            (format!(r#"[{{"path": "{p}", "references": []}}]"#), "`narSize` is missing"),
            (format!(r#"[{{"path": "{p}", "narSize": -1, "references": []}}]"#), "`narSize` is a number"),
            (format!(r#"[{{"path": "{p}", "narSize": "1", "references": []}}]"#), "`narSize` is a string"),
            (format!(r#"[{{"path": "{p}", "narSize": 1}}]"#), "`references` is missing"),
            (format!(r#"[{{"path": "{p}", "narSize": 1, "references": "x"}}]"#), "`references` is a string"),
            (
                format!(r#"[{{"path": "{p}", "narSize": 1, "references": [1]}}]"#),
                "`references` holds a number",
            ),
            (
                format!(r#"[{{"path": "{p}", "narSize": 1, "references": [], "narHash": "md5:x"}}]"#),
                "`narHash`",
            ),
            (
                format!(r#"[{{"path": "{p}", "narSize": 1, "references": [], "narHash": 3}}]"#),
                "`narHash` is a number",
            ),
            (
                format!(r#"[{{"path": "{p}", "narSize": 1, "references": [], "deriver": 3}}]"#),
                "`deriver` is a number",
            ),
        ];
        for (json, want) in cases {
            let e = read(&json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
            assert!(e.contains(&p), "{json}: {e}");
        }
    }

    #[test]
    fn bad_shapes() {
        for (json, want) in [
            ("42", "expected an array or an object"),
            ("[1]", "entry 0 of the closure array is a number"),
            (r#"[{"narSize": 1}]"#, "no string `path`"),
            (r#"{"name": "x"}"#, "keyed by store paths"),
            (&format!(r#"{{"{}": 5}}"#, fake_path("x")), "is a number, not an object"),
        ] {
            let e = read(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn bad_store_paths() {
        let e = read(r#"[{"path": "/usr/bin/env", "narSize": 1, "references": []}]"#).unwrap_err();
        assert!(e.to_string().contains("/usr/bin/env"), "{e}");
        let p = fake_path("x");
        let e = read(&format!(r#"[{{"path": "{p}", "narSize": 1, "references": ["/nix/store/bad"]}}]"#))
            .unwrap_err();
        assert!(e.to_string().contains("/nix/store/bad"), "{e}");
        let other = StoreDir::new("/other/store").unwrap();
        let e = Graph::from_json_slice(export_graph().as_bytes(), &other, "graph").unwrap_err();
        assert!(e.to_string().contains("/other/store"), "{e}");
    }

    #[test]
    fn graph_errors_pass_through() {
        let (p, q) = (fake_path("p"), fake_path("q"));
        let e = read(&format!(r#"[{{"path": "{p}", "narSize": 1, "references": ["{q}"]}}]"#)).unwrap_err();
        assert!(e.to_string().starts_with("graph is not closed"), "{e}");
    }

    #[test]
    fn not_json() {
        let e = read("this is not json").unwrap_err();
        assert!(matches!(e, Error::NotJson(_)));
        assert!(e.to_string().starts_with("input is not JSON"), "{e}");
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("graph.json");
        std::fs::write(&good, export_graph()).unwrap();
        check_app_lib(&Graph::from_json_file(&good, &StoreDir::default(), "graph").unwrap());

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let e = Graph::from_json_file(&bad, &StoreDir::default(), "graph").unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: input is not JSON", bad.display())), "{e}");

        let missing = dir.path().join("missing.json");
        let e = Graph::from_json_file(&missing, &StoreDir::default(), "graph").unwrap_err();
        assert!(matches!(e, Error::Read { .. }));
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    }

    /// The real corpus, when this machine has it.
    #[test]
    #[ignore = "needs /var/tmp/corpus"]
    fn corpus_xl() {
        let file = Path::new("/var/tmp/corpus/xl-v1.closure-graph.json");
        let g = Graph::from_json_file(file, &StoreDir::default(), "graph").unwrap();
        assert!(g.len() > 150);
        assert_eq!(g.roots().len(), 1);
        assert_eq!(g.closure(&g.roots()).len(), g.len());
        assert!(g.infos().iter().all(|i| i.nar_hash.is_some() && i.nar_size > 0));
    }
}
