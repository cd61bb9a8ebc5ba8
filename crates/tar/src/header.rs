//! Header encoding, following CPython's `tarfile` in `PAX_FORMAT` field by field.

use std::borrow::Cow;

use crate::order::python_chars;

pub(crate) const BLOCK: u64 = 512;
/// `tarfile` pads a finished archive to a multiple of 20 blocks, like `tar -b20`.
pub(crate) const RECORD: u64 = 20 * BLOCK;

/// Octal fields hold `digits - 1` digits plus a NUL; larger values go to PAX.
const MAX_ID: u64 = 8u64.pow(7);
const MAX_SIZE: u64 = 8u64.pow(11);
const NAME_LEN: usize = 100;
const OWNER_NAME_LEN: usize = 32;

/// What an entry is, with the data that depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Regular { size: u64 },
    Directory,
    Symlink { target: Vec<u8> },
}

/// One archive member. Fields are written as given: callers force owners and
/// mtimes. `name` is raw bytes (file names need not be UTF-8); a directory's
/// name gets a trailing `/` if it lacks one, as `tarfile` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Only the permission bits (`& 0o7777`) are written.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
}

impl Header {
    pub(crate) fn size(&self) -> u64 {
        match self.kind {
            EntryKind::Regular { size } => size,
            EntryKind::Directory | EntryKind::Symlink { .. } => 0,
        }
    }

    fn member_name(&self) -> Cow<'_, [u8]> {
        if self.kind == EntryKind::Directory && !self.name.ends_with(b"/") {
            let mut name = self.name.clone();
            name.push(b'/');
            Cow::Owned(name)
        } else {
            Cow::Borrowed(&self.name)
        }
    }

    fn link_name(&self) -> &[u8] {
        match &self.kind {
            EntryKind::Symlink { target } => target,
            _ => b"",
        }
    }

    fn type_flag(&self) -> u8 {
        match self.kind {
            EntryKind::Regular { .. } => b'0',
            EntryKind::Directory => b'5',
            EntryKind::Symlink { .. } => b'2',
        }
    }
}

/// Bytes [`TarWriter::append`](crate::TarWriter::append) writes for this
/// entry: the PAX header if one is needed, the ustar header, and the data
/// padded to 512 bytes. Summing it over all entries and passing the sum to
/// [`archive_len`] gives the archive's exact size before writing it.
pub fn header_len(h: &Header) -> u64 {
    let pax = match pax_records(h) {
        Some(records) => BLOCK + padded(records.len() as u64),
        None => 0,
    };
    pax + BLOCK + padded(h.size())
}

/// Size of a finished archive whose entries take `entries_len` bytes: two
/// zero blocks, then zeros up to a multiple of 10240 bytes.
pub fn archive_len(entries_len: u64) -> u64 {
    padded_to(entries_len + 2 * BLOCK, RECORD)
}

pub(crate) fn padded(len: u64) -> u64 {
    padded_to(len, BLOCK)
}

fn padded_to(len: u64, unit: u64) -> u64 {
    len.div_ceil(unit) * unit
}

/// The header blocks of `h` (PAX header first if needed), without data: what
/// an archive writer that places member data itself (at known offsets, from
/// several threads) writes before each member.
pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * BLOCK as usize);
    encode(h, &mut out);
    out
}

/// Appends the header blocks of `h` (PAX header first if needed) to `out`.
pub(crate) fn encode(h: &Header, out: &mut Vec<u8>) {
    if let Some(records) = pax_records(h) {
        let pax = UstarFields {
            name: b"././@PaxHeader",
            mode: 0,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            type_flag: b'x',
            link: b"",
            uname: b"",
            gname: b"",
        };
        out.extend_from_slice(&pax.block());
        out.extend_from_slice(&records);
        out.resize(out.len() + (padded(records.len() as u64) as usize - records.len()), 0);
    }
    let member_name = h.member_name();
    let name = ascii_replaced(&member_name, NAME_LEN);
    let link = ascii_replaced(h.link_name(), NAME_LEN);
    let uname = ascii_replaced(h.uname.as_bytes(), OWNER_NAME_LEN);
    let gname = ascii_replaced(h.gname.as_bytes(), OWNER_NAME_LEN);
    // Values too large for their octal field are 0 here; PAX carries them.
    let fits = |v: u64, max: u64| if v < max { v } else { 0 };
    let fields = UstarFields {
        name: &name,
        mode: h.mode & 0o7777,
        uid: fits(h.uid, MAX_ID),
        gid: fits(h.gid, MAX_ID),
        size: fits(h.size(), MAX_SIZE),
        mtime: fits(h.mtime, MAX_SIZE),
        type_flag: h.type_flag(),
        link: &link,
        uname: &uname,
        gname: &gname,
    };
    out.extend_from_slice(&fields.block());
}

