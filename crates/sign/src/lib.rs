//! Sigstore/cosign-compatible image signing: cosign key files ([`keys`]), the
//! simple-signing payload ([`payload`]), signatures stored under the `sha256-<hex>.sig`
//! tag and as OCI 1.1 referrers ([`attach`]), and verification ([`verify`]); SLSA
//! provenance ([`provenance`], with a flake's locked inputs from [`flake_lock`]) in DSSE envelopes ([`dsse`]) attached as referrers and
//! under cosign's `sha256-<hex>.att` tag ([`attest`]).
//!
//! The signature layout is the one cosign and containers/image (podman, skopeo, CRI-O with
//! `use-sigstore-attachments`) read, so a deployment can enforce it with a policy that
//! nix-layer did not write (tests/e2e/interop.rs enforces it with Debian trixie's podman and
//! skopeo, and checks keys and signatures against theirs and cosign's, both ways).
//!
//! Crates: `ring` for ECDSA P-256 and randomness (already built for rustls), `scrypt` and
//! `crypto_secretbox` (RustCrypto) for the encrypted key format, `rustix` to read a
//! password from the terminal without echo.

pub mod attach;
pub mod attest;
pub mod dsse;
mod error;
pub mod flake_lock;
pub mod keys;
pub mod password;
pub mod payload;
mod pem;
pub mod provenance;
pub mod signer;
pub mod verify;

pub use attach::{
    attestation_tag, docker_reference, sign_image, sign_manifest, signature_tag, Signed,
    SIGNATURE_ARTIFACT_TYPE,
};
pub use attest::{attach_attestation, verify_attestations, verify_referrers_signed, Attestation};
pub use error::Error;
pub use keys::{generate_pair, PrivateKey, PublicKey};
pub use password::password;
pub use signer::{KeySigner, Signature, Signer, SIGNATURE_ANNOTATION};
pub use verify::{verify_image, Rejection, Verified, VerifyError};
