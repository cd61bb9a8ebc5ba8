use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::members::{MemberWriter, MEMBER_SIZE};
use crate::Error;

/// How a layer blob is stored: the codec and its level. The level and the encoder behind
/// each codec are part of the blob's bytes (and so of its digest); [`Compression::identity`]
/// names all of them for cache keys.
///
/// The usual values are the associated constants `None`, `Gzip` and `Zstd` (default
/// levels); [`Compression::with_level`] or parsing `gzip:9` give others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Compression {
    codec: Codec,
    level: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Codec {
    None,
    /// libdeflate, in independent members of [`MEMBER_SIZE`] bytes (see `members.rs`).
    Gzip,
    Zstd,
    /// nix-layer's first gzip encoder (zlib-rs, one stream), selectable as `gzip-zlib` so
    /// benchmarks can compare against it in one run. Not offered in help or the contract.
    GzipZlib,
}

/// gzip level 5, chosen from benches/compress.py on the corpus (docs/benchmarks.md): the
/// fastest libdeflate level whose blobs stay clearly smaller than the old zlib-rs level 6
/// (2 % smaller, about 1.5× less CPU). Level 6 saves another 0.6 % for 20 % more CPU;
/// level 4 is within 0.4 % of the old size, too close to promise "no larger".
pub const GZIP_LEVEL: i32 = 5;
/// The level of the old `gzip-zlib` encoder, as nix-layer used it before libdeflate.
const ZLIB_LEVEL: i32 = 6;
/// zstd level 3: libzstd's default.
pub const ZSTD_LEVEL: i32 = 3;
/// gzip header OS byte: 255 ("unknown"), so the bytes do not depend on the build host.
const GZIP_OS_UNKNOWN: u8 = 255;

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::GzipZlib => "gzip-zlib",
        }
    }

    /// Accepted levels. zstd stops at 19: levels 20-22 need windows of up to 128 MiB per
    /// layer being written.
    fn levels(self) -> Option<std::ops::RangeInclusive<i32>> {
        match self {
            Codec::None => None,
            Codec::Gzip => Some(1..=12),
            Codec::Zstd => Some(1..=19),
            Codec::GzipZlib => Some(1..=9),
        }
    }

    fn default_level(self) -> i32 {
        match self {
            Codec::None => 0,
            Codec::Gzip => GZIP_LEVEL,
            Codec::GzipZlib => ZLIB_LEVEL,
            Codec::Zstd => ZSTD_LEVEL,
        }
    }
}

#[allow(non_upper_case_globals)] // They stand for what were enum variants.
impl Compression {
    /// Uncompressed tar.
    pub const None: Compression = Compression { codec: Codec::None, level: 0 };
    /// gzip at [`GZIP_LEVEL`].
    pub const Gzip: Compression = Compression { codec: Codec::Gzip, level: GZIP_LEVEL };
    /// zstd at [`ZSTD_LEVEL`].
    pub const Zstd: Compression = Compression { codec: Codec::Zstd, level: ZSTD_LEVEL };

