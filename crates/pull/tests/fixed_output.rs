//! The pullImage builders against a real registry (Debian's docker-registry on 127.0.0.1):
//! a manifest or blob fetched by digest exists only once verified, and a blob whose body
//! runs past the size its descriptor gives is cut off, nothing written.

use nix_layer_blob::Digest;
use nix_layer_pull::fixed_output::{fetch_blob, Media};
use nix_layer_registry::{BlobSource, BytesBlob, OCI_MANIFEST};
use nix_layer_registry_testkit::TestRegistry;

fn registry() -> Option<TestRegistry> {
    let r = TestRegistry::start_or_skip();
    assert!(r.is_some() || std::env::var_os("CI").is_none(), "docker-registry is required in CI");
    r
}

#[test]
fn a_blob_and_a_manifest_are_fetched_verified_and_a_long_body_is_cut_off() {
    let Some(r) = registry() else { return };
    let client = r.client(None);
    let reference = r.reference("fixed/output");
    let blob = BytesBlob::new(vec![5u8; 64 << 10]);
    client.push_blobs(&reference, &[&blob as &dyn BlobSource], &[]).unwrap();
    let d = Digest::of(&blob.bytes);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": d.to_string(), "size": blob.bytes.len() },
        "layers": [],
    }))
    .unwrap();
    let m = client.push_manifest(&reference, &[], &manifest, OCI_MANIFEST).unwrap();
    let repo = format!("{}/fixed/output", r.host());
    let out = tempfile::tempdir().unwrap();

    let sized = out.path().join("sized");
    fetch_blob(&client, &repo, &d, Media::Blob, Some(blob.bytes.len() as u64), &sized).unwrap();
    assert_eq!(std::fs::read(&sized).unwrap(), blob.bytes);
    let plain = out.path().join("unsized");
    fetch_blob(&client, &repo, &d, Media::Blob, None, &plain).unwrap();
    assert_eq!(std::fs::read(&plain).unwrap(), blob.bytes);
    let man = out.path().join("manifest");
    fetch_blob(&client, &repo, &m, Media::Manifest, None, &man).unwrap();
    assert_eq!(std::fs::read(&man).unwrap(), manifest);

    // A descriptor that says fewer bytes than the registry sends: refused, nothing written.
    let short = out.path().join("short");
    let e = fetch_blob(&client, &repo, &d, Media::Blob, Some(1000), &short).unwrap_err().to_string();
    assert!(e.contains("expected 1000 bytes"), "{e}");
    // A digest the bytes do not have: refused, nothing written.
    let wrong = out.path().join("wrong");
    let e = fetch_blob(&client, &repo, &Digest::of(b"other"), Media::Blob, None, &wrong).unwrap_err();
    assert!(e.to_string().contains("not found") || e.to_string().contains("digest"), "{e}");
    let mut names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["manifest", "sized", "unsized"]);
}
