//! gzip as a sequence of independent members, compressed in parallel.
//!
//! The uncompressed stream is cut every [`MEMBER_SIZE`] bytes, counted from its start, and
//! each piece becomes one complete gzip member (header, deflate data, CRC and size)
//! compressed by libdeflate. Members are written in order, so the blob is plain
//! multi-member gzip (RFC 1952 §2.2), which gzip, pigz, Go's compress/gzip (containerd,
//! Docker, Podman, skopeo) and flate2's `MultiGzDecoder` read as one stream.
//!
//! The cut points depend only on the input bytes, never on the thread count or on how the
//! input was split into writes, and each member depends only on its piece: the output is
//! the same bytes on one thread or many.
//!
//! Pieces are compressed as rayon tasks in the current pool (the pipeline's `--jobs` pool
//! when a layer is written from it), so this adds no threads of its own: while other
//! layers keep the workers busy the writer mostly compresses its own pieces inline, and
//! when one big layer is left the idle workers take its pieces.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};

use libdeflater::{CompressionLvl, Compressor};

/// Uncompressed bytes per gzip member. Large enough that restarting the deflate window at
/// each member costs well under 0.1% of the blob size, small enough that a 30 MB layer
/// still splits into pieces for both cores. Part of the output format: changing it
/// changes gzip layer digests.
pub(crate) const MEMBER_SIZE: usize = 1 << 20;

/// A writer producing multi-member gzip into `W`; see the module documentation.
pub(crate) struct MemberWriter<W: Write> {
    out: W,
    level: i32,
    /// The piece being filled.
    current: Vec<u8>,
    /// Pieces handed to rayon, oldest first; written to `out` in this order.
    in_flight: VecDeque<Arc<Piece>>,
    /// Bounds memory: at most this many pieces (each ≤ 1 MiB in and out) in flight.
    max_in_flight: usize,
    /// Whether any member was written (an empty input still needs one member).
    wrote_any: bool,
}

impl<W: Write> MemberWriter<W> {
    pub(crate) fn new(out: W, level: i32) -> Self {
        MemberWriter {
            out,
            level,
            current: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: rayon::current_num_threads() + 2,
            wrote_any: false,
        }
    }

    /// Writes every pending member and returns the inner writer (not flushed).
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || (!self.wrote_any && self.in_flight.is_empty()) {
            let piece = std::mem::take(&mut self.current);
            self.submit(piece)?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.out)
    }

    fn submit(&mut self, input: Vec<u8>) -> io::Result<()> {
        let piece = Arc::new(Piece::new(input, self.level));
        self.in_flight.push_back(Arc::clone(&piece));
        // Offered to idle workers; if none takes it, `write_oldest` runs it here.
        rayon::spawn(move || piece.run());
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        // Write whatever is already done, to keep memory low.
        while self.in_flight.front().is_some_and(|p| p.is_done()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest piece, helping with pieces nobody has started meanwhile
    /// (blocking a pool thread that could run them might starve the pool), and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let oldest = self.in_flight.front().expect("a piece in flight");
        oldest.run();
        if !oldest.is_done() {
            for later in self.in_flight.iter().skip(1) {
                later.run();
            }
        }
        let member = self.in_flight.pop_front().expect("a piece in flight").wait()?;
        self.wrote_any = true;
        self.out.write_all(&member)
    }
}

impl<W: Write> Write for MemberWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.capacity() == 0 {
            self.current.reserve_exact(MEMBER_SIZE);
        }
        let n = buf.len().min(MEMBER_SIZE - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == MEMBER_SIZE {
            let piece = std::mem::take(&mut self.current);
            self.submit(piece)?;
        }
        Ok(n)
    }

    /// Does nothing: a member ends only at a fixed offset, see the module documentation.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One piece of input and, once compressed, its member.
struct Piece {
    level: i32,
    state: Mutex<State>,
    done: Condvar,
}

enum State {
    Waiting(Vec<u8>),
    Running,
    Done(io::Result<Vec<u8>>),
    Taken,
}

impl Piece {
    fn new(input: Vec<u8>, level: i32) -> Self {
        Piece { level, state: Mutex::new(State::Waiting(input)), done: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while compressing cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_done(&self) -> bool {
        matches!(*self.lock(), State::Done(_))
    }

    /// Compresses the piece unless another thread has started it.
    fn run(&self) {
        let input = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Running) {
                State::Waiting(input) => input,
                other => {
                    *state = other;
                    return;
                }
            }
        };
        let member = gzip_member(&input, self.level);
        *self.lock() = State::Done(member);
        self.done.notify_all();
    }

    /// The member, once whoever runs the piece has finished.
    fn wait(&self) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Done(member) => return member,
                State::Taken => return Err(io::Error::other("a gzip member was taken twice")),
                other => {
                    *state = other;
                    state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

thread_local! {
    /// libdeflate compressors allocate their match finder once; reuse one per thread.
    static COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
}

/// One complete gzip member holding `input`. libdeflate writes a fixed header: no name,
/// mtime 0, OS 255 ("unknown"), so the bytes do not depend on the host.
pub(crate) fn gzip_member(input: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let lvl = CompressionLvl::new(level)
                .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
            *slot = Some((level, Compressor::new(lvl)));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
        let n = compressor
            .gzip_compress(input, &mut out)
            .map_err(|e| io::Error::other(format!("libdeflate could not compress a piece: {e}")))?;
        out.truncate(n);
        Ok(out)
    })
}
