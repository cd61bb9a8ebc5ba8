use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::Error;

/// How a layer blob is stored. The settings behind each variant are fixed (see
/// [`Compression::encoder`]) because the compressed bytes decide the layer digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// gzip level 6: zlib's default, the usual trade-off for registry layers.
pub const GZIP_LEVEL: u32 = 6;
/// zstd level 3: libzstd's default.
pub const ZSTD_LEVEL: i32 = 3;
/// gzip header OS byte: 255 ("unknown"), so the bytes do not depend on the build host.
const GZIP_OS_UNKNOWN: u8 = 255;

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI media type of a layer stored this way.
    pub fn layer_media_type(&self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The compression named by an OCI or Docker layer media type, if it is a layer type.
    pub fn from_layer_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Recognises gzip and zstd by their magic numbers; anything else is taken as
    /// uncompressed. Four bytes are enough.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A reader yielding the decompressed bytes of `inner`.
    pub fn decoder<'a>(&self, inner: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(inner),
            // MultiGzDecoder: `pigz` and concatenated streams produce several members.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        })
    }

    /// A compressing writer with nix-layer's fixed settings: the same bytes in always give
    /// the same bytes out. Call [`Encoder::finish`] to write the trailer.
    pub fn encoder<W: Write>(&self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::new(Kind::Plain(inner)),
            Compression::Gzip => Encoder::new(Kind::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(GZIP_OS_UNKNOWN)
                    .write(inner, flate2::Compression::new(GZIP_LEVEL)),
            )),
            Compression::Zstd => {
                // zstd::Encoder is single-threaded unless `multithread` is called; worker
                // threads would change the output bytes.
                let mut enc = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
                enc.include_checksum(true)?;
                Encoder::new(Kind::Zstd(enc))
            }
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::BadCompression(s.to_owned()))
    }
}

/// Bytes handed to the compressor per call. Deflate (zlib-rs) output depends on how its input
/// is split, so [`Encoder`] regroups whatever it is given into chunks of exactly this size.
/// Part of the output format: changing it changes gzip layer digests.
const CHUNK: usize = 128 * 1024;

/// A compressing writer (or a pass-through) into `W`; see [`Compression::encoder`].
///
/// Its output depends only on the bytes written, never on how they were split into
/// `write` calls or on calls to `flush`: input is regrouped into fixed-size chunks, and
/// `flush` does not flush the compressor (a sync flush would change the stream). All
/// output is complete only after [`Encoder::finish`].
pub struct Encoder<W: Write> {
    kind: Kind<W>,
    pending: Vec<u8>,
}

enum Kind<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Kind<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Kind::Plain(w) => w.write_all(buf),
            Kind::Gzip(e) => e.write_all(buf),
            Kind::Zstd(e) => e.write_all(buf),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn new(kind: Kind<W>) -> Self {
        let pending = match kind {
            Kind::Plain(_) => Vec::new(),
            _ => Vec::with_capacity(CHUNK),
        };
        Encoder { kind, pending }
    }

    /// Writes what is buffered, ends the compressed stream and returns the inner writer
    /// (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            self.kind.write_all(&self.pending)?;
        }
        match self.kind {
            Kind::Plain(w) => Ok(w),
            Kind::Gzip(e) => e.finish(),
            Kind::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Kind::Plain(w) = &mut self.kind {
            return w.write(buf);
        }
        if self.pending.is_empty() && buf.len() >= CHUNK {
            // A whole chunk at a chunk boundary: skip the copy.
            self.kind.write_all(&buf[..CHUNK])?;
            return Ok(CHUNK);
        }
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.kind.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.kind {
            Kind::Plain(w) => w.flush(),
            // Deliberately not forwarded, see the type's documentation.
            Kind::Gzip(_) | Kind::Zstd(_) => Ok(()),
        }
    }
}

/// Compresses a byte string in memory (small blobs, tests).
pub fn compress_bytes(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = compression.encoder(Vec::new())?;
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn sample() -> Vec<u8> {
        // Compressible but not trivial: a repeating text with a counter.
        (0..20_000).flat_map(|i| format!("line {i} of a layer\n").into_bytes()).collect()
    }

    fn decompress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        c.decoder(data).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn names_parse_and_print() {
        for c in Compression::ALL {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        let err = "xz".parse::<Compression>().unwrap_err();
        assert!(err.to_string().contains("none, gzip, zstd"), "{err}");
        assert!("Gzip".parse::<Compression>().is_err());
    }

    #[test]
    fn media_types_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_layer_media_type(c.layer_media_type()), Some(c));
        }
        assert_eq!(Compression::Gzip.layer_media_type(), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(
            Compression::from_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_layer_media_type("application/json"), None);
    }

    #[test]
    fn round_trips_and_detects_magic() {
        let data = sample();
        for c in Compression::ALL {
            let packed = compress_bytes(c, &data).unwrap();
            assert_eq!(Compression::detect(&packed), c);
            assert_eq!(decompress(c, &packed), data, "{c}");
            if c != Compression::None {
                assert!(packed.len() < data.len() / 4, "{c} barely compressed");
            }
        }
    }

    #[test]
    fn output_is_deterministic() {
        let data = sample();
        for c in Compression::ALL {
            assert_eq!(compress_bytes(c, &data).unwrap(), compress_bytes(c, &data).unwrap(), "{c}");
        }
    }

    #[test]
    fn output_ignores_write_sizes_and_flushes() {
        let data = sample();
        for c in Compression::ALL {
            let whole = compress_bytes(c, &data).unwrap();
            for piece in [1, 511, 4096, 100_003, CHUNK, CHUNK + 1] {
                let mut enc = c.encoder(Vec::new()).unwrap();
                for (i, p) in data.chunks(piece).enumerate() {
                    enc.write_all(p).unwrap();
                    if i % 3 == 0 {
                        enc.flush().unwrap();
                    }
                }
                assert_eq!(enc.finish().unwrap(), whole, "{c} with {piece}-byte writes");
            }
        }
    }

    #[test]
    fn gzip_header_is_fixed() {
        let packed = compress_bytes(Compression::Gzip, b"x").unwrap();
        // magic, deflate, no flags (no name), mtime 0, XFL 0 at level 6, OS unknown.
        assert_eq!(&packed[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    /// Pins the compressed bytes: if this fails, a dependency update (zlib-rs, flate2,
    /// libzstd) or a settings change altered layer digests. That is a breaking change for
    /// layer sharing between nix-layer versions: note it in the changelog, then update.
    #[test]
    fn compressed_digests_are_pinned() {
        let data = sample();
        let got: Vec<String> = Compression::ALL
            .iter()
            .map(|&c| Digest::of(&compress_bytes(c, &data).unwrap()).to_string())
            .collect();
        assert_eq!(
            got,
            [
                "sha256:ddde4bfa549e37ad2c9ed77757db1035ff3b292f8ef7dd8e77bda49316d1fe44",
                "sha256:005fba1389881875c7ccffe18690a393cb279d1ae393ef8f93e3a87abd62bb01",
                "sha256:d69c941f9b79b1db97044b345ba80b125e14d2d8be35a76bcf9e854753c70727",
            ]
        );
    }

    #[test]
    fn concatenated_gzip_members_decode_whole() {
        let mut packed = compress_bytes(Compression::Gzip, b"hello ").unwrap();
        packed.extend(compress_bytes(Compression::Gzip, b"world").unwrap());
        assert_eq!(decompress(Compression::Gzip, &packed), b"hello world");
    }
}
