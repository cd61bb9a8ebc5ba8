//! End-to-end tests: the real `nix-layer` binary on real Nix store paths,
//! checked by real clients (docker/podman, skopeo, umoci, nix-store).

mod behaviour;
mod errors;
mod formats;
mod integrity;
mod interop;
mod load;
mod push;
mod sbom;
mod sign;
mod support;