/// The PAX extended-header payload `tarfile` would write for `h`, if any:
/// records in its fixed order, each `"<len> <key>=<value>\n"`.
fn pax_records(h: &Header) -> Option<Vec<u8>> {
    let name = h.member_name();
    let mut records: Vec<(&str, Cow<'_, [u8]>)> = Vec::new();
    // Non-ASCII always needs PAX, so the character-count test only ever sees
    // ASCII, where characters are bytes.
    let needs_text = |v: &[u8], limit: usize| !v.is_ascii() || v.len() > limit;
    if needs_text(&name, NAME_LEN) {
        records.push(("path", name.clone()));
    }
    if needs_text(h.link_name(), NAME_LEN) {
        records.push(("linkpath", Cow::Borrowed(h.link_name())));
    }
    if needs_text(h.uname.as_bytes(), OWNER_NAME_LEN) {
        records.push(("uname", Cow::Borrowed(h.uname.as_bytes())));
    }
    if needs_text(h.gname.as_bytes(), OWNER_NAME_LEN) {
        records.push(("gname", Cow::Borrowed(h.gname.as_bytes())));
    }
    for (key, value, max) in [
        ("uid", h.uid, MAX_ID),
        ("gid", h.gid, MAX_ID),
        ("size", h.size(), MAX_SIZE),
        ("mtime", h.mtime, MAX_SIZE),
    ] {
        if value >= max {
            records.push((key, Cow::Owned(value.to_string().into_bytes())));
        }
    }
    if records.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    // `tarfile` flags raw (non-UTF-8) values with a leading hdrcharset record;
    // the values themselves are the original bytes either way.
    if records.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        out.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in &records {
        let len = record_len(key.len() + value.len() + 3);
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    Some(out)
}

/// A record's length prefix counts its own digits. This is `tarfile`'s
/// fixed-point iteration, kept as is so boundary cases (e.g. 99 vs 100)
/// come out the same.
fn record_len(body: usize) -> usize {
    let mut prev = 0;
    loop {
        let next = body + prev.to_string().len();
        if next == prev {
            return prev;
        }
        prev = next;
    }
}

/// The field bytes `tarfile` writes for a string: ASCII kept, every other
/// character (a valid UTF-8 sequence, or one undecodable byte) as `?`, cut at
/// `limit` bytes.
fn ascii_replaced(value: &[u8], limit: usize) -> Cow<'_, [u8]> {
    if value.is_ascii() {
        return Cow::Borrowed(&value[..value.len().min(limit)]);
    }
    let out = python_chars(value).take(limit).map(|c| if c < 0x80 { c as u8 } else { b'?' }).collect();
    Cow::Owned(out)
}

struct UstarFields<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    type_flag: u8,
    link: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
}

impl UstarFields<'_> {
    fn block(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        put_text(&mut b[0..100], self.name);
        put_octal(&mut b[100..108], u64::from(self.mode));
        put_octal(&mut b[108..116], self.uid);
        put_octal(&mut b[116..124], self.gid);
        put_octal(&mut b[124..136], self.size);
        put_octal(&mut b[136..148], self.mtime);
        b[148..156].fill(b' ');
        b[156] = self.type_flag;
        put_text(&mut b[157..257], self.link);
        b[257..265].copy_from_slice(b"ustar\x0000");
        put_text(&mut b[265..297], self.uname);
        put_text(&mut b[297..329], self.gname);
        // devmajor, devminor (329..345) and prefix (345..500) stay NUL:
        // `tarfile` leaves them empty for non-device entries.
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        put_octal(&mut b[148..155], u64::from(sum));
        b
    }
}

