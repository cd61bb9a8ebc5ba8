//! A flake's `flake.lock` (lock file versions 5 to 7: a graph of `nodes` from `root`) read
//! into the [`FlakeInput`]s a provenance statement lists: every locked input, the
//! transitive ones too (an input's own inputs are built into the image just the same),
//! named by their input path from the root (`nixpkgs`, `flake-utils/systems`).
//!
//! An input's `uri` is Nix's own flake reference for the locked input
//! (`github:owner/repo/<rev>`, `git+https://host/repo?rev=<rev>`, `path:/dir`, …), which
//! `nix flake prefetch` fetches again; its `digest` holds `sha256` (the hex of the lock's
//! `narHash`, the hash of the fetched tree's NAR) and `gitCommit` (the `rev`) when there is
//! one. Anything the lock does not pin, or does not say clearly, is an error: provenance
//! that names an input vaguely would claim what it cannot show.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value};

use crate::provenance::FlakeInput;
use crate::Error;

/// The lock file versions whose `nodes` graph is read here.
pub const VERSIONS: std::ops::RangeInclusive<u64> = 5..=7;

/// Reads and parses the lock file at `path`.
pub fn read(path: &Path) -> Result<Vec<FlakeInput>, Error> {
    let bytes =
        std::fs::read(path).map_err(|cause| Error::Io { action: "read", path: path.into(), cause })?;
    parse(&bytes).map_err(|e| match e {
        Error::Format { reason, .. } => Error::Format { what: path.display().to_string(), reason },
        e => e,
    })
}

/// Parses a lock file's bytes: its locked inputs, sorted by name.
pub fn parse(bytes: &[u8]) -> Result<Vec<FlakeInput>, Error> {
    let bad = |reason: String| Error::Format { what: "flake.lock".into(), reason };
    let lock: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let lock = lock.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    match lock.get("version").and_then(Value::as_u64) {
        Some(v) if VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(bad(format!(
                "lock file version {v}; versions {} to {} are read",
                VERSIONS.start(),
                VERSIONS.end()
            )))
        }
        None => return Err(bad("no numeric `version`: not a flake lock file".into())),
    }
    let nodes =
        lock.get("nodes").and_then(Value::as_object).ok_or_else(|| bad("no `nodes` object".into()))?;
    let root = lock.get("root").and_then(Value::as_str).ok_or_else(|| bad("no `root` node name".into()))?;
    let node = |key: &str| nodes.get(key).and_then(Value::as_object);
    node(root).ok_or_else(|| bad(format!("the root node `{root}` is not in `nodes`")))?;

    // Breadth first with inputs in name order: each node is named by its shortest input
    // path (the first of those in order), whatever the order of the file's keys.
    // `follows` entries (a list: a path from the root) name a node reached elsewhere.
    let mut named: BTreeMap<String, &str> = BTreeMap::new();
    let mut seen: BTreeSet<&str> = [root].into();
    let mut queue: VecDeque<(&str, String)> = [(root, String::new())].into();
    while let Some((key, path)) = queue.pop_front() {
        let n = node(key)
            .ok_or_else(|| bad(format!("input `{path}` names node `{key}`, which is not in `nodes`")))?;
        let inputs = match n.get("inputs") {
            None => continue,
            Some(Value::Object(m)) => m,
            Some(_) => return Err(bad(format!("node `{key}`: `inputs` is not an object"))),
        };
        let mut names: Vec<&String> = inputs.keys().collect();
        names.sort();
        for name in names {
            let child = match &inputs[name] {
                Value::String(s) => s.as_str(),
                Value::Array(p) if p.iter().all(Value::is_string) => continue,
                _ => {
                    return Err(bad(format!(
                        "node `{key}`: input `{name}` is neither a node name nor a follows path"
                    )))
                }
            };
            let child_path = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
            if seen.insert(child) {
                named.insert(child_path.clone(), child);
                queue.push_back((child, child_path));
            }
        }
    }
    named
        .into_iter()
        .map(|(name, key)| {
            let locked = node(key)
                .and_then(|n| n.get("locked"))
                .and_then(Value::as_object)
                .ok_or_else(|| bad(format!("input `{name}` (node `{key}`) has no `locked` object")))?;
            locked_input(&name, locked)
                .map_err(|reason| bad(format!("input `{name}` (node `{key}`): {reason}")))
        })
        .collect()
}

