use std::io;
use std::path::PathBuf;

use nix_layer_blob::Digest;

/// Everything that can go wrong talking to a registry. Messages name the registry, the
/// repository or blob and what the registry said, so a failed push is diagnosable from the
/// one line a CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{input}` is not a valid image reference: {reason}")]
    BadReference { input: String, reason: String },
    /// `request` is `METHOD url`.
    #[error("cannot reach registry {registry} ({request}) after {attempts} attempt(s): {cause}")]
    Unreachable { registry: String, request: String, attempts: u32, cause: String },
    /// A certificate the trust roots do not vouch for, or a failed handshake. The fix is
    /// trust, never giving TLS up, so the message names the trust roots.
    #[error(
        "TLS with registry {registry} failed ({url}): {cause} (the trust roots are the system store, \
         $SSL_CERT_FILE and $SSL_CERT_DIR: add the registry's CA there)"
    )]
    Tls { registry: String, url: String, cause: String },
    #[error(
        "registry {registry} refused access to {scope} (HTTP {status}){}: {message}",
        match user { Some(u) => format!(" for user `{u}`"), None => " without credentials".to_owned() }
    )]
    Unauthorized { registry: String, scope: String, status: u16, user: Option<String>, message: String },
    #[error("registry {registry} rejected {what} (HTTP {status} on {request}): {message}")]
    Rejected { registry: String, what: String, request: String, status: u16, message: String },
    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: String },
    #[error("{what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{what} not found in {registry}/{repository}")]
    NotFound { registry: String, repository: String, what: String },
    #[error("reading blob {digest} from its source: {cause}")]
    Source { digest: Digest, cause: io::Error },
    #[error("{action} `{}`: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: io::Error },
    #[error("credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    #[error("registry {registry} sent an invalid answer to {what}: {reason}")]
    Protocol { registry: String, what: String, reason: String },
    #[error("index {reference} has no manifest for platform {wanted}; it has: {available}")]
    NoPlatform { reference: String, wanted: String, available: String },
}

impl Error {
    /// Worth trying again: the network or the registry failed, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Rejected { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(io::Error) -> Error + 'a {
        move |cause| Error::Io { action, path: path.to_owned(), cause }
    }
}

/// 5xx (except 501, which will not change) and 429 are retried.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 429 || status == 408 || (status >= 500 && status != 501)
}
