//! The key password: `COSIGN_PASSWORD` as cosign reads it, else a prompt on the terminal.

use std::io::{BufRead, BufReader, Write};

use rustix::termios::{self, LocalModes, OptionalActions};

use crate::Error;

/// The password for a key. `confirm` asks twice (for a new key). `COSIGN_PASSWORD` wins,
/// even when empty (cosign allows an empty password); without it a prompt needs standard
/// input to be a terminal, so a script never hangs on a hidden question.
pub fn password(confirm: bool) -> Result<Vec<u8>, Error> {
    if let Some(p) = std::env::var_os("COSIGN_PASSWORD") {
        return Ok(p.into_encoded_bytes());
    }
    if !termios::isatty(std::io::stdin()) {
        return Err(Error::NoPassword);
    }
    let first = prompt("Enter password for private key: ")?;
    if confirm && prompt("Enter password for private key again: ")? != first {
        return Err(Error::PasswordMismatch);
    }
    Ok(first)
}

fn prompt(text: &str) -> Result<Vec<u8>, Error> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(Error::Terminal)?;
    let saved = termios::tcgetattr(&tty).map_err(|e| Error::Terminal(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(&tty, OptionalActions::Flush, &quiet).map_err(|e| Error::Terminal(e.into()))?;
    let read = (|| {
        (&tty).write_all(text.as_bytes())?;
        let mut line = String::new();
        BufReader::new(&tty).read_line(&mut line)?;
        (&tty).write_all(b"\n")?;
        Ok::<_, std::io::Error>(line)
    })();
    // Echo comes back even when reading failed.
    let restored = termios::tcsetattr(&tty, OptionalActions::Flush, &saved);
    let line = read.map_err(Error::Terminal)?;
    restored.map_err(|e| Error::Terminal(e.into()))?;
    Ok(line.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}
