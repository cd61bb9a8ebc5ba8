use std::io::{self, Read, Write};

use crate::header::{self, padded, Header, BLOCK, RECORD};
use crate::Error;

/// Staging buffer: headers and data of small files are batched into few large
/// writes, and file data is read straight into it (one copy, no per-file
/// allocation). Large enough to keep reads efficient, small enough that many
/// writers can run at once.
const BUF_SIZE: usize = 512 * 1024;

/// Streams a PAX tar archive that is byte-identical to what CPython's
/// `tarfile.open(mode="w|", format=tarfile.PAX_FORMAT)` writes for the same
/// members.
///
/// Output is buffered internally; call [`TarWriter::finish`] to write the end
/// of the archive and flush. After any error the archive is incomplete and
/// the writer refuses further entries.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Box<[u8]>,
    filled: usize,
    written: u64,
    header: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            filled: 0,
            written: 0,
            header: Vec::with_capacity(3 * BLOCK as usize),
            poisoned: false,
        }
    }

    /// Appends one member. For a regular file, copies exactly `size` bytes
    /// from `data` (an error if it yields fewer: the file changed while being
    /// read) and pads them to 512 bytes; other kinds do not read `data`.
    pub fn append(&mut self, h: &Header, data: &mut dyn Read) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.poisoned = true;
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        header::encode(h, &mut header);
        let result = self.put(&header).and_then(|()| self.copy_data(h, data));
        self.header = header;
        result?;
        self.poisoned = false;
        Ok(())
    }

    /// [`TarWriter::append`] with the data in memory; its length must match
    /// the header's size.
    pub fn append_bytes(&mut self, h: &Header, data: &[u8]) -> Result<(), Error> {
        if data.len() as u64 != h.size() {
            return Err(Error::SizeMismatch {
                name: String::from_utf8_lossy(&h.name).into_owned(),
                expected: h.size(),
                got: data.len() as u64,
            });
        }
        self.append(h, &mut { data })
    }

    /// Writes the two closing zero blocks, pads to a 10240-byte record,
    /// flushes, and returns the destination.
    pub fn finish(mut self) -> Result<W, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let end = header::archive_len(self.written);
        self.zeros(end - self.written)?;
        self.flush_buf()?;
        self.out.flush().map_err(|source| Error::Write { source })?;
        Ok(self.out)
    }

    /// Bytes of archive produced so far (including what is still buffered).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn copy_data(&mut self, h: &Header, data: &mut dyn Read) -> Result<(), Error> {
        let size = h.size();
        let mut left = size;
        while left > 0 {
            if self.filled == self.buf.len() {
                self.flush_buf()?;
            }
            let room = (self.buf.len() - self.filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            match data.read(&mut self.buf[self.filled..self.filled + room]) {
                Ok(0) => {
                    return Err(Error::ShortRead {
                        name: String::from_utf8_lossy(&h.name).into_owned(),
                        expected: size,
                        got: size - left,
                    })
                }
                Ok(n) => {
                    self.filled += n;
                    self.written += n as u64;
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::ReadData {
                        name: String::from_utf8_lossy(&h.name).into_owned(),
                        source,
                    })
                }
            }
        }
        self.zeros(padded(size) - size)
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            if self.filled == self.buf.len() {
                self.flush_buf()?;
            }
            let n = bytes.len().min(self.buf.len() - self.filled);
            self.buf[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<(), Error> {
        const ZEROS: [u8; RECORD as usize] = [0; RECORD as usize];
        while n > 0 {
            let k = n.min(RECORD) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        let result = self.out.write_all(&self.buf[..self.filled]);
        self.filled = 0;
        result.map_err(|source| Error::Write { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{archive_len, header_len};
    use crate::EntryKind;

    fn header(name: &str, kind: EntryKind) -> Header {
        Header {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        }
    }

    #[test]
    fn empty_archive_is_one_record_of_zeros() {
        let out = TarWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(out, vec![0; 10240]);
    }

    #[test]
    fn data_is_padded_and_lengths_add_up() {
        let entries = [
            (header("a", EntryKind::Regular { size: 3 }), b"abc".to_vec()),
            (header("d", EntryKind::Directory), vec![]),
            (header("l", EntryKind::Symlink { target: b"a".to_vec() }), vec![]),
            (header(&"x".repeat(150), EntryKind::Regular { size: 600 }), vec![7; 600]),
        ];
        let mut w = TarWriter::new(Vec::new());
        let mut expected = 0;
        for (h, data) in &entries {
            w.append_bytes(h, data).unwrap();
            expected += header_len(h);
            assert_eq!(w.bytes_written(), expected);
        }
        let out = w.finish().unwrap();
        assert_eq!(out.len() as u64, archive_len(expected));
        assert_eq!(&out[512..515], b"abc");
        assert!(out[515..1024].iter().all(|&b| b == 0));
    }

    #[test]
    fn data_larger_than_the_buffer_streams_through() {
        let size = BUF_SIZE as u64 * 2 + 5;
        let h = header("big", EntryKind::Regular { size });
        let mut w = TarWriter::new(Vec::new());
        w.append(&h, &mut io::repeat(9).take(size)).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() as u64, archive_len(header_len(&h)));
        assert!(out[512..512 + size as usize].iter().all(|&b| b == 9));
    }

    #[test]
    fn short_reader_is_an_error_naming_the_member() {
        let h = header("nix/store/x/bin/sh", EntryKind::Regular { size: 10 });
        let mut w = TarWriter::new(Vec::new());
        let err = w.append(&h, &mut &b"12345"[..]).unwrap_err();
        assert!(matches!(err, Error::ShortRead { expected: 10, got: 5, .. }), "{err}");
        assert!(err.to_string().contains("nix/store/x/bin/sh"));
        assert!(matches!(w.append(&h, &mut &[0u8; 10][..]), Err(Error::Poisoned)));
        assert!(matches!(w.finish(), Err(Error::Poisoned)));
    }

    #[test]
    fn extra_data_is_ignored_like_tarfile() {
        let h = header("f", EntryKind::Regular { size: 2 });
        let mut w = TarWriter::new(Vec::new());
        w.append(&h, &mut &b"abcdef"[..]).unwrap();
        assert_eq!(w.bytes_written(), 1024);
    }

    #[test]
    fn append_bytes_checks_the_length() {
        let mut w = TarWriter::new(Vec::new());
        let err = w.append_bytes(&header("f", EntryKind::Regular { size: 2 }), b"abc").unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { expected: 2, got: 3, .. }));
        let err = w.append_bytes(&header("d", EntryKind::Directory), b"x").unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { expected: 0, got: 1, .. }));
    }

    #[test]
    fn write_errors_surface() {
        #[derive(Debug)]
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = TarWriter::new(Broken).finish().unwrap_err();
        assert!(matches!(err, Error::Write { .. }));
    }

    #[test]
    fn readable_by_the_tar_crate() {
        let mut w = TarWriter::new(Vec::new());
        w.append_bytes(&header(&"long/".repeat(40), EntryKind::Regular { size: 2 }), b"hi").unwrap();
        w.append_bytes(&header("dir", EntryKind::Directory), b"").unwrap();
        let out = w.finish().unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(names, vec!["long/".repeat(40), "dir/".to_string()]);
    }
}
