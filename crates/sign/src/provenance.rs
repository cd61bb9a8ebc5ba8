//! SLSA provenance v1 (https://slsa.dev/spec/v1.0/provenance) in an in-toto Statement v1
//! (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md): which image
//! (the manifest digest) was built from what (the closure's store paths with their NAR
//! hashes, the image arguments) by whom (the GitHub workflow run, or this machine).
//!
//! Nothing here reads a clock or the machine: the same inputs give the same bytes.

use std::collections::BTreeMap;

use nix_layer_blob::Digest;
use serde_json::{json, Map, Value};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The statement type cosign (2.x, in-toto-golang) writes for `cosign attest`: the same
/// `subject`, `predicateType` and `predicate` as v1.
pub const STATEMENT_TYPE_V01: &str = "https://in-toto.io/Statement/v0.1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// What `buildType` names: how to read `externalParameters` (the image arguments).
pub const BUILD_TYPE: &str = "https://github.com/nix-layer/nix-layer/blob/main/docs/build-type/image/v1";
/// The builder id without a GitHub workflow: a build on a machine nobody vouches for.
pub const LOCAL_BUILDER: &str = "https://github.com/nix-layer/nix-layer/builders/local";

/// A store path the image holds.
#[derive(Debug, Clone)]
pub struct StorePathDependency {
    pub path: String,
    /// The sha256 of the path's NAR serialisation (Nix's `narHash`), lowercase hex.
    pub nar_sha256: Option<String>,
}

/// A locked flake input (see [`crate::flake_lock`]): `name` its input path, `uri` Nix's
/// flake reference for the locked input, `digest` its NAR's `sha256` (hex) and `gitCommit`.
#[derive(Debug, Clone)]
pub struct FlakeInput {
    pub name: String,
    pub uri: String,
    pub digest: BTreeMap<String, String>,
}

/// Everything a provenance statement says.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The repository the image was pushed to (`registry/repository`).
    pub name: String,
    pub digest: Digest,
    /// The image arguments (name, strategy, max layers, compression, …).
    pub parameters: BTreeMap<String, Value>,
    pub store_paths: Vec<StorePathDependency>,
    pub flake_inputs: Vec<FlakeInput>,
    pub builder: Builder,
    /// The nix-layer version that built the image.
    pub version: String,
}

/// Who built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub id: String,
    /// The workflow run, on GitHub.
    pub invocation_id: Option<String>,
}

impl Builder {
    /// From GitHub Actions' variables when present (`$GITHUB_SERVER_URL/$GITHUB_WORKFLOW_REF`,
    /// e.g. `https://github.com/org/repo/.github/workflows/build.yml@refs/heads/main`),
    /// else [`LOCAL_BUILDER`]. `var` reads a variable (the environment, or a test's map).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Builder {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        match (var("GITHUB_SERVER_URL"), var("GITHUB_WORKFLOW_REF")) {
            (Some(server), Some(workflow)) => {
                let server = server.trim_end_matches('/');
                let invocation_id = match (var("GITHUB_REPOSITORY"), var("GITHUB_RUN_ID")) {
                    (Some(repo), Some(run)) => Some(format!(
                        "{server}/{repo}/actions/runs/{run}/attempts/{}",
                        var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into())
                    )),
                    _ => None,
                };
                Builder { id: format!("{server}/{workflow}"), invocation_id }
            }
            _ => Builder { id: LOCAL_BUILDER.to_owned(), invocation_id: None },
        }
    }
}

/// The statement's bytes: compact JSON with sorted keys and dependencies sorted by path.
pub fn statement(p: &Provenance) -> Vec<u8> {
    let s = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": p.name, "digest": { "sha256": p.digest.hex() } }],
        "predicateType": SLSA_PROVENANCE,
        "predicate": predicate_value(p),
    });
    // serde_json's maps are BTreeMaps here (no preserve_order): keys come out sorted.
    serde_json::to_vec(&s).expect("a statement serialises")
}

/// The statement's `predicate` alone, the same bytes as within [`statement`]: for a signer
/// that builds the statement itself around a subject (`cosign attest --predicate FILE
/// --type slsaprovenance1`).
pub fn predicate(p: &Provenance) -> Vec<u8> {
    serde_json::to_vec(&predicate_value(p)).expect("a predicate serialises")
}

