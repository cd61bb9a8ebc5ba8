//! Named temporary files that are removed unless persisted.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, RenameFlags, CWD};
use rustix::io::Errno;

use crate::entry::{Guard, Kind};

/// A file `dir/<prefix><random>` opened read-write, removed when dropped or
/// when the process catches SIGINT, SIGTERM or SIGHUP, unless persisted.
#[derive(Debug)]
pub struct ScratchFile {
    // Drops first: the file is removed while `file` still holds the flock.
    guard: Guard,
    file: File,
}

/// A failed [`ScratchFile::persist`] or [`ScratchFile::persist_noclobber`]:
/// the file is handed back, still registered and removed on drop.
#[derive(Debug, thiserror::Error)]
#[error("cannot persist {} as {}: {source}", file.path().display(), dest.display())]
pub struct PersistError {
    pub source: io::Error,
    pub dest: PathBuf,
    pub file: ScratchFile,
}

impl PersistError {
    /// `persist_noclobber` found `dest` taken.
    pub fn is_already_exists(&self) -> bool {
        self.source.kind() == io::ErrorKind::AlreadyExists
    }
}

impl From<PersistError> for io::Error {
    fn from(e: PersistError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

impl ScratchFile {
    /// Creates `dir/<prefix><random>` with mode 0600 (`O_EXCL`, never through
    /// a symlink), locked and registered.
    pub fn new_in(dir: &Path, prefix: &str) -> io::Result<ScratchFile> {
        Self::with_mode_in(dir, prefix, 0o600)
    }

    /// Like [`ScratchFile::new_in`] with `mode`, which the umask reduces as
    /// for `open(2)`; [`ScratchFile::set_mode`] sets an exact mode.
    pub fn with_mode_in(dir: &Path, prefix: &str, mode: u32) -> io::Result<ScratchFile> {
        let (guard, fd) = Guard::create(dir, prefix, Kind::File, mode)?;
        Ok(ScratchFile { guard, file: File::from(fd) })
    }

    /// The absolute path of the file.
    pub fn path(&self) -> &Path {
        self.guard.path()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Sets the mode exactly (`fchmod`, no umask): use
    /// `set_mode(final_mode(0o644))` for a file others may read per umask.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode))
            .map_err(|e| crate::entry::context(e, format!("cannot chmod {}", self.path().display())))
    }

    /// Renames the file to `dest`, replacing what is there, and returns it
    /// open (unlocked, no longer removed).
    pub fn persist(self, dest: impl AsRef<Path>) -> Result<File, PersistError> {
        let dest = dest.as_ref();
        match fs::rename(self.path(), dest) {
            Ok(()) => Ok(self.into_persisted()),
            Err(source) => Err(self.fail(source, dest)),
        }
    }

    /// Renames the file to `dest` unless `dest` exists, atomically
    /// (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` on file systems
    /// without it). A taken `dest` gives an error of kind `AlreadyExists`
    /// ([`PersistError::is_already_exists`]).
    pub fn persist_noclobber(self, dest: impl AsRef<Path>) -> Result<File, PersistError> {
        let dest = dest.as_ref();
        let renamed = rustix::fs::renameat_with(CWD, self.path(), CWD, dest, RenameFlags::NOREPLACE);
        match renamed {
            Ok(()) => Ok(self.into_persisted()),
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP => {
                match fs::hard_link(self.path(), dest) {
                    Ok(()) => {
                        // `dest` holds the file; drop the temporary name.
                        let _ = fs::remove_file(self.path());
                        Ok(self.into_persisted())
                    }
                    Err(source) => Err(self.fail(source, dest)),
                }
            }
            Err(e) => Err(self.fail(e.into(), dest)),
        }
    }

    fn into_persisted(self) -> File {
        let ScratchFile { guard, file } = self;
        guard.disarm();
        // The lock only told sweepers the temporary name was alive.
        let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
        file
    }

    fn fail(self, source: io::Error, dest: &Path) -> PersistError {
        PersistError { source, dest: dest.to_owned(), file: self }
    }
}

impl Write for ScratchFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Read for ScratchFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for ScratchFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{final_mode, registered};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn written(dir: &Path, content: &[u8]) -> ScratchFile {
        let mut f = ScratchFile::new_in(dir, ".f-").unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn created_0600_named_by_prefix_and_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let f = written(tmp.path(), b"data");
        let path = f.path().to_owned();
        assert_eq!(path.parent(), Some(tmp.path()));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".f-") && name.len() == ".f-".len() + 12, "{name}");
        let md = fs::symlink_metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"data");
        drop(f);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn persist_replaces_dest_and_keeps_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::write(&dest, b"old").unwrap();
        let f = written(tmp.path(), b"new");
        let path = f.path().to_owned();
        let file = f.persist(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert!(!path.exists());
        assert!(!registered().contains(&path));
        drop(file);
        assert_eq!(fs::read(&dest).unwrap(), b"new", "persisted file removed on drop");
    }

    #[test]
    fn persist_noclobber_refuses_a_taken_dest_and_gives_the_file_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::write(&dest, b"old").unwrap();
        let f = written(tmp.path(), b"new");
        let path = f.path().to_owned();
        let err = f.persist_noclobber(&dest).unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        assert!(err.to_string().contains(&*dest.to_string_lossy()), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        // Still ours: persisting elsewhere works, and the error kind survives
        // conversion for callers using io::Result.
        let free = tmp.path().join("free");
        err.file.persist_noclobber(&free).unwrap();
        assert_eq!(fs::read(&free).unwrap(), b"new");
        assert!(!path.exists());

        let f = written(tmp.path(), b"x");
        let path = f.path().to_owned();
        let io_err = io::Error::from(f.persist_noclobber(&dest).unwrap_err());
        assert_eq!(io_err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!path.exists(), "the file handed back in the error was dropped");
    }

    #[test]
    fn persist_error_names_both_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("missing-dir/out");
        let f = written(tmp.path(), b"x");
        let path = f.path().to_owned();
        let err = f.persist(&dest).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(msg.contains(&*path.to_string_lossy()) && msg.contains("missing-dir/out"), "{msg}");
        drop(err);
        assert!(!path.exists());
    }

    #[test]
    fn set_mode_is_exact_and_final_mode_applies_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let f = written(tmp.path(), b"x");
        f.set_mode(0o644).unwrap();
        assert_eq!(fs::metadata(f.path()).unwrap().permissions().mode() & 0o7777, 0o644);
        f.set_mode(final_mode(0o666)).unwrap();
        let file = f.persist(tmp.path().join("index.json")).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o7777, 0o666 & !crate::umask());
    }

    #[test]
    fn with_mode_applies_the_umask_like_open() {
        let tmp = tempfile::tempdir().unwrap();
        let f = ScratchFile::with_mode_in(tmp.path(), ".f-", 0o640).unwrap();
        let mode = fs::metadata(f.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640 & !crate::umask());
    }

    #[test]
    fn bad_prefixes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for prefix in ["", "a/b", "a\0"] {
            let err = ScratchFile::new_in(tmp.path(), prefix).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{prefix:?}");
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nope");
        let err = ScratchFile::new_in(&dir, ".f-").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&*dir.to_string_lossy()), "{err}");
    }
}
