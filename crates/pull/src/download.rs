//! Blob downloads bounded by their descriptor's size.

use std::path::Path;

use nix_layer_blob::Digest;
use nix_layer_registry::{Client, Reference};

use crate::{io_err, Error, SCRATCH_PREFIX};

/// Downloads blob `digest` of `size` bytes to `dest`: the client stops a body at the first
/// byte past `size` (a registry sending an endless body is cut off at once) and checks the
/// digest, and `dest` appears only once both hold, readable as the umask allows (another
/// user of a shared cache can read it). A transfer that fails on the way is tried once more.
pub(crate) fn fetch_bounded(
    client: &Client,
    r: &Reference,
    digest: &Digest,
    size: u64,
    dest: &Path,
) -> Result<(), Error> {
    let dir = dest.parent().expect("a blob path has a parent");
    let mut attempt = 0;
    loop {
        let tmp = nix_layer_scratch::ScratchFile::new_in(dir, SCRATCH_PREFIX)
            .map_err(io_err("cannot create a file in", dir))?;
        let mut out = std::io::BufWriter::new(tmp.file());
        match client.fetch_blob_sized(r, digest, size, &mut out) {
            Ok(_) => {
                std::io::Write::flush(&mut out).map_err(io_err("cannot write", tmp.path()))?;
                drop(out);
                tmp.set_mode(nix_layer_scratch::final_mode(0o644))
                    .map_err(io_err("cannot set the mode of", tmp.path()))?;
                tmp.persist(dest).map_err(|e| io_err("cannot store the blob as", dest)(e.source))?;
                return Ok(());
            }
            Err(nix_layer_registry::Error::SizeMismatch { expected, actual, .. }) => {
                return Err(size_error(r, digest, expected, actual))
            }
            Err(e) if attempt == 0 && e.is_transient() => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The client's size error (from the body or its `Content-Length`) in this crate's terms:
/// longer than the descriptor says is [`Error::TooLong`]; shorter, from a registry that
/// checks digests on upload, means the manifest's descriptor is wrong.
fn size_error(r: &Reference, digest: &Digest, size: u64, actual: u64) -> Error {
    if actual > size {
        Error::TooLong { reference: r.to_string(), digest: *digest, size }
    } else {
        Error::PinMismatch {
            reference: r.to_string(),
            problem: format!("blob {digest} has {actual} bytes but its descriptor says {size}"),
        }
    }
}
