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

fn stdout_bytes(cmd: &mut Command) -> Vec<u8> {
    run(cmd).stdout
}

/// `nix-layer push` of a closure; returns (stdout = the manifest digest, stderr). The
/// blob-info record is one per registry (one machine pushing to it).
fn push(roots: &[&str], dest: &str, extra: &[&str]) -> (String, String) {
    let host = dest.split('/').next().unwrap().replace(':', "-");
    let machine = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("machine-{host}"));
    push_as(&machine, roots, dest, extra)
}

/// [`push`] from a machine whose user cache (the blob-info record) is `machine`: a fresh
/// directory is a fresh CI runner.
fn push_as(machine: &std::path::Path, roots: &[&str], dest: &str, extra: &[&str]) -> (String, String) {
    let f = fixtures();
    let o = run(nix_layer()
        .env("XDG_CACHE_HOME", machine)
        .arg("push")
        .arg(dest)
        .arg("--closure")
        .args(f.closure(roots))
        .args(["--plain-http", "--verbose"])
        .args(extra));
    (String::from_utf8(o.stdout).unwrap().trim().to_owned(), String::from_utf8(o.stderr).unwrap())
}

/// The digests of an image's layers, as its manifest in the registry lists them.
fn layer_digests(reference: &str) -> Vec<String> {
    let raw = remote_raw(reference);
    raw["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
}

/// The counts a verbose push reports: (uploaded, mounted).
fn pushed_counts(stderr: &str) -> (usize, usize) {
    let line = stderr.lines().find(|l| l.starts_with("pushed ")).unwrap_or_else(|| panic!("{stderr}"));
    let num = |after: &str| -> usize {
        let (head, _) = line.split_once(after).unwrap_or_else(|| panic!("{line}"));
        head.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    (num(" blobs uploaded"), num(" mounted"))
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
    assert!(stderr.contains("(3 layers not even built;"), "{stderr}");
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
    multi_platform_layout(&layout);
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
    let r = registry();
    let dir = scratch();
    let archive = dir.path().join("app.tar");
    app_archive(&archive);
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

/// A registry layer index entry is a hint: from a fresh machine (no layer cache, no
/// blob-info record), whatever an entry says, the push gives the manifest a push without
/// the index gives, or uses a blob proven to unpack to the layer built here.
#[test]
fn registry_layer_index_entries_are_verified_before_use() {
    use nix_layer_registry::CachedLayer;
    let f = fixtures();
    let r = registry();
    let host = r.host();
    let dest = format!("{host}/e2e/poison:1");
    let first = scratch();
    let (clean, _) = push_as(first.path(), &[&f.app], &dest, &[]);
    // Blobs this machine compressed need no proof.
    let (_, again) = push_as(first.path(), &[&f.app], &format!("{host}/e2e/poison:again"), &[]);
    assert!(again.contains("(3 layers not even built; 0 blobs proven"), "{again}");
    // Someone else's image in the same repository: its layers are consistent blobs.
    push_as(first.path(), &[&f.other], &format!("{host}/e2e/poison:other"), &[]);
    let client = r.client(None);
    let repo = r.reference("e2e/poison");
    let index = client.read_layer_cache(&repo).unwrap();
    let theirs = layer_digests(&format!("{host}/e2e/poison:other"));
    let ours = layer_digests(&dest);
    let entry = |pick: &dyn Fn(&str) -> bool| -> (String, CachedLayer) {
        let (k, l) = index.iter().find(|(_, l)| pick(&l.digest.to_string())).unwrap();
        (k.to_owned(), l.clone())
    };
    // Two layers only app has, one only other has.
    let only_ours: Vec<(String, CachedLayer)> = index
        .iter()
        .filter(|(_, l)| ours.contains(&l.digest.to_string()) && !theirs.contains(&l.digest.to_string()))
        .map(|(k, l)| (k.to_owned(), l.clone()))
        .collect();
    assert_eq!(only_ours.len(), 2, "hello and app: {index:?}");
    let (k1, e1) = only_ours[0].clone();
    let (k2, e2) = only_ours[1].clone();
    let (_, o) = entry(&|d| theirs.contains(&d.to_owned()) && !ours.contains(&d.to_owned()));
    let empty_json = nix_layer_blob::Digest::of(b"{}");
    /// A case: its name, the entries written over the index, the warning expected.
    type Poison<'a> = (&'a str, Vec<(String, CachedLayer)>, &'a str);
    let cases: Vec<Poison> = vec![
        ("someone else's layer", vec![(k1.clone(), o.clone())], "names diff_id"),
        (
            "another blob under the layer's diff_id",
            vec![(k1.clone(), CachedLayer { diff_id: e1.diff_id, ..o.clone() })],
            "unpacks to",
        ),
        (
            "the `{}` blob as a layer",
            vec![(k1.clone(), CachedLayer { digest: empty_json, size: 2, ..e1.clone() })],
            "cannot be unpacked",
        ),
        ("two entries swapped", vec![(k1.clone(), e2.clone()), (k2.clone(), e1.clone())], "names diff_id"),
        (
            "a wrong diff_id",
            vec![(k1.clone(), CachedLayer { diff_id: nix_layer_blob::Digest::of(b"x"), ..e1.clone() })],
            "names diff_id",
        ),
        ("a wrong size", vec![(k1.clone(), CachedLayer { size: e1.size + 1, ..e1.clone() })], "bytes, not"),
    ];
    for (case, poison, why) in cases {
        let mut bad = client.read_layer_cache(&repo).unwrap();
        bad.merge(&poison.into_iter().collect(), 4096);
        client.put_layer_cache(&repo, &bad).unwrap();
        let fresh = scratch();
        let (digest, stderr) = push_as(fresh.path(), &[&f.app], &dest, &[]);
        assert_eq!(digest, clean, "{case}: {stderr}");
        assert!(stderr.contains("is not used") && stderr.contains(why), "{case}: {stderr}");
        // The push put the right entry back.
        assert_eq!(client.read_layer_cache(&repo).unwrap().get(&k1), Some(&e1), "{case}");
    }

    // The layer's own tar, compressed by another encoder: the content is proven, so it is
    // used (the config and every diff_id are the clean push's), and the manifest names
    // that blob, so its digest differs: what the README says the check does not cover.
    let mut blob = Vec::new();
    client.fetch_blob(&repo, &e1.digest, &mut blob).unwrap();
    let dir = scratch();
    std::fs::write(dir.path().join("l.gz"), &blob).unwrap();
    let tar = stdout_bytes(Command::new("gzip").arg("-dc").arg(dir.path().join("l.gz")));
    std::fs::write(dir.path().join("l"), &tar).unwrap();
    let regz = stdout_bytes(Command::new("gzip").args(["-1", "-n", "-c"]).arg(dir.path().join("l")));
    let other = nix_layer_registry::BytesBlob::new(regz);
    assert_ne!(other.digest, e1.digest);
    client.push_blobs(&repo, &[&other], &[]).unwrap();
    let mut recompressed = client.read_layer_cache(&repo).unwrap();
    let entry = CachedLayer { digest: other.digest, size: other.bytes.len() as u64, ..e1.clone() };
    recompressed.merge(&[(k1.clone(), entry)].into(), 4096);
    client.put_layer_cache(&repo, &recompressed).unwrap();
    let fresh = scratch();
    let (digest, stderr) = push_as(fresh.path(), &[&f.app], &format!("{host}/e2e/poison:regz"), &[]);
    assert!(stderr.contains("3 blobs proven"), "from a fresh machine every entry used is proven: {stderr}");
    let (_, again) = push_as(fresh.path(), &[&f.app], &format!("{host}/e2e/poison:regz2"), &[]);
    assert!(again.contains("(3 layers not even built; 0 blobs proven"), "once per machine: {again}");
    let config = |d: &str| remote_raw(d)["config"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        config(&format!("{host}/e2e/poison:regz")),
        config(&dest),
        "the same config, so the same diff_ids"
    );
    assert_ne!(digest, clean);
    assert!(layer_digests(&format!("{host}/e2e/poison:regz")).contains(&other.digest.to_string()));
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{host}/e2e/poison:regz")])
        .arg(format!("oci:{}:a", layout.display())));
    verify_layout(&layout);
    // `--verify-index exact` refuses it (the same machine too: a content proof is not
    // enough) and gives the clean manifest; the other blobs were compressed as here.
    let (exact, stderr) = push_as(fresh.path(), &[&f.app], &dest, &["--verify-index", "exact"]);
    assert_eq!(exact, clean, "{stderr}");
    assert!(stderr.contains("compressed otherwise than here"), "{stderr}");
    assert!(stderr.contains("(2 layers not even built; 2 blobs proven"), "{stderr}");
}

/// A damaged, deleted or foreign layer index is skipped with a warning; the push gives the
/// clean image and writes a good index over it.
#[test]
fn a_damaged_or_foreign_layer_index_is_skipped() {
    use nix_layer_registry::{
        BlobSource, BytesBlob, ImageUpload, CACHE_ARTIFACT_TYPE, CACHE_TAG, OCI_MANIFEST,
    };
    let f = fixtures();
    let r = registry();
    let host = r.host();
    let dest = format!("{host}/e2e/damaged:1");
    let (clean, _) = push(&[&f.app], &dest, &[]);
    let client = r.client(None);
    let repo = r.reference("e2e/damaged");
    let at_tag = repo.with_tag(CACHE_TAG).unwrap();
    let artifact = |payload: &BytesBlob| {
        let config = BytesBlob::new(b"{}".to_vec());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": CACHE_ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.digest.to_string(), "size": 2},
            "layers": [{
                "mediaType": "application/vnd.nix-layer.layer-cache.v1+json",
                "digest": payload.digest.to_string(),
                "size": payload.bytes.len(),
            }],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let blobs: [&dyn BlobSource; 2] = [&config, payload];
        let upload =
            ImageUpload { blobs: &blobs, manifest: &bytes, media_type: OCI_MANIFEST, mount_from: &[] };
        client.push_image(&at_tag, &[], &upload).unwrap();
    };
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Damage)> = vec![
        ("a blob that is not JSON", Box::new(|| artifact(&BytesBlob::new(b"\x00 not json".to_vec())))),
        (
            "a blob deleted",
            Box::new(|| {
                let payload = BytesBlob::new(b"{\"generation\":1,\"entries\":{}}".to_vec());
                artifact(&payload);
                std::fs::remove_file(r.blob_data_path(&payload.digest)).unwrap();
            }),
        ),
        (
            "an image under the tag",
            Box::new(|| {
                let image = client.get_manifest(&repo.with_tag("1").unwrap()).unwrap();
                client.push_manifest(&repo, &[CACHE_TAG], &image.bytes, &image.media_type).unwrap();
            }),
        ),
    ];
    for (case, damage) in cases {
        damage();
        let fresh = scratch();
        let (digest, stderr) = push_as(fresh.path(), &[&f.app], &dest, &[]);
        assert_eq!(digest, clean, "{case}: {stderr}");
        assert!(
            stderr.contains("warning: the registry's layer index of") && stderr.contains("is skipped"),
            "{case}: {stderr}"
        );
        assert!(client.read_layer_cache(&repo).unwrap().len() >= 3, "{case}: a good index replaces it");
    }
}

/// Images of one family in sibling repositories: the second push mounts every blob the
/// first sent that it shares (as `skopeo copy` does), from the record of this machine;
/// pushes of a layout and of a docker-archive mount too.
#[test]
fn sibling_repositories_mount_what_they_share() {
    let f = fixtures();
    let r = registry();
    let host = r.host();
    let machine = scratch();
    push_as(machine.path(), &[&f.other], &format!("{host}/org/base:1"), &[]);
    let (_, stderr) = push_as(machine.path(), &[&f.app], &format!("{host}/org/web:1"), &[]);
    let base = layer_digests(&format!("{host}/org/base:1"));
    let web = layer_digests(&format!("{host}/org/web:1"));
    let shared = web.iter().filter(|d| base.contains(d)).count();
    assert!(shared >= 1, "busybox is shared: {base:?} {web:?}");
    let (uploaded, mounted) = pushed_counts(&stderr);
    assert_eq!(mounted, shared, "{stderr}");
    assert_eq!(uploaded, web.len() + 1 - shared, "the config and the other layers: {stderr}");
    // skopeo, from a layout of the same image, mounts the same blobs (its own blob-info
    // cache learns base's blobs when it copies base).
    let dir = scratch();
    for (roots, name) in [([f.other.as_str()], "base"), ([f.app.as_str()], "web")] {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&roots))
            .args(["--name", &format!("{host}/org/{name}:1"), "--format", "oci", "--quiet", "-o"])
            .arg(dir.path().join(name)));
    }
    let logged = r.requests().len();
    run(Command::new("skopeo")
        .env("HOME", dir.path())
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", dir.path().join("base").display()))
        .arg(format!("docker://{host}/sk/base:1")));
    run(Command::new("skopeo")
        .env("HOME", dir.path())
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", dir.path().join("web").display()))
        .arg(format!("docker://{host}/sk/web:1")));
    let skopeo_mounts = r.requests()[logged..]
        .iter()
        .filter(|q| {
            q.method == "POST"
                && q.path.starts_with("/v2/sk/web/blobs/uploads/?")
                && q.path.contains("mount=")
                && q.status == 201
        })
        .count();
    assert_eq!(
        skopeo_mounts,
        shared,
        "skopeo mounts what web shares with base: {:#?}",
        &r.requests()[logged..]
    );
    // A layout and a docker-archive mount from the repositories the record knows.
    let o = run(nix_layer()
        .env("XDG_CACHE_HOME", machine.path())
        .args(["push", "--plain-http", "--verbose", &format!("{host}/org/web-layout:1"), "--layout"])
        .arg(dir.path().join("web")));
    let (uploaded, mounted) = pushed_counts(&String::from_utf8_lossy(&o.stderr));
    assert_eq!((uploaded, mounted), (0, web.len() + 1), "every blob is in org/web: {o:?}");
    let archive = dir.path().join("web.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "web:1", "--quiet", "-o"])
        .arg(&archive));
    let o = run(nix_layer()
        .env("XDG_CACHE_HOME", machine.path())
        .args(["push", "--plain-http", "--verbose", &format!("{host}/org/web-archive:1"), "--archive"])
        .arg(&archive));
    let (uploaded, mounted) = pushed_counts(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        (uploaded, mounted),
        (0, web.len() + 1),
        "the same config, layers gzipped to the same blobs: {o:?}"
    );
}

