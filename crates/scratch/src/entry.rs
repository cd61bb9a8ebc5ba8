//! One scratch entry: its random name, the create-then-lock protocol, the
//! identity check and its removal.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::registry::REGISTRY;

/// How many fresh names to try before giving up (collisions, lost races
/// with a sweeper): each attempt fails only if another process interferes.
const ATTEMPTS: usize = 64;

/// Random characters in a name: 12 of 62 give 71 bits.
const RANDOM_CHARS: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

/// Device and inode: what a name must still refer to before it is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    pub(crate) fn of(st: &Stat) -> Identity {
        Identity { dev: st.st_dev as u64, ino: st.st_ino as u64 }
    }

    pub(crate) fn of_fd(fd: impl AsFd) -> Result<Identity, Errno> {
        Ok(Identity::of(&rustix::fs::fstat(fd)?))
    }

    /// The identity of `path` itself, not of a symlink's target.
    pub(crate) fn of_path(dirfd: impl AsFd, path: impl rustix::path::Arg) -> Result<Identity, Errno> {
        Ok(Identity::of(&rustix::fs::statat(dirfd, path, AtFlags::SYMLINK_NOFOLLOW)?))
    }
}

/// A registered path and what it must be for removal.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    pub(crate) kind: Kind,
    pub(crate) identity: Identity,
}

impl Target {
    /// Removes the path if it still is the entry that was created; a path
    /// already gone or replaced by something else is left alone. Returns
    /// whether something was removed.
    pub(crate) fn remove(&self) -> io::Result<bool> {
        match Identity::of_path(CWD, &self.path) {
            Err(e) if e == Errno::NOENT => return Ok(false),
            Err(e) => return Err(e.into()),
            Ok(found) if found != self.identity => return Ok(false),
            Ok(_) => {}
        }
        let removed = match self.kind {
            Kind::Dir => remove_tree(&self.path),
            Kind::File => fs::remove_file(&self.path),
        };
        match removed {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `remove_dir_all` (which does not follow symlinks), retried because another
/// thread of this process may still be writing into the tree when a signal
/// handler removes it, and after making the tree's directories writable:
/// copied store trees are read-only (0555), which stops a non-root owner.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let mut result = Ok(());
    for attempt in 0..5 {
        result = match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other,
        };
        match &result {
            Ok(()) => break,
            Err(e) if attempt == 0 && e.kind() == io::ErrorKind::PermissionDenied => {
                let _ = make_writable(CWD, path);
            }
            Err(_) => {}
        }
    }
    result
}

/// Adds u+rwx to the directory `name` and every directory below it, never
/// through a symlink: each is `lstat`ed, and opened with `O_NOFOLLOW` to
/// descend. Best effort: skips what it cannot change.
pub(crate) fn make_writable(dirfd: impl AsFd, name: impl rustix::path::Arg + Copy) -> Result<(), Errno> {
    let st = rustix::fs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(());
    }
    let mode = Mode::from_raw_mode((st.st_mode | 0o700) & 0o7777);
    rustix::fs::chmodat(&dirfd, name, mode, AtFlags::empty())?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dirfd, name, flags, Mode::empty())?;
    for entry in rustix::fs::Dir::read_from(&fd)?.flatten() {
        let child = entry.file_name();
        if entry.file_type() == FileType::Directory && !matches!(child.to_bytes(), b"." | b"..") {
            let _ = make_writable(&fd, child);
        }
    }
    Ok(())
}

/// A live, registered scratch entry: dropping it removes the entry and
/// unregisters it.
#[derive(Debug)]
pub(crate) struct Guard {
    target: Target,
    id: u64,
    armed: bool,
}

impl Guard {
    /// Creates `parent/<prefix><random>`, locked, and registers it; the
    /// registry stays locked meanwhile so a signal handler that removes
    /// everything registered cannot run between creation and registration.
    pub(crate) fn create(parent: &Path, prefix: &str, kind: Kind, mode: u32) -> io::Result<(Guard, OwnedFd)> {
        check_prefix(prefix)?;
        let parent = std::path::absolute(parent)
            .map_err(|e| context(e, format!("bad directory {}", parent.display())))?;
        let mut registry = REGISTRY.lock();
        let (target, fd) = create_locked(&parent, prefix, kind, mode)?;
        let id = registry.insert(target.clone());
        let guard = Guard { target, id, armed: true };
        Ok((guard, fd))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.target.path
    }

