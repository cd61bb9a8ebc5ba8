//! The process umask, read without changing it.

/// The umask used when `/proc/self/status` cannot tell (kernels before 4.7,
/// no /proc): the usual default.
const FALLBACK: u32 = 0o022;

/// The process's file mode creation mask, read from the `Umask:` line of
/// `/proc/self/status` (Linux 4.7 and later): `umask(2)` can only be read by
/// setting it, which races with other threads creating files. Falls back to
/// 0o022.
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_status(&status))
        .unwrap_or(FALLBACK)
}

/// `mode` as `open(2)` would apply it: without the umask's bits. For files
/// whose final mode is set exactly (`fchmod`) yet must follow the user's
/// umask, such as `index.json`, `oci-layout` and blobs.
pub fn final_mode(mode: u32) -> u32 {
    mode & !umask() & 0o7777
}

fn parse_status(status: &str) -> Option<u32> {
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::Mode;
    use std::process::Command;

    const CHILD_ENV: &str = "NIX_LAYER_SCRATCH_TEST_UMASK";

    #[test]
    fn parses_the_status_line() {
        let status = "Name:\tx\nUmask:\t0027\nState:\tR (running)\n";
        assert_eq!(parse_status(status), Some(0o027));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("Umask:\t9\n"), None);
        assert_eq!(parse_status("Umask:\t01777\n"), None);
    }

    /// The umask is per process: each value is set in a child (this test
    /// binary, running `umask_in_child` alone), never in the test process.
    #[test]
    fn matches_the_umask_set_by_umask_2() {
        let exe = std::env::current_exe().unwrap();
        for mask in [0o000, 0o002, 0o027, 0o077, 0o777] {
            let out = Command::new(&exe)
                .args(["--exact", "umask::tests::umask_in_child", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{mask:o}"))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
            // Proof the child test ran (a filter matching nothing exits 0).
            assert!(stdout.contains(&format!("umask-child {mask:o} {mask:o} {mask:o}")), "{stdout}");
        }
    }

    #[test]
    #[ignore = "run by matches_the_umask_set_by_umask_2 in a child process"]
    fn umask_in_child() {
        let mask = u32::from_str_radix(&std::env::var(CHILD_ENV).unwrap(), 8).unwrap();
        rustix::process::umask(Mode::from_raw_mode(mask));
        let read = umask();
        // umask(2) returns the mask it replaces: the one in force.
        let libc = rustix::process::umask(Mode::from_raw_mode(mask)).bits();
        assert_eq!(read, libc);
        assert_eq!(final_mode(0o666), 0o666 & !mask);
        println!("umask-child {mask:o} {read:o} {libc:o}");
    }
}
