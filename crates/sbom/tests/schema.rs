//! The documents validate with the formats' own tools (tests/validate.sh:
//! the official CycloneDX schema via cyclonedx-python-lib, SPDX's spdx-tools,
//! installed from PyPI into a venv under target/), and the validator really
//! rejects broken documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix_layer_graph::{Graph, NarHash, PathInfo, StoreDir, StorePath};
use nix_layer_sbom::{Format, Image, Sbom, SbomTime};
use serde_json::{json, Value};

/// Names that exercise every rule: outputs, `+ ? =` to escape, sources,
/// archives, patches, versionless packages, Nix's odd name/version split.
const NAMES: &[&str] = &[
    "hello-2.12.1",
    "openssl-3.0.13",
    "openssl-3.0.13-bin",
    "glibc-2.39-52",
    "gcc-13.2.0-lib",
    "python3-3.12.4",
    "python3.12-pip-24.0",
    "bash-interactive-5.2p32",
    "libxml2-2.12.7-dev",
    "gtk+3-3.24.41",
    "openssh-client-9.2p1-2+deb12u6",
    "odd?name=x-1.0",
    "foo-unstable-2024-01-01",
    "bash-interactive",
    "source",
    "hello-2.12.1.tar.gz",
    "CVE-2024-2511.patch",
    "builder.sh",
];

fn store_path(i: usize, name: &str) -> StorePath {
    const A: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let hash: String = (0..32).map(|k| A[(i * 7 + k * 3) % 32] as char).collect();
    StoreDir::default().parse(&format!("/nix/store/{hash}-{name}")).unwrap()
}

/// Each path references the next two, the first also itself.
fn graph() -> Graph {
    let paths: Vec<StorePath> = NAMES.iter().enumerate().map(|(i, n)| store_path(i, n)).collect();
    let infos = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut refs: Vec<StorePath> = paths.iter().skip(i + 1).take(2).cloned().collect();
            if i == 0 {
                refs.push(p.clone());
            }
            let mut info = PathInfo::from_raw_references(p.clone(), refs, 1000 * i as u64 + 1);
            info.nar_hash = Some(NarHash::from_bytes([i as u8; 32]));
            if i % 2 == 0 {
                info.deriver = Some(format!("/nix/store/{}-{}.drv", p.hash_part(), NAMES[i]));
            }
            info
        })
        .collect();
    Graph::new(infos).unwrap()
}

fn image(digest: bool) -> Image {
    Image {
        name: "ghcr.io/nix-layer/hello".into(),
        tag: Some("2024-05-01".into()),
        created: SbomTime::parse("2024-05-01T12:00:00Z").unwrap(),
        digest: digest.then(|| format!("sha256:{}", "3c".repeat(32))),
        architecture: Some("amd64".into()),
    }
}

/// Runs the validator on `files`.
fn validate(files: &[PathBuf]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate.sh");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbom-venv");
    Command::new("bash").arg(script).arg(venv).args(files).output().expect("run bash")
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

#[test]
fn documents_validate_and_broken_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph();
    let mut files = Vec::new();
    for (digest, roots) in [(false, None), (true, Some(vec![store_path(0, NAMES[0])]))] {
        let sbom = Sbom::new(&g, roots.as_deref(), image(digest)).unwrap();
        for f in [Format::CycloneDx, Format::Spdx] {
            let p = dir.path().join(format!("image-{digest}{}", f.file_suffix()));
            sbom.write(f, &p).unwrap();
            files.push(p);
        }
    }
    let out = validate(&files);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "valid documents rejected:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("valid ").count(), files.len(), "{stdout}");

    let cdx: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let spdx: Value = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    // Each broken document alone, with what the validator must say about it.
    let mut broken = Vec::new();
    let mut bad_type = cdx.clone();
    bad_type["components"][0]["type"] = json!("banana");
    broken.push(("bad-type.cdx.json", bad_type, "schema"));
    let mut bad_serial = cdx.clone();
    bad_serial["serialNumber"] = json!("not-a-urn");
    broken.push(("bad-serial.cdx.json", bad_serial, "schema"));
    let mut dangling = cdx.clone();
    dangling["dependencies"][0]["dependsOn"] = json!(["/nix/store/00000000000000000000000000000000-gone"]);
    broken.push(("dangling.cdx.json", dangling, "is not a component"));
    let mut bad_purl = cdx.clone();
    bad_purl["components"][0]["purl"] = json!("pkg:nix/gtk+3@3.24.41");
    broken.push(("bad-purl.cdx.json", bad_purl, "not canonical"));
    let mut no_location = spdx.clone();
    no_location["packages"][1].as_object_mut().unwrap().remove("downloadLocation");
    broken.push(("no-location.spdx.json", no_location, "parse"));
    let mut bad_cpe = spdx.clone();
    let pkg = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["externalRefs"].as_array().is_some_and(|r| r.len() == 2));
    bad_cpe["packages"][pkg.unwrap()]["externalRefs"][1]["referenceLocator"] = json!("cpe:2.3:a:only");
    broken.push(("bad-cpe.spdx.json", bad_cpe, "cpe"));
    let mut bad_rel = spdx.clone();
    bad_rel["relationships"][0]["relatedSpdxElement"] = json!("SPDXRef-nowhere");
    broken.push(("bad-relationship.spdx.json", bad_rel, "SPDXRef-nowhere"));
    // All in one run (the libraries are slow to load); every file must be
    // reported, with its reason.
    let paths: Vec<PathBuf> = broken.iter().map(|(name, doc, _)| write(dir.path(), name, doc)).collect();
    let out = validate(&paths);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "broken documents accepted:\n{stderr}");
    assert!(out.stdout.is_empty(), "some broken document passed: {}", String::from_utf8_lossy(&out.stdout));
    for ((name, _, says), path) in broken.iter().zip(&paths) {
        let line = stderr.lines().find(|l| l.starts_with(&format!("invalid {}: ", path.display())));
        let line = line.unwrap_or_else(|| panic!("{name} not reported:\n{stderr}"));
        assert!(line.contains(says), "{name}: expected `{says}` in\n{line}");
    }
}
