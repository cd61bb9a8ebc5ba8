//! Identifiers scanners match on (purl, CPE) and the content-derived UUID
//! that makes a document's serial number deterministic.

use sha2::{Digest as _, Sha256};

use crate::name::{Kind, StoreName};

/// `pkg:nix/<name>@<version>`, as sbomnix and bombon write it, with the
/// output as the `output` qualifier when it is not `out` (so `openssl` and
/// `openssl-bin` differ; scanners ignore qualifiers when matching). Files get
/// none: see [`Kind::File`].
pub fn purl(n: &StoreName) -> Option<String> {
    if n.kind != Kind::Package {
        return None;
    }
    let mut s = format!("pkg:nix/{}", percent(n.name));
    if !n.version.is_empty() {
        s.push('@');
        s.push_str(&percent(n.version));
    }
    if let Some(o) = n.output {
        s.push_str("?output=");
        s.push_str(&percent(o));
    }
    Some(s)
}

/// `cpe:2.3:a:<vendor>:<product>:<version>:*:*:*:*:*:*:*` with the product
/// (the lower-cased name) as vendor, the fallback sbomnix uses without its
/// dictionary. Only for packages whose version starts with a digit: a CPE
/// without a usable version matches every release.
pub fn cpe(n: &StoreName) -> Option<String> {
    if n.kind != Kind::Package || !n.version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let product = cpe_escape(&n.name.to_ascii_lowercase());
    Some(format!("cpe:2.3:a:{product}:{product}:{}:*:*:*:*:*:*:*", cpe_escape(n.version)))
}

/// Quotes what CPE 2.3's formatted-string binding does not allow bare
/// (store names may hold `+`, `?` and `=`; `?` would be a wildcard).
fn cpe_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything but the purl spec's unreserved characters and
/// `:`, which the spec says stays bare (`sha256:…` digests as versions).
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name-based UUID of `content`: the first 16 bytes of its SHA-256 with
/// version 8 and the RFC 9562 variant (RFC 9562 §5.8 and its SHA-256 example
/// in appendix B.2). Same content, same UUID.
pub fn content_uuid(content: &[u8]) -> String {
    let h = Sha256::digest(content);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::parse_store_name;

    #[test]
    fn purls() {
        let p = |s| purl(&parse_store_name(s));
        assert_eq!(p("openssl-3.0.13").as_deref(), Some("pkg:nix/openssl@3.0.13"));
        assert_eq!(p("openssl-3.0.13-bin").as_deref(), Some("pkg:nix/openssl@3.0.13?output=bin"));
        assert_eq!(p("gtk+3-3.24.41").as_deref(), Some("pkg:nix/gtk%2B3@3.24.41"));
        assert_eq!(
            p("openssh-client-9.2p1-2+deb12u6").as_deref(),
            Some("pkg:nix/openssh-client@9.2p1-2%2Bdeb12u6")
        );
        assert_eq!(p("bash-interactive").as_deref(), Some("pkg:nix/bash-interactive"));
        assert_eq!(p("source"), None);
        assert_eq!(p("hello-2.12.1.tar.gz"), None);
    }

    #[test]
    fn cpes() {
        let c = |s| cpe(&parse_store_name(s));
        assert_eq!(
            c("openssl-3.0.13-bin").as_deref(),
            Some("cpe:2.3:a:openssl:openssl:3.0.13:*:*:*:*:*:*:*")
        );
        assert_eq!(c("SDL2-2.30.2").as_deref(), Some("cpe:2.3:a:sdl2:sdl2:2.30.2:*:*:*:*:*:*:*"));
        assert_eq!(c("gtk+3-3.24.41").as_deref(), Some(r"cpe:2.3:a:gtk\+3:gtk\+3:3.24.41:*:*:*:*:*:*:*"));
        assert_eq!(c("foo?x=1-1.0").as_deref(), Some(r"cpe:2.3:a:foo\?x\=1:foo\?x\=1:1.0:*:*:*:*:*:*:*"));
        // Without a version, or a version that is not one, no CPE.
        assert_eq!(c("bash-interactive"), None);
        assert_eq!(c("foo-_bar"), None);
        assert_eq!(c("source"), None);
    }

    #[test]
    fn uuids_are_deterministic_and_well_formed() {
        let a = content_uuid(b"one");
        assert_eq!(a, content_uuid(b"one"));
        assert_ne!(a, content_uuid(b"two"));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('8'), "{a}");
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{a}");
    }
}
