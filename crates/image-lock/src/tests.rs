//! Against a real docker-registry on 127.0.0.1 (the registry crate's test harness).

use super::*;
use nix_layer_registry::{BlobSource, BytesBlob, ImageUpload, OCI_INDEX};
use nix_layer_registry_testkit::TestRegistry;

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// An image: its manifest bytes, config and layers.
type Image = (Vec<u8>, BytesBlob, Vec<BytesBlob>);

/// An image for `arch` with two layers.
fn image(arch: &str, variant: Option<&str>) -> Image {
    let mut config = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    let config = BytesBlob::new(serde_json::to_vec(&config).unwrap());
    let layers = vec![
        BytesBlob::new(format!("{arch} one").into_bytes()),
        BytesBlob::new(format!("{arch} two").into_bytes()),
    ];
    let desc = |m: &str, b: &BytesBlob| serde_json::json!({"mediaType": m, "digest": b.digest.to_string(), "size": b.bytes.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(CONFIG_TYPE, &config),
        "layers": layers.iter().map(|l| desc(LAYER_TYPE, l)).collect::<Vec<_>>(),
    });
    (serde_json::to_vec(&manifest).unwrap(), config, layers)
}

fn push(reg: &TestRegistry, target: &str, (manifest, config, layers): &Image) -> Digest {
    let blobs: Vec<&dyn BlobSource> = std::iter::once(config as &dyn BlobSource)
        .chain(layers.iter().map(|l| l as &dyn BlobSource))
        .collect();
    let upload = ImageUpload { blobs: &blobs, manifest, media_type: OCI_MANIFEST, mount_from: &[] };
    reg.client(None).push_image(&reg.reference(target), &[], &upload).unwrap().manifest_digest
}

/// Pushes amd64, arm64/v8 and an attestation-like entry without a usable platform under
/// `repo:multi`; returns the index digest and the two images.
fn push_index(reg: &TestRegistry, repo: &str) -> (Digest, [Image; 2]) {
    let images = [image("amd64", None), image("arm64", Some("v8"))];
    let mut entries = Vec::new();
    for (img, variant) in images.iter().zip([None, Some("v8")]) {
        let d = push(reg, &format!("{repo}@sha256:{}", Digest::of(&img.0).hex()), img);
        let arch = if variant.is_some() { "arm64" } else { "amd64" };
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        entries.push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": img.0.len(), "platform": platform}));
    }
    let attestation = image("unknown", None);
    let ad = push(reg, &format!("{repo}@sha256:{}", Digest::of(&attestation.0).hex()), &attestation);
    entries.push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": ad.to_string(), "size": attestation.0.len(), "platform": {"architecture": "unknown", "os": "unknown"}}));
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    let upload = ImageUpload { blobs: &[], manifest: &index, media_type: OCI_INDEX, mount_from: &[] };
    let d = reg
        .client(None)
        .push_image(&reg.reference(&format!("{repo}:multi")), &[], &upload)
        .unwrap()
        .manifest_digest;
    (d, images)
}

fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

fn locked_as(m: &LockedManifest, img: &Image) {
    assert_eq!(
        m.manifest,
        Blob { media_type: OCI_MANIFEST.into(), digest: Digest::of(&img.0), size: img.0.len() as u64 }
    );
    assert_eq!(
        m.config,
        Blob { media_type: CONFIG_TYPE.into(), digest: img.1.digest, size: img.1.bytes.len() as u64 }
    );
    let layers: Vec<(Digest, u64)> = m.layers.iter().map(|b| (b.digest, b.size)).collect();
    let want: Vec<(Digest, u64)> = img.2.iter().map(|b| (b.digest, b.bytes.len() as u64)).collect();
    assert_eq!(layers, want);
    assert!(m.layers.iter().all(|b| b.media_type == LAYER_TYPE));
}

#[test]
fn a_single_image_is_locked_for_the_platform_its_config_names() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let img = image("arm64", None);
    let d = push(&reg, "lock/single:1", &img);
    let client = reg.client(None);
    let r = format!("{}/lock/single@{d}", reg.host());
    let lock = lock_image(&client, &r, &[]).unwrap();
    assert_eq!(lock.lock_version, LOCK_VERSION);
    assert_eq!(lock.image_name, format!("{}/lock/single", reg.host()));
    assert_eq!(lock.image_digest, d);
    assert_eq!(lock.index, None);
    assert_eq!(lock.manifests.len(), 1);
    assert_eq!(lock.manifests[0].platform, platform("linux/arm64"));
    locked_as(&lock.manifests[0], &img);
    // Asking for its own platform is the same lock; another platform is refused by name.
    assert_eq!(lock_image(&client, &r, &[platform("linux/arm64")]).unwrap(), lock);
    let e = lock_image(&client, &r, &[platform("linux/amd64")]).unwrap_err().to_string();
    assert!(e.contains("has no image for linux/amd64; it has: linux/arm64 (a single image"), "{e}");
    // A tag is resolved to the digest it names now.
    let by_tag = lock_image(&client, &format!("{}/lock/single:1", reg.host()), &[]).unwrap();
    assert_eq!(by_tag, lock);
}

