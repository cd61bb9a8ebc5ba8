//! Loads an image into Docker, Podman or containerd: the image is built as a
//! docker-archive stream piped straight into the engine's loader (`docker load`,
//! `podman load`, `ctr images import -`), so no archive is written to disk. Docker is
//! first asked which layer chains it holds, and those layers' bytes are left out of the
//! stream (its loader takes them from its store by ChainID).
//!
//! [`load`] takes the image and the engine and writes the one into the other, as
//! go-containerregistry's `daemon.Write` does; the command line only parses arguments.

mod engine;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::process::{Child, Stdio};

use nix_layer_blob::Digest;
use nix_layer_pipeline::{BuildSummary, ImageRequest, Progress};

pub use engine::{chain_id, Engine, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{binary}` is not installed (not found on PATH); --engine {engine} needs it")]
    NotInstalled { binary: &'static str, engine: &'static str },
    #[error("cannot run `{binary}`: {source}")]
    Spawn { binary: &'static str, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("`{command}` printed {problem}")]
    Output { command: String, problem: String },
    #[error("{what} does not answer: {cause}")]
    NoAnswer { what: &'static str, cause: Box<Error> },
    #[error("no containerd socket at {0}: is containerd running? (--address names another)")]
    NoSocket(String),
    #[error("cannot wait for the loader: {0}")]
    Wait(io::Error),
    /// The loader went away while the image was streamed into it: its own words say why.
    #[error("`{command}` stopped reading: {loader}")]
    LoaderStopped { command: String, loader: Box<Error>, stream: Box<nix_layer_pipeline::Error> },
    #[error(transparent)]
    Build(Box<nix_layer_pipeline::Error>),
}

impl From<nix_layer_pipeline::Error> for Error {
    fn from(e: nix_layer_pipeline::Error) -> Self {
        Error::Build(Box::new(e))
    }
}

/// What a load did.
#[derive(Debug)]
pub struct Loaded {
    pub summary: BuildSummary,
    /// Bytes sent into the loader.
    pub sent: u64,
    /// Layers the engine held already, whose bytes were left out.
    pub skipped: usize,
}

/// Builds `image` and loads it into `target`'s engine. A build that fails stops the
/// loader before it sees the end of the stream, so nothing is loaded; a loader that
/// fails or stops reading fails the load with its own error.
pub fn load(image: &ImageRequest, target: &Target, progress: &dyn Progress) -> Result<Loaded, Error> {
    let present = target.layers_present()?;
    let mut loader = target.loader();
    let mut child = loader
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| target.spawn_error(e))?;
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut sink = Counting { inner: child.stdin.take().expect("piped stdin"), bytes: 0 };
    let skipped = Cell::new(0usize);
    let is_present = |chain: &[Digest]| {
        let there = chain_id(chain).is_some_and(|c| present.contains(&c));
        skipped.set(skipped.get() + usize::from(there));
        there
    };
    // An engine that holds no layer: no layer is hashed before it is sent.
    let present_fn: Option<&nix_layer_pipeline::Present<'_>> = (!present.is_empty()).then_some(&is_present);
    let built = nix_layer_pipeline::stream(image, progress, &mut sink, present_fn);
    let command = engine::shown(&loader);
    let wait_loader = |child: &mut Child| -> Result<(), Error> {
        let status = child.wait().map_err(Error::Wait)?;
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(Error::Command {
                command: command.clone(),
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        Ok(())
    };
    let sent = sink.bytes;
    let summary = match built {
        Ok(summary) => summary,
        Err(e) => {
            if broken_pipe(&e) || matches!(child.try_wait(), Ok(Some(_))) {
                drop(sink);
                let loader = match wait_loader(&mut child) {
                    Err(loader) => loader,
                    // The loader succeeded on a stream cut short: still an error.
                    Ok(()) => Error::Output {
                        command: command.clone(),
                        problem: "success on an unfinished stream".into(),
                    },
                };
                return Err(Error::LoaderStopped { command, loader: Box::new(loader), stream: Box::new(e) });
            }
            // The build failed: the loader is stopped before it sees the end of a half stream.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    drop(sink); // the end of the stream: the loader sees EOF
    wait_loader(&mut child)?;
    Ok(Loaded { summary, sent, skipped: skipped.get() })
}

/// Counts what goes into the loader's stdin.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether the stream failed because its reader closed the pipe.
fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_found_among_causes() {
        use nix_layer_pipeline::Error as E;
        let io = |kind| E::Io { context: "cannot write the stream".into(), source: io::Error::from(kind) };
        assert!(broken_pipe(&io(io::ErrorKind::BrokenPipe)));
        assert!(!broken_pipe(&io(io::ErrorKind::StorageFull)));
        let inside =
            E::Changed { layer: 1, first: "x".into(), cause: Box::new(io(io::ErrorKind::BrokenPipe)) };
        assert!(broken_pipe(&inside));
    }
}
