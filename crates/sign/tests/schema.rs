//! The provenance statements validate against the in-toto Statement v1 / SLSA provenance
//! v1 schema (tests/provenance.schema.json) with python-jsonschema (tests/validate.sh
//! installs it from PyPI into a venv under target/), and the schema really rejects
//! statements that break the specifications.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix_layer_blob::Digest;
use nix_layer_sign::provenance::{statement, Builder, FlakeInput, Provenance, StorePathDependency};
use serde_json::{json, Value};

fn provenance(github: bool) -> Provenance {
    let env = |k: &str| {
        github.then(|| match k {
            "GITHUB_SERVER_URL" => Some("https://github.com".to_owned()),
            "GITHUB_REPOSITORY" => Some("org/app".to_owned()),
            "GITHUB_WORKFLOW_REF" => Some("org/app/.github/workflows/build.yml@refs/tags/v1".to_owned()),
            "GITHUB_RUN_ID" => Some("99".to_owned()),
            _ => None,
        })?
    };
    Provenance {
        name: "ghcr.io/org/app".into(),
        digest: Digest::of(b"a manifest"),
        parameters: [
            ("name".to_owned(), json!("ghcr.io/org/app:1")),
            ("strategy".to_owned(), json!("popularity")),
            ("maxLayers".to_owned(), json!(100)),
            ("compression".to_owned(), json!("gzip-6")),
            ("variant".to_owned(), Value::Null),
        ]
        .into(),
        store_paths: vec![
            StorePathDependency {
                path: "/nix/store/0c6jglmybhbzw1bf5qcixcifmgv1zjsx-hello-2.12.1".into(),
                nar_sha256: Some("ab".repeat(32)),
            },
            // A base image's path known by name alone.
            StorePathDependency {
                path: "/nix/store/1x8jg8fbmyghi3d0bi1xdgkr4bd9gxx1-glibc-2.39".into(),
                nar_sha256: None,
            },
        ],
        flake_inputs: vec![FlakeInput {
            name: "nixpkgs".into(),
            uri: "github:NixOS/nixpkgs/0123456789abcdef0123456789abcdef01234567".into(),
            digest: [("sha256".to_owned(), "cd".repeat(32))].into(),
        }],
        builder: Builder::from_env(env),
        version: "0.1.0".into(),
    }
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jsonschema-venv");
    Command::new(here.join("validate.sh"))
        .arg(venv)
        .arg(here.join("provenance.schema.json"))
        .args(files)
        .output()
        .expect("bash and python3 run tests/validate.sh")
}

/// Makes a valid statement invalid.
type Breaks = fn(&mut Value);

#[test]
fn statements_validate_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good = vec![
        write("github.json", &statement(&provenance(true))),
        write("local.json", &statement(&provenance(false))),
    ];
    let o = validate(&good);
    assert!(
        o.status.success(),
        "valid statements refused (or jsonschema could not be installed):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let base: Value = serde_json::from_slice(&statement(&provenance(false))).unwrap();
    let broken: Vec<(&str, Breaks)> = vec![
        ("no-builder-id", |v| {
            v["predicate"]["runDetails"]["builder"].as_object_mut().unwrap().remove("id");
        }),
        ("subject-without-digest", |v| {
            v["subject"][0].as_object_mut().unwrap().remove("digest");
        }),
        ("short-sha256", |v| v["subject"][0]["digest"]["sha256"] = json!("abc")),
        ("statement-v0.1", |v| v["_type"] = json!("https://in-toto.io/Statement/v0.1")),
        ("no-build-type", |v| {
            v["predicate"]["buildDefinition"].as_object_mut().unwrap().remove("buildType");
        }),
        ("dependency-with-nothing", |v| {
            v["predicate"]["buildDefinition"]["resolvedDependencies"] = json!([{"name": "x"}])
        }),
    ];
    for (name, breaks) in broken {
        let mut v = base.clone();
        breaks(&mut v);
        let o = validate(&[write(&format!("{name}.json"), &serde_json::to_vec(&v).unwrap())]);
        assert_eq!(o.status.code(), Some(1), "{name} was accepted: {}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(name),
            "{name}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
