//! `nix-layer sbom` on a real closure: documents that validate with the
//! formats' own tools (crates/sbom/tests/validate.sh) and say what Nix says.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn validate(files: &[&Path]) {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbom-venv");
    run(Command::new("bash").arg(repo_root().join("crates/sbom/tests/validate.sh")).arg(venv).args(files));
}

fn nix_store_query(flag: &str, path: &str) -> String {
    stdout(Command::new("nix-store").args(["--query", flag, path]))
}

fn property<'a>(c: &'a Value, name: &str) -> &'a str {
    let props = c["properties"].as_array().unwrap();
    props.iter().find(|p| p["name"] == name).and_then(|p| p["value"].as_str()).unwrap()
}

#[test]
fn sbom_of_a_real_closure_validates_and_matches_nix() {
    let f = fixtures();
    let dir = scratch();
    let closure = f.closure(&[&f.app]);
    let sbom = |format: &str, graph: &[&str], out: &str| -> Vec<u8> {
        run(nix_layer()
            .arg("sbom")
            .args(graph)
            .args(["--name", "nix-layer-e2e/app:t1", "--created", "2024-05-01T12:00:00+02:00"])
            .args(["--format", format, "-o", out]))
        .stdout
    };
    let closure_args: Vec<&str> =
        ["--closure"].into_iter().chain(closure.iter().map(String::as_str)).collect();
    let cdx = dir.path().join("app.cdx.json");
    let spdx = dir.path().join("app.spdx.json");
    sbom("cyclonedx", &closure_args, cdx.to_str().unwrap());
    sbom("spdx", &closure_args, spdx.to_str().unwrap());
    validate(&[&cdx, &spdx]);

    let bytes = std::fs::read(&cdx).unwrap();
    let d: Value = serde_json::from_slice(&bytes).unwrap();
    // The image's time, in UTC.
    assert_eq!(d["metadata"]["timestamp"], "2024-05-01T10:00:00Z");
    assert_eq!(d["metadata"]["component"]["bom-ref"], "nix-layer-e2e/app:t1");
    let components = d["components"].as_array().unwrap();
    let paths: BTreeSet<&str> = components.iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
    assert_eq!(paths, closure.iter().map(String::as_str).collect(), "every store path, once");
    let deps = d["dependencies"].as_array().unwrap();
    for c in components {
        let path = c["bom-ref"].as_str().unwrap();
        assert_eq!(property(c, "nix:nar_hash"), nix_store_query("--hash", path).trim(), "{path}");
        assert_eq!(property(c, "nix:nar_size"), nix_store_query("--size", path).trim(), "{path}");
        let mut refs: Vec<&str> = Vec::new();
        let out = nix_store_query("--references", path);
        refs.extend(out.lines().filter(|r| *r != path));
        refs.sort();
        let entry = deps.iter().find(|x| x["ref"] == path).unwrap();
        let listed: Vec<&str> =
            entry["dependsOn"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(listed, refs, "{path}: the reference edges");
    }
    let hello = components.iter().find(|c| c["bom-ref"] == f.hello.as_str()).unwrap();
    assert_eq!((hello["name"].as_str(), hello["version"].as_str()), (Some("hello"), Some("2.12.1")));
    assert_eq!(hello["purl"], "pkg:nix/hello@2.12.1");
    let image = deps.iter().find(|x| x["ref"] == "nix-layer-e2e/app:t1").unwrap();
    assert_eq!(image["dependsOn"], serde_json::json!([f.app]));

    // The same bytes from `nix path-info --json` as from the Nix database,
    // and on stdout as in the file.
    let info = stdout(
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive"])
            .arg(&f.app),
    );
    let graph = dir.path().join("path-info.json");
    std::fs::write(&graph, info).unwrap();
    let from_path_info = dir.path().join("again.cdx.json");
    sbom("cyclonedx", &["--graph", graph.to_str().unwrap()], from_path_info.to_str().unwrap());
    assert_eq!(std::fs::read(&from_path_info).unwrap(), bytes);
    assert_eq!(sbom("cyclonedx", &closure_args, "-"), bytes);
}

#[test]
fn sbom_bad_arguments_fail_and_write_nothing() {
    let f = fixtures();
    let dir = scratch();
    let out = dir.path().join("x.cdx.json");
    for (extra, needle) in [
        (vec!["--root", f.other.as_str()], f.other.as_str()),
        (vec!["--created", "yesterday"], "--created"),
        (vec!["--image-digest", "sha256:12"], "sha256:12"),
        (vec!["--format", "xml"], "xml"),
    ] {
        let res = nix_layer()
            .arg("sbom")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(&extra)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{extra:?} should fail");
        assert!(stderr.contains(needle), "{extra:?}: expected `{needle}` in {stderr}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{extra:?} left a file");
    }
}

/// The referrer manifest next to a real image in an OCI layout: skopeo copies
/// it (verifying every blob) and reads back the same bytes.
#[test]
fn sbom_referrer_in_an_oci_layout_is_read_by_skopeo() {
    use nix_layer_sbom::{referrer, Format, SbomTime};
    use oci_spec::image::Descriptor;
    let f = fixtures();
    let dir = scratch();
    let layout = dir.path().join("layout");
    let closure = f.closure(&[&f.app]);
    let common = |cmd: &str| {
        let mut c = nix_layer();
        c.arg(cmd).arg("--closure").args(&closure).args(["--name", "nix-layer-e2e/sbom:t1"]);
        c
    };
    run(common("build").args(["--format", "oci", "--quiet", "-o"]).arg(&layout));
    let doc = run(common("sbom").args(["-o", "-"])).stdout;
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let subject: Descriptor = serde_json::from_value(index["manifests"][0].clone()).unwrap();
    let r = referrer(Format::CycloneDx, &doc, &subject, &SbomTime::parse("1970-01-01T00:00:01Z").unwrap())
        .unwrap();
    let blob = |d: &Descriptor| layout.join("blobs/sha256").join(d.digest().digest());
    for (d, bytes) in &r.blobs {
        std::fs::write(blob(d), bytes).unwrap();
    }
    std::fs::write(blob(&r.descriptor), &r.bytes).unwrap();
    let mut entry = serde_json::to_value(&r.descriptor).unwrap();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "sbom"});
    index["manifests"].as_array_mut().unwrap().push(entry);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let copy = dir.path().join("copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:sbom", layout.display()))
        .arg(format!("oci:{}:sbom", copy.display())));
    let raw =
        run(Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:sbom", copy.display())));
    assert_eq!(raw.stdout, r.bytes, "the manifest arrives byte for byte");
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["subject"]["digest"], subject.digest().to_string());
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
    assert_eq!(std::fs::read(copy.join("blobs/sha256").join(layer)).unwrap(), doc, "the SBOM is the layer");
    // The image itself is still there and intact next to its SBOM.
    run(Command::new("skopeo")
        .args(["inspect"])
        .arg(format!("oci:{}:nix-layer-e2e/sbom:t1", layout.display())));
}

