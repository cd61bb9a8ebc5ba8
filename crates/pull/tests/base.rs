//! Base images fetched from a real registry (Debian's docker-registry on 127.0.0.1): kept
//! under the pin and the whole platform, checked against the pin on every use, refused for
//! another platform, fetched again when damaged, readable as the umask allows.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_layer_blob::Digest;
use nix_layer_image::OciLayout;
use nix_layer_pull::{fetch_base, is_registry_reference, Error, BASE_NAME};
use nix_layer_registry::{BlobSource, BytesBlob, Client, PlatformExt, OCI_INDEX, OCI_MANIFEST};
use nix_layer_registry_testkit::TestRegistry;
use nix_layer_tar::{EntryKind, Header, TarWriter};
use oci_spec::image::Platform;
use serde_json::{json, Value};

fn registry() -> Option<TestRegistry> {
    let r = TestRegistry::start_or_skip();
    assert!(r.is_some() || std::env::var_os("CI").is_none(), "docker-registry is required in CI");
    r
}

fn layer(file: &str, data: &[u8]) -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    let h = Header {
        name: file.as_bytes().to_vec(),
        kind: EntryKind::Regular { size: data.len() as u64 },
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime: 1,
    };
    t.append_bytes(&h, data).unwrap();
    t.finish().unwrap()
}

fn desc(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len() })
}

/// Pushes a one-layer image for `platform` whose Env names it and `repo`; returns (manifest bytes,
/// its descriptor with the platform).
fn push_image(client: &Client, r: &TestRegistry, repo: &str, platform: &Platform) -> (Vec<u8>, Value) {
    let tar = layer("etc/platform", platform.name().as_bytes());
    let mut config = json!({
        "architecture": platform.architecture().to_string(),
        "os": platform.os().to_string(),
        "config": { "Env": [format!("PLATFORM={}", platform.name()), format!("REPO={repo}")] },
        "rootfs": { "type": "layers", "diff_ids": [Digest::of(&tar).to_string()] },
    });
    if let Some(v) = platform.variant() {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &tar)],
    }))
    .unwrap();
    let reference = r.reference(repo);
    let blobs = [BytesBlob::new(config), BytesBlob::new(tar)];
    let refs: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
    client.push_blobs(&reference, &refs, &[]).unwrap();
    client.push_manifest(&reference, &[], &manifest, OCI_MANIFEST).unwrap();
    let mut d = desc(OCI_MANIFEST, &manifest);
    d["platform"] = serde_json::to_value(platform).unwrap();
    (manifest, d)
}

/// An index of one image per platform, pushed; returns the pinned reference.
fn push_index(client: &Client, r: &TestRegistry, repo: &str, platforms: &[&str]) -> String {
    let entries: Vec<Value> =
        platforms.iter().map(|p| push_image(client, r, repo, &Platform::parse(p).unwrap()).1).collect();
    let index =
        serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries }))
            .unwrap();
    let digest = client.push_manifest(&r.reference(repo), &["multi"], &index, OCI_INDEX).unwrap();
    format!("{}/{repo}@{digest}", r.host())
}

fn env_of(layout: &Path) -> Vec<String> {
    nix_layer_image::BaseImage::open(layout).unwrap().env()
}

fn base_manifest(layout: &Path) -> String {
    let l = OciLayout::open_existing(layout).unwrap();
    let images = l.images().unwrap();
    let (_, d) = images.iter().find(|(n, _)| n.as_deref() == Some(BASE_NAME)).unwrap();
    d.digest().to_string()
}

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

/// After a v7 build, a v6 build gets the v6 image, not the kept v7 one.
#[test]
fn the_variant_is_part_of_what_is_kept() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let pinned = push_index(&client, &r, "bases/arm", &["linux/arm/v7", "linux/arm/v6", "linux/amd64"]);
    let cache = tempfile::tempdir().unwrap();
    let v7 = fetch_base(&client, &pinned, &p("linux/arm/v7"), Some(cache.path())).unwrap();
    assert_eq!(env_of(&v7)[0], "PLATFORM=linux/arm/v7");
    let v6 = fetch_base(&client, &pinned, &p("linux/arm/v6"), Some(cache.path())).unwrap();
    assert_ne!(v6, v7);
    assert_eq!(env_of(&v6)[0], "PLATFORM=linux/arm/v6");
    // Kept: the same answers again.
    assert_eq!(fetch_base(&client, &pinned, &p("linux/arm/v7"), Some(cache.path())).unwrap(), v7);
    assert_eq!(env_of(&v7)[0], "PLATFORM=linux/arm/v7");
}

/// Another self-consistent image put where the pinned one is kept is never used.
#[test]
fn a_kept_layout_is_checked_against_its_pin() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let (m, _) = push_image(&client, &r, "bases/one", &p("linux/amd64"));
    let pinned = format!("{}/bases/one@{}", r.host(), Digest::of(&m));
    let (other, _) = push_image(&client, &r, "bases/other", &p("linux/amd64"));
    let other_pinned = format!("{}/bases/other@{}", r.host(), Digest::of(&other));
    let cache = tempfile::tempdir().unwrap();
    let kept = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let impostor = fetch_base(&client, &other_pinned, &p("linux/amd64"), Some(elsewhere.path())).unwrap();
    // Another image (its Env names its repository), self-consistent, swapped in.
    assert_ne!(base_manifest(&kept), base_manifest(&impostor));
    fs::remove_dir_all(&kept).unwrap();
    copy_dir(&impostor, &kept);
    assert_eq!(base_manifest(&kept), Digest::of(&other).to_string(), "the swap happened");

    let again = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap();
    assert_eq!(again, kept);
    assert_eq!(base_manifest(&again), Digest::of(&m).to_string(), "fetched again, not the impostor");
    nix_layer_pull::verify_kept(&again, &Digest::of(&m), &p("linux/amd64"), &pinned).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(&entry, &dest).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut children: Vec<PathBuf> =
                fs::read_dir(&out[i]).unwrap().map(|e| e.unwrap().path()).collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// A single-manifest amd64 pin wanted for arm64: an error, nothing kept.
