//! A real process holding scratch entries (this test binary re-run as
//! `hold`), stopped by real signals: caught signals leave nothing behind and
//! end it by the same signal; SIGKILL leaves entries that `sweep` removes.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix_layer_scratch::{install_signal_cleanup, sweep, ScratchDir, ScratchFile};
use rustix::process::{kill_process, Pid, Signal};

const HOLD_IN: &str = "NIX_LAYER_SCRATCH_HOLD_IN";
const PREFIX: &str = ".nix-layer-";
const LAYER_SIZE: u64 = 100 << 20;

/// The child: a scratch directory holding a 100 MB layer and a scratch file
/// beside it, as a build has; prints their paths, then waits to be killed.
#[test]
#[ignore = "run by the other tests in a child process"]
fn hold() {
    let parent = PathBuf::from(std::env::var_os(HOLD_IN).expect(HOLD_IN));
    install_signal_cleanup().unwrap();
    install_signal_cleanup().unwrap(); // idempotent
    let dir = ScratchDir::new_in(&parent, PREFIX).unwrap();
    let mut layer = fs::File::create(dir.path().join("layer.tar")).unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    for _ in 0..LAYER_SIZE / chunk.len() as u64 {
        layer.write_all(&chunk).unwrap();
    }
    let file = ScratchFile::new_in(&parent, PREFIX).unwrap();
    println!("HOLD {} {}", dir.path().display(), file.path().display());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    panic!("not killed within 120 s");
}

struct Holder {
    child: Child,
    dir: PathBuf,
    file: PathBuf,
}

impl Drop for Holder {
    /// A failed assertion must not leave the child waiting for 120 s.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(parent: &Path) -> Holder {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hold", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HOLD_IN, parent)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // libtest may have printed "test hold ... " on the same line.
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find_map(|l| Some(l.split_once("HOLD ")?.1.to_owned()))
        .expect("the child printed its paths");
    let mut paths = line.split(' ').map(PathBuf::from);
    let (dir, file) = (paths.next().unwrap(), paths.next().unwrap());
    assert_eq!(fs::metadata(dir.join("layer.tar")).unwrap().len(), LAYER_SIZE);
    assert!(file.is_file());
    Holder { child, dir, file }
}

fn parent_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

fn caught_signal_removes_everything_and_ends_by_it(signal: Signal) {
    let parent = parent_dir();
    let mut holder = start(parent.path());
    let sent = Instant::now();
    kill_process(Pid::from_child(&holder.child), signal).unwrap();
    let status = holder.child.wait().unwrap();
    eprintln!("{signal:?}: exited {:?} after sending", sent.elapsed());
    assert_eq!(status.signal(), Some(signal.as_raw()), "{status}");
    assert!(!holder.dir.exists() && !holder.file.exists());
    assert_eq!(entries(parent.path()), 0);
}

#[test]
fn sigint_removes_everything_and_ends_by_sigint() {
    caught_signal_removes_everything_and_ends_by_it(Signal::INT);
}

#[test]
fn sigterm_removes_everything_and_ends_by_sigterm() {
    caught_signal_removes_everything_and_ends_by_it(Signal::TERM);
}

#[test]
fn sighup_removes_everything_and_ends_by_sighup() {
    caught_signal_removes_everything_and_ends_by_it(Signal::HUP);
}

#[test]
fn sigkill_leaves_entries_that_the_next_sweep_removes() {
    let parent = parent_dir();
    let mut holder = start(parent.path());
    // Alive: a concurrent run's sweep leaves them alone.
    assert_eq!(sweep(parent.path(), PREFIX), 0);
    assert!(holder.dir.is_dir() && holder.file.is_file());

    holder.child.kill().unwrap(); // SIGKILL
    let status = holder.child.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()), "{status}");
    assert!(holder.dir.join("layer.tar").is_file() && holder.file.is_file());

    assert_eq!(sweep(parent.path(), PREFIX), 2);
    assert_eq!(entries(parent.path()), 0);
}