#[test]
fn an_index_is_locked_for_the_platforms_asked_in_their_order() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let (idx, [amd64, arm64]) = push_index(&reg, "lock/multi");
    let client = reg.client(None);
    let r = format!("{}/lock/multi@{idx}", reg.host());
    let lock = lock_image(
        &client,
        &r,
        &[platform("linux/arm64"), platform("linux/amd64"), platform("linux/arm64/v8")],
    )
    .unwrap();
    assert_eq!(lock.image_digest, idx);
    let index = lock.index.as_ref().expect("the index is recorded");
    assert_eq!((index.digest, index.media_type.as_str()), (idx, OCI_INDEX));
    // arm64 and arm64/v8 are the same manifest: locked once, with the index's platform.
    assert_eq!(lock.manifests.len(), 2);
    assert_eq!(lock.manifests[0].platform, platform("linux/arm64/v8"));
    locked_as(&lock.manifests[0], &arm64);
    assert_eq!(lock.manifests[1].platform, platform("linux/amd64"));
    locked_as(&lock.manifests[1], &amd64);
    assert_eq!(lock.manifest_for(&platform("linux/arm64")).unwrap().manifest.digest, Digest::of(&arm64.0));
    let e = lock.manifest_for(&platform("linux/s390x")).unwrap_err().to_string();
    assert!(e.contains("no image for linux/s390x; it has: linux/arm64/v8, linux/amd64"), "{e}");

    let e = lock_image(&client, &r, &[]).unwrap_err().to_string();
    assert!(e.contains("name the platforms to lock with --platform (it has: linux/amd64, linux/arm64/v8, unknown/unknown)"), "{e}");
    let e =
        lock_image(&client, &r, &[platform("linux/amd64"), platform("linux/s390x")]).unwrap_err().to_string();
    assert!(e.contains("has no image for linux/s390x; it has: linux/amd64, linux/arm64/v8"), "{e}");
}

#[test]
fn the_file_is_deterministic_round_trips_and_appears_whole() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let (idx, _) = push_index(&reg, "lock/file");
    let client = reg.client(None);
    let r = format!("{}/lock/file@{idx}", reg.host());
    let wanted = [platform("linux/amd64"), platform("linux/arm64")];
    let a = lock_image(&client, &r, &wanted).unwrap().to_json();
    let b = lock_image(&client, &r, &wanted).unwrap().to_json();
    assert_eq!(a, b);
    assert!(a.ends_with("}\n") && a.starts_with("{\n  \"lockVersion\": 1,\n  \"imageName\": "), "{a}");
    let parsed = ImageLock::from_json(&a, "lock").unwrap();
    assert_eq!(parsed.to_json(), a);

    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("base.lock.json");
    std::fs::write(&path, "old").unwrap();
    parsed.write_to(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), a);
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["base.lock.json"]);
    let e = parsed.write_to(&d.path().join("missing/x.json")).unwrap_err().to_string();
    assert!(e.contains("cannot create a file in") && e.contains("missing"), "{e}");
}

#[test]
fn a_lock_of_another_version_or_with_unknown_fields_is_refused() {
    let e = ImageLock::from_json(r#"{"lockVersion": 2}"#, "x.lock.json").unwrap_err().to_string();
    assert!(e.contains("x.lock.json: lockVersion 2 is not 1"), "{e}");
    let e = ImageLock::from_json(r#"{"manifests": []}"#, "x").unwrap_err().to_string();
    assert!(e.contains("lockVersion (none) is not 1"), "{e}");
    let text = r#"{"lockVersion": 1, "imageName": "r/x", "imageDigest": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "manifests": [], "extra": 1}"#;
    let e = ImageLock::from_json(text, "x").unwrap_err().to_string();
    assert!(e.contains("unknown field `extra`"), "{e}");
}

#[test]
fn a_pinned_digest_the_registry_does_not_have_is_an_error() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let missing = Digest::of(b"no such manifest");
    let e = lock_image(&reg.client(None), &format!("{}/lock/none@{missing}", reg.host()), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found") || e.contains("404"), "{e}");
}
