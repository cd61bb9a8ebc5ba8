//! Layers of whole store paths, entry for entry as nixpkgs'
//! `stream_layered_image.py` (`archive_paths_to`) writes them.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use nix_layer_store::StorePath;

use crate::fsread::{self, Entry, Kind};
use crate::header::{archive_len, header_len};
use crate::{EntryKind, Error, Header, TarWriter};

/// Owner written on every entry of a store layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
}

impl Ownership {
    /// Refuses what a layer cannot carry faithfully: ids beyond 32 bits (they
    /// would be wrapped by whoever reads the image) and NULs in names.
    pub fn check(&self) -> Result<(), Error> {
        check_id("uid", self.uid)?;
        check_id("gid", self.gid)?;
        check_name("uname", &self.uname)?;
        check_name("gname", &self.gname)
    }
}

pub(crate) fn check_id(what: &'static str, value: u64) -> Result<(), Error> {
    if value > u64::from(u32::MAX) {
        return Err(Error::IdOutOfRange { what, value });
    }
    Ok(())
}

pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(Error::NulInName { what, value: value.to_owned() });
    }
    Ok(())
}

impl Default for Ownership {
    /// `root:root` (0:0), dockerTools' default.
    fn default() -> Self {
        Ownership { uid: 0, gid: 0, uname: "root".into(), gname: "root".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayerOptions {
    pub owner: Ownership,
    /// Seconds since the epoch, forced on every entry.
    pub mtime: u64,
}

impl Default for StoreLayerOptions {
    /// dockerTools' defaults: root owner, mtime 1 (1970-01-01T00:00:01Z).
    fn default() -> Self {
        StoreLayerOptions { owner: Ownership::default(), mtime: 1 }
    }
}

/// Docker tools put these first in every layer.
const NIX_DIRS: [&[u8]; 2] = [b"/nix", b"/nix/store"];

/// Writes a layer holding `paths` (in this order) the way
/// `streamLayeredImage` does: `/nix/` and `/nix/store/` (0755), then each
/// path and everything below it in component-wise sorted order; a path that
/// is a symlink is just itself. Modes come from `lstat`, owners and mtimes
/// from `opts`; hard links are written as full files.
///
/// Each file is read once, opened without following symlinks and checked
/// against its `lstat` (type, inode, size) before and after reading: a
/// file swapped or resized meanwhile is an [`Error::Changed`]. Holes of
/// sparse files are not read. Memory stays bounded by the deepest
/// directory's listings, whatever the size of the closure.
pub fn write_store_layer<W: Write>(
    paths: &[StorePath],
    opts: &StoreLayerOptions,
    out: W,
) -> Result<W, Error> {
    opts.owner.check()?;
    let mut tar = TarWriter::new(out);
    for dir in NIX_DIRS {
        tar.append(&nix_dir(dir, opts), &mut io::empty())?;
    }
    for path in paths {
        walk_store_path(path, &mut |entry| {
            let h = entry_header(entry, opts)?;
            if let EntryKind::Regular { .. } = h.kind {
                let mut f = entry.open()?;
                tar.append(&h, &mut f)?;
                f.finish()
            } else {
                tar.append(&h, &mut io::empty())
            }
        })?;
    }
    tar.finish()
}

/// The exact length [`write_store_layer`] will produce, from `lstat` and
/// `readlink` alone (no file is opened), so an outer archive can announce
/// the layer's size before streaming it.
pub fn store_layer_len(paths: &[StorePath], opts: &StoreLayerOptions) -> Result<u64, Error> {
    opts.owner.check()?;
    let mut total: u64 = NIX_DIRS.iter().map(|d| header_len(&nix_dir(d, opts))).sum();
    for path in paths {
        walk_store_path(path, &mut |entry| {
            total += header_len(&entry_header(entry, opts)?);
            Ok(())
        })?;
    }
    Ok(archive_len(total))
}

/// [`fsread::walk`] from a store path; a missing one is named as such.
fn walk_store_path(
    path: &StorePath,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let missing = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Error::MissingStorePath { path: path.to_path_buf() },
        _ => Error::io("inspect", path.as_path())(e),
    };
    let (dir, name) = fsread::open_parent(path.as_path()).map_err(|e| match e {
        Error::Io { source, .. } => missing(source),
        other => other,
    })?;
    let meta = fsread::lstat_at(dir.as_fd(), &name).map_err(missing)?;
    fsread::walk(dir.as_fd(), &name, path.as_path(), meta, visit)
}

fn nix_dir(name: &[u8], opts: &StoreLayerOptions) -> Header {
    forced(name.to_vec(), EntryKind::Directory, 0o755, opts)
}

fn forced(name: Vec<u8>, kind: EntryKind, mode: u32, opts: &StoreLayerOptions) -> Header {
    Header {
        name,
        kind,
        mode,
        uid: opts.owner.uid,
        gid: opts.owner.gid,
        uname: opts.owner.uname.clone(),
        gname: opts.owner.gname.clone(),
        mtime: opts.mtime,
    }
}

fn entry_header(entry: &Entry<'_>, opts: &StoreLayerOptions) -> Result<Header, Error> {
    let kind = match entry.meta.kind {
        Kind::Dir => EntryKind::Directory,
        Kind::Symlink => EntryKind::Symlink { target: entry.read_link()? },
        // Every name of a hard-linked inode becomes a full file, as
        // `archive_paths_to` turns tarfile's LNKTYPE back into REGTYPE.
        Kind::File => EntryKind::Regular { size: entry.meta.size },
        Kind::Special(kind) => return Err(Error::SpecialInStore { path: entry.path.to_path_buf(), kind }),
    };
    // Names are the absolute paths: gettarinfo strips the leading `/` and
    // nixpkgs puts it back.
    Ok(forced(entry.path.as_os_str().as_bytes().to_vec(), kind, entry.meta.mode, opts))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nix_layer_store::StoreDir;
    use std::fs;
    use std::os::unix::fs::symlink;

    const HASH: &str = "2jmiqxxd2z4ypk8am71rc6kffqzgma57";

    fn store() -> (tempfile::TempDir, StoreDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        let sd = StoreDir::new(dir.to_str().unwrap()).unwrap();
        (tmp, sd)
    }

    fn entries(tar_bytes: &[u8]) -> Vec<(String, u32, u64)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (name, e.header().mode().unwrap(), e.header().uid().unwrap())
            })
            .collect()
    }

    #[test]
    fn nix_dirs_first_then_sorted_tree() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-pkg")).unwrap();
        for d in ["share/a", "share/a-b", "share/a.b"] {
            fs::create_dir_all(p.as_path().join(d)).unwrap();
        }
        fs::write(p.as_path().join("share/a/f"), "x").unwrap();
        symlink("a/f", p.as_path().join("share/link")).unwrap();
        let opts = StoreLayerOptions {
            owner: Ownership { uid: 1000, gid: 100, uname: "u".into(), gname: "g".into() },
            mtime: 7,
        };
        let out = write_store_layer(std::slice::from_ref(&p), &opts, Vec::new()).unwrap();
        assert_eq!(out.len() as u64, store_layer_len(std::slice::from_ref(&p), &opts).unwrap());
        let names: Vec<String> = entries(&out).into_iter().map(|(n, _, _)| n).collect();
        let base = p.as_str();
        let want = [
            "/nix/".to_string(),
            "/nix/store/".to_string(),
            format!("{base}/"),
            format!("{base}/share/"),
            format!("{base}/share/a/"),
            format!("{base}/share/a/f"),
            format!("{base}/share/a-b/"),
            format!("{base}/share/a.b/"),
            format!("{base}/share/link"),
        ];
        assert_eq!(names, want);
        assert!(entries(&out).iter().all(|&(_, _, uid)| uid == 1000));
        assert_eq!(entries(&out)[0].1, 0o755);
    }

    #[test]
    fn missing_path_is_named() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-gone")).unwrap();
        let err = write_store_layer(std::slice::from_ref(&p), &StoreLayerOptions::default(), Vec::new())
            .unwrap_err();
        assert!(matches!(err, Error::MissingStorePath { .. }));
        assert!(err.to_string().contains(p.as_str()), "{err}");
        assert!(store_layer_len(&[p], &StoreLayerOptions::default()).is_err());
    }

    #[test]
    fn sockets_and_fifos_are_rejected_by_name() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-odd")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        let sock = p.as_path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = write_store_layer(std::slice::from_ref(&p), &StoreLayerOptions::default(), Vec::new())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(sock.to_str().unwrap()) && msg.contains("is a socket"), "{msg}");
        assert!(msg.contains("Nix store paths cannot hold one"), "{msg}");
        fs::remove_file(&sock).unwrap();

        let fifo = p.as_path().join("fifo");
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success());
        if ok.unwrap_or(false) {
            let err = store_layer_len(&[p], &StoreLayerOptions::default()).unwrap_err();
            assert!(err.to_string().contains("is a FIFO"), "{err}");
        }
    }

    #[test]
    fn top_level_symlink_is_only_itself() {
        let (_t, sd) = store();
        let target = sd.parse(&format!("{sd}/{HASH}-target")).unwrap();
        fs::create_dir(target.as_path()).unwrap();
        fs::write(target.as_path().join("f"), "x").unwrap();
        let link = sd.parse(&format!("{sd}/{}0-link", &HASH[..31])).unwrap();
        symlink(target.as_path(), link.as_path()).unwrap();
        let out = write_store_layer(std::slice::from_ref(&link), &StoreLayerOptions::default(), Vec::new())
            .unwrap();
        let names: Vec<String> = entries(&out).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, vec!["/nix/".to_string(), "/nix/store/".into(), link.as_str().into()]);
    }

    #[test]
    fn hard_links_are_full_files() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-hl")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        fs::write(p.as_path().join("a"), "hello").unwrap();
        fs::hard_link(p.as_path().join("a"), p.as_path().join("b")).unwrap();
        let out = write_store_layer(&[p], &StoreLayerOptions::default(), Vec::new()).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut files = 0;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_file() {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert_eq!(s, "hello");
                files += 1;
            }
        }
        assert_eq!(files, 2);
    }

    /// Runs `swap` once, just before the file at `at` is opened for reading.
    pub(crate) fn swap_before_open(at: std::path::PathBuf, swap: impl FnOnce() + 'static) {
        let mut swap = Some(swap);
        let hook = move |p: &std::path::Path| {
            if p == at {
                if let Some(f) = swap.take() {
                    f();
                }
            }
        };
        fsread::BEFORE_OPEN.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    #[test]
    fn file_swapped_for_a_symlink_after_planning_is_never_followed() {
        let (tmp, sd) = store();
        let secret = tmp.path().join("secret");
        fs::write(&secret, "TOP-SECRET").unwrap();
        let p = sd.parse(&format!("{sd}/{HASH}-victim")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        let f = p.as_path().join("f");
        fs::write(&f, "ten bytes!").unwrap();
        let opts = StoreLayerOptions::default();
        let planned = store_layer_len(std::slice::from_ref(&p), &opts).unwrap();
        let swapped = f.clone();
        swap_before_open(f.clone(), move || {
            fs::remove_file(&swapped).unwrap();
            symlink(&secret, &swapped).unwrap();
        });
        let mut out = Vec::new();
        let err = write_store_layer(std::slice::from_ref(&p), &opts, &mut out).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Changed { .. }), "{msg}");
        assert!(
            msg.contains(f.to_str().unwrap()) && msg.contains("is something modifying the store?"),
            "{msg}"
        );
        assert!(!out.windows(10).any(|w| w == b"TOP-SECRET"));
        // Unhooked, the symlink now there is archived as a symlink: still no secret.
        fsread::BEFORE_OPEN.with(|h| h.borrow_mut().take());
        let out = write_store_layer(std::slice::from_ref(&p), &opts, Vec::new()).unwrap();
        assert!(!out.windows(10).any(|w| w == b"TOP-SECRET"));
        assert_eq!(planned, out.len() as u64);
    }

    #[test]
    fn file_replaced_by_another_after_planning_is_an_error() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-victim")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        let f = p.as_path().join("f");
        fs::write(&f, "same size").unwrap();
        let (from, to) = (p.as_path().join("g"), f.clone());
        fs::write(&from, "SAME SIZE").unwrap();
        swap_before_open(f.clone(), move || fs::rename(&from, &to).unwrap());
        let err = write_store_layer(std::slice::from_ref(&p), &StoreLayerOptions::default(), Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("no longer the file that was planned"), "{err}");
        fsread::BEFORE_OPEN.with(|h| h.borrow_mut().take());
    }

    #[test]
    fn sparse_files_come_out_whole() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-disk")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        let img = fs::File::create(p.as_path().join("disk.img")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&img, b"data", 3 << 20).unwrap();
        img.set_len(8 << 20).unwrap();
        let out =
            write_store_layer(std::slice::from_ref(&p), &StoreLayerOptions::default(), Vec::new()).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut found = false;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path_bytes().ends_with(b"disk.img") {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                assert_eq!(data, fs::read(p.as_path().join("disk.img")).unwrap());
                found = true;
            }
        }
        assert!(found);
    }

    #[test]
    fn ids_beyond_32_bits_are_refused() {
        let (_t, sd) = store();
        let p = sd.parse(&format!("{sd}/{HASH}-pkg")).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        for (uid, gid) in [(1u64 << 32, 0), (0, u64::MAX)] {
            let opts = StoreLayerOptions {
                owner: Ownership { uid, gid, uname: "u".into(), gname: "g".into() },
                mtime: 1,
            };
            let err = store_layer_len(std::slice::from_ref(&p), &opts).unwrap_err();
            assert!(matches!(err, Error::IdOutOfRange { .. }) && err.to_string().contains("32-bit"), "{err}");
            assert!(write_store_layer(std::slice::from_ref(&p), &opts, Vec::new()).is_err());
        }
        let max =
            Ownership { uid: u32::MAX.into(), gid: u32::MAX.into(), uname: "u".into(), gname: "g".into() };
        assert!(max.check().is_ok());
        let nul = Ownership { uname: "a\0b".into(), ..Ownership::default() };
        assert!(nul.check().unwrap_err().to_string().contains("NUL"));
    }
}
