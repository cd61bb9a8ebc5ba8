//! Deterministic tar streams for image layers.
//!
//! Three things live here:
//!
//! * [`TarWriter`], a PAX tar writer whose output is byte-identical to
//!   CPython's `tarfile` in `PAX_FORMAT` — the writer nixpkgs'
//!   `stream_layered_image.py` uses — so layers we write have the same
//!   diff_ids as the ones `dockerTools.streamLayeredImage` writes.
//! * [`write_store_layer`] / [`store_layer_len`]: a layer holding whole store
//!   paths, entry for entry what `streamLayeredImage` writes, and its exact
//!   length computed from `lstat` alone.
//!
//! Files are read race-free: opened relative to their directory without
//! following symlinks, and checked against the `lstat` they were planned
//! from (type, inode, size) before and after reading ([`Error::Changed`]).
//! Sparse files are read by extent; holes become zeros without being read.
//! * [`write_top_layer`]: the "customisation" layer (merged `contents` plus a
//!   declarative [`TopLayerSpec`] of directories, symlinks, copies and text
//!   files with owners and modes), built without fakeroot.
//!
//! This crate does not compress, hash, plan layers or write image manifests;
//! it only turns file trees into tar bytes.

mod error;
mod fsread;
mod header;
mod order;
mod store_layer;
mod top_layer;
mod writer;

pub use error::Error;
pub use header::{archive_len, encode_header, header_len, EntryKind, Header};
pub use order::component_cmp;
pub use store_layer::{store_layer_len, write_store_layer, Ownership, StoreLayerOptions};
pub use top_layer::{
    parse_spec, write_top_layer, GeneratedTree, HostFiles, OwnerRule, SpecEntry, SpecKind, TopLayerInput,
    TopLayerSpec,
};
pub use writer::TarWriter;
