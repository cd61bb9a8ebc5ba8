//! Blob downloads bounded by their descriptor's size.

use std::path::Path;

use nix_layer_blob::Digest;
use nix_layer_registry::{Client, Reference};

use crate::{io_err, Error, SCRATCH_PREFIX};

/// Downloads blob `digest` of `size` bytes to `dest`: never more than `size` bytes are
/// written (a registry sending an endless body is cut off at once), the digest is checked
/// by the client, and `dest` appears only once both hold, readable as the umask allows
/// (another user of a shared cache can read it). A transfer cut off mid-body is tried once
/// more.
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
        let mut out = Bounded { inner: std::io::BufWriter::new(tmp.file()), left: size, overflowed: false };
        let fetched = client.fetch_blob(r, digest, &mut out);
        if out.overflowed {
            return Err(Error::TooLong { reference: r.to_string(), digest: *digest, size });
        }
        match fetched {
            Ok(n) if n == size => {
                std::io::Write::flush(&mut out.inner).map_err(io_err("cannot write", tmp.path()))?;
                drop(out);
                tmp.set_mode(nix_layer_scratch::final_mode(0o644))
                    .map_err(io_err("cannot set the mode of", tmp.path()))?;
                tmp.persist(dest).map_err(|e| io_err("cannot store the blob as", dest)(e.source))?;
                return Ok(());
            }
            // Shorter than declared, with the right digest: the manifest lies.
            Ok(n) => {
                return Err(Error::PinMismatch {
                    reference: r.to_string(),
                    problem: format!("blob {digest} has {n} bytes but its descriptor says {size}"),
                })
            }
            Err(e) if attempt == 0 && e.is_transient() => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A writer that refuses to go past `left` bytes.
struct Bounded<W> {
    inner: W,
    left: u64,
    overflowed: bool,
}

impl<W: std::io::Write> std::io::Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.overflowed = true;
            return Err(std::io::Error::other("more bytes than the descriptor declares"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
