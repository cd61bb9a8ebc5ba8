//! Depth-first traversal in Python's `sorted(rglob)` order.
//!
//! A parent comes before its children and siblings are sorted by
//! [`name_cmp`], which is exactly the component-wise order of the whole
//! listing, so only one directory listing per level is held at a time.

use std::ffi::OsString;
use std::fs::{self, DirEntry, FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::order::name_cmp;
use crate::Error;

/// What a non-file, non-directory, non-symlink entry is, for error messages.
pub(crate) fn special_kind(t: FileType) -> Option<&'static str> {
    if t.is_file() || t.is_dir() || t.is_symlink() {
        None
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else {
        Some("file of unknown type")
    }
}

/// The entries of `dir`, sorted like Python sorts their names.
pub(crate) fn sorted_children(dir: &Path) -> Result<Vec<(OsString, DirEntry)>, Error> {
    let mut children = fs::read_dir(dir)
        .and_then(|it| it.map(|e| e.map(|e| (e.file_name(), e))).collect::<io::Result<Vec<_>>>())
        .map_err(Error::io("list the directory", dir))?;
    children.sort_by(|(a, _), (b, _)| name_cmp(a.as_bytes(), b.as_bytes()));
    Ok(children)
}

/// Visits `root` (not followed if it is a symlink) and, if it is a
/// directory, everything below it without following symlinks, in sorted
/// order. `visit` gets each path with its `lstat` metadata.
pub(crate) fn walk(
    root: &Path,
    root_meta: Metadata,
    visit: &mut dyn FnMut(&Path, &Metadata) -> Result<(), Error>,
) -> Result<(), Error> {
    visit(root, &root_meta)?;
    if !root_meta.is_dir() {
        return Ok(());
    }
    let mut stack = vec![sorted_children(root)?.into_iter()];
    while let Some(level) = stack.last_mut() {
        let Some((_, entry)) = level.next() else {
            stack.pop();
            continue;
        };
        let path: PathBuf = entry.path();
        // DirEntry::metadata is an fstatat on the open directory: lstat
        // semantics without resolving the whole path again.
        let meta = entry.metadata().map_err(Error::io("inspect", &path))?;
        visit(&path, &meta)?;
        if meta.is_dir() {
            stack.push(sorted_children(&path)?.into_iter());
        }
    }
    Ok(())
}
