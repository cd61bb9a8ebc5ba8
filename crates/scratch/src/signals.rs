//! Removing scratch entries when the process is told to stop.

use std::io;
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::registry::REGISTRY;

/// The signals that, by default, end the process and that it can catch.
/// SIGPIPE stays ignored, as Rust sets it: a closed pipe is an I/O error.
const CAUGHT: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Makes SIGINT, SIGTERM and SIGHUP remove every registered scratch entry and
/// then end the process *by that signal*: the default disposition is restored
/// and the signal raised again, so a parent sees "killed by SIGINT" (a shell
/// stops its script on Ctrl-C; `128+n` exit codes would hide that).
///
/// The signal handler itself only wakes a background thread (signal-hook's
/// iterator); the removal runs on that thread, not in the handler, since
/// removing files is not async-signal-safe. The thread keeps the registry
/// locked from the removal until the process is gone, so no scratch entry
/// created meanwhile by another thread can outlive it. A second signal during
/// the cleanup changes nothing; SIGKILL still ends the process at once (and
/// [`crate::sweep`] removes what it leaves on the next run).
///
/// Idempotent: later calls return `Ok(())` and change nothing.
pub fn install_signal_cleanup() -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    let mut signals = Signals::new(CAUGHT)?;
    std::thread::Builder::new().name("nix-layer-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            die_cleanly(signal);
        }
    })?;
    *installed = true;
    Ok(())
}

fn die_cleanly(signal: i32) -> ! {
    let mut registry = REGISTRY.lock();
    registry.remove_all();
    // Resets the handler to the default, unblocks and raises: the process
    // ends here with `registry` still locked.
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    // Not reached for these signals; the shell convention if it were.
    std::process::exit(128 + signal)
}