/// `build --sbom`: the SBOM beside an archive, and as a referrer in an OCI layout.
#[test]
fn build_writes_the_sbom_beside_the_image() {
    let f = fixtures();
    let dir = scratch();
    let closure = f.closure(&[&f.app]);
    let archive = dir.path().join("app.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(&closure)
        .args(["--name", "sbom/app:1", "--sbom", "--quiet", "-o"])
        .arg(&archive));
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("app.tar.cdx.json")).unwrap()).unwrap();
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["components"].as_array().unwrap().len(), closure.len());
    let layout = dir.path().join("L");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(&closure)
        .args(["--name", "sbom/app:1", "--sbom", "--format", "oci", "--quiet", "-o"])
        .arg(&layout));
    assert_eq!(verify_layout(&layout), 2, "the image and its SBOM");
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:sbom/app:1-sbom", layout.display())))
    .stdout;
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.cyclonedx+json");
    let image = run(Command::new("skopeo")
        .args(["inspect", "--format", "{{.Digest}}"])
        .arg(format!("oci:{}:sbom/app:1", layout.display())))
    .stdout;
    assert_eq!(manifest["subject"]["digest"], String::from_utf8(image).unwrap().trim());
    // Made by the one referrer function (what push sends too): the same bytes from the
    // document, the subject and the image's time.
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_owned();
    let sbom_doc = std::fs::read(layout.join("blobs/sha256").join(layer)).unwrap();
    let subject: oci_spec::image::Descriptor = serde_json::from_value(manifest["subject"].clone()).unwrap();
    let created = nix_layer_sbom::SbomTime::parse("1970-01-01T00:00:01Z").unwrap();
    let again =
        nix_layer_sbom::referrer(nix_layer_sbom::Format::CycloneDx, &sbom_doc, &subject, &created).unwrap();
    assert_eq!(again.bytes, raw, "build --sbom writes nix_layer_sbom::referrer's bytes");
    // Streams have nowhere to put it.
    let o = nix_layer()
        .arg("build")
        .arg("--closure")
        .args(&closure)
        .args(["--name", "x:1", "--sbom", "-o", "-"])
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("-o PATH"));
}

