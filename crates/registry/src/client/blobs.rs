//! Blobs: existence checks, verified and bounded downloads, and uploads (mount, one PUT
//! or PATCH chunks), with abandoned upload sessions cancelled.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix_layer_blob::{Digest, HashingReader, HashingWriter};
use ureq::http::Response;

use crate::{Error, Reference};

use super::transport::{
    header, query_escape, resolve_location, with_attempts, with_query, Progress, Req, ReqBody,
};
use super::{pull_scope, push_scope, BlobOutcome, BlobReport, BlobSource, Client};

impl Client {
    /// The size of `digest` in `repo`, or `None` if the registry lacks it.
    pub fn head_blob(&self, repo: &Reference, digest: &Digest) -> Result<Option<u64>, Error> {
        let req = self.req("HEAD", repo, &format!("blobs/{digest}"), pull_scope(&repo.repository));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(Some(header(&resp, "Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0))),
            404 => Ok(None),
            _ => Err(self.status_error(&req, &format!("the existence check of blob {digest}"), resp)),
        }
    }

    /// Streams blob `digest` of `repo` into `out`, hashing as it goes. Returns the size; a
    /// blob whose bytes do not hash to `digest` is an error (`out` then holds garbage: use
    /// [`Client::fetch_blob_to_path`] for a file that exists only when verified). The body
    /// is bounded only by its `Content-Length`: prefer [`Client::fetch_blob_sized`].
    pub fn fetch_blob(&self, repo: &Reference, digest: &Digest, out: &mut dyn Write) -> Result<u64, Error> {
        self.download(repo, digest, None, out, &mut false)
    }

    /// [`Client::fetch_blob`] of a blob whose size a descriptor gives: a body that runs
    /// past `size` fails as soon as it does, a shorter one fails at its end.
    pub fn fetch_blob_sized(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        out: &mut dyn Write,
    ) -> Result<u64, Error> {
        self.download(repo, digest, Some(size), out, &mut false)
    }

    /// [`Client::fetch_blob`], setting `streaming` once the body has started to arrive.
    fn download(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: Option<u64>,
        out: &mut dyn Write,
        streaming: &mut bool,
    ) -> Result<u64, Error> {
        let req = self.req("GET", repo, &format!("blobs/{digest}"), pull_scope(&repo.repository));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(not_found(repo, format!("blob {digest}"))),
            _ => return Err(self.status_error(&req, &format!("the download of blob {digest}"), resp)),
        }
        if let (Some(size), Some(length)) =
            (size, header(&resp, "Content-Length").and_then(|l| l.parse::<u64>().ok()))
        {
            if length != size {
                return Err(Error::SizeMismatch {
                    what: format!(
                        "blob {digest} in {}/{} (its Content-Length)",
                        repo.registry, repo.repository
                    ),
                    expected: size,
                    actual: length,
                });
            }
        }
        *streaming = true;
        let mut body = self.body_reader(&req, resp, size.unwrap_or(u64::MAX));
        let mut w = HashingWriter::new(out);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                    // Cut off at the first byte too many: `actual` is a lower bound.
                    return Err(Error::SizeMismatch {
                        what: format!(
                            "blob {digest} downloaded from {}/{} (its body runs past its size; cut off)",
                            repo.registry, repo.repository
                        ),
                        expected: size.unwrap_or(0),
                        actual: size.unwrap_or(0) + 1,
                    });
                }
                Err(e) => return Err(body.error(e)),
            };
            w.write_all(&buf[..n]).map_err(Error::io("writing blob to", Path::new("(output)")))?;
        }
        let (_, actual, got) = w.finish();
        if let Some(size) = size.filter(|s| *s != got) {
            return Err(Error::SizeMismatch {
                what: format!("blob {digest} downloaded from {}/{}", repo.registry, repo.repository),
                expected: size,
                actual: got,
            });
        }
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("blob downloaded from {}/{}", repo.registry, repo.repository),
                expected: *digest,
                actual: actual.to_string(),
            });
        }
        Ok(got)
    }

    /// Downloads a blob to `dest` through a temporary file beside it, renamed into place
    /// only once the digest is verified. A download cut off mid-body starts again (the
    /// requests themselves are already retried).
    pub fn fetch_blob_to_path(&self, repo: &Reference, digest: &Digest, dest: &Path) -> Result<u64, Error> {
        self.fetch_to_path(repo, digest, None, dest)
    }

    /// [`Client::fetch_blob_to_path`] bounded by the descriptor's `size` (see
    /// [`Client::fetch_blob_sized`]).
    pub fn fetch_blob_to_path_sized(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: u64,
        dest: &Path,
    ) -> Result<u64, Error> {
        self.fetch_to_path(repo, digest, Some(size), dest)
    }

    fn fetch_to_path(
        &self,
        repo: &Reference,
        digest: &Digest,
        size: Option<u64>,
        dest: &Path,
    ) -> Result<u64, Error> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(Error::io("creating a temporary file in", dir))?;
        let mut retry = 0;
        let size = loop {
            let f = tmp.as_file_mut();
            f.set_len(0).map_err(Error::io("truncating", dest))?;
            io::Seek::rewind(f).map_err(Error::io("rewinding", dest))?;
            let mut w = io::BufWriter::new(&mut *f);
            let mut streaming = false;
            match self.download(repo, digest, size, &mut w, &mut streaming) {
                Ok(size) => {
                    w.flush().map_err(Error::io("writing", dest))?;
                    break size;
                }
                Err(e) if streaming && self.may_retry(&repo.registry, &e, retry + 1) => {
                    std::thread::sleep(self.options.retry.delay(retry));
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        };
        tmp.persist(dest).map_err(|e| Error::Io {
            action: "renaming a downloaded blob to",
            path: dest.to_owned(),
            cause: e.error,
        })?;
        Ok(size)
    }

    /// Uploads the blobs `repo` lacks (in parallel), then confirms each with a HEAD.
    pub fn push_blobs(
        &self,
        repo: &Reference,
        blobs: &[&dyn BlobSource],
        mount_from: &[&str],
    ) -> Result<Vec<BlobReport>, Error> {
        self.push_blobs_known(repo, blobs, mount_from, &HashSet::new())
    }

    /// [`Client::push_blobs`], without a HEAD for the blobs in `present` (see
    /// [`Client::push_image_known`]).
    pub(super) fn push_blobs_known(
        &self,
        repo: &Reference,
        blobs: &[&dyn BlobSource],
        mount_from: &[&str],
        present: &HashSet<Digest>,
    ) -> Result<Vec<BlobReport>, Error> {
        let mut seen = HashSet::new();
        let unique: Vec<&dyn BlobSource> =
            blobs.iter().copied().filter(|b| seen.insert(b.digest())).collect();
        self.parallel(&unique, |blob| {
            if present.contains(&blob.digest()) {
                return Ok(BlobReport {
                    digest: blob.digest(),
                    size: blob.size(),
                    outcome: BlobOutcome::Present,
                });
            }
            self.push_blob(repo, blob, mount_from)
        })
    }

    /// Runs `f` over `items` on up to `parallel_uploads` threads; after a failure no new
    /// item starts. Returns the results in order, or the first failure in order.
    fn parallel<T: Send>(
        &self,
        items: &[&dyn BlobSource],
        f: impl Fn(&dyn BlobSource) -> Result<T, Error> + Sync,
    ) -> Result<Vec<T>, Error> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Vec<Mutex<Option<Result<T, Error>>>> = items.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.options.parallel_uploads.clamp(1, items.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while !failed.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        let r = f(*item);
                        failed.fetch_or(r.is_err(), Ordering::SeqCst);
                        *results[i].lock().expect("result slot") = Some(r);
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(items.len());
        for r in results {
            match r.into_inner().expect("result slot") {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => return Err(e),
                None => {} // not started because another item failed; that failure follows
            }
        }
        Ok(out)
    }

    fn push_blob(
        &self,
        repo: &Reference,
        blob: &dyn BlobSource,
        mount_from: &[&str],
    ) -> Result<BlobReport, Error> {
        let digest = blob.digest();
        let report = |outcome| BlobReport { digest, size: blob.size(), outcome };
        if let Some(size) = self.head_blob(repo, &digest)? {
            check_size(repo, &digest, blob.size(), size)?;
            return Ok(report(BlobOutcome::Present));
        }
        let mut retry = 0;
        let outcome = loop {
            match self.upload_blob(repo, blob, mount_from) {
                Ok(o) => break o,
                Err(e) if self.may_retry(&repo.registry, &e, retry + 1) => {
                    std::thread::sleep(self.options.retry.delay(retry));
                    retry += 1;
                    // The failed attempt may have landed after all.
                    if self.head_blob(repo, &digest)?.is_some() {
                        break BlobOutcome::Uploaded { bytes: blob.size() };
                    }
                }
                Err(e) => return Err(with_attempts(e, retry + 1)),
            }
        };
        // Confirmed present before any manifest can name it.
        match self.head_blob(repo, &digest)? {
            Some(size) => check_size(repo, &digest, blob.size(), size)?,
            None => {
                return Err(Error::Rejected {
                    registry: repo.registry.clone(),
                    what: format!("blob {digest}"),
                    request: format!("HEAD {}/v2/{}/blobs/{digest}", self.base(repo), repo.repository),
                    status: 404,
                    message: "the blob is missing right after its upload was accepted".into(),
                })
            }
        }
        Ok(report(outcome))
    }

    /// One upload attempt: mount if a candidate repository has the blob, else stream it
    /// into an upload session (one PUT, or PATCH chunks then PUT).
    fn upload_blob(
        &self,
        repo: &Reference,
        blob: &dyn BlobSource,
        mount_from: &[&str],
    ) -> Result<BlobOutcome, Error> {
        let digest = blob.digest();
        let base = self.base(repo);
        let mut session: Option<String> = None;
        for from in mount_from.iter().filter(|f| **f != repo.repository) {
            let scope = format!("{} {}", push_scope(&repo.repository), pull_scope(from));
            let path = format!("blobs/uploads/?mount={digest}&from={}", query_escape(from));
            let req = self.req("POST", repo, &path, scope);
            let resp = self.send(&req, ReqBody::Empty)?;
            match resp.status().as_u16() {
                201 => {
                    if let Some(opened) = session {
                        self.cancel_upload(repo, &opened);
                    }
                    return Ok(BlobOutcome::Mounted { from: (*from).to_owned() });
                }
                // Not mountable from there; the registry opened an ordinary upload instead,
                // used if no other candidate mounts it, else cancelled.
                202 => {
                    let opened = self.location(&req, &base, &resp)?;
                    if let Some(previous) = session.replace(opened) {
                        self.cancel_upload(repo, &previous);
                    }
                }
                _ => {
                    return Err(self.status_error(
                        &req,
                        &format!("the mount of blob {digest} from {from}"),
                        resp,
                    ))
                }
            }
        }
        let (mut location, min_chunk) = match session {
            Some(l) => (l, 0),
            None => {
                let req = self.req("POST", repo, "blobs/uploads/", push_scope(&repo.repository));
                let resp = self.send(&req, ReqBody::Empty)?;
                if resp.status() != 202 {
                    return Err(self.status_error(&req, &format!("the upload of blob {digest}"), resp));
                }
                let min =
                    header(&resp, "OCI-Chunk-Min-Length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                (self.location(&req, &base, &resp)?, min)
            }
        };
        let result = self.stream_to_session(repo, blob, &mut location, min_chunk);
        if result.is_err() {
            // A retry opens a new session: this one is abandoned for good.
            self.cancel_upload(repo, &location);
        }
        result
    }

    /// Sends a blob's bytes into the upload session at `location` (updated as chunks go).
    fn stream_to_session(
        &self,
        repo: &Reference,
        blob: &dyn BlobSource,
        location: &mut String,
        min_chunk: u64,
    ) -> Result<BlobOutcome, Error> {
        let digest = blob.digest();
        let base = self.base(repo);
        let size = blob.size();
        let chunk = self.options.chunk_size.max(min_chunk).max(1);
        let t = &self.options.timeouts;
        let mut source = SourceReader::new(
            blob.open().map_err(|cause| Error::Source { digest, cause })?,
            Progress::new(t.stall, t.min_progress),
        );
        let scope = push_scope(&repo.repository);
        let put = |location: &str, source: &mut SourceReader, len: u64| {
            let req = Req {
                method: "PUT",
                url: with_query(location, "digest", &digest.to_string()),
                registry: &repo.registry,
                scope: scope.clone(),
                headers: vec![("Content-Type", "application/octet-stream".into())],
            };
            let result = if len == 0 {
                self.send(&req, ReqBody::Empty)
            } else {
                let mut body = (&mut *source).take(len);
                self.send(&req, ReqBody::Stream(&mut body, len))
            };
            let resp = source.check(digest, result)?;
            source.verify(digest, size)?;
            if resp.status() != 201 {
                return Err(self.status_error(&req, &format!("blob {digest}"), resp));
            }
            Ok(())
        };
        if size <= chunk {
            put(location, &mut source, size)?;
        } else {
            let mut offset = 0;
            while offset < size {
                let n = chunk.min(size - offset);
                let req = Req {
                    method: "PATCH",
                    url: location.clone(),
                    registry: &repo.registry,
                    scope: scope.clone(),
                    headers: vec![
                        ("Content-Type", "application/octet-stream".into()),
                        ("Content-Range", format!("{offset}-{}", offset + n - 1)),
                    ],
                };
                let mut body = (&mut source).take(n);
                let result = self.send(&req, ReqBody::Stream(&mut body, n));
                let resp = source.check(digest, result)?;
                if resp.status() != 202 {
                    return Err(self.status_error(&req, &format!("a chunk of blob {digest}"), resp));
                }
                *location = self.location(&req, &base, &resp)?;
                offset += n;
            }
            put(location, &mut source, 0)?;
        }
        Ok(BlobOutcome::Uploaded { bytes: size })
    }

    /// Best effort: a session left open is only garbage the registry collects later.
    fn cancel_upload(&self, repo: &Reference, location: &str) {
        let req = Req {
            method: "DELETE",
            url: location.to_owned(),
            registry: &repo.registry,
            scope: push_scope(&repo.repository),
            headers: vec![],
        };
        let _ = self.send(&req, ReqBody::Empty);
    }

    /// The absolute URL of a response's `Location` (registries send both relative and
    /// absolute ones).
    fn location(&self, req: &Req, base: &str, resp: &Response<ureq::Body>) -> Result<String, Error> {
        let loc = header(resp, "Location").ok_or_else(|| Error::Protocol {
            registry: req.registry.to_owned(),
            what: format!("{} {}", req.method, req.url),
            reason: "no Location header".into(),
        })?;
        Ok(resolve_location(base, &req.url, &loc))
    }
}

/// Reads a blob source while hashing it and keeping its own I/O error apart from the
/// network's, so a failing source is reported as such (and not retried).
/// The registry's consumption is watched too: a server that reads our body slower than
/// the minimum progress stalls the upload.
struct SourceReader<'a> {
    inner: HashingReader<Box<dyn Read + 'a>>,
    error: Option<io::Error>,
    progress: Progress,
}

