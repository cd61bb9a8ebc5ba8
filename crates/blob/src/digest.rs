use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// A sha256 content digest, written `sha256:<64 lower-case hex digits>` as in OCI descriptors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the `sha256:` prefix (blob file names use this).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Digest of an in-memory byte string.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Digest and length of everything `reader` yields.
    pub fn of_reader(reader: &mut dyn Read) -> io::Result<(Self, u64)> {
        let mut w = HashingWriter::new(io::sink());
        io::copy(reader, &mut w)?;
        let (_, digest, len) = w.finish();
        Ok((digest, len))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadDigest { input: s.to_owned(), reason };
        let (algorithm, encoded) = s.split_once(':').ok_or_else(|| bad("no `algorithm:` prefix"))?;
        if algorithm != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if encoded.len() != 64 {
            return Err(bad("a sha256 digest has exactly 64 hex digits"));
        }
        // OCI requires lower-case hex; accepting upper case would let two spellings
        // name one blob.
        if !encoded.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("the digest must be lower-case hex"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(encoded, &mut bytes).map_err(|_| bad("not valid hex"))?;
        Ok(Digest(bytes))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that passes bytes through to `inner` while counting them and hashing them with
/// sha256, so a stream is measured in the same pass that writes it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.count
    }

    /// Digest of the bytes accepted so far (the writer can keep going).
    pub fn digest(&self) -> Digest {
        Digest(self.hasher.clone().finalize().into())
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writing through this reference bypasses the hash.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest(self.hasher.finalize().into()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer accepted is part of the stream.
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }

    pub fn bytes_read(&self) -> u64 {
        self.count
    }

    /// The inner reader, the digest and the count of the bytes read so far.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, Digest(self.hasher.finalize().into()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("abc") from FIPS 180-2.
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn display_and_parse_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string(), ABC);
        assert_eq!(ABC.parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex(), &ABC[7..]);
        assert_eq!(format!("{d:?}"), format!("Digest({ABC})"));
    }

    #[test]
    fn rejects_other_algorithms_and_lengths() {
        let hex64 = &ABC[7..];
        for bad in [
            String::new(),
            hex64.to_owned(),
            format!("sha512:{hex64}"),
            format!("SHA256:{hex64}"),
            format!("sha256:{}", &hex64[..63]),
            format!("sha256:{hex64}0"),
            format!("sha256:{}", hex64.to_uppercase()),
            format!("sha256:{}g", &hex64[..63]),
            format!("sha256: {}", &hex64[..63]),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(matches!(err, Error::BadDigest { .. }), "{bad:?} gave {err}");
            assert!(err.to_string().contains("sha256:"), "{err}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Digest::of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{ABC}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let err = serde_json::from_str::<Digest>("\"md5:abc\"").unwrap_err();
        assert!(err.to_string().contains("only sha256"), "{err}");
    }

    #[test]
    fn hashing_writer_counts_and_hashes_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        assert_eq!(w.bytes_written(), 3);
        assert_eq!(w.digest(), Digest::of(b"abc"));
        let (inner, digest, n) = w.finish();
        assert_eq!((inner.as_slice(), digest, n), (&b"abc"[..], Digest::of(b"abc"), 3));
    }

    #[test]
    fn hashing_writer_hashes_only_accepted_bytes() {
        // A writer that takes at most two bytes per call.
        struct Small(Vec<u8>);
        impl Write for Small {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(2);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = HashingWriter::new(Small(Vec::new()));
        assert_eq!(w.write(b"abcde").unwrap(), 2);
        w.write_all(b"cde").unwrap();
        let (inner, digest, n) = w.finish();
        assert_eq!(inner.0, b"abcde");
        assert_eq!((digest, n), (Digest::of(b"abcde"), 5));
    }

    #[test]
    fn of_reader_and_hashing_reader_agree() {
        let data = vec![7u8; 100_000];
        let (d, n) = Digest::of_reader(&mut &data[..]).unwrap();
        assert_eq!((d, n), (Digest::of(&data), 100_000));
        let mut r = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.bytes_read(), 100_000);
        let (_, d2, n2) = r.finish();
        assert_eq!((d2, n2), (d, n));
    }
}
