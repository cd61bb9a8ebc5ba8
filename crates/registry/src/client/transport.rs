//! One request on the wire: timeouts and stall detection, redirects followed by hand (so
//! credentials never cross to another host), retries with backoff, and a per-registry
//! give-up clock so a registry that stops answering fails the command in bounded time.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::{self, Response};
use ureq::SendBody;

use crate::error::is_transient_status;
use crate::Error;

use super::Client;

/// Redirects followed for one request (registries send blob downloads to storage).
const MAX_REDIRECTS: u32 = 5;

/// One request's fixed parts.
pub(crate) struct Req<'a> {
    pub method: &'static str,
    pub url: String,
    pub registry: &'a str,
    /// Bearer scopes, space-separated (`repository:<repo>:pull,push`).
    pub scope: String,
    pub headers: Vec<(&'static str, String)>,
}

pub(crate) enum ReqBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Sent once: a failure is retried by the caller, which can reopen the source.
    Stream(&'a mut dyn Read, u64),
}

/// When each registry stopped answering (the start of the first silence not followed by an
/// answer). Shared by all threads of a client, so nested and parallel retries stop together.
#[derive(Default)]
pub(crate) struct Health {
    silent_since: Mutex<HashMap<String, Instant>>,
}

impl Health {
    pub(crate) fn answered(&self, registry: &str) {
        self.silent_since.lock().expect("health state").remove(registry);
    }

    pub(crate) fn silent(&self, registry: &str, since: Instant) {
        let mut map = self.silent_since.lock().expect("health state");
        let e = map.entry(registry.to_owned()).or_insert(since);
        *e = (*e).min(since);
    }

    /// How long `registry` has not answered, if it is silent.
    pub(crate) fn silence(&self, registry: &str) -> Option<Duration> {
        self.silent_since.lock().expect("health state").get(registry).map(|s| s.elapsed())
    }
}

impl Client {
    /// `scheme://api-host` of a registry name (`docker.io` → Docker Hub's API host).
    pub(crate) fn origin_of(&self, registry: &str) -> String {
        let scheme = if self.options.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", crate::reference::api_host(registry))
    }

    /// Fails at once when `registry` has been silent for the give-up time: no new request
    /// (nor retry) starts then, which bounds the whole command.
    pub(crate) fn check_answering(&self, registry: &str, request: &str) -> Result<(), Error> {
        match self.health.silence(registry) {
            Some(s) if s >= self.options.timeouts.give_up => Err(Error::Unreachable {
                registry: registry.to_owned(),
                request: request.to_owned(),
                attempts: 0,
                cause: format!("the registry has not answered for {} s; giving up", s.as_secs()),
            }),
            _ => Ok(()),
        }
    }

