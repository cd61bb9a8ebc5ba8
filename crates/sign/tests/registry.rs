//! Signing and verifying against a real registry (docker-registry on 127.0.0.1): every way
//! verification must fail, and the way signatures are stored and appended.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{BytesBlob, Client, ImageUpload, Reference, OCI_INDEX, OCI_MANIFEST};
use nix_layer_registry_testkit::TestRegistry;
use nix_layer_sign::{
    attach_attestation, attestation_tag, generate_pair, sign_image, signature_tag, verify_attestations,
    verify_image, KeySigner, PrivateKey, PublicKey, Rejection, VerifyError, SIGNATURE_ANNOTATION,
};
use serde_json::{json, Value};

fn keys() -> (KeySigner, PublicKey) {
    let (private, public) = generate_pair(b"test").unwrap();
    (
        KeySigner::new(PrivateKey::from_encrypted_pem(&private, b"test").unwrap()),
        PublicKey::from_pem(&public).unwrap(),
    )
}

/// Pushes a one-layer image whose layer holds `content`; returns its manifest digest.
fn push_image(client: &Client, target: &Reference, content: &[u8]) -> Digest {
    let layer = BytesBlob::new(content.to_vec());
    let config = BytesBlob::new(
        serde_json::to_vec(&json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[layer.digest.to_string()]}}))
            .unwrap(),
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest.to_string(), "size": layer.bytes.len()}],
    }))
    .unwrap();
    let blobs: [&dyn nix_layer_registry::BlobSource; 2] = [&config, &layer];
    let upload =
        ImageUpload { blobs: &blobs, manifest: &manifest, media_type: OCI_MANIFEST, mount_from: &[] };
    client.push_image(target, &[], &upload).unwrap().manifest_digest
}

fn sig_manifest(client: &Client, image: &Reference, digest: &Digest) -> Value {
    let m = client.get_manifest(&image.with_tag(&signature_tag(digest)).unwrap()).unwrap();
    serde_json::from_slice(&m.bytes).unwrap()
}

fn put_sig_manifest(client: &Client, image: &Reference, digest: &Digest, doc: &Value) {
    let bytes = serde_json::to_vec(doc).unwrap();
    client.push_manifest(image, &[&signature_tag(digest)], &bytes, OCI_MANIFEST).unwrap();
}

/// Drops the signature referrers of `digest` (so a check sees only the `.sig` tag): the
/// referrers tag-schema index is emptied.
fn remove_referrers(client: &Client, image: &Reference, digest: &Digest) {
    let empty =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    client.push_manifest(image, &[&format!("sha256-{}", digest.hex())], &empty, OCI_INDEX).unwrap();
}

fn rejections(e: VerifyError) -> Vec<Rejection> {
    match e {
        VerifyError::NoValidSignature { rejections, .. } => rejections.into_iter().map(|(_, r)| r).collect(),
        other => panic!("expected signatures that fail, got {other}"),
    }
}

