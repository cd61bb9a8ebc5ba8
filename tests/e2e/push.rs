//! `nix-layer push` against a real registry on 127.0.0.1 (Debian's docker-registry).

use std::process::Command;

use nix_layer_registry_testkit::{TestRegistry, TestRegistryConfig};

use crate::support::*;

/// The raw manifest or index at `reference` in a registry, as skopeo reads it.
fn remote_raw(reference: &str) -> serde_json::Value {
    serde_json::from_str(&stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])))
    .unwrap()
}

/// The architectures an index lists, in order.
fn index_archs(raw: &serde_json::Value) -> Vec<String> {
    raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_owned())
        .collect()
}

fn registry() -> TestRegistry {
    TestRegistry::start_or_skip().expect("docker-registry is not installed; scripts/setup.sh installs it")
}

/// `nix-layer push` of a closure; returns (stdout = the manifest digest, stderr).
fn push(roots: &[&str], dest: &str, extra: &[&str]) -> (String, String) {
    let f = fixtures();
    let o = run(nix_layer()
        .arg("push")
        .arg(dest)
        .arg("--closure")
        .args(f.closure(roots))
        .args(["--plain-http", "--verbose"])
        .args(extra));
    (String::from_utf8(o.stdout).unwrap().trim().to_owned(), String::from_utf8(o.stderr).unwrap())
}

/// Blob uploads the registry logged for the config and layers of image `reference`
/// (the layer index nix-layer keeps in the registry has blobs of its own).
fn blob_uploads(r: &TestRegistry, reference: &str) -> usize {
    let raw = remote_raw(&format!("{}/{reference}", r.host()));
    let repo = reference.split(':').next().unwrap();
    let mut digests = vec![raw["config"]["digest"].as_str().unwrap().to_owned()];
    digests
        .extend(raw["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
    r.requests()
        .iter()
        .filter(|q| q.method == "PUT" && q.path.starts_with(&format!("/v2/{repo}/blobs/uploads/")))
        .filter(|q| {
            digests.iter().any(|d| q.path.contains(d.as_str()) || q.path.contains(&d.replace(':', "%3A")))
        })
        .count()
}

#[test]
fn push_sends_only_what_the_registry_lacks_and_pulls_back_equal() {
    let f = fixtures();
    let r = registry();
    let dest = format!("{}/e2e/app:1", r.host());
    let (digest, stderr) = push(&[&f.app], &dest, &["--tag", "latest"]);
    assert!(digest.starts_with("sha256:"), "{digest} {stderr}");
    // config + busybox + hello + app + top layer
    assert_eq!(blob_uploads(&r, "e2e/app:1"), 5, "{stderr}");
    for tag in ["1", "latest"] {
        let v: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/e2e/app:{tag}", r.host()),
        ])))
        .unwrap();
        assert_eq!(v["Digest"], digest.as_str());
    }
    // Pulled back, it is the same image, and it runs.
    let dir = scratch();
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{dest}")])
        .arg(format!("oci:{}:app", layout.display())));
    verify_layout(&layout);
    let loaded = engine().copy_in(&format!("oci:{}:app", layout.display()), "nix-layer-e2e/pushed:1");
    assert_eq!(loaded.run(&[&format!("{}/bin/app", f.app)]).trim(), "hello from nix-layer");

    // A second image sharing busybox: only its own layers go up.
    let (_, stderr) = push(&[&f.other], &format!("{}/e2e/other:1", r.host()), &["--cache-repo", "e2e/app"]);
    // other's own layer, its config; busybox and the (empty) top layer come from e2e/app.
    let uploads = blob_uploads(&r, "e2e/other:1");
    assert_eq!(uploads, 2, "busybox and the top layer are mounted, not sent\n{stderr}");
    assert!(stderr.contains(" 2 mounted"), "{stderr}");
}

/// From an empty local cache, a push whose layers went out before builds none of them:
/// the registry's layer index says where they are.
#[test]
fn the_registry_is_the_shared_layer_cache() {
    let f = fixtures();
    let r = registry();
    push(&[&f.app], &format!("{}/e2e/cached:1", r.host()), &[]);
    let before = blob_uploads(&r, "e2e/cached:1");
    let logged = r.requests().len();
    let (_, stderr) = push(&[&f.app], &format!("{}/e2e/cached:2", r.host()), &[]);
    let requests = r.requests()[logged..].to_vec();
    assert!(stderr.contains("(3 layers not even built)"), "{stderr}");
    assert!(stderr.contains(": 0 blobs uploaded (0 bytes)"), "{stderr}");
    assert_eq!(blob_uploads(&r, "e2e/cached:2"), before, "nothing is uploaded again: {stderr}");
    // The index lookup's HEAD of a layer is the push's: no blob is asked about twice.
    let raw = remote_raw(&format!("{}/e2e/cached:2", r.host()));
    for layer in raw["layers"].as_array().unwrap() {
        let path = format!("/v2/e2e/cached/blobs/{}", layer["digest"].as_str().unwrap());
        let heads = requests.iter().filter(|q| q.method == "HEAD" && q.path == path).count();
        assert_eq!(heads, 1, "{path}: {requests:#?}");
    }
}

#[test]
fn wrong_credentials_fail_clearly_and_right_ones_push() {
    let f = fixtures();
    let config = TestRegistryConfig { htpasswd: Some(("ci".into(), "s3cret".into())), ..Default::default() };
    let r = TestRegistry::start_configured_or_skip(&config).expect("docker-registry is installed");
    let dest = format!("{}/e2e/auth:1", r.host());
    let o = nix_layer()
        .arg("push")
        .arg(&dest)
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--plain-http", "--creds", "ci:wrong"])
        .env("HOME", scratch().path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized") || err.contains("credentials"),
        "{err}"
    );
    let (digest, _) = push(&[&f.app], &dest, &["--creds", "ci:s3cret"]);
    assert!(digest.starts_with("sha256:"));
}

