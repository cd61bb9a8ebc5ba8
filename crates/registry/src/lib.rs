//! A blocking OCI distribution client for pushing and pulling images.
//!
//! nix-layer knows every blob's digest before anything is uploaded, so a push asks the
//! registry what it has (HEAD), mounts what another repository of the registry has, and
//! streams only the rest. Manifests are sent byte for byte; the registry's digest must equal
//! ours. Blobs are read back verified against their digests.
//!
//! Authentication follows the container tools ([`CredentialSource`]): auth files
//! (`$REGISTRY_AUTH_FILE`, podman's, Docker's), credential helpers, explicit credentials and
//! `GITHUB_TOKEN` for ghcr.io; basic and bearer-token flows. Credentials go only to the
//! registry's own origin (scheme, host and port): never to an upload `Location` or a
//! redirect elsewhere, and in the bearer flow the login goes only to the token realm the
//! registry names. TLS always, unless [`ClientOptions::plain_http`] is set, trusting the
//! system store plus `$SSL_CERT_FILE` and `$SSL_CERT_DIR`.
//!
//! Every request is bounded ([`Timeouts`]): connect, response, a stall window over which
//! each body (either direction) must move a minimum of bytes, and a give-up time after
//! which no request or retry to a silent registry starts. Downloads are bounded by their
//! descriptor's size ([`Client::fetch_blob_sized`]), manifests by 4 MiB.
//!
//! Crates: `ureq` 3 for HTTP (blocking, small, streams request bodies from any `Read`
//! with a `Content-Length`, no async runtime to carry into a CLI that parallelises with
//! threads), with `rustls` on `ring` (ureq's feature also brings the Mozilla roots of
//! `webpki-roots`, used only on a machine without a trust store): pure
//! Rust plus a C/assembly crypto core built by `cc`, so no cmake, no system OpenSSL and no
//! network at build time (reqwest would bring tokio/hyper; aws-lc-rs needs cmake).
//! `base64` decodes auth files. Credential helpers are run as Docker runs them (there is no
//! well-kept Rust crate for Docker's config and helper protocol; the format is small).
//!
//! The call sequence of a push and of a pull by digest:
//!
//! ```no_run
//! use nix_layer_registry::{
//!     BytesBlob, BlobSource, Client, ClientOptions, CredentialSource, FileBlob, ImageUpload,
//!     PlatformExt, Reference, OCI_MANIFEST,
//! };
//! use oci_spec::image::Platform;
//! # fn main() -> Result<(), nix_layer_registry::Error> {
//! # let (layer_path, layer_digest, layer_size) = (std::path::PathBuf::new(), nix_layer_blob::Digest::of(b""), 0);
//! # let (config_json, manifest_json): (Vec<u8>, Vec<u8>) = (vec![], vec![]);
//! let client = Client::new(ClientOptions::default(), CredentialSource::from_process(None));
//! let target = Reference::parse("ghcr.io/acme/app:v1")?;
//! let layer = FileBlob { path: layer_path, digest: layer_digest, size: layer_size };
//! let config = BytesBlob::new(config_json);
//! let blobs: [&dyn BlobSource; 2] = [&config, &layer];
//! let report = client.push_image(
//!     &target,
//!     &["latest"],
//!     &ImageUpload { blobs: &blobs, manifest: &manifest_json, media_type: OCI_MANIFEST, mount_from: &[] },
//! )?;
//! println!("{} ({} bytes sent)", report.manifest_digest, report.bytes_uploaded());
//!
//! // A base image pinned by digest, for the platform being built.
//! let base = Reference::parse("docker.io/library/alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000")?;
//! let image = client.resolve_image(&base, &Platform::host())?;
//! let (config, layers) = image.manifest.blobs().expect("an image manifest");
//! for d in std::iter::once(&config).chain(&layers) {
//!     let digest = nix_layer_registry::blob_digest(d.digest()).expect("a sha256 digest");
//!     client.fetch_blob_to_path(&base, &digest, &std::path::Path::new("/tmp").join(digest.hex()))?;
//! }
//! # Ok(()) }
//! ```

mod auth;
mod cache_index;
mod client;
mod error;
mod manifest;
mod reference;
mod referrers;

pub use auth::{AuthEnvironment, CredentialSource, Credentials, IDENTITY_TOKEN_USER};
pub use cache_index::{CachedLayer, LayerCacheIndex, CACHE_ARTIFACT_TYPE, CACHE_TAG, MAX_INDEX_BYTES};
pub use client::{
    BlobOutcome, BlobReport, BlobSource, BytesBlob, Client, ClientOptions, FileBlob, ImageUpload, PushReport,
    ResolvedImage, RetryPolicy, Timeouts,
};
pub use error::Error;
pub use manifest::{
    annotations, blob_digest, descriptor, descriptor_of, document_bytes, oci_digest, platform, Manifest,
    PlatformExt, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};
pub use reference::{Reference, DOCKER_HUB};
pub use referrers::{ReferrerPush, ReferrersVia};