    /// Forgets the entry without removing it (it was persisted).
    pub(crate) fn disarm(mut self) {
        self.armed = false;
        REGISTRY.lock().remove(self.id);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a drop cannot report; what is left is swept later.
            let _ = self.target.remove();
            REGISTRY.lock().remove(self.id);
        }
    }
}

/// Rejects prefixes that would escape the directory or that `sweep` could not
/// tell from unrelated files.
pub(crate) fn check_prefix(prefix: &str) -> io::Result<()> {
    if prefix.is_empty() || prefix.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("scratch prefix {prefix:?} must be non-empty and contain no '/' or NUL"),
        ));
    }
    Ok(())
}

/// `prefix` followed by random characters from [A-Za-z0-9]. Uniqueness comes
/// from `O_EXCL`/`mkdir`; randomness only makes collisions rare.
pub(crate) fn random_name(prefix: &str) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut bits: u128 = 0;
    for _ in 0..2 {
        // RandomState is seeded from the OS; the counter, pid and clock make
        // each draw distinct even if two states were seeded alike.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        bits = (bits << 64) | u128::from(h.finish());
    }
    let mut name = String::with_capacity(prefix.len() + RANDOM_CHARS);
    name.push_str(prefix);
    for _ in 0..RANDOM_CHARS {
        name.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    name
}

/// Creates a fresh entry in `parent` (absolute) and returns it locked.
fn create_locked(parent: &Path, prefix: &str, kind: Kind, mode: u32) -> io::Result<(Target, OwnedFd)> {
    let what = match kind {
        Kind::Dir => "scratch directory",
        Kind::File => "scratch file",
    };
    for _ in 0..ATTEMPTS {
        let path = parent.join(random_name(prefix));
        let fail = |e: Errno| context(e, format!("cannot create {what} {}", path.display()));
        let fd = match open_new(&path, kind, mode) {
            Ok(fd) => fd,
            // EEXIST: the name is taken. ENOENT after our mkdir: a sweeper
            // removed the unlocked directory. Either way: another name.
            Err(e) if e == Errno::EXIST => continue,
            Err(e) if e == Errno::NOENT && kind == Kind::Dir && path_exists(parent) => continue,
            Err(e) => return Err(fail(e)),
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            // A sweeper holds it and will remove it.
            Err(e) if e == Errno::WOULDBLOCK => continue,
            Err(e) => {
                let _ = remove_unlocked(&path, kind);
                return Err(fail(e));
            }
        }
        let identity = Identity::of_fd(&fd).map_err(fail)?;
        match Identity::of_path(CWD, &path) {
            Ok(found) if found == identity => {}
            // A sweeper removed the name before we locked it.
            Ok(_) => continue,
            Err(e) if e == Errno::NOENT => continue,
            Err(e) => return Err(fail(e)),
        }
        if kind == Kind::Dir {
            // Exactly 0700 whatever the umask: the owner must be able to
            // write into it, and nobody else needs to.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(fail)?;
        }
        let target = Target { path, kind, identity };
        return Ok((target, fd));
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("cannot create a {what} {prefix}* in {}: {ATTEMPTS} names taken", parent.display()),
    ))
}

/// `mkdir` + `open`, or `open(O_CREAT|O_EXCL)`; never through a symlink.
fn open_new(path: &Path, kind: Kind, mode: u32) -> Result<OwnedFd, Errno> {
    let cloexec = OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match kind {
        Kind::Dir => {
            rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(0o700))?;
            rustix::fs::openat(CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | cloexec, Mode::empty())
        }
        Kind::File => rustix::fs::openat(
            CWD,
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | cloexec,
            Mode::from_raw_mode(mode),
        ),
    }
}

fn path_exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Undoes a creation that failed before the entry was locked.
fn remove_unlocked(path: &Path, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Dir => fs::remove_dir(path),
        Kind::File => fs::remove_file(path),
    }
}

/// Prefixes an error's message, keeping its kind.
pub(crate) fn context(e: impl Into<io::Error>, what: String) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Read-only trees (copied store paths) must not stop a non-root owner's
    /// cleanup, and the fix must not reach through symlinks.
    #[test]
    fn make_writable_opens_read_only_trees_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(tree.join("a/b/f"), b"x").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        chmod(&outside, 0o555);
        chmod(&tree.join("a/b"), 0o555);
        chmod(&tree.join("a"), 0o500);

        make_writable(CWD, &tree).unwrap();
        assert_eq!(mode(&tree.join("a")), 0o700);
        assert_eq!(mode(&tree.join("a/b")), 0o755);
        assert_eq!(mode(&outside), 0o555);
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(make_writable(CWD, &tree).is_err());
    }
}
