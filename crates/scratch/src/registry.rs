//! The process-global list of live scratch entries, for signal cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::entry::{Identity, Target};

pub(crate) static REGISTRY: Registry = Registry::new();

pub(crate) struct Registry(Mutex<Entries>);

pub(crate) struct Entries {
    next: u64,
    entries: BTreeMap<u64, Target>,
}

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry(Mutex::new(Entries { next: 0, entries: BTreeMap::new() }))
    }

    /// Never fails: a panic while the lock was held leaves the map valid.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entries {
    pub(crate) fn insert(&mut self, target: Target) -> u64 {
        let id = self.next;
        self.next += 1;
        self.entries.insert(id, target);
        id
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// Removes every registered entry from disk and forgets it; returns how
    /// many were removed. Entries already gone or replaced are skipped.
    pub(crate) fn remove_all(&mut self) -> usize {
        std::mem::take(&mut self.entries).values().filter(|t| matches!(t.remove(), Ok(true))).count()
    }

    pub(crate) fn holds(&self, identity: Identity) -> bool {
        self.entries.values().any(|t| t.identity == identity)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.entries.values().map(|t| t.path.clone()).collect()
    }
}

/// Removes every live scratch entry of this process now, and returns how
/// many were removed. For a caller about to leave without running
/// destructors (`std::process::exit`); the objects stay valid and their drop
/// then finds nothing to remove. Not async-signal-safe: call it from a
/// thread, as [`crate::install_signal_cleanup`] does.
pub fn remove_all_registered() -> usize {
    REGISTRY.lock().remove_all()
}

/// The paths of the live scratch entries of this process, for diagnostics.
pub fn registered() -> Vec<PathBuf> {
    REGISTRY.lock().paths()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Kind;
    use crate::{ScratchDir, ScratchFile};
    use rustix::fs::CWD;
    use std::fs;
    use std::path::Path;

    fn target(path: &Path, kind: Kind) -> Target {
        Target { path: path.to_owned(), kind, identity: Identity::of_path(CWD, path).unwrap() }
    }

    #[test]
    fn objects_are_registered_while_alive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ScratchDir::new_in(tmp.path(), ".t-").unwrap();
        let file = ScratchFile::new_in(dir.path(), ".f-").unwrap();
        let (dir_path, file_path) = (dir.path().to_owned(), file.path().to_owned());
        assert!(registered().contains(&dir_path));
        assert!(registered().contains(&file_path));
        drop(file);
        assert!(!registered().contains(&file_path));
        assert!(registered().contains(&dir_path));
        drop(dir);
        assert!(!registered().contains(&dir_path));
    }

    // A local registry: emptying the global one would break tests running
    // in parallel threads.
    #[test]
    fn remove_all_removes_trees_and_files_but_not_replacements() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), b"x").unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let replaced = tmp.path().join("replaced");
        fs::write(&replaced, b"old").unwrap();

        let registry = Registry::new();
        let mut entries = registry.lock();
        entries.insert(target(&tree, Kind::Dir));
        entries.insert(target(&file, Kind::File));
        entries.insert(target(&replaced, Kind::File));
        // Someone else's file now bears the registered name: not ours. (It
        // exists before the old one goes, so its inode number differs.)
        fs::write(tmp.path().join("other"), b"new").unwrap();
        fs::rename(tmp.path().join("other"), &replaced).unwrap();

        assert_eq!(entries.remove_all(), 2);
        assert!(!tree.exists());
        assert!(!file.exists());
        assert_eq!(fs::read(&replaced).unwrap(), b"new");
        assert!(entries.paths().is_empty());
        assert_eq!(entries.remove_all(), 0);
    }
}