/// A multi-platform layout pushes as one index with both platforms; with --sbom the SBOM
/// goes along as a referrer.
#[test]
fn push_of_a_multi_platform_layout_and_an_sbom() {
    let f = fixtures();
    let r = registry();
    let dir = scratch();
    let layout = dir.path().join("L");
    for arch in ["amd64", "arm64"] {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", &format!("multi:{arch}"), "--arch", arch, "--format", "oci", "--quiet", "-o"])
            .arg(&layout));
    }
    run(nix_layer().args(["index", "--layout"]).arg(&layout).args([
        "--name",
        "multi:1",
        "multi:amd64",
        "multi:arm64",
    ]));
    let dest = format!("{}/e2e/multi:1", r.host());
    run(nix_layer().arg("push").arg(&dest).arg("--layout").arg(&layout).args([
        "--image",
        "multi:1",
        "--plain-http",
    ]));
    assert_eq!(index_archs(&remote_raw(&dest)), ["amd64", "arm64"]);

    let (digest, _) = push(&[&f.app], &format!("{}/e2e/withsbom:1", r.host()), &["--sbom"]);
    let client = r.client(None);
    let referrers = client
        .list_referrers(
            &r.reference("e2e/withsbom"),
            &digest.parse().unwrap(),
            Some("application/vnd.cyclonedx+json"),
        )
        .unwrap();
    assert_eq!(referrers.len(), 1, "one SBOM refers to the image");
}

/// A base image from a registry, pinned by digest: fetched with every blob verified, kept
/// for the next build, and refused when the registry serves other bytes.
#[test]
fn base_images_come_from_a_registry_by_digest() {
    let f = fixtures();
    let r = registry();
    let (digest, _) = push(&[&f.app], &format!("{}/e2e/base:1", r.host()), &[]);
    let base = format!("{}/e2e/base@{digest}", r.host());
    let dir = scratch();
    let build = |cache: &str, out: &str| {
        let mut c = nix_layer();
        c.arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.other]))
            .args([
                "--name",
                "derived:1",
                "--format",
                "oci",
                "--plain-http",
                "--quiet",
                "--from-image",
                &base,
                "--cache",
            ])
            .arg(dir.path().join(cache))
            .arg("-o")
            .arg(dir.path().join(out));
        c
    };
    run(&mut build("cache", "derived"));
    assert_eq!(verify_layout(&dir.path().join("derived")), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:derived:1", dir.path().join("derived").display())),
    ))
    .unwrap();
    // app's four layers, then other's store layers and its top layer.
    assert!(v["Layers"].as_array().unwrap().len() > 4, "{v}");
    // Not pinned: refused.
    let o = nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.other]))
        .args(["--name", "x:1", "--plain-http", "--from-image", &format!("{}/e2e/base:1", r.host()), "-o"])
        .arg(dir.path().join("unpinned.tar"))
        .output()
        .unwrap();
    assert!(!o.status.success() && !dir.path().join("unpinned.tar").exists());
    // The registry's bytes tampered with: a fresh fetch fails on the digest.
    let raw = remote_raw(&base);
    let layer: nix_layer_blob::Digest = raw["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let data = r.blob_data_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let o = build("fresh-cache", "refused").output().unwrap();
    assert!(!o.status.success(), "a tampered base must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&layer.hex()) || err.contains("digest"), "{err}");
    assert!(!dir.path().join("refused").exists());
    // What was fetched before is kept and still builds.
    run(&mut build("cache", "again"));
}

/// Per-platform images pushed one by one (as CI's runners do), then one tag for both.
#[test]
fn push_index_tags_platform_images_already_in_the_registry() {
    let f = fixtures();
    let r = registry();
    for arch in ["amd64", "arm64"] {
        push(&[&f.app], &format!("{}/e2e/plat:1-{arch}", r.host()), &["--arch", arch]);
    }
    let out = stdout(
        nix_layer()
            .args(["push-index", &format!("{}/e2e/plat:1", r.host()), "--tag", "latest", "--plain-http"])
            .args([
                "--from",
                &format!("{}/e2e/plat:1-amd64", r.host()),
                "--from",
                &format!("{}/e2e/plat:1-arm64", r.host()),
            ]),
    );
    assert!(out.starts_with("sha256:"), "{out}");
    for tag in ["1", "latest"] {
        assert_eq!(index_archs(&remote_raw(&format!("{}/e2e/plat:{tag}", r.host()))), ["amd64", "arm64"]);
    }
    let arm: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/e2e/plat:1", r.host()),
    ])))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");
}

/// A docker-archive nix-layer wrote pushes with its config unchanged (same image ID) and
/// runs when pulled back.
#[test]
fn push_of_a_docker_archive_keeps_its_config() {
    let f = fixtures();
    let r = registry();
    let dir = scratch();
    let archive = dir.path().join("app.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "arch:1", "--quiet", "-o"])
        .arg(&archive));
    let dest = format!("{}/e2e/archive:1", r.host());
    run(nix_layer().arg("push").arg(&dest).arg("--archive").arg(&archive).arg("--plain-http"));
    let local: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--config", "--raw"])
            .arg(format!("docker-archive:{}", archive.display())),
    ))
    .unwrap();
    let remote: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap();
    assert_eq!(local, remote, "the same config");
    let raw = remote_raw(&dest);
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{dest}")])
        .arg(format!("oci:{}:a", layout.display())));
    verify_layout(&layout);
}