/// One `locked` object as a [`FlakeInput`].
fn locked_input(name: &str, l: &Map<String, Value>) -> Result<FlakeInput, String> {
    let field = |k: &str| -> Result<Option<&str>, String> {
        match l.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(v) => Err(format!("`{k}` must be a non-empty string, got {v}")),
        }
    };
    let need = |k: &str| field(k)?.ok_or_else(|| format!("the locked input has no `{k}`"));
    let ty = need("type")?;
    let rev = field("rev")?;
    if let Some(r) = rev {
        if !(r.len() == 40 || r.len() == 64)
            || !r.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(format!("`rev` {r:?} is not a lower-case hex commit id"));
        }
    }
    // Query parameters, sorted, as Nix writes them.
    let query = |keys: &[&str]| -> Result<String, String> {
        let mut q = Vec::new();
        for k in keys {
            if let Some(v) = field(k)? {
                q.push(format!("{k}={}", escape(v)));
            }
        }
        q.sort();
        Ok(if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) })
    };
    let uri = match ty {
        "github" | "gitlab" | "sourcehut" => {
            let rev = rev.ok_or("a locked repository input has no `rev`")?;
            let (owner, repo) = (need("owner")?, need("repo")?);
            for part in [owner, repo] {
                if part.contains(['/', '?', '#']) {
                    return Err(format!("`owner`/`repo` {part:?} holds a '/', '?' or '#'"));
                }
            }
            format!("{ty}:{owner}/{repo}/{rev}{}", query(&["dir", "host"])?)
        }
        "git" | "hg" | "tarball" | "file" => {
            let url = need("url")?;
            if ty == "git" || ty == "hg" {
                rev.ok_or("a locked repository input has no `rev`")?;
            }
            let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
                return Err(format!("`url` {url:?} is not a URL"));
            }
            if url.contains(['?', '#']) && ty != "tarball" && ty != "file" {
                return Err(format!("`url` {url:?} holds a query or fragment"));
            }
            let q = if ty == "git" || ty == "hg" { query(&["dir", "ref", "rev", "submodules"])? } else { String::new() };
            format!("{ty}+{url}{q}")
        }
        "path" => {
            let p = need("path")?;
            if !p.starts_with('/') {
                return Err(format!("`path` {p:?} is not absolute"));
            }
            format!("path:{p}")
        }
        other => return Err(format!("input type `{other}` is not one this reads (github, gitlab, sourcehut, git, hg, tarball, file, path)")),
    };
    let mut digest = BTreeMap::new();
    if let Some(h) = field("narHash")? {
        digest.insert("sha256".to_owned(), nar_hash_hex(h)?);
    }
    if let Some(r) = rev {
        digest.insert("gitCommit".to_owned(), r.to_owned());
    }
    if !digest.contains_key("sha256") {
        // A revision alone pins a repository; nothing pins a tarball or path without its hash.
        if ty == "tarball" || ty == "file" || ty == "path" {
            return Err("the locked input has no `narHash`".into());
        }
    }
    Ok(FlakeInput { name: name.to_owned(), uri, digest })
}