impl<'a> SourceReader<'a> {
    fn new(inner: Box<dyn Read + 'a>, progress: Progress) -> Self {
        SourceReader { inner: HashingReader::new(inner), error: None, progress }
    }

    /// A send's result, unless the source failed underneath it.
    fn check<T>(&mut self, digest: Digest, result: Result<T, Error>) -> Result<T, Error> {
        match self.error.take() {
            Some(cause) => Err(Error::Source { digest, cause }),
            None => result,
        }
    }

    /// The whole source was read and hashes to the blob's digest.
    fn verify(&mut self, digest: Digest, size: u64) -> Result<(), Error> {
        let (_, actual, n) =
            std::mem::replace(&mut self.inner, HashingReader::new(Box::new(io::empty()))).finish();
        if n != size {
            return Err(Error::SizeMismatch {
                what: format!("source of blob {digest}"),
                expected: size,
                actual: n,
            });
        }
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: "blob source".into(),
                expected: digest,
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Each read comes after the previous bytes were written to the socket.
        self.progress.record(0)?;
        let n = self
            .inner
            .read(buf)
            .inspect_err(|e| self.error = Some(io::Error::new(e.kind(), e.to_string())))?;
        self.progress.record(n)?;
        Ok(n)
    }
}

fn check_size(repo: &Reference, digest: &Digest, expected: u64, actual: u64) -> Result<(), Error> {
    // Registries may omit Content-Length on HEAD (0 then); a different size is a lie.
    if actual != 0 && actual != expected {
        return Err(Error::SizeMismatch {
            what: format!("blob {digest} in {}/{}", repo.registry, repo.repository),
            expected,
            actual,
        });
    }
    Ok(())
}

pub(super) fn not_found(r: &Reference, what: String) -> Error {
    Error::NotFound { registry: r.registry.clone(), repository: r.repository.clone(), what }
}
