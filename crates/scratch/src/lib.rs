//! Temporary files and directories that never outlive the process.
//!
//! Every [`ScratchDir`] and [`ScratchFile`] is
//! - created with a fresh random name `<prefix><random>` (`O_EXCL`/`mkdir`),
//! - held under an exclusive `flock` for its whole life, so that another
//!   process can tell a live scratch entry from one whose owner died,
//! - registered in a process-global registry, so that a caught signal can
//!   remove it ([`install_signal_cleanup`]),
//! - removed when dropped (a file unless it was persisted).
//!
//! What SIGKILL or a power loss leaves behind, [`sweep`] removes on a later
//! run: it takes each `<prefix>*` entry's lock without waiting and deletes
//! only the entries whose lock is free, so a concurrent build's scratch
//! directories are left alone.
//!
//! Creation and sweeping follow one protocol: the creator takes the lock and
//! then checks that its name still refers to the inode it locked; the sweeper
//! takes the lock, checks the same, and removes before it unlocks. A sweeper
//! that races a creator between `mkdir` and `flock` therefore either removes
//! the entry before the creator locks it (the creator sees the name gone and
//! picks another) or holds the lock when the creator tries (the creator picks
//! another name). Linux only (it reads `/proc/self/status`).

mod entry;
mod file;
mod registry;
mod signals;
mod sweep;
mod umask;

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

pub use file::{PersistError, ScratchFile};
pub use registry::{registered, remove_all_registered};
pub use signals::install_signal_cleanup;
pub use sweep::sweep;
pub use umask::{final_mode, umask};

use entry::{Guard, Kind};

/// A directory `parent/<prefix><random>`, mode 0700, removed recursively
/// when dropped or when the process catches SIGINT, SIGTERM or SIGHUP.
#[derive(Debug)]
pub struct ScratchDir {
    // Declared first so that it drops first: the directory is removed while
    // `lock` still holds the flock, and a sweeper never sees it unlocked.
    guard: Guard,
    #[allow(dead_code)] // held for its flock
    lock: OwnedFd,
}

impl ScratchDir {
    /// Creates `parent/<prefix><random>` (mode 0700 whatever the umask),
    /// locks and registers it. `prefix` must be non-empty and contain no `/`.
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<ScratchDir> {
        let (guard, lock) = Guard::create(parent, prefix, Kind::Dir, 0o700)?;
        Ok(ScratchDir { guard, lock })
    }

    /// The absolute path of the directory.
    pub fn path(&self) -> &Path {
        self.guard.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn dir_is_0700_and_removed_with_its_contents_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let dir = ScratchDir::new_in(tmp.path(), ".nix-layer-").unwrap();
        let path = dir.path().to_owned();
        assert!(path.is_absolute() && path.parent() == Some(tmp.path()));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        fs::create_dir_all(path.join("a/b")).unwrap();
        fs::write(path.join("a/b/layer.tar"), vec![0u8; 4096]).unwrap();
        symlink(&outside, path.join("a/link")).unwrap();
        drop(dir);
        assert!(!path.exists());
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    /// As root this passes anyway; as any other user it needs `remove_tree`
    /// to make the read-only directories writable first.
    #[test]
    fn dir_with_read_only_subdirs_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ScratchDir::new_in(tmp.path(), ".nix-layer-").unwrap();
        let path = dir.path().to_owned();
        fs::create_dir_all(path.join("nix/store/x/bin")).unwrap();
        fs::write(path.join("nix/store/x/bin/sh"), b"x").unwrap();
        for sub in ["nix/store/x/bin", "nix/store/x"] {
            fs::set_permissions(path.join(sub), fs::Permissions::from_mode(0o555)).unwrap();
        }
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn names_are_distinct() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<ScratchDir> = (0..200).map(|_| ScratchDir::new_in(tmp.path(), "p").unwrap()).collect();
        let names: HashSet<_> = dirs.iter().map(|d| d.path().to_owned()).collect();
        assert_eq!(names.len(), 200);
    }

    #[test]
    fn relative_parent_gives_an_absolute_path() {
        let dir = ScratchDir::new_in(Path::new("."), ".nix-layer-test-").unwrap();
        assert!(dir.path().is_absolute() && dir.path().is_dir());
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }
}