fn put_text(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal in all but the last byte, which stays NUL.
fn put_octal(field: &mut [u8], mut value: u64) {
    let digits = field.len() - 1;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    debug_assert_eq!(value, 0, "caller must route large values through PAX");
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8], size: u64) -> Header {
        Header {
            name: name.to_vec(),
            kind: EntryKind::Regular { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        }
    }

    fn encoded(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        encode(h, &mut out);
        out
    }

    #[test]
    fn plain_ustar_fields() {
        let b = encoded(&file(b"/nix/store/x", 5));
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..13], b"/nix/store/x\0");
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[124..136], b"00000000005\0");
        assert_eq!(&b[136..148], b"00000000001\0");
        assert_eq!(b[156], b'0');
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[265..270], b"root\0");
        assert!(b[329..].iter().all(|&x| x == 0));
        // Checksum: six octal digits, NUL, space; sum taken with spaces there.
        assert_eq!(&b[154..156], b"\0 ");
        let mut copy = b.clone();
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|&x| u32::from(x)).sum();
        assert_eq!(&b[148..154], format!("{sum:06o}").as_bytes());
    }

    #[test]
    fn directory_gets_slash_and_mode_is_masked() {
        let mut h = file(b"etc", 0);
        h.kind = EntryKind::Directory;
        h.mode = 0o041777;
        let b = encoded(&h);
        assert_eq!(&b[0..5], b"etc/\0");
        assert_eq!(&b[100..108], b"0001777\0");
        assert_eq!(b[156], b'5');
    }

    #[test]
    fn long_name_goes_to_pax_with_truncated_field() {
        let name = vec![b'n'; 101];
        let b = encoded(&file(&name, 0));
        assert_eq!(b.len(), 512 * 3);
        assert_eq!(&b[0..15], b"././@PaxHeader\0");
        assert_eq!(b[156], b'x');
        // "111 path=" + 101 bytes + "\n" = 3 + 1 + 5 + 101 + 1 = 111 bytes.
        let rec = format!("111 path={}\n", "n".repeat(101));
        assert_eq!(&b[512..512 + rec.len()], rec.as_bytes());
        assert_eq!(&b[124..136], format!("{:011o}\0", rec.len()).as_bytes());
        assert_eq!(&b[1024..1124], &name[..100]);
        assert_eq!(header_len(&file(&name, 0)), 1536);
    }

    #[test]
    fn record_len_counts_its_own_digits() {
        assert_eq!(record_len(8), 9);
        assert_eq!(record_len(97), 99);
        assert_eq!(record_len(98), 101);
        assert_eq!(record_len(99), 102);
        assert_eq!(record_len(997), 1001);
    }

    #[test]
    fn non_utf8_name_is_binary_and_question_marks() {
        let b = encoded(&file(b"caf\xe9/\xe2\x82A", 0));
        let payload = &b[512..1024];
        assert!(payload.starts_with(b"21 hdrcharset=BINARY\n17 path=caf\xe9/\xe2\x82A\n"));
        assert_eq!(&b[1024..1033], b"caf?/??A\0");
    }

    #[test]
    fn big_numbers_go_to_pax_and_zero_the_field() {
        let mut h = file(b"f", 8u64.pow(11));
        h.uid = 8u64.pow(7);
        h.gid = 8u64.pow(7) - 1;
        let b = encoded(&h);
        let payload = &b[512..1024];
        assert!(payload.starts_with(b"15 uid=2097152\n19 size=8589934592\n"));
        let ustar = &b[1024..];
        assert_eq!(&ustar[108..116], b"0000000\0");
        assert_eq!(&ustar[116..124], b"7777777\0");
        assert_eq!(&ustar[124..136], b"00000000000\0");
    }

    #[test]
    fn header_len_counts_the_pax_header_of_large_times_and_ids() {
        // A docker-archive member must be sized with its real mtime: past
        // 8^11 s (year 4147) the header grows by a PAX header.
        let mut h = file(b"0123456789abcdef/layer.tar", 10);
        assert_eq!(header_len(&h), 1024);
        h.mtime = 253_402_300_799;
        assert_eq!(header_len(&h), 512 + 512 + 512 + 512);
        assert_eq!(encoded(&h).len() as u64, header_len(&h) - 512);
        assert!(encoded(&h)[512..].starts_with(b"22 mtime=253402300799\n"));
        h.uid = u64::from(u32::MAX);
        assert!(encoded(&h)[512..].starts_with(b"18 uid=4294967295\n22 mtime=253402300799\n"));
        assert_eq!(encoded(&h).len() as u64, header_len(&h) - 512);
    }

    #[test]
    fn lengths() {
        assert_eq!(archive_len(0), 10240);
        assert_eq!(archive_len(9216), 10240);
        assert_eq!(archive_len(9217), 20480);
        assert_eq!(header_len(&file(b"f", 0)), 512);
        assert_eq!(header_len(&file(b"f", 1)), 1024);
        assert_eq!(header_len(&file(b"f", 512)), 1024);
    }
}
