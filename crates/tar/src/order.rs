//! The order in which layer entries are written, and how Python sees names.
//!
//! nixpkgs sorts `pathlib.Path` objects, which compare as lists of components,
//! each component a `str` decoded from the file name with `surrogateescape`.
//! We reproduce that from raw bytes.

use std::cmp::Ordering;

/// Compares two `/`-separated paths the way Python's `sorted()` orders
/// `pathlib.Path` objects: as lists of components, so `share/a` <
/// `share/a/f` < `share/a-b` (plain byte order would put `share/a-b` first).
///
/// Components compare by bytes when both are valid UTF-8. Otherwise they
/// compare by the code points Python decodes with `surrogateescape` (an
/// undecodable byte `b` becomes U+DC00+`b`), which differs from byte order
/// only for such names, e.g. a lone `0xff` sorts before U+E000.
///
/// Empty components are ignored, so `/a`, `a` and `a/` compare equal; pass
/// paths of one kind (all absolute or all relative) without `.` or `..`.
pub fn component_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let mut left = components(a);
    let mut right = components(b);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match name_cmp(x, y) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty())
}

/// Compares two single file names like Python compares their `str` forms.
pub(crate) fn name_cmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    // For valid UTF-8, byte order is code point order; only undecodable
    // bytes need the slower path.
    if std::str::from_utf8(a).is_ok() && std::str::from_utf8(b).is_ok() {
        return a.cmp(b);
    }
    python_chars(a).cmp(python_chars(b))
}

/// The code points of `bytes` decoded as UTF-8 with `surrogateescape`, as
/// `os.fsdecode` does on Linux: each byte that is not part of a valid UTF-8
/// sequence becomes one code point U+DC80..U+DCFF.
pub(crate) fn python_chars(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(u32::from);
        let invalid = chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b));
        valid.chain(invalid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<&[u8]>) -> Vec<&[u8]> {
        v.sort_by(|a, b| component_cmp(a, b));
        v
    }

    #[test]
    fn components_before_bytes() {
        let got = sorted(vec![b"share/a-b", b"share/a/f", b"share/a.b", b"share/a", b"share"]);
        let want: Vec<&[u8]> = vec![b"share", b"share/a", b"share/a/f", b"share/a-b", b"share/a.b"];
        assert_eq!(got, want);
    }

    #[test]
    fn parent_before_children_and_prefix_names() {
        assert_eq!(component_cmp(b"/nix/store/x", b"/nix/store/x/y"), Ordering::Less);
        assert_eq!(component_cmp(b"a/b", b"ab"), Ordering::Less);
        assert_eq!(component_cmp(b"ab", b"a/b"), Ordering::Greater);
        assert_eq!(component_cmp(b"a", b"a/"), Ordering::Equal);
    }

    #[test]
    fn utf8_names_sort_by_code_point() {
        // U+00E9 (c3 a9) < U+4E2D (e4 b8 ad) < U+1F600 (f0 9f 98 80).
        let got = sorted(vec!["\u{1F600}".as_bytes(), "中".as_bytes(), "é".as_bytes(), b"z"]);
        let want: Vec<&[u8]> = vec![b"z", "é".as_bytes(), "中".as_bytes(), "\u{1F600}".as_bytes()];
        assert_eq!(got, want);
    }

    #[test]
    fn undecodable_bytes_sort_like_python_surrogates() {
        // Python: "\udcff" < "\ue000" although 0xff > 0xee as bytes.
        assert_eq!(name_cmp(b"\xff", "\u{E000}".as_bytes()), Ordering::Less);
        // And "\udcff" > "\ud7ff"-range chars like U+D7FF (ed 9f bf).
        assert_eq!(name_cmp(b"\xff", "\u{D7FF}".as_bytes()), Ordering::Greater);
        // A truncated sequence is two escaped bytes, then the rest decodes.
        let chars: Vec<u32> = python_chars(b"\xe2\x82A").collect();
        assert_eq!(chars, vec![0xDCE2, 0xDC82, 0x41]);
    }
}