/// `sha256-<base64>` (SRI, as lock files write it) as lower-case hex.
fn nar_hash_hex(sri: &str) -> Result<String, String> {
    let b64 =
        sri.strip_prefix("sha256-").ok_or_else(|| format!("`narHash` {sri:?} is not `sha256-<base64>`"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("`narHash` {sri:?}: bad base64: {e}"))?;
    if bytes.len() != 32 {
        return Err(format!("`narHash` {sri:?} is {} bytes, not 32", bytes.len()));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Percent-escapes what would end or split a query value.
fn escape(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        match c {
            '%' | '&' | '#' | '=' | '?' | ' ' => s.push_str(&format!("%{:02X}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAR: &str = "sha256-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NAR_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn github(owner: &str, repo: &str, rev: &str) -> Value {
        json!({ "locked": { "type": "github", "owner": owner, "repo": repo, "rev": rev, "narHash": NAR, "lastModified": 1 },
                "original": { "type": "github", "owner": owner, "repo": repo } })
    }

    /// A lock as Nix writes it for a flake with nixpkgs and flake-utils (whose own input
    /// `systems` is transitive, and whose `nixpkgs` follows the root's).
    fn lock() -> Value {
        let rev = |c: &str| c.repeat(40);
        let mut utils = github("numtide", "flake-utils", &rev("b"));
        utils["inputs"] = json!({ "systems": "systems", "nixpkgs": ["nixpkgs"] });
        json!({
            "version": 7,
            "root": "root",
            "nodes": {
                "root": { "inputs": { "nixpkgs": "nixpkgs", "flake-utils": "flake-utils", "src": "src", "local": "local" } },
                "nixpkgs": github("NixOS", "nixpkgs", &rev("a")),
                "flake-utils": utils,
                "systems": github("nix-systems", "default", &rev("c")),
                "src": { "locked": { "type": "git", "url": "https://example.org/src.git", "ref": "main", "rev": rev("d"), "narHash": NAR } },
                "local": { "locked": { "type": "path", "path": "/srv/local", "narHash": NAR } },
            }
        })
    }

    fn parse_value(v: &Value) -> Result<Vec<FlakeInput>, Error> {
        parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn every_locked_input_by_its_path_with_hashes() {
        let inputs = parse_value(&lock()).unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["flake-utils", "flake-utils/systems", "local", "nixpkgs", "src"]);
        let by = |n: &str| inputs.iter().find(|i| i.name == n).unwrap();
        assert_eq!(by("nixpkgs").uri, format!("github:NixOS/nixpkgs/{}", "a".repeat(40)));
        assert_eq!(by("nixpkgs").digest["sha256"], NAR_HEX);
        assert_eq!(by("nixpkgs").digest["gitCommit"], "a".repeat(40));
        assert_eq!(by("flake-utils/systems").uri, format!("github:nix-systems/default/{}", "c".repeat(40)));
        assert_eq!(by("src").uri, format!("git+https://example.org/src.git?ref=main&rev={}", "d".repeat(40)));
        assert_eq!(by("local").uri, "path:/srv/local");
        assert!(!by("local").digest.contains_key("gitCommit"));
    }

    #[test]
    fn versions_5_and_6_have_the_same_graph() {
        for version in [5, 6] {
            let mut v = lock();
            v["version"] = json!(version);
            assert_eq!(parse_value(&v).unwrap().len(), 5);
        }
    }

    #[test]
    fn the_order_of_the_file_does_not_matter() {
        // The same graph with the nodes' keys renamed and written in another order.
        let mut v = lock();
        let nodes = v["nodes"].as_object_mut().unwrap();
        let s = nodes.remove("systems").unwrap();
        nodes.insert("systems_2".into(), s);
        v["nodes"]["flake-utils"]["inputs"]["systems"] = json!("systems_2");
        assert_eq!(format!("{:?}", parse_value(&v).unwrap()), format!("{:?}", parse_value(&lock()).unwrap()));
    }

    #[test]
    fn a_node_reached_twice_is_listed_once_by_its_shortest_path() {
        let mut v = lock();
        v["nodes"]["root"]["inputs"]["systems"] = json!("systems");
        let names: Vec<String> = parse_value(&v).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["flake-utils", "local", "nixpkgs", "src", "systems"]);
    }

    #[test]
    fn hostile_or_broken_locks_are_refused_clearly() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "not a JSON object"),
            (json!({ "nodes": {}, "root": "root" }), "no numeric `version`"),
            (json!({ "version": 4, "nodes": {}, "root": "root" }), "lock file version 4"),
            (json!({ "version": 8, "nodes": {}, "root": "root" }), "lock file version 8"),
            (json!({ "version": 7, "root": "root" }), "no `nodes`"),
            (json!({ "version": 7, "nodes": {} }), "no `root`"),
            (json!({ "version": 7, "nodes": {}, "root": "root" }), "the root node `root` is not in `nodes`"),
        ];
        let mut cases = cases;
        let mut edit = |f: &dyn Fn(&mut Value), msg: &'static str| {
            let mut v = lock();
            f(&mut v);
            cases.push((v, msg));
        };
        edit(&|v| v["nodes"]["root"]["inputs"]["x"] = json!("nowhere"), "names node `nowhere`");
        edit(&|v| v["nodes"]["root"]["inputs"]["x"] = json!(3), "neither a node name nor a follows path");
        edit(
            &|v| drop(v["nodes"]["nixpkgs"].as_object_mut().unwrap().remove("locked")),
            "input `nixpkgs` (node `nixpkgs`) has no `locked`",
        );
        edit(
            &|v| drop(v["nodes"]["nixpkgs"]["locked"].as_object_mut().unwrap().remove("rev")),
            "has no `rev`",
        );
        edit(
            &|v| drop(v["nodes"]["nixpkgs"]["locked"].as_object_mut().unwrap().remove("owner")),
            "has no `owner`",
        );
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["type"] = json!("indirect"), "input type `indirect`");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["rev"] = json!("HEAD"), "not a lower-case hex commit id");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["narHash"] = json!("md5-AAAA"), "is not `sha256-<base64>`");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["narHash"] = json!("sha256-!!!"), "bad base64");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["narHash"] = json!("sha256-AAAA"), "is 3 bytes, not 32");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["owner"] = json!(7), "`owner` must be a non-empty string");
        edit(&|v| v["nodes"]["nixpkgs"]["locked"]["repo"] = json!("a/b"), "holds a '/'");
        edit(
            &|v| drop(v["nodes"]["local"]["locked"].as_object_mut().unwrap().remove("narHash")),
            "has no `narHash`",
        );
        edit(&|v| v["nodes"]["local"]["locked"]["path"] = json!("rel"), "is not absolute");
        edit(&|v| v["nodes"]["src"]["locked"]["url"] = json!("no scheme"), "is not a URL");
        for (v, msg) in cases {
            let e = parse_value(&v).expect_err(&format!("accepted {v}")).to_string();
            assert!(e.contains(msg), "{e:?} lacks {msg:?}");
            assert!(e.starts_with("flake.lock: "), "{e}");
        }
        for garbage in [&b"not json"[..], b"", b"\xff\xfe", b"{\"version\": 7, \"nodes\": "] {
            assert!(parse(garbage).unwrap_err().to_string().contains("not JSON"));
        }
    }

    #[test]
    fn a_cycle_ends() {
        let mut v = lock();
        v["nodes"]["systems"]["inputs"] = json!({ "back": "flake-utils", "root": "root" });
        assert_eq!(parse_value(&v).unwrap().len(), 5);
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flake.lock");
        std::fs::write(&p, b"{}").unwrap();
        assert!(read(&p).unwrap_err().to_string().starts_with(&format!("{}: ", p.display())));
        assert!(read(&dir.path().join("none")).unwrap_err().to_string().contains("cannot read"));
    }
}