#[test]
fn signed_images_verify_and_every_failure_says_why() {
    let Some(registry) = TestRegistry::start_or_skip() else { return };
    let client = registry.client(None);
    let image = registry.reference("app:v1");
    let digest = push_image(&client, &image, b"layer one");
    let (signer, public) = keys();
    let (other_signer, other_public) = keys();

    // Missing.
    let err = verify_image(&client, &image, &public).unwrap_err();
    assert!(matches!(err, VerifyError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("has no signatures"), "{err}");

    // Signed: verifies, for this digest, under the identity signed.
    let signed = sign_image(&client, &image, &signer).unwrap();
    assert_eq!(signed.len(), 1);
    assert!(signed[0].added && signed[0].digest == digest);
    let ok = verify_image(&client, &image, &public).unwrap();
    assert_eq!(ok.digest, digest);
    assert_eq!(ok.docker_reference, format!("{}/app:v1", registry.host()));
    verify_image(&client, &image.with_digest(digest), &public).unwrap();

    // Signing again with the same key adds nothing.
    assert!(!sign_image(&client, &image, &signer).unwrap()[0].added);
    assert_eq!(sig_manifest(&client, &image, &digest)["layers"].as_array().unwrap().len(), 1);

    // Wrong key: the signature is there but not by this key.
    let err = verify_image(&client, &image, &other_public).unwrap_err();
    let r = rejections(err);
    assert!(!r.is_empty() && r.iter().all(|r| *r == Rejection::BadSignature), "{r:?}");

    // Another key's signature is appended; the first one is kept, both verify.
    assert!(sign_image(&client, &image, &other_signer).unwrap()[0].added);
    assert_eq!(sig_manifest(&client, &image, &digest)["layers"].as_array().unwrap().len(), 2);
    verify_image(&client, &image, &public).unwrap();
    verify_image(&client, &image, &other_public).unwrap();
    let original = sig_manifest(&client, &image, &digest);
    remove_referrers(&client, &image, &digest);

    // Tampered signature: one bit of each flipped.
    let mut doc = original.clone();
    for layer in doc["layers"].as_array_mut().unwrap() {
        let sig = layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap();
        let mut bytes = B64.decode(sig).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        layer["annotations"][SIGNATURE_ANNOTATION] = B64.encode(bytes).into();
    }
    put_sig_manifest(&client, &image, &digest, &doc);
    let r = rejections(verify_image(&client, &image, &public).unwrap_err());
    assert!(r.len() == 2 && r.iter().all(|r| *r == Rejection::BadSignature), "{r:?}");

    // Tampered payload: the identity changed, the signature kept.
    let mut doc = original.clone();
    for layer in doc["layers"].as_array_mut().unwrap() {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"evil.example/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let blob = BytesBlob::new(payload.into_bytes());
        client.push_blobs(&image, &[&blob], &[]).unwrap();
        layer["digest"] = blob.digest.to_string().into();
        layer["size"] = blob.bytes.len().into();
    }
    put_sig_manifest(&client, &image, &digest, &doc);
    let r = rejections(verify_image(&client, &image, &public).unwrap_err());
    assert!(r.len() == 2 && r.iter().all(|r| *r == Rejection::BadSignature), "{r:?}");

    // Garbled: a signature that is not base64, a layer of another type.
    let mut doc = original.clone();
    doc["layers"][0]["annotations"][SIGNATURE_ANNOTATION] = "%%% not base64".into();
    doc["layers"][1]["mediaType"] = "application/octet-stream".into();
    put_sig_manifest(&client, &image, &digest, &doc);
    let err = verify_image(&client, &image, &public).unwrap_err();
    let text = err.to_string();
    let r = rejections(err);
    assert!(r.len() == 2 && r.iter().all(|r| matches!(r, Rejection::Garbled(_))), "{r:?}");
    assert!(text.contains("not base64") && text.contains("application/octet-stream"), "{text}");

    // A signature for another digest: image one's valid signatures under image two's tag.
    let image2 = registry.reference("app:v2");
    let digest2 = push_image(&client, &image2, b"layer two");
    put_sig_manifest(&client, &image2, &digest2, &original);
    let r = rejections(verify_image(&client, &image2, &public).unwrap_err());
    assert!(r.contains(&Rejection::OtherDigest { signed: digest.to_string() }), "{r:?}");

    // The original signatures still verify image one.
    put_sig_manifest(&client, &image, &digest, &original);
    verify_image(&client, &image, &public).unwrap();
}

#[test]
fn a_signature_is_also_a_referrer_and_verifies_from_there_alone() {
    let Some(registry) = TestRegistry::start_or_skip() else { return };
    let client = registry.client(None);
    let image = registry.reference("ref:v1");
    let digest = push_image(&client, &image, b"referred");
    let (signer, public) = keys();
    let signed = sign_image(&client, &image, &signer).unwrap();
    assert!(signed[0].referrer.is_some());
    let referrers =
        client.list_referrers(&image, &digest, Some(nix_layer_sign::SIGNATURE_ARTIFACT_TYPE)).unwrap();
    assert_eq!(referrers.len(), 1);
    // With an empty manifest in the .sig tag's place, the referrer alone carries it.
    let empty = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": []});
    client.push_blobs(&image, &[&BytesBlob::new(b"{}".to_vec())], &[]).unwrap();
    put_sig_manifest(&client, &image, &digest, &empty);
    let v = verify_image(&client, &image, &public).unwrap();
    assert_eq!(v.source, format!("referrer {}", referrers[0].digest()));
}
#[test]
fn signing_an_index_signs_it_and_each_platform_manifest() {
    let Some(registry) = TestRegistry::start_or_skip() else { return };
    let client = registry.client(None);
    let mut entries = Vec::new();
    for (arch, tag) in [("amd64", "amd"), ("arm64", "arm")] {
        let r = registry.reference(&format!("multi:{tag}"));
        let d = push_image(&client, &r, arch.as_bytes());
        let m = client.get_manifest(&r.with_digest(d)).unwrap();
        entries.push(json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": m.bytes.len(),
            "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))
            .unwrap();
    let image = registry.reference("multi:v1");
    let index_digest = client.push_manifest(&image, &["v1"], &index, OCI_INDEX).unwrap();
    let (signer, public) = keys();
    let signed = sign_image(&client, &image, &signer).unwrap();
    let digests: Vec<String> = signed.iter().map(|s| s.digest.to_string()).collect();
    let mut expected = vec![index_digest.to_string()];
    expected.extend(entries.iter().map(|e| e["digest"].as_str().unwrap().to_owned()));
    assert_eq!(digests, expected);
    verify_image(&client, &image, &public).unwrap();
    for e in &entries {
        let d: Digest = e["digest"].as_str().unwrap().parse().unwrap();
        let v = verify_image(&client, &image.with_digest(d), &public).unwrap();
        // Each platform manifest is signed under the index's name.
        assert_eq!(v.docker_reference, format!("{}/multi:v1", registry.host()));
    }
}

/// A reference with both a tag and a digest (what `push` knows after pushing) signs that
/// digest under the tag's identity, even when the tag has moved on since.
#[test]
fn a_pinned_tagged_reference_signs_the_pinned_digest() {
    let Some(registry) = TestRegistry::start_or_skip() else { return };
    let client = registry.client(None);
    let tagged = registry.reference("pin:v1");
    let pushed = push_image(&client, &tagged, b"what was pushed");
    let moved = push_image(&client, &tagged, b"pushed by someone else since");
    assert_ne!(pushed, moved);
    let (signer, public) = keys();
    let pinned = Reference { digest: Some(pushed), ..tagged.clone() };
    let signed = sign_image(&client, &pinned, &signer).unwrap();
    assert_eq!(signed.iter().map(|s| s.digest).collect::<Vec<_>>(), [pushed]);
    let v = verify_image(&client, &tagged.with_digest(pushed), &public).unwrap();
    assert_eq!(v.docker_reference, format!("{}/pin:v1", registry.host()));
    assert!(matches!(verify_image(&client, &tagged, &public), Err(VerifyError::Missing { .. })));
}

/// An in-toto statement about `digest` (SLSA provenance, as `push --provenance` makes).
fn statement_about(image: &Reference, digest: Digest) -> Vec<u8> {
    use nix_layer_sign::provenance::{statement, Builder, Provenance};
    statement(&Provenance {
        name: format!("{}/{}", image.registry, image.repository),
        digest,
        parameters: Default::default(),
        store_paths: vec![],
        flake_inputs: vec![],
        builder: Builder::from_env(|_| None),
        version: "0".into(),
    })
}

fn attestation_rejections(e: VerifyError) -> Vec<(String, Rejection)> {
    match e {
        VerifyError::BadAttestations { rejections, .. } => rejections,
        other => panic!("expected attestations that fail, got {other}"),
    }
}

/// Attestations under cosign's `.att` tag verify by themselves (without the referrer), one
/// stored in both places is checked once, and a garbled `.att` manifest, envelope layer or
/// an oversized one is a rejection saying why.
#[test]
fn attestations_under_the_att_tag_verify_and_garbled_ones_are_refused() {
    let Some(registry) = TestRegistry::start_or_skip() else { return };
    let client = registry.client(None);
    let image = registry.reference("att:v1");
    let digest = push_image(&client, &image, b"attested");
    let (signer, public) = keys();
    let (_, other_public) = keys();
    let pinned = image.with_digest(digest);
    let err = verify_attestations(&client, &pinned, &public).unwrap_err();
    assert!(
        err.to_string().contains(&format!("no envelopes under the {} tag", attestation_tag(&digest))),
        "{err}"
    );

    let m = client.get_manifest(&pinned).unwrap();
    let subject = nix_layer_registry::descriptor_of(&m.media_type, &m.bytes);
    attach_attestation(&client, &pinned, &subject, &statement_about(&image, digest), &signer).unwrap();
    // In both places, the same envelope blob: one attestation.
    let found = verify_attestations(&client, &pinned, &public).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].predicate_type, "https://slsa.dev/provenance/v1");

    // The `.att` tag alone.
    remove_referrers(&client, &image, &digest);
    let found = verify_attestations(&client, &pinned, &public).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source, format!("{} layer 0", attestation_tag(&digest)));
    let r = attestation_rejections(verify_attestations(&client, &pinned, &other_public).unwrap_err());
    assert_eq!(r.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), [Rejection::BadSignature]);

    let att = image.with_tag(&attestation_tag(&digest)).unwrap();
    let original: Value = serde_json::from_slice(&client.get_manifest(&att).unwrap().bytes).unwrap();
    let put = |doc: &Value| {
        client
            .push_manifest(
                &image,
                &[&attestation_tag(&digest)],
                &serde_json::to_vec(doc).unwrap(),
                OCI_MANIFEST,
            )
            .unwrap()
    };
    let refused = |needle: &str| {
        let err = verify_attestations(&client, &pinned, &public).unwrap_err();
        let text = err.to_string();
        let r = attestation_rejections(err);
        assert!(r.len() == 1 && matches!(r[0].1, Rejection::Garbled(_)), "{r:?}");
        assert!(text.contains(needle), "{text}");
    };

    // A layer that is not an envelope.
    let junk = BytesBlob::new(b"not an envelope".to_vec());
    client.push_blobs(&image, &[&junk], &[]).unwrap();
    let mut doc = original.clone();
    doc["layers"][0]["digest"] = junk.digest.to_string().into();
    doc["layers"][0]["size"] = junk.bytes.len().into();
    put(&doc);
    refused("not a DSSE envelope");

    // A layer bigger than envelopes get: refused before it is fetched.
    let mut doc = original.clone();
    doc["layers"][0]["size"] = (64u64 << 20 | 1).into();
    put(&doc);
    refused("the limit is");

    // A manifest nix-layer cannot read (a layer without its size).
    let mut doc = original.clone();
    doc["layers"][0].as_object_mut().unwrap().remove("size");
    put(&doc);
    refused("not a manifest");

    put(&original);
    verify_attestations(&client, &pinned, &public).unwrap();
}