    /// Runs one network call against `registry` (a request, a ping, a token fetch), keeping
    /// the give-up clock: a transport failure starts (or continues) a silence.
    pub(crate) fn call(
        &self,
        registry: &str,
        method: &str,
        url: &str,
        run: impl FnOnce() -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, Error> {
        self.check_answering(registry, &format!("{method} {url}"))?;
        let start = Instant::now();
        match run() {
            Ok(resp) => {
                // A body still to come is an answer only once it has arrived (see BodyReader).
                if !(method == "GET" && resp.status().is_success()) {
                    self.health.answered(registry);
                }
                Ok(resp)
            }
            Err(e) => {
                let err = transport_error(registry, method, url, e);
                if err.is_transient() {
                    // Silent since the call began, or for the last stall window of a long one.
                    let since = start.max(Instant::now() - self.options.timeouts.stall.min(start.elapsed()));
                    self.health.silent(registry, since);
                }
                Err(err)
            }
        }
    }

    /// Whether a failed request may be tried again: attempts left and the registry not
    /// silent for the give-up time.
    pub(crate) fn may_retry(&self, registry: &str, err: &Error, tries: u32) -> bool {
        err.is_transient()
            && tries < self.options.retry.attempts
            && self.health.silence(registry).is_none_or(|s| s < self.options.timeouts.give_up)
    }

    /// Sends `req`, answering auth challenges, following redirects of GET and HEAD, and
    /// retrying transient failures of replayable requests. Transient statuses come back as
    /// errors; every other status is the caller's.
    pub(crate) fn send(&self, req: &Req, mut body: ReqBody) -> Result<Response<ureq::Body>, Error> {
        let replayable = !matches!(body, ReqBody::Stream(..));
        let mut auth_retried = false;
        let mut tries = 0;
        loop {
            let mut retry_after = Duration::ZERO;
            let err = match self.send_following(req, &mut body) {
                Ok(resp) if resp.status() == 401 && !auth_retried => {
                    auth_retried = true;
                    self.learn_challenge(req, &resp)?;
                    if replayable {
                        continue;
                    }
                    return Err(self.status_error(req, "the request", resp));
                }
                Ok(resp) if is_transient_status(resp.status().as_u16()) => {
                    // A rate limit's `Retry-After` (seconds) is honoured up to the longest delay.
                    let secs = header(&resp, "Retry-After").and_then(|v| v.trim().parse::<u64>().ok());
                    retry_after = Duration::from_secs(secs.unwrap_or(0)).min(self.options.retry.max_delay);
                    self.status_error(req, "the request", resp)
                }
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            tries += 1;
            if !replayable || !self.may_retry(req.registry, &err, tries) {
                return Err(with_attempts(err, tries));
            }
            std::thread::sleep(self.options.retry.delay(tries - 1).max(retry_after));
        }
    }

    /// One try of `req`, following redirects of GET and HEAD by hand: a hop to another
    /// origin goes without `Authorization`.
    fn send_following(&self, req: &Req, body: &mut ReqBody) -> Result<Response<ureq::Body>, Error> {
        let mut resp = self.send_once(req, body)?;
        if !matches!(req.method, "GET" | "HEAD") {
            return Ok(resp);
        }
        let mut url = req.url.clone();
        for _ in 0..MAX_REDIRECTS {
            if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(loc) = header(&resp, "Location") else { return Ok(resp) };
            url = resolve_location(origin(&url), &url, &loc);
            let hop = Req {
                method: req.method,
                url: url.clone(),
                registry: req.registry,
                scope: req.scope.clone(),
                headers: req.headers.clone(),
            };
            resp = self.send_once(&hop, &mut ReqBody::Empty)?;
        }
        Ok(resp)
    }

    fn send_once(&self, req: &Req, body: &mut ReqBody) -> Result<Response<ureq::Body>, Error> {
        let mut b = http::Request::builder().method(req.method).uri(&req.url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        // Credentials belong to the registry's own origin: never to an upload `Location` or
        // a redirect elsewhere.
        if origin(&req.url) == self.origin_of(req.registry) {
            if let Some(auth) = self.authorization(req)? {
                b = b.header("Authorization", auth);
            }
        }
        let bad = |e: http::Error| Error::BadReference { input: req.url.clone(), reason: e.to_string() };
        let (method, url) = (req.method, req.url.as_str());
        // Each arm runs its own request: `SendBody` is invariant in its lifetime.
        match body {
            ReqBody::Empty => {
                let b = if matches!(req.method, "PUT" | "POST" | "PATCH") {
                    b.header("Content-Length", "0")
                } else {
                    b
                };
                let r = b.body(()).map_err(bad)?;
                self.call(req.registry, method, url, || self.agent.run(r))
            }
            ReqBody::Bytes(bytes) => {
                let r = b.header("Content-Length", bytes.len()).body(*bytes).map_err(bad)?;
                self.call(req.registry, method, url, || self.agent.run(r))
            }
            ReqBody::Stream(reader, len) => {
                let r = b.header("Content-Length", *len).body(SendBody::from_reader(*reader)).map_err(bad)?;
                self.call(req.registry, method, url, || self.agent.run(r))
            }
        }
    }

    /// A response body as a reader that is bounded (more than `limit` bytes is an error,
    /// as soon as it happens), detects a stall or a trickle (fewer than the minimum bytes in
    /// a stall window) and counts as the registry's answer once complete.
    pub(crate) fn body_reader<'a>(
        &'a self,
        req: &Req<'a>,
        resp: Response<ureq::Body>,
        limit: u64,
    ) -> BodyReader<'a> {
        BodyReader {
            inner: Box::new(resp.into_body().into_with_config().limit(u64::MAX).reader()),
            client: self,
            registry: req.registry.to_owned(),
            request: format!("{} {}", req.method, req.url),
            limit,
            read: 0,
            progress: Progress::new(self.options.timeouts.stall, self.options.timeouts.min_progress),
        }
    }
}

/// Minimum progress over a window: a body (either direction) that delivers fewer than
/// `min` bytes in `window` has stalled, even if each byte arrives within the read timeout.
pub(crate) struct Progress {
    window: Duration,
    min: u64,
    /// The current window's start; the first is opened by the first record.
    start: Option<Instant>,
    bytes: u64,
}

impl Progress {
    pub(crate) fn new(window: Duration, min: u64) -> Progress {
        Progress { window, min, start: None, bytes: 0 }
    }

    /// When the current window began (now if none has).
    pub(crate) fn since(&self) -> Instant {
        self.start.unwrap_or_else(Instant::now)
    }

    pub(crate) fn record(&mut self, n: usize) -> io::Result<()> {
        let start = *self.start.get_or_insert_with(Instant::now);
        self.bytes += n as u64;
        if start.elapsed() >= self.window {
            if self.bytes < self.min {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "stalled: {} bytes in {} ms, the minimum is {} bytes",
                        self.bytes,
                        self.window.as_millis(),
                        self.min
                    ),
                ));
            }
            self.start = Some(Instant::now());
            self.bytes = 0;
        }
        Ok(())
    }
}

pub(crate) struct BodyReader<'a> {
    inner: Box<dyn Read + 'a>,
    client: &'a Client,
    registry: String,
    request: String,
    limit: u64,
    read: u64,
    progress: Progress,
}