/// The store paths a docker-archive's layers hold (`nix/store/<name>` entries, any depth),
/// read with the image crate's archive reader (it follows layer symlinks).
fn store_paths_in_layers(archive: &Path) -> BTreeSet<String> {
    let image = nix_layer_image::BaseImage::open(archive).unwrap();
    let mut held = BTreeSet::new();
    for i in 0..image.layers.len() {
        image
            .for_each_entry(i, &mut |name, _| {
                let Some(rest) =
                    name.trim_start_matches("./").trim_start_matches('/').strip_prefix("nix/store/")
                else {
                    return;
                };
                if let Some(top) = rest.split('/').next().filter(|t| !t.is_empty()) {
                    held.insert(format!("/nix/store/{top}"));
                }
            })
            .unwrap();
    }
    held
}

/// `build --sbom` lists exactly the store paths the image's layers hold, for every
/// combination of `--root`, `--contents`, `--no-store-paths` and `--from-image`.
#[test]
fn build_sbom_lists_exactly_the_store_paths_the_image_holds() {
    let f = fixtures();
    let dir = scratch();
    let base = dir.path().join("base.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.hello]))
        .args(["--name", "sbom/base:1", "--quiet", "-o"])
        .arg(&base));
    assert!(!store_paths_in_layers(&base).is_empty(), "the base holds store paths");
    let closure = f.closure(&[&f.app, &f.other]);
    let mut checked = 0;
    for root in [false, true] {
        for contents in [false, true] {
            for no_store_paths in [false, true] {
                for from_image in [false, true] {
                    let case = format!(
                        "root={root} contents={contents} no-store-paths={no_store_paths} from-image={from_image}"
                    );
                    let out = dir.path().join(format!("{checked}.tar"));
                    let mut c = nix_layer();
                    c.arg("build").arg("--closure").args(&closure);
                    c.args(["--name", "sbom/case:1", "--sbom", "--quiet"]);
                    if root {
                        c.args(["--root", &f.app]);
                    }
                    if contents {
                        c.args(["--contents", &f.other]);
                    }
                    if no_store_paths {
                        c.arg("--no-store-paths");
                    }
                    if from_image {
                        c.arg("--from-image").arg(&base);
                    }
                    run(c.arg("-o").arg(&out));
                    let sidecar = dir.path().join(format!("{checked}.tar.cdx.json"));
                    let doc: Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
                    let listed: BTreeSet<String> = doc["components"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["bom-ref"].as_str().unwrap().to_owned())
                        .collect();
                    let held = store_paths_in_layers(&out);
                    assert_eq!(listed, held, "{case}");
                    if !no_store_paths || from_image {
                        assert!(!held.is_empty(), "{case}: the case holds store paths");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 16);
}