    /// One value per codec offered to users, at its default level.
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    /// The codec's name (`none`, `gzip`, `zstd`), without the level.
    pub fn as_str(&self) -> &'static str {
        self.codec.name()
    }

    /// The compression level (0 for `none`).
    pub fn level(&self) -> i32 {
        self.level
    }

    /// The same codec at `level`; an error names the accepted range.
    pub fn with_level(self, level: i64) -> Result<Compression, Error> {
        let bad = |accepted: String| Error::BadCompressionLevel {
            spec: format!("{}:{level}", self.as_str()),
            accepted,
        };
        let Some(range) = self.codec.levels() else {
            return Err(bad("absent: `none` has no levels".into()));
        };
        match i32::try_from(level) {
            Ok(l) if range.contains(&l) => Ok(Compression { codec: self.codec, level: l }),
            _ => Err(bad(format!("{} to {} for {}", range.start(), range.end(), self.as_str()))),
        }
    }

    /// Everything that decides the compressed bytes: codec, level, encoder and its version,
    /// member size. Cache keys and the registry's layer index include it, so a blob made
    /// with other settings (or by another encoder) is never served for these. The versions
    /// are the exact pins in the workspace Cargo.toml: change both together.
    pub fn identity(&self) -> String {
        match self.codec {
            Codec::None => "none".into(),
            Codec::Gzip => format!("gzip:{} libdeflate-1.26.1 members-{}", self.level, MEMBER_SIZE),
            Codec::Zstd => format!("zstd:{} zstd-0.13.5", self.level),
            Codec::GzipZlib => format!("gzip:{} zlib-rs chunks-{CHUNK}", self.level),
        }
    }

    /// The OCI media type of a layer stored this way.
    pub fn layer_media_type(&self) -> &'static str {
        match self.codec {
            Codec::None => "application/vnd.oci.image.layer.v1.tar",
            Codec::Gzip | Codec::GzipZlib => "application/vnd.oci.image.layer.v1.tar+gzip",
            Codec::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The compression named by an OCI or Docker layer media type, if it is a layer type
    /// (at the default level: a media type does not say which level made a blob).
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
        Ok(match self.codec {
            Codec::None => Box::new(inner),
            // MultiGzDecoder: nix-layer's own gzip, `pigz` and concatenated streams are
            // several members.
            Codec::Gzip | Codec::GzipZlib => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        })
    }

    /// A compressing writer with these settings: the same bytes in always give the same
    /// bytes out, whatever the thread count. Call [`Encoder::finish`] to write the trailer.
    pub fn encoder<W: Write>(&self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self.codec {
            Codec::None => Encoder::new(Kind::Plain(inner)),
            Codec::Gzip => Encoder::new(Kind::Members(MemberWriter::new(inner, self.level))),
            Codec::GzipZlib => Encoder::new(Kind::Zlib(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(GZIP_OS_UNKNOWN)
                    .write(inner, flate2::Compression::new(self.level as u32)),
            )),
            Codec::Zstd => {
                // zstd::Encoder is single-threaded unless `multithread` is called; worker
                // threads would change the output bytes.
                let mut enc = zstd::stream::write::Encoder::new(inner, self.level)?;
                enc.include_checksum(true)?;
                Encoder::new(Kind::Zstd(enc))
            }
        })
    }
}

/// `gzip`, `zstd` and `none` at the default level, else `gzip:9`.
impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.level != self.codec.default_level() {
            write!(f, ":{}", self.level)?;
        }
        Ok(())
    }
}

/// Parses `CODEC` or `CODEC:LEVEL` (`gzip`, `gzip:9`, `zstd:19`, `none`).
impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, level) = match s.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (s, None),
        };
        let codec = [Codec::None, Codec::Gzip, Codec::Zstd, Codec::GzipZlib]
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| Error::BadCompression(s.to_owned()))?;
        let c = Compression { codec, level: codec.default_level() };
        match level {
            None => Ok(c),
            Some(l) => {
                let n = l.parse::<i64>().map_err(|_| Error::BadCompressionLevel {
                    spec: s.to_owned(),
                    accepted: "a whole number".into(),
                })?;
                c.with_level(n)
            }
        }
    }
}

/// Stored as its [`Display`](fmt::Display) form, so cache entries and the registry's
/// index read `gzip` (default level) as they always have.
impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Bytes handed to zlib-rs per call. Deflate (zlib-rs) output depends on how its input
/// is split, so [`Encoder`] regroups whatever it is given into chunks of exactly this size.
/// Part of the `gzip-zlib` output format.
const CHUNK: usize = 128 * 1024;

/// A compressing writer (or a pass-through) into `W`; see [`Compression::encoder`].
///
/// Its output depends only on the bytes written, never on how they were split into
/// `write` calls or on calls to `flush`: input is regrouped into fixed-size pieces, and
/// `flush` does not flush the compressor (a sync flush would change the stream). All
/// output is complete only after [`Encoder::finish`].
pub struct Encoder<W: Write> {
    kind: Kind<W>,
    pending: Vec<u8>,
}

