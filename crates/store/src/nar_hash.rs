use std::fmt;

use crate::{nixbase32, Error};

/// The SHA-256 of a store path's NAR serialisation.
///
/// Nix prints it in several spellings: `sha256:<nix32>` (exportReferencesGraph),
/// `sha256-<base64>` (SRI, `nix path-info --json`), and bare or prefixed
/// base-16 (`nix-store --dump-db`, the Nix database). All parse to the same value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash([u8; 32]);

impl NarHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NarHash(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadHash(s.to_owned());
        let bytes = if let Some(b64) = s.strip_prefix("sha256-") {
            base64_decode(b64).ok_or_else(bad)?
        } else {
            let body = s.strip_prefix("sha256:").unwrap_or(s);
            match body.len() {
                64 => hex::decode(body).map_err(|_| bad())?,
                52 => nixbase32::decode(body, 32).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(NarHash(arr))
    }

    /// `sha256:<base16>`, the spelling the Nix database stores.
    pub fn to_base16(&self) -> String {
        format!("sha256:{}", hex::encode(self.0))
    }

    /// `sha256:<nix32>`, the spelling of exportReferencesGraph.
    pub fn to_nix32(&self) -> String {
        format!("sha256:{}", nixbase32::encode(&self.0))
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32())
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One hash in the three spellings Nix uses (checked with `nix hash to-sri`).
    const HEX: &str = "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6";

    #[test]
    fn all_spellings_agree() {
        let h = NarHash::parse(HEX).unwrap();
        assert_eq!(NarHash::parse(&format!("sha256:{HEX}")).unwrap(), h);
        assert_eq!(NarHash::parse(&h.to_nix32()).unwrap(), h);
        assert_eq!(h.to_base16(), format!("sha256:{HEX}"));
        let sri = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";
        assert_eq!(NarHash::parse(sri).unwrap(), h);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "sha256:xyz", "md5:abcd", "sha256-!!!!", &HEX[..60]] {
            assert!(NarHash::parse(bad).is_err(), "{bad}");
        }
    }
}
