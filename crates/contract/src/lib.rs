//! The contract between nix-layer's Nix library and its binary, in one place.
//!
//! * [`contract`]: every image argument (type, default, limits), the wire
//!   names and the version; `nix/contract.json` is generated from it.
//! * [`settings`]: what a user gave (command-line flags, the Nix wrapper's
//!   structured attrs, a stream script's embedded settings) becomes a
//!   [`nix_layer_pipeline::BuildRequest`], with the contract's defaults and limits.
//! * [`nix_build`]: the builder of the Nix library's derivations: reads the
//!   structured attrs (inside and outside the sandbox), checks the version,
//!   and says what to write.

pub mod contract;
mod error;
pub mod family;
pub mod nix_build;
pub mod settings;

pub use error::{Error, Result};
