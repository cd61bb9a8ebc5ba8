//! `--from-image REF@sha256:…` and the registry flags: argument handling only; fetching,
//! keeping and checking base images is `nix-layer-pull`'s.

use std::path::{Path, PathBuf};

use anyhow::Result;
use nix_layer_registry::{Client, ClientOptions, CredentialSource, Credentials};
use oci_spec::image::Platform;

pub use nix_layer_pull::is_registry_reference;

/// The registry client for `--plain-http` and `--creds`.
pub fn client(plain_http: bool, creds: Option<&str>) -> Result<Client> {
    let creds = creds.map(Credentials::parse).transpose()?;
    Ok(Client::new(
        ClientOptions { plain_http, ..ClientOptions::default() },
        CredentialSource::from_process(creds),
    ))
}

/// The local OCI layout of `reference` for `platform` (see [`nix_layer_pull::fetch_base`]).
pub fn fetch_base(
    client: &Client,
    reference: &str,
    platform: &Platform,
    cache: Option<&Path>,
) -> Result<PathBuf> {
    Ok(nix_layer_pull::fetch_base(client, reference, platform, cache)?)
}
