//! Removing what dead processes left behind.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::entry::{check_prefix, remove_tree, Identity};
use crate::registry::REGISTRY;

/// Removes the entries of `dir` named `<prefix>*` whose owner is gone: those
/// whose `flock` can be taken without waiting (left by SIGKILL, a crash, a
/// power loss). Entries locked by a live process, this one included, are
/// left alone. Symlinks and other non-regular files bearing the prefix are
/// unlinked, never followed. Best effort: an entry that cannot be examined or
/// removed is skipped, a missing or unreadable `dir` gives 0, and so does an
/// empty prefix (or one with `/`), which would match everything. Returns how
/// many entries were removed.
pub fn sweep(dir: &Path, prefix: &str) -> usize {
    if check_prefix(prefix).is_err() {
        return 0;
    }
    let Ok(dirfd) =
        rustix::fs::openat(CWD, dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
    else {
        return 0;
    };
    let Ok(listing) = rustix::fs::Dir::read_from(&dirfd) else {
        return 0;
    };
    // Listed first, removed after: no removal while the directory is read.
    let names: Vec<CString> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| {
            let name = name.to_bytes();
            name.starts_with(prefix.as_bytes()) && name != b"." && name != b".."
        })
        .collect();
    names.iter().filter(|name| matches!(remove_if_dead(dirfd.as_fd(), dir, name), Ok(true))).count()
}

