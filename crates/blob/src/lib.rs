//! Content digests, layer blobs and the layer cache.
//!
//! A layer's tar stream is hashed, compressed, hashed again and written to disk in one pass
//! ([`write_blob`]), so the `diff_id` in the image config and the `digest` in the manifest
//! always describe the bytes that were actually stored. A [`Compression`] (codec and level)
//! fixes every setting of its encoder: the compressed bytes decide layer digests, and layers
//! are only shared between builds whose bytes agree.
//!
//! [`LayerCache`] keeps finished blobs between builds, content-addressed and safe for
//! concurrent builders. It never serves an entry whose blob fails its checks; it returns a
//! miss so the caller rebuilds.
//!
//! This crate knows nothing about tar, image configs or manifests: it stores byte streams
//! (and converts its digests to oci-spec's descriptors, [`oci`], for the crates that do).

mod cache;
mod compression;
mod digest;
mod members;
pub mod oci;
mod write;

use std::io;
use std::path::{Path, PathBuf};

pub use cache::{CacheKey, LayerCache, VerifyReport};
pub use compression::{compress_bytes, Compression, Encoder, GZIP_LEVEL, ZSTD_LEVEL};
pub use digest::{Digest, HashingReader, HashingWriter};
pub use oci::{blob_digest, descriptor, descriptor_of, oci_digest};
pub use write::{open_no_follow, sweep_temporaries, write_blob, write_stored_blob, BlobInfo, LayerBlob};

/// Everything that can go wrong while naming, writing or caching blobs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{input}` is not a valid digest: {reason} (expected `sha256:` and 64 lower-case hex digits)")]
    BadDigest { input: String, reason: &'static str },
    #[error("unknown compression `{0}` (expected none, gzip, zstd, or gzip:LEVEL / zstd:LEVEL)")]
    BadCompression(String),
    #[error("invalid compression `{spec}`: its level must be {accepted}")]
    BadCompressionLevel { spec: String, accepted: String },
    #[error("{action} `{}`: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: io::Error },
    #[error("`{}` is not a layer cache (no blobs/sha256 and entries directories)", .0.display())]
    NotACache(PathBuf),
    #[error("blob `{}` is damaged or not what was recorded: {problem}", path.display())]
    Corrupt { path: PathBuf, problem: String },
    #[error("producing the layer contents for a blob in `{}` failed: {cause}", dir.display())]
    Produce { dir: PathBuf, cause: io::Error },
}

impl Error {
    /// `map_err` helper: an I/O failure of `action` on `path`.
    pub(crate) fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |cause| Error::Io { action, path: path.to_owned(), cause }
    }
}
