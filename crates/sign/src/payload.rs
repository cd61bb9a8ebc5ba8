//! The "simple signing" payload cosign signs and containers/image reads.

use nix_layer_blob::Digest;
use serde::{Deserialize, Serialize};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    /// Free-form, unsigned-by-convention extras; nix-layer writes none.
    #[serde(default)]
    pub optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload bytes for `digest` of the image named `docker_reference`.
pub fn payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Identity { docker_reference: docker_reference.to_owned() },
            image: Image { docker_manifest_digest: digest.to_string() },
            kind: SIGNATURE_TYPE.to_owned(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).expect("serialising a payload cannot fail")
}

/// Parses a payload, checking its type.
pub fn parse(bytes: &[u8]) -> Result<Payload, String> {
    let p: Payload =
        serde_json::from_slice(bytes).map_err(|e| format!("the payload is not simple-signing JSON: {e}"))?;
    if p.critical.kind != SIGNATURE_TYPE {
        return Err(format!("the payload's type is `{}`, not `{SIGNATURE_TYPE}`", p.critical.kind));
    }
    Ok(p)
}