fn remove_if_dead(dirfd: BorrowedFd<'_>, dir: &Path, name: &CStr) -> io::Result<bool> {
    let st = rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let is_dir = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => true,
        FileType::RegularFile => false,
        // Never created by us, nothing to lock: a symlink is unlinked, not
        // followed, as is any other special file.
        _ => {
            rustix::fs::unlinkat(dirfd, name, AtFlags::empty())?;
            return Ok(true);
        }
    };
    // NONBLOCK: a FIFO swapped in after the stat must not hang the open.
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if is_dir {
        flags |= OFlags::DIRECTORY;
    }
    let fd = rustix::fs::openat(dirfd, name, flags, Mode::empty())?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Err(e) if e == Errno::WOULDBLOCK => return Ok(false), // alive
        other => other?,
    }
    // The name must still be what we locked (see the crate docs).
    let identity = Identity::of_fd(&fd)?;
    if identity != Identity::of_path(dirfd, name)? {
        return Ok(false);
    }
    // Where flock is emulated by POSIX locks (NFS), a process's own locks do
    // not conflict with each other: ask the registry too.
    if REGISTRY.lock().holds(identity) {
        return Ok(false);
    }
    if is_dir {
        remove_tree(&dir.join(OsStr::from_bytes(name.to_bytes())))?;
    } else {
        rustix::fs::unlinkat(dirfd, name, AtFlags::empty())?;
    }
    // `fd`, and with it the lock, goes only now.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ScratchDir, ScratchFile};
    use std::fs;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::symlink;
    use std::process::{Command, Stdio};

    /// What a process killed by SIGKILL leaves: entries nobody holds locked.
    fn plant_dead(dir: &Path) {
        fs::create_dir_all(dir.join(".s-deaddir/a/b")).unwrap();
        fs::write(dir.join(".s-deaddir/a/b/layer.tar"), b"x").unwrap();
        fs::write(dir.join(".s-deadfile"), b"x").unwrap();
    }

    #[test]
    fn removes_unlocked_entries_and_keeps_live_ones() {
        let tmp = tempfile::tempdir().unwrap();
        plant_dead(tmp.path());
        fs::create_dir(tmp.path().join("other")).unwrap();
        fs::write(tmp.path().join("x.s-"), b"not ours").unwrap();
        // Live entries of this process: sweep's own open() is another open
        // file description, so their flock conflicts as another process's.
        let live_dir = ScratchDir::new_in(tmp.path(), ".s-").unwrap();
        let live_file = ScratchFile::new_in(tmp.path(), ".s-").unwrap();

        assert_eq!(sweep(tmp.path(), ".s-"), 2);
        assert!(!tmp.path().join(".s-deaddir").exists());
        assert!(!tmp.path().join(".s-deadfile").exists());
        assert!(live_dir.path().is_dir() && live_file.path().is_file());
        assert!(tmp.path().join("other").is_dir() && tmp.path().join("x.s-").is_file());

        assert_eq!(sweep(tmp.path(), ".s-"), 0);
        drop((live_dir, live_file));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    /// Names the directory the locking child holds (see `lock_holder`).
    const HOLD_ENV: &str = "NIX_LAYER_SCRATCH_TEST_HOLD";
    /// What the child prints once it holds the lock.
    const LOCKED: &str = "lock holder: locked";

    /// The other process of the next test: this test binary run again, so the
    /// test needs no tool outside it (a Nix build's check phase has no
    /// util-linux `flock`). It locks the directory, says so on stdout and
    /// holds the lock until stdin reaches EOF.
    #[test]
    #[ignore = "the locking child of keeps_an_entry_locked_by_another_process_until_it_exits"]
    fn lock_holder() {
        let dir = std::env::var_os(HOLD_ENV).expect("run by the parent test, which sets the directory");
        let fd = fs::File::open(dir).unwrap();
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).unwrap();
        println!("{LOCKED}");
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
        drop(fd);
    }

    #[test]
    fn keeps_an_entry_locked_by_another_process_until_it_exits() {
        let tmp = tempfile::tempdir().unwrap();
        let held = tmp.path().join(".s-held");
        fs::create_dir(&held).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sweep::tests::lock_holder", "--ignored", "--nocapture", "--test-threads=1"])
            .env(HOLD_ENV, &held)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test binary runs again as the lock holder");
        // The harness prints its own lines (and its "test … " prefix on ours).
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(LOCKED) {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "the holder exited before locking");
        }

        assert_eq!(sweep(tmp.path(), ".s-"), 0);
        assert!(held.is_dir());

        drop(child.stdin.take()); // EOF: the holder exits
        std::io::copy(&mut out, &mut std::io::sink()).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(sweep(tmp.path(), ".s-"), 1);
        assert!(!held.exists());
    }

    #[test]
    fn unlinks_symlinks_without_following_them() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        fs::write(tmp.path().join("keepfile"), b"x").unwrap();
        symlink(&target, tmp.path().join(".s-dirlink")).unwrap();
        symlink(tmp.path().join("keepfile"), tmp.path().join(".s-filelink")).unwrap();
        symlink("/nonexistent", tmp.path().join(".s-dangling")).unwrap();

        assert_eq!(sweep(tmp.path(), ".s-"), 3);
        assert!(target.join("keep").is_file());
        assert!(tmp.path().join("keepfile").is_file());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    #[test]
    fn refuses_prefixes_matching_everything_and_tolerates_missing_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        plant_dead(tmp.path());
        assert_eq!(sweep(tmp.path(), ""), 0);
        assert_eq!(sweep(tmp.path(), "/"), 0);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
        assert_eq!(sweep(&tmp.path().join("missing"), ".s-"), 0);
    }

    /// A sweeper running while entries are created: it may remove a
    /// directory between its mkdir and its flock, and the creator must
    /// notice and take another name, never return a removed directory.
    #[test]
    fn creation_racing_a_sweeper_never_returns_a_removed_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep(tmp.path(), ".r-");
                }
            });
            let creators: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..300 {
                            let dir = ScratchDir::new_in(tmp.path(), ".r-").unwrap();
                            fs::write(dir.path().join("f"), b"x").unwrap();
                            let file = ScratchFile::new_in(tmp.path(), ".r-").unwrap();
                            assert!(file.path().is_file());
                            assert!(dir.path().join("f").is_file());
                        }
                    })
                })
                .collect();
            for c in creators {
                c.join().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
