//! A registry behind TLS with a private CA made for the test: refused while no trust root
//! vouches for it (with no hint to give TLS up), trusted through `SSL_CERT_FILE` and
//! through `SSL_CERT_DIR`. One test: it sets the process environment, which the trust
//! roots are read from when a client is made.

use nix_layer_registry::{
    AuthEnvironment, BlobSource, BytesBlob, Client, ClientOptions, CredentialSource, Error, ImageUpload,
    Reference, OCI_MANIFEST,
};
use nix_layer_registry_testkit::{PrivateCa, TestRegistry, TestRegistryConfig};

fn push(target: &Reference, seed: &str) -> Result<(), Error> {
    let client = Client::new(
        ClientOptions::default(),
        CredentialSource { explicit: None, env: AuthEnvironment::default() },
    );
    let config =
        BytesBlob::new(format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.bytes.len() },
        "layers": [],
    }))
    .unwrap();
    let blobs: [&dyn BlobSource; 1] = [&config];
    let upload =
        ImageUpload { blobs: &blobs, manifest: &manifest, media_type: OCI_MANIFEST, mount_from: &[] };
    client.push_image(target, &[], &upload)?;
    assert_eq!(client.get_manifest(target)?.bytes, manifest);
    Ok(())
}

#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file_and_ssl_cert_dir() {
    let ca = PrivateCa::create().expect("making a CA with the openssl CLI");
    let tls = Some(ca.server_cert());
    let Some(reg) = TestRegistry::start_configured_or_skip(&TestRegistryConfig { tls, ..Default::default() })
    else {
        return;
    };
    let target = reg.reference("private/app:v1");
    std::env::remove_var("SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_DIR");

    let err = push(&target, "untrusted").unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("SSL_CERT_FILE"), "{text}");
    assert!(
        !text.to_lowercase().contains("plain"),
        "a certificate error must not suggest plain HTTP: {text}"
    );

    std::env::set_var("SSL_CERT_FILE", ca.ca_file());
    push(&target, "file").expect("trusted through SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_FILE");

    std::env::set_var("SSL_CERT_DIR", ca.ca_dir().unwrap());
    push(&target, "dir").expect("trusted through SSL_CERT_DIR");
    std::env::remove_var("SSL_CERT_DIR");

    // Trust is read when a client is made: without the variables, refused again.
    assert!(matches!(push(&target, "again"), Err(Error::Tls { .. })));
}