impl BodyReader<'_> {
    /// Reads the whole body (bounded by the limit).
    pub(crate) fn read_all(mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.read_to_end(&mut out).map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// The error for a failed read: too long, stalled or cut off.
    pub(crate) fn error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::FileTooLarge {
            return Error::Protocol {
                registry: self.registry.clone(),
                what: self.request.clone(),
                reason: e.to_string(),
            };
        }
        Error::Unreachable {
            registry: self.registry.clone(),
            request: self.request.clone(),
            attempts: 1,
            cause: e.to_string(),
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte beyond the limit is enough to know the body is too long.
        let room = (self.limit - self.read.min(self.limit)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                let stall = self.client.options.timeouts.stall;
                let since = self.progress.since();
                self.client.health.silent(&self.registry, since.max(Instant::now() - stall));
                return Err(e);
            }
        };
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the body is longer than the {} bytes expected", self.limit),
            ));
        }
        if n == 0 {
            self.client.health.answered(&self.registry);
            return Ok(0);
        }
        if let Err(e) = self.progress.record(n) {
            self.client.health.silent(&self.registry, self.progress.since());
            return Err(e);
        }
        Ok(n)
    }
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

pub(crate) fn with_attempts(mut e: Error, n: u32) -> Error {
    if let Error::Unreachable { attempts, .. } = &mut e {
        *attempts = n;
    }
    e
}

pub(crate) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub(crate) fn transport_error(registry: &str, method: &str, url: &str, e: ureq::Error) -> Error {
    // rustls reports a handshake failure as invalid data; retrying cannot help.
    let tls = match &e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
        ureq::Error::Io(io) => url.starts_with("https:") && io.kind() == io::ErrorKind::InvalidData,
        _ => false,
    };
    if tls {
        return Error::Tls { registry: registry.to_owned(), url: url.to_owned(), cause: e.to_string() };
    }
    let cause = e.to_string();
    Error::Unreachable {
        registry: registry.to_owned(),
        request: format!("{method} {url}"),
        attempts: 1,
        cause,
    }
}

/// The error for an unexpected status; `user` is who was refused, for 401 and 403.
pub(crate) fn error_from_status(
    req: &Req,
    what: &str,
    mut resp: Response<ureq::Body>,
    user: Option<String>,
) -> Error {
    let status = resp.status().as_u16();
    let text =
        resp.body_mut().with_config().limit(64 << 10).lossy_utf8(true).read_to_string().unwrap_or_default();
    let message = registry_message(&text);
    if status == 401 || status == 403 {
        return Error::Unauthorized {
            registry: req.registry.to_owned(),
            scope: req.scope.clone(),
            status,
            user,
            message,
        };
    }
    Error::Rejected {
        registry: req.registry.to_owned(),
        what: what.to_owned(),
        request: format!("{} {}", req.method, req.url),
        status,
        message,
    }
}

/// The registry's `{"errors":[{"code","message"}]}` as `CODE: message; …`, else the text.
fn registry_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(text) {
        Ok(e) if !e.errors.is_empty() => {
            e.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect::<Vec<_>>().join("; ")
        }
        _ if text.trim().is_empty() => "(no error text)".to_owned(),
        _ => text.trim().chars().take(500).collect(),
    }
}

/// Percent-encodes what may not appear raw in a query value.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", query_escape(value))
}

/// `Location` may be absolute, absolute-path, or relative to the request URL.
pub(crate) fn resolve_location(base: &str, request_url: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_owned()
    } else if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        let path = request_url.split('?').next().unwrap_or(request_url);
        let dir = &path[..path.rfind('/').map_or(path.len(), |i| i + 1)];
        format!("{dir}{loc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RetryPolicy;

    #[test]
    fn backoff_is_deterministic_and_bounded() {
        let p = RetryPolicy {
            attempts: 9,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
        };
        let delays: Vec<u128> = (0..5).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 700, 700]);
        assert_eq!(p.delay(1000), Duration::from_millis(700));
    }

    #[test]
    fn locations_relative_and_absolute() {
        let base = "https://r.example";
        let req = "https://r.example/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(base, req, "/v2/a/blobs/uploads/u1?_state=x"),
            "https://r.example/v2/a/blobs/uploads/u1?_state=x"
        );
        assert_eq!(resolve_location(base, req, "http://other:5000/up/1"), "http://other:5000/up/1");
        assert_eq!(resolve_location(base, req, "u2"), "https://r.example/v2/a/blobs/uploads/u2");
        assert_eq!(
            with_query("https://h/x?_state=a", "digest", "sha256:ab"),
            "https://h/x?_state=a&digest=sha256:ab"
        );
        assert_eq!(
            with_query("https://h/t", "scope", "repository:a b&c:pull"),
            "https://h/t?scope=repository:a%20b%26c:pull"
        );
    }

    #[test]
    fn registry_error_text() {
        assert_eq!(
            registry_message(
                r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
            ),
            "MANIFEST_BLOB_UNKNOWN: blob unknown to registry"
        );
        assert_eq!(registry_message(" "), "(no error text)");
        assert_eq!(registry_message("oops\n"), "oops");
    }

    #[test]
    fn transient_statuses() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
    }
}