fn predicate_value(p: &Provenance) -> Value {
    let mut paths = p.store_paths.clone();
    paths.sort_by(|a, b| a.path.cmp(&b.path));
    paths.dedup_by(|a, b| a.path == b.path);
    let mut deps: Vec<Value> = paths
        .iter()
        .map(|d| {
            let mut o = Map::new();
            o.insert("name".into(), d.path.clone().into());
            match &d.nar_sha256 {
                Some(h) => o.insert("digest".into(), json!({ "sha256": h })),
                // A resource descriptor needs a uri, digest or content: a path known by
                // name alone (in a base image) is named by its location.
                None => o.insert("uri".into(), format!("file://{}", d.path).into()),
            };
            Value::Object(o)
        })
        .collect();
    let mut inputs = p.flake_inputs.clone();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    deps.extend(inputs.iter().map(|i| json!({ "name": i.name, "uri": i.uri, "digest": i.digest })));

    let mut run = json!({ "builder": { "id": p.builder.id, "version": { "nix-layer": p.version } } });
    if let Some(id) = &p.builder.invocation_id {
        run["metadata"] = json!({ "invocationId": id });
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": p.parameters,
            "resolvedDependencies": deps,
        },
        "runDetails": run,
    })
}

/// The subject digests (`sha256` hex) of an in-toto statement, checking its `_type` (v1,
/// or cosign's v0.1).
pub fn subjects(statement: &[u8]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(statement).map_err(|e| format!("the statement is not JSON: {e}"))?;
    if v["_type"] != STATEMENT_TYPE && v["_type"] != STATEMENT_TYPE_V01 {
        return Err(format!("`_type` is {}, not `{STATEMENT_TYPE}` or `{STATEMENT_TYPE_V01}`", v["_type"]));
    }
    let subjects = v["subject"].as_array().ok_or("the statement has no `subject` list")?;
    Ok(subjects.iter().filter_map(|s| s["digest"]["sha256"].as_str().map(str::to_owned)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provenance {
        Provenance {
            name: "registry.example/app".into(),
            digest: Digest::of(b"manifest"),
            parameters: [("maxLayers".to_owned(), json!(100)), ("name".to_owned(), json!("app"))].into(),
            store_paths: vec![
                StorePathDependency { path: "/nix/store/b-lib".into(), nar_sha256: Some("02".repeat(32)) },
                StorePathDependency { path: "/nix/store/a-app".into(), nar_sha256: Some("01".repeat(32)) },
            ],
            flake_inputs: vec![],
            builder: Builder::from_env(|_| None),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_whatever_their_order() {
        let a = statement(&sample());
        let mut p = sample();
        p.store_paths.reverse();
        assert_eq!(statement(&p), a);
        let v: Value = serde_json::from_slice(&a).unwrap();
        let deps = &v["predicate"]["buildDefinition"]["resolvedDependencies"];
        assert_eq!(deps[0]["name"], "/nix/store/a-app");
        assert_eq!(deps[0]["digest"]["sha256"], "01".repeat(32));
        assert_eq!(subjects(&a).unwrap(), vec![Digest::of(b"manifest").hex()]);
    }

    #[test]
    fn the_predicate_is_the_statements_predicate_byte_for_byte() {
        let mut p = sample();
        p.flake_inputs.push(FlakeInput {
            name: "nixpkgs".into(),
            uri: "github:NixOS/nixpkgs/abc".into(),
            digest: [("gitCommit".to_owned(), "abc".to_owned())].into(),
        });
        p.builder.invocation_id = Some("https://github.com/org/app/actions/runs/1/attempts/1".into());
        let (statement, predicate) = (statement(&p), predicate(&p));
        let text = String::from_utf8(statement.clone()).unwrap();
        let inner = std::str::from_utf8(&predicate).unwrap();
        // Keys sort `_type`, `predicate`, `predicateType`, `subject`: the predicate is
        // the second member, exactly as `predicate` writes it.
        assert!(text.contains(&format!(r#","predicate":{inner},"predicateType":"#)), "{text}");
        let v: Value = serde_json::from_slice(&statement).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&predicate).unwrap(), v["predicate"]);
    }

    #[test]
    fn the_builder_is_the_github_workflow_when_run_there() {
        let env: BTreeMap<&str, &str> = [
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "org/app"),
            ("GITHUB_WORKFLOW_REF", "org/app/.github/workflows/build.yml@refs/heads/main"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
        ]
        .into();
        let b = Builder::from_env(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(b.id, "https://github.com/org/app/.github/workflows/build.yml@refs/heads/main");
        assert_eq!(b.invocation_id.as_deref(), Some("https://github.com/org/app/actions/runs/42/attempts/2"));
        assert_eq!(Builder::from_env(|_| None).id, LOCAL_BUILDER);
    }
}