#[test]
fn another_platform_is_refused() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let (m, _) = push_image(&client, &r, "bases/amd", &p("linux/amd64"));
    let pinned = format!("{}/bases/amd@{}", r.host(), Digest::of(&m));
    let cache = tempfile::tempdir().unwrap();
    let e = fetch_base(&client, &pinned, &p("linux/arm64"), Some(cache.path())).unwrap_err();
    assert!(matches!(e, Error::PlatformMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("linux/amd64") && msg.contains("linux/arm64") && msg.contains("--arch amd64"),
        "{msg}"
    );
    let kept: Vec<_> = fs::read_dir(cache.path().join("bases")).unwrap().collect();
    assert!(kept.is_empty(), "nothing kept: {kept:?}");
    // An index without the platform: the registry's error names what it has.
    let multi = push_index(&client, &r, "bases/multi", &["linux/amd64"]);
    let e = fetch_base(&client, &multi, &p("linux/arm64"), Some(cache.path())).unwrap_err().to_string();
    assert!(e.contains("linux/amd64"), "{e}");
}

/// A kept blob damaged on disk is fetched again once; if the registry's copy is bad too,
/// the build fails.
#[test]
fn a_corrupt_kept_blob_is_fetched_again_once() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let (m, _) = push_image(&client, &r, "bases/corrupt", &p("linux/amd64"));
    let pinned = format!("{}/bases/corrupt@{}", r.host(), Digest::of(&m));
    let cache = tempfile::tempdir().unwrap();
    let kept = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap();
    let manifest: Value = serde_json::from_slice(&m).unwrap();
    let layer: Digest = manifest["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let blob = kept.join("blobs/sha256").join(layer.hex());
    let good = fs::read(&blob).unwrap();
    let flip = |path: &Path| {
        let mut bytes = fs::read(path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(path, bytes).unwrap();
    };
    flip(&blob);
    let again = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap();
    assert_eq!(fs::read(again.join("blobs/sha256").join(layer.hex())).unwrap(), good, "repaired");

    // Damaged in the registry as well: an error naming the digest, not a build.
    flip(&r.blob_data_path(&layer));
    flip(&blob);
    let e = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap_err().to_string();
    assert!(e.contains(&layer.hex()) || e.contains("digest"), "{e}");
}

/// Kept files are readable by the other users the umask lets read them.
#[test]
fn kept_files_follow_the_umask() {
    let Some(r) = registry() else { return };
    let mask = nix_layer_scratch::umask();
    assert_eq!(mask & 0o044, 0, "run the tests with a umask that lets others read (022)");
    let client = r.client(None);
    let pinned = push_index(&client, &r, "bases/shared", &["linux/amd64"]);
    let cache = tempfile::tempdir().unwrap();
    let kept = fetch_base(&client, &pinned, &p("linux/amd64"), Some(cache.path())).unwrap();
    for path in walk(&kept) {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "{} is {mode:o}", path.display());
    }
}

#[test]
fn an_unpinned_registry_image_is_told_to_pin() {
    assert!(is_registry_reference("127.0.0.1:5000/base:1"));
    assert!(is_registry_reference("registry.example/org/base"));
    assert!(is_registry_reference(
        "localhost/base@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    ));
    assert!(!is_registry_reference("images/base.tar"));
    assert!(!is_registry_reference("./dir.d/base.tar"));
    let client = nix_layer_registry_testkit::test_client(None);
    let cache = tempfile::tempdir().unwrap();
    let e = fetch_base(&client, "127.0.0.1:5000/base:1", &p("linux/amd64"), Some(cache.path())).unwrap_err();
    assert!(matches!(e, Error::NotPinned(_)), "{e}");
    assert!(e.to_string().contains("127.0.0.1:5000/base:1@sha256:"), "{e}");
}

/// A blob longer than its descriptor says: the download stops at the declared size (an
/// endless body cannot fill the disk) and the build fails, nothing kept.
#[test]
fn a_blob_longer_than_its_descriptor_is_cut_off() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let tar = layer("etc/big", &vec![7u8; 1 << 20]);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [Digest::of(&tar).to_string()] },
    }))
    .unwrap();
    let mut layer_desc = desc("application/vnd.oci.image.layer.v1.tar", &tar);
    layer_desc["size"] = json!(1000);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [layer_desc],
    }))
    .unwrap();
    let reference = r.reference("bases/long");
    let blobs = [BytesBlob::new(config), BytesBlob::new(tar)];
    let refs: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
    client.push_blobs(&reference, &refs, &[]).unwrap();
    let digest = client.push_manifest(&reference, &[], &manifest, OCI_MANIFEST).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = fetch_base(
        &client,
        &format!("{}/bases/long@{digest}", r.host()),
        &p("linux/amd64"),
        Some(cache.path()),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooLong { size: 1000, .. }), "{e}");
    let kept: Vec<_> = fs::read_dir(cache.path().join("bases")).unwrap().collect();
    assert!(kept.is_empty(), "nothing kept: {kept:?}");
}
