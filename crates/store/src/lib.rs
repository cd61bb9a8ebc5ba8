//! Validated Nix store paths, store directories and NAR hashes.
//!
//! Everything downstream (graphs, layer plans, tar writers) takes these types
//! instead of strings, so a path that is not `<store dir>/<32 nix32 chars>-<name>`
//! cannot reach the image writer. This crate does not touch the file system.

mod nar_hash;
mod nixbase32;
mod path;

pub use nar_hash::NarHash;
pub use nixbase32::{decode as nix32_decode, encode as nix32_encode};
pub use path::{StoreDir, StorePath};

/// Everything that can be wrong with a store path or a hash string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("store directory `{0}` must be an absolute path without a trailing slash")]
    BadStoreDir(String),
    #[error("`{path}` is not inside the Nix store `{store_dir}`")]
    OutsideStore { path: String, store_dir: String },
    #[error("`{path}` is not a store path: {reason}")]
    BadStorePath { path: String, reason: &'static str },
    #[error("`{0}` is not a NAR hash (expected sha256:<nix32 or hex> or sha256-<base64>)")]
    BadHash(String),
}
