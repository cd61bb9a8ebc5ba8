use std::path::PathBuf;

/// Why a key could not be made, read or used, or an image could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {cause}")]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },
    #[error("no password: set COSIGN_PASSWORD (it may be empty) or run on a terminal to be asked")]
    NoPassword,
    #[error("the passwords do not match")]
    PasswordMismatch,
    #[error("reading the password from the terminal: {0}")]
    Terminal(std::io::Error),
    #[error("the private key cannot be decrypted: wrong password, or the file is damaged")]
    Decrypt,
    #[error("{0}")]
    Crypto(String),
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error(transparent)]
    Registry(#[from] nix_layer_registry::Error),
}