enum Kind<W: Write> {
    Plain(W),
    Members(MemberWriter<W>),
    Zlib(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Kind<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Kind::Plain(w) => w.write_all(buf),
            Kind::Members(e) => e.write_all(buf),
            Kind::Zlib(e) => e.write_all(buf),
            Kind::Zstd(e) => e.write_all(buf),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn new(kind: Kind<W>) -> Self {
        let pending = match kind {
            Kind::Zlib(_) | Kind::Zstd(_) => Vec::with_capacity(CHUNK),
            // The member writer cuts its input at fixed offsets itself.
            Kind::Plain(_) | Kind::Members(_) => Vec::new(),
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
            Kind::Members(e) => e.finish(),
            Kind::Zlib(e) => e.finish(),
            Kind::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.kind {
            Kind::Plain(w) => return w.write(buf),
            Kind::Members(m) => return m.write(buf),
            Kind::Zlib(_) | Kind::Zstd(_) => {}
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
            Kind::Members(_) | Kind::Zlib(_) | Kind::Zstd(_) => Ok(()),
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

    /// The codecs at default levels, another level, and the old gzip encoder.
    fn every() -> Vec<Compression> {
        let mut all = Compression::ALL.to_vec();
        all.extend(["gzip:1", "zstd:9", "gzip-zlib"].map(|s| s.parse::<Compression>().unwrap()));
        all
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
    fn levels_parse_print_and_are_checked() {
        let g9: Compression = "gzip:9".parse().unwrap();
        assert_eq!((g9.as_str(), g9.level(), g9.to_string()), ("gzip", 9, "gzip:9".to_owned()));
        assert_eq!("gzip:5".parse::<Compression>().unwrap(), Compression::Gzip);
        assert_eq!("gzip:6".parse::<Compression>().unwrap().to_string(), "gzip:6");
        assert_eq!(Compression::Gzip.to_string(), "gzip");
        assert_eq!("zstd:19".parse::<Compression>().unwrap(), Compression::Zstd.with_level(19).unwrap());
        assert_eq!("gzip:12".parse::<Compression>().unwrap().level(), 12);
        for (bad, says) in [
            ("gzip:0", "1 to 12"),
            ("gzip:13", "1 to 12"),
            ("zstd:20", "1 to 19"),
            ("zstd:-1", "1 to 19"),
            ("none:1", "`none` has no levels"),
            ("gzip:x", "a whole number"),
            ("gzip:", "a whole number"),
            ("gzip:99999999999", "1 to 12"),
        ] {
            let err = bad.parse::<Compression>().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("invalid compression"), "{bad}: {err}");
        }
        assert!(Compression::Gzip.with_level(13).is_err());
        assert!(Compression::None.with_level(1).is_err());
    }

    #[test]
    fn serde_uses_the_spec() {
        let g9 = Compression::Gzip.with_level(9).unwrap();
        assert_eq!(serde_json::to_string(&g9).unwrap(), "\"gzip:9\"");
        assert_eq!(serde_json::to_string(&Compression::Gzip).unwrap(), "\"gzip\"");
        assert_eq!(serde_json::from_str::<Compression>("\"gzip:9\"").unwrap(), g9);
        assert_eq!(serde_json::from_str::<Compression>("\"zstd\"").unwrap(), Compression::Zstd);
        assert!(serde_json::from_str::<Compression>("\"gzip:40\"").is_err());
    }

    #[test]
    fn identity_names_codec_level_and_encoder() {
        let ids: Vec<String> = ["none", "gzip", "gzip:9", "zstd", "zstd:9", "gzip-zlib"]
            .iter()
            .map(|s| s.parse::<Compression>().unwrap().identity())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert!(ids[1].starts_with("gzip:5 libdeflate") && ids[5].starts_with("gzip:6 zlib-rs"), "{ids:?}");
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
        for c in every() {
            let packed = compress_bytes(c, &data).unwrap();
            assert_eq!(Compression::detect(&packed).layer_media_type(), c.layer_media_type());
            assert_eq!(decompress(c, &packed), data, "{c}");
            if c != Compression::None {
                assert!(packed.len() < data.len() / 4, "{c} barely compressed");
            }
        }
    }

    #[test]
    fn output_is_deterministic() {
        let data = sample();
        for c in every() {
            assert_eq!(compress_bytes(c, &data).unwrap(), compress_bytes(c, &data).unwrap(), "{c}");
        }
    }

    #[test]
    fn output_ignores_write_sizes_and_flushes() {
        let data = sample();
        for c in every() {
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
        for c in [Compression::Gzip, "gzip-zlib".parse().unwrap()] {
            let packed = compress_bytes(c, b"x").unwrap();
            // magic, deflate, no flags (no name), mtime 0, XFL 0 at levels 5 and 6, OS unknown.
            assert_eq!(&packed[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255], "{}", c.identity());
        }
    }

    /// Pins the compressed bytes: if this fails, a dependency update (zlib-rs, flate2,
    /// libzstd) or a settings change altered layer digests. That is a breaking change for
    /// layer sharing between nix-layer versions: note it in the changelog, then update.
    #[test]
    fn compressed_digests_are_pinned() {
        let data = sample();
        let mut big = data.clone();
        big.extend(data.iter().rev());
        let big: Vec<u8> = big.iter().cycle().take(2 * MEMBER_SIZE + 77).copied().collect();
        let got: Vec<String> = ["none", "gzip", "zstd", "gzip-zlib", "gzip:9", "zstd:9"]
            .iter()
            .map(|s| s.parse::<Compression>().unwrap())
            .flat_map(|c| [&data, &big].map(|d| Digest::of(&compress_bytes(c, d).unwrap()).to_string()))
            .collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [&str; 12] = [
        "sha256:ddde4bfa549e37ad2c9ed77757db1035ff3b292f8ef7dd8e77bda49316d1fe44", // none, small
        "sha256:3335d8de1236f4452187017bf1e1993ae8b86c2b6b78cfcf397e2b62bd075fbc", // none, 2 MiB + 77 bytes
        "sha256:b046f128a950384a4ea98f60d49f372e716c90244cc9ac00b901b6a4018c60f4", // gzip, small
        "sha256:52fe3576f68fd050032e09c7363d2ace295a09620b945fddc815b04d736f26af", // gzip, 2 MiB + 77 bytes
        "sha256:d69c941f9b79b1db97044b345ba80b125e14d2d8be35a76bcf9e854753c70727", // zstd, small
        "sha256:3916058b5e5b788750e14560ea661f76be404d03ac8368a8c142386dae09c99f", // zstd, 2 MiB + 77 bytes
        "sha256:005fba1389881875c7ccffe18690a393cb279d1ae393ef8f93e3a87abd62bb01", // gzip-zlib (the pre-libdeflate gzip, unchanged), small
        "sha256:58fea43557606d9003aa28a120dbead9ca044c197b8ca541b9f4ff73408a422d", // gzip-zlib, 2 MiB + 77 bytes
        "sha256:1541bf554fcf315b6cca90bd1889d3875102aad841afcb219a6e2079ccc6f93b", // gzip:9, small
        "sha256:d255cd61d593b387ff4b31c57ff1283204f0fc14ffc7f505c1af3d73b994614d", // gzip:9, 2 MiB + 77 bytes
        "sha256:7cad4f658cb695ee397af43f5ac50f78235f79e7f395c41b92ac6b93a165a0c0", // zstd:9, small
        "sha256:814dc394ca88b9c1cbefacb4a741c3c50193e916aeeb80f470c5d9380ea9599a", // zstd:9, 2 MiB + 77 bytes
    ];

    /// Compressible, not repetitive at any short period: text lines with a counter and a
    /// pseudo-random word.
    fn layer_like(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut i = 0u64;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend(format!("{i} /nix/store/{:016x}-pkg/lib/file{} {}\n", x, x % 97, x % 7).bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Splits multi-member gzip into its members' decompressed contents.
    fn members(packed: &[u8]) -> Vec<Vec<u8>> {
        let mut rest = packed;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(rest);
            let mut m = Vec::new();
            d.read_to_end(&mut m).unwrap();
            rest = d.into_inner();
            out.push(m);
        }
        out
    }

    #[test]
    fn gzip_members_are_cut_at_fixed_offsets() {
        for len in [0, 1, MEMBER_SIZE - 1, MEMBER_SIZE, MEMBER_SIZE + 1, 3 * MEMBER_SIZE + 5] {
            let data = layer_like(len);
            let packed = compress_bytes(Compression::Gzip, &data).unwrap();
            let parts = members(&packed);
            // An empty layer is still one (empty) member: zero bytes are not gzip.
            assert_eq!(parts.len(), len.div_ceil(MEMBER_SIZE).max(1), "{len} bytes");
            for (i, part) in parts.iter().enumerate() {
                let start = i * MEMBER_SIZE;
                assert_eq!(part[..], data[start..(start + MEMBER_SIZE).min(len)], "member {i} of {len}");
            }
            assert_eq!(decompress(Compression::Gzip, &packed), data, "{len} bytes through MultiGzDecoder");
        }
    }

    #[test]
    fn gzip_is_the_same_on_any_thread_count() {
        let data = layer_like(5 * MEMBER_SIZE + 123);
        let outside = compress_bytes(Compression::Gzip, &data).unwrap();
        let mut enc = Compression::Gzip.encoder(Vec::new()).unwrap();
        for (i, p) in data.chunks(MEMBER_SIZE / 3 + 1).enumerate() {
            enc.write_all(p).unwrap();
            if i % 2 == 0 {
                enc.flush().unwrap();
            }
        }
        assert!(enc.finish().unwrap() == outside, "write sizes changed the bytes");
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let inside = pool.install(|| compress_bytes(Compression::Gzip, &data).unwrap());
            assert!(inside == outside, "{threads} threads changed the bytes");
        }
    }

    /// Layers compressed side by side on a small pool, as the pipeline does, while each
    /// also hands its members to the same pool: no deadlock, same bytes as alone.
    #[test]
    fn parallel_layers_share_the_pool() {
        use rayon::prelude::*;
        let layers: Vec<Vec<u8>> = (0..5).map(|i| layer_like(i * MEMBER_SIZE + 999)).collect();
        let alone: Vec<Vec<u8>> =
            layers.iter().map(|l| compress_bytes(Compression::Gzip, l).unwrap()).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let together: Vec<Vec<u8>> = pool.install(|| {
            layers.par_iter().with_max_len(1).map(|l| compress_bytes(Compression::Gzip, l).unwrap()).collect()
        });
        assert!(together == alone);
    }

    /// The default gzip must not make blobs larger than nix-layer's first encoder
    /// (zlib-rs level 6), here on real machine code: this test's own executable.
    #[test]
    fn gzip_is_no_larger_than_the_old_encoder() {
        let mut exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        exe.truncate(3 * MEMBER_SIZE);
        let old = compress_bytes("gzip-zlib".parse().unwrap(), &exe).unwrap().len();
        let new = compress_bytes(Compression::Gzip, &exe).unwrap().len();
        assert!(new <= old, "libdeflate {new} bytes, zlib-rs {old} bytes for {} bytes", exe.len());
    }

    #[test]
    fn concatenated_gzip_members_decode_whole() {
        let mut packed = compress_bytes(Compression::Gzip, b"hello ").unwrap();
        packed.extend(compress_bytes(Compression::Gzip, b"world").unwrap());
        assert_eq!(decompress(Compression::Gzip, &packed), b"hello world");
    }
}