/// With --cache-repo, the cache repository holds every blob its index names, and a fresh
/// machine pushing a new repository builds none of those layers and uploads none.
#[test]
fn a_cache_repository_holds_what_its_index_names() {
    let f = fixtures();
    let r = registry();
    let host = r.host();
    push_as(scratch().path(), &[&f.app], &format!("{host}/team-a/app:1"), &["--cache-repo", "shared/cache"]);
    let client = r.client(None);
    let cache = r.reference("shared/cache");
    let index = client.read_layer_cache(&cache).unwrap();
    assert_eq!(index.len(), 3, "{index:?}");
    for (_, l) in index.iter() {
        assert_eq!(client.head_blob(&cache, &l.digest).unwrap(), Some(l.size), "{l:?}");
    }
    let (_, stderr) = push_as(
        scratch().path(),
        &[&f.app],
        &format!("{host}/team-b/app:1"),
        &["--cache-repo", "shared/cache"],
    );
    assert!(stderr.contains("(3 layers not even built;"), "{stderr}");
    let (uploaded, mounted) = pushed_counts(&stderr);
    assert_eq!((uploaded, mounted), (2, 3), "config and top layer sent, store layers mounted: {stderr}");
}

/// A `docker save` of two images: pushing it needs --image, which picks the one named.
#[test]
fn push_of_a_two_image_archive_needs_a_name() {
    let f = fixtures();
    let r = registry();
    let dir = scratch();
    let mut archives = Vec::new();
    for (roots, name) in [([f.app.as_str()], "two-a:1"), ([f.other.as_str()], "two-b:1")] {
        let a = dir.path().join(format!("{}.tar", name.replace(':', "-")));
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&roots))
            .args(["--name", name, "--quiet", "-o"])
            .arg(&a));
        archives.push(a);
    }
    // manifest.json of a two-image `docker save`: both images in one archive.
    let both = dir.path().join("both.tar");
    let unpacked = dir.path().join("both");
    std::fs::create_dir(&unpacked).unwrap();
    let mut entries = Vec::new();
    for a in &archives {
        run(Command::new("tar").arg("-xf").arg(a).arg("-C").arg(&unpacked));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
        entries.push(m[0].clone());
    }
    std::fs::write(unpacked.join("manifest.json"), serde_json::to_vec(&entries).unwrap()).unwrap();
    run(Command::new("tar").arg("-cf").arg(&both).arg("-C").arg(&unpacked).arg("."));
    let dest = format!("{}/e2e/two:1", r.host());
    let o = nix_layer().args(["push", "--plain-http", &dest, "--archive"]).arg(&both).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds 2 images") && err.contains("--image"), "{err}");
    assert!(r.requests().iter().all(|q| q.method != "PUT"), "nothing pushed");
    run(nix_layer().args(["push", "--plain-http", &dest, "--image", "two-b:1", "--archive"]).arg(&both));
    let config = |archive: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&stdout(
            Command::new("skopeo")
                .args(["inspect", "--config", "--raw"])
                .arg(format!("docker-archive:{}", archive.display())),
        ))
        .unwrap()
    };
    let remote: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap();
    assert_eq!(remote, config(&archives[1]), "the image named, not the first");
}
