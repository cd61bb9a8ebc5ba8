//! The image model and its formats.
//!
//! A build ends in one [`Image`] value: the config, made from the layers' diff_ids, and the
//! OCI manifest, made from the same layers' digests, serialised canonically (sorted keys)
//! once. Every output writer consumes that value and verified [`LayerBlob`]s:
//!
//! * docker-archive for `docker load` / `podman load`: [`DockerArchiveWriter`] appends
//!   layers in order to any stream, [`SlotArchive`] fills one file from several threads;
//!   both give the same bytes;
//! * an OCI image layout directory ([`OciLayout`]) and its single-file form
//!   ([`write_oci_archive`]);
//! * reading a base image (`--from-image`) from a docker-archive or an OCI layout
//!   ([`BaseImage`]), every layer verified as it is copied in, and inheriting its `Env` the
//!   way dockerTools does ([`inherit_env`]).
//!
//! This crate does not build layer contents, compress, or talk to registries or daemons.

mod base;
mod config;
mod docker_archive;
mod model;
mod oci_layout;
mod reference;
#[cfg(test)]
mod test_support;
pub mod time;

use std::io;
use std::path::{Path, PathBuf};

pub use base::{BaseImage, BaseLayer, BlobSource, LayerDescriptor};
pub use config::KNOWN_KEYS as CONFIG_KEYS;
pub use config::{go_arch, inherit_env, ConfigSpec, Healthcheck, HistoryEntry, ImageConfigInput};
pub use docker_archive::{DockerArchiveWriter, SlotArchive};
pub use model::{
    platform_descriptor, platform_index, Document, Image, CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
pub use oci_layout::{write_oci_archive, IndexKind, OciLayout, VerifiedBlob, MAX_DOCUMENT_SIZE};
pub use reference::ImageRef;
pub use time::Timestamp;

pub use nix_layer_blob::{BlobInfo, Compression, Digest, LayerBlob};

/// Everything that can go wrong while describing, writing or reading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference `{input}`: {problem}")]
    BadReference { input: String, problem: String },
    #[error("invalid image config: {0}")]
    BadConfig(String),
    #[error("{action} `{}`: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: io::Error },
    #[error("writing the {format} failed: {cause}")]
    Tar { format: &'static str, cause: nix_layer_tar::Error },
    #[error(transparent)]
    Blob(#[from] nix_layer_blob::Error),
    #[error(
        "layer file `{}` is {compression}-compressed, but a docker-archive needs uncompressed \
         layer tars; write the layer with compression `none` (or decompress it) first",
        path.display()
    )]
    CompressedLayer { path: PathBuf, compression: Compression },
    #[error("layer file `{}` has {actual} bytes, but {expected} were declared; it changed after it was written, rebuild it", path.display())]
    LayerSize { path: PathBuf, expected: u64, actual: u64 },
    #[error("{what} does not match: expected {expected}, got {actual}; {hint}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest, hint: &'static str },
    #[error("`{}` is not a usable OCI image layout: {problem}", path.display())]
    BadLayout { path: PathBuf, problem: String },
    #[error("cannot read base image `{}`: {problem}", path.display())]
    BadBaseImage { path: PathBuf, problem: String },
    #[error("the image config and the layers disagree: {0}")]
    ConfigLayersMismatch(String),
}

impl Error {
    /// `map_err` helper: an I/O failure of `action` on `path`.
    pub(crate) fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |cause| Error::Io { action, path: path.to_owned(), cause }
    }
}

pub(crate) fn diff_ids_of(config: &serde_json::Value) -> Result<Vec<Digest>, String> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or("the image config has no rootfs.diff_ids list")?;
    ids.iter()
        .map(|v| {
            let s = v.as_str().ok_or("rootfs.diff_ids holds a non-string")?;
            s.parse::<Digest>().map_err(|e| format!("rootfs.diff_ids: {e}"))
        })
        .collect()
}
