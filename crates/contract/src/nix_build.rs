//! The builder of the Nix library's derivations (`nix-layer nix-build`):
//! reads the structured attrs, checks the contract version, and turns them
//! into an image request or a file to write (a stream script, a family
//! catalogue).

use std::fs;
use std::path::{Path, PathBuf};

use nix_layer_pipeline::{BuildRequest, Output};
use serde_json::Value;

use crate::contract::{self, SETTINGS_KEY, SETTINGS_MARKER, VERSION, VERSION_KEY};
use crate::error::{invalid, Error, Result};
use crate::settings::{default_jobs, read_json_file, request, split_attrs, GraphSource, Inputs};

/// Where the structured attrs are: the given path; else `$NIX_ATTRS_JSON_FILE`
/// when that file exists; else `.attrs.json` in the working directory.
///
/// Nix before 2.17 or so sets `NIX_ATTRS_JSON_FILE` to the *host-side* build
/// directory, which does not exist inside the sandbox (where the build
/// directory is `/build`); the file is in the working directory there.
/// nixpkgs' stdenv falls back the same way.
pub fn attrs_path(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_owned();
    }
    match std::env::var_os("NIX_ATTRS_JSON_FILE").map(PathBuf::from) {
        Some(p) if p.exists() => p,
        _ => PathBuf::from(".attrs.json"),
    }
}

/// Reads the structured attrs (see [`attrs_path`]).
pub fn read_nix_attrs(given: Option<&Path>) -> Result<Value> {
    read_json_file(&attrs_path(given), "structured attrs")
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

/// Refuses settings written for another contract version.
pub fn check_version(settings: &Value) -> Result<()> {
    match settings.get(VERSION_KEY) {
        Some(v) if v.as_u64() == Some(VERSION) => Ok(()),
        Some(v) => Err(Error::Version { got: v.to_string(), known: VERSION }),
        None => Err(Error::Version {
            got: format!(
                "none (no `{SETTINGS_KEY}.{VERSION_KEY}`: a library from before versioned contracts)"
            ),
            known: VERSION,
        }),
    }
}

/// What to build from the structured attrs of a Nix library derivation.
pub fn nix_build(mut attrs: Value) -> Result<NixBuild> {
    let Some(out) = attrs.pointer("/outputs/out").and_then(Value::as_str).map(PathBuf::from) else {
        return invalid("structured attrs have no outputs.out; is __structuredAttrs = true set?");
    };
    let Some(settings) = attrs.get(SETTINGS_KEY) else {
        return invalid(format!("structured attrs have no `{SETTINGS_KEY}` settings"));
    };
    check_version(settings)?;
    let mode = settings.get("mode").and_then(Value::as_str).unwrap_or(contract::MODES[0]).to_owned();
    if mode == "family-catalogue" {
        let text = nix_layer_plan::Catalogue::from_structured_attrs(&attrs)?;
        return Ok(NixBuild::File { path: out, text, executable: false });
    }
    // A stream script carries what `nix-build` read: the graph, the settings
    // and the graphs of family members.
    let mut embedded = serde_json::json!({
        contract::GRAPH_KEY: attrs.get(contract::GRAPH_KEY).cloned().unwrap_or(Value::Null),
        SETTINGS_KEY: settings.clone(),
    });
    if let Some(family) = settings.get("family").and_then(Value::as_object) {
        for key in family.values().filter_map(Value::as_str) {
            embedded[key] = attrs.get(key).cloned().unwrap_or(Value::Null);
        }
    }
    let (s, graph) = split_attrs(attrs.take())?;
    let inputs =
        |jobs| Inputs { graph: GraphSource::Inline(graph), family: vec![], roots: vec![], jobs, cache: None };
    match mode.as_str() {
        "image" => {
            Ok(NixBuild::Image(Box::new(request(s, inputs(default_jobs()))?.write_to(Output::Path(out)))))
        }
        "stream" => {
            // Validate now, so a bad argument fails the build, not the first run.
            let req = request(s, inputs(1))?.image;
            let exe = std::env::current_exe()
                .map_err(|e| Error::Invalid(format!("cannot find the nix-layer executable: {e}")))?;
            let script = format!(
                "#!/bin/sh\n# Streams the image {} as a docker-archive to stdout: ./result | docker load\n# Options: -o PATH, --format oci|oci-archive, --compression gzip|zstd, --cache DIR, --jobs N\nexec {} build --settings \"$0\" \"$@\"\nexit 1\n{SETTINGS_MARKER}\n{}\n",
                req.name,
                exe.display(),
                serde_json::to_string(&embedded).expect("JSON")
            );
            Ok(NixBuild::File { path: out, text: script, executable: true })
        }
        other => {
            invalid(format!("unknown {SETTINGS_KEY}.mode `{other}`; use {}", contract::MODES.join(", ")))
        }
    }
}

/// Writes a build's output file through a temporary name.
pub fn write_output_file(path: &Path, text: &str, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, text)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(if executable { 0o555 } else { 0o444 }))?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        Error::Write { path: path.to_owned(), source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_fall_back_to_the_working_directory_when_the_env_path_is_missing() {
        // One test touches the environment, so no other test races it.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("attrs.json");
        fs::write(&real, "{}").unwrap();
        std::env::set_var("NIX_ATTRS_JSON_FILE", &real);
        assert_eq!(attrs_path(None), real);
        // The host-side path older Nix passes into the sandbox.
        std::env::set_var("NIX_ATTRS_JSON_FILE", "/tmp/nix-build-x.drv-0/.attrs.json");
        assert_eq!(attrs_path(None), PathBuf::from(".attrs.json"));
        std::env::remove_var("NIX_ATTRS_JSON_FILE");
        assert_eq!(attrs_path(None), PathBuf::from(".attrs.json"));
        assert_eq!(attrs_path(Some(&real)), real);
    }

    fn attrs(version: Value) -> Value {
        serde_json::json!({
            "outputs": { "out": "/nix/store/00000000000000000000000000000000-x" },
            "graph": [],
            "nixLayer": { "contractVersion": version, "mode": "stream", "name": "x" },
        })
    }

    #[test]
    fn another_contract_version_is_refused_clearly() {
        for v in [serde_json::json!(0), serde_json::json!(VERSION + 1), serde_json::json!("1")] {
            let e = nix_build(attrs(v.clone())).err().expect("refused").to_string();
            assert!(e.contains(&format!("contract version {v}")) && e.contains("same release"), "{e}");
        }
        let mut a = attrs(Value::Null);
        a["nixLayer"].as_object_mut().unwrap().remove(VERSION_KEY);
        let e = nix_build(a).err().expect("refused").to_string();
        assert!(e.contains("no `nixLayer.contractVersion`"), "{e}");
    }

    #[test]
    fn the_current_version_builds_a_stream_script() {
        let Ok(NixBuild::File { text, executable, .. }) = nix_build(attrs(serde_json::json!(VERSION))) else {
            panic!("not a stream script")
        };
        assert!(executable);
        let (head, json) = text.split_once(&format!("\n{SETTINGS_MARKER}\n")).unwrap();
        assert!(head.contains("build --settings"));
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["nixLayer"]["contractVersion"], VERSION);
    }
}
