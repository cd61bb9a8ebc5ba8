//! The distribution API client: requests with auth and retries, blobs, manifests, pushes.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix_layer_blob::{Digest, HashingReader, HashingWriter};
use ureq::http::{self, Response};
use ureq::SendBody;

use crate::auth::{Challenge, CredentialSource, Credentials, IDENTITY_TOKEN_USER};
use crate::error::is_transient_status;
use crate::manifest::{is_index, Descriptor, IndexDoc, Manifest, Platform, ACCEPT_MANIFESTS};
use crate::{Error, Reference};

/// Manifests larger than this are refused (the OCI distribution spec's suggested limit).
const MANIFEST_LIMIT: u64 = 4 << 20;

/// Bounded exponential backoff without jitter, so a test can predict the schedule:
/// retry `n` (0-based) waits `initial_delay * 2^n`, at most `max_delay`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total tries of one request, the first included (1 = no retries).
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        self.initial_delay.saturating_mul(1u32 << n.min(16)).min(self.max_delay)
    }
}

/// How the client talks to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Speak plain HTTP instead of TLS to every registry (`--plain-http`). Never implied,
    /// not even for localhost.
    pub plain_http: bool,
    pub retry: RetryPolicy,
    /// Blobs uploaded at once.
    pub parallel_uploads: usize,
    /// Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size
    /// (raised to the registry's `OCI-Chunk-Min-Length` if it asks for more).
    pub chunk_size: u64,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            retry: RetryPolicy::default(),
            parallel_uploads: 4,
            chunk_size: 64 << 20,
            user_agent: concat!("nix-layer/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A blob to upload: its identity up front, its bytes only when the registry lacks it
/// (so a caller can make `open` compress on demand, or fail if it cannot).
pub trait BlobSource: Sync {
    fn digest(&self) -> Digest;
    fn size(&self) -> u64;
    /// A fresh reader of the whole blob; called again for each retry.
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;
}

/// A blob in a file (a layer in the cache, an OCI layout's blob).
#[derive(Clone, Debug)]
pub struct FileBlob {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl BlobSource for FileBlob {
    fn digest(&self) -> Digest {
        self.digest
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(std::fs::File::open(&self.path)?))
    }
}

/// A small blob held in memory (an image config, an SBOM).
#[derive(Clone, Debug)]
pub struct BytesBlob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl BytesBlob {
    pub fn new(bytes: Vec<u8>) -> BytesBlob {
        BytesBlob { digest: Digest::of(&bytes), bytes }
    }
}

impl BlobSource for BytesBlob {
    fn digest(&self) -> Digest {
        self.digest
    }
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self.bytes[..]))
    }
}

/// What happened to one blob of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it (a HEAD said so): nothing sent.
    Present,
    /// Mounted from another repository of the registry: nothing sent.
    Mounted { from: String },
    /// Uploaded; `bytes` is the blob's size.
    Uploaded { bytes: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobReport {
    pub digest: Digest,
    pub size: u64,
    pub outcome: BlobOutcome,
}

/// The result of [`Client::push_image`].
#[derive(Clone, Debug)]
pub struct PushReport {
    pub manifest_digest: Digest,
    /// One entry per distinct blob, in the order given.
    pub blobs: Vec<BlobReport>,
    /// The tags that now point at the manifest.
    pub tags: Vec<String>,
}

impl PushReport {
    /// Blob bytes sent (manifests not counted).
    pub fn bytes_uploaded(&self) -> u64 {
        self.blobs
            .iter()
            .map(|b| if let BlobOutcome::Uploaded { bytes } = b.outcome { bytes } else { 0 })
            .sum()
    }
    pub fn uploaded(&self) -> usize {
        self.blobs.iter().filter(|b| matches!(b.outcome, BlobOutcome::Uploaded { .. })).count()
    }
    pub fn mounted(&self) -> usize {
        self.blobs.iter().filter(|b| matches!(b.outcome, BlobOutcome::Mounted { .. })).count()
    }
}

/// An image (or index) to push: its blobs and its manifest bytes, sent exactly as given.
pub struct ImageUpload<'a> {
    /// Config and layers (for an index: none; push the child manifests first).
    pub blobs: &'a [&'a dyn BlobSource],
    pub manifest: &'a [u8],
    pub media_type: &'a str,
    /// Repositories of the same registry that may hold missing blobs (a base image's,
    /// the shared cache's); each missing blob is mounted from the first that has it.
    pub mount_from: &'a [&'a str],
}

/// An image resolved for one platform: the index it came from, if any, and its manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub index: Option<Manifest>,
    pub manifest: Manifest,
}

/// A registry client. Cheap to share between threads (`&Client`); it caches credentials,
/// each registry's auth scheme and bearer tokens per scope.
pub struct Client {
    agent: ureq::Agent,
    options: ClientOptions,
    credentials: CredentialSource,
    hosts: Mutex<HashMap<String, HostAuth>>,
}

#[derive(Default)]
struct HostAuth {
    /// Looked up once per registry (a credential helper runs once).
    creds: Option<Option<Credentials>>,
    /// Learnt from `GET /v2/` (inner `None`: the registry wants no auth).
    challenge: Option<Option<Challenge>>,
    tokens: HashMap<String, (String, Option<Instant>)>,
}

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

pub(crate) fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    pub fn new(options: ClientOptions, credentials: CredentialSource) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .https_only(!options.plain_http)
            .user_agent(options.user_agent.as_str())
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(600)))
            .build();
        Client { agent: config.new_agent(), options, credentials, hosts: Mutex::new(HashMap::new()) }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `scheme://api-host` of a reference's registry.
    pub(crate) fn base(&self, r: &Reference) -> String {
        format!("{}://{}", if self.options.plain_http { "http" } else { "https" }, r.api_host())
    }

    pub(crate) fn req<'a>(
        &self,
        method: &'static str,
        r: &'a Reference,
        path: &str,
        scope: String,
    ) -> Req<'a> {
        Req {
            method,
            url: format!("{}/v2/{}/{path}", self.base(r), r.repository),
            registry: &r.registry,
            scope,
            headers: vec![],
        }
    }

    // ---------------------------------------------------------------- transport

    /// Sends `req`, answering auth challenges and retrying transient failures of replayable
    /// requests. Transient statuses come back as errors; every other status is the caller's.
    pub(crate) fn send(&self, req: &Req, mut body: ReqBody) -> Result<Response<ureq::Body>, Error> {
        let replayable = !matches!(body, ReqBody::Stream(..));
        let mut auth_retried = false;
        let mut retry = 0;
        loop {
            let mut retry_after = Duration::ZERO;
            let err = match self.send_once(req, &mut body) {
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
            retry += 1;
            if !replayable || !err.is_transient() || retry >= self.options.retry.attempts {
                return Err(with_attempts(err, retry));
            }
            std::thread::sleep(self.options.retry.delay(retry - 1).max(retry_after));
        }
    }

    fn send_once(&self, req: &Req, body: &mut ReqBody) -> Result<Response<ureq::Body>, Error> {
        let mut b = http::Request::builder().method(req.method).uri(&req.url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        if let Some(auth) = self.authorization(req)? {
            b = b.header("Authorization", auth);
        }
        let bad = |e: http::Error| Error::BadReference { input: req.url.clone(), reason: e.to_string() };
        // Each arm runs its own request: `SendBody` is invariant in its lifetime.
        let result = match body {
            ReqBody::Empty => {
                let b = if matches!(req.method, "PUT" | "POST" | "PATCH") {
                    b.header("Content-Length", "0")
                } else {
                    b
                };
                self.agent.run(b.body(()).map_err(bad)?)
            }
            ReqBody::Bytes(bytes) => {
                self.agent.run(b.header("Content-Length", bytes.len()).body(*bytes).map_err(bad)?)
            }
            ReqBody::Stream(reader, len) => self
                .agent
                .run(b.header("Content-Length", *len).body(SendBody::from_reader(*reader)).map_err(bad)?),
        };
        result.map_err(|e| transport_error(req.registry, req.method, &req.url, e))
    }

    /// The `Authorization` header for `req`: learns the registry's scheme on first contact
    /// (`GET /v2/`), then sends basic credentials or a bearer token cached per scope.
    fn authorization(&self, req: &Req) -> Result<Option<String>, Error> {
        let mut hosts = self.hosts.lock().expect("auth state poisoned");
        let st = hosts.entry(req.registry.to_owned()).or_default();
        if st.challenge.is_none() {
            st.challenge = Some(self.ping(req)?);
        }
        let Some(challenge) = st.challenge.clone().flatten() else { return Ok(None) };
        // Only a registry that asks is given (or costs a helper run for) credentials.
        if st.creds.is_none() {
            st.creds = Some(self.credentials.lookup(req.registry)?);
        }
        let creds = st.creds.clone().flatten();
        match challenge {
            Challenge::Basic => Ok(creds.map(|c| c.basic_header())),
            Challenge::Bearer { realm, service, .. } => {
                if let Some((token, expiry)) = st.tokens.get(&req.scope) {
                    if expiry.is_none_or(|e| Instant::now() < e) {
                        return Ok(Some(format!("Bearer {token}")));
                    }
                }
                let (token, expiry) = self.fetch_token(req, &realm, service.as_deref(), creds.as_ref())?;
                st.tokens.insert(req.scope.clone(), (token.clone(), expiry));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// `GET /v2/` without credentials: 200 means open, 401 names the scheme.
    fn ping(&self, req: &Req) -> Result<Option<Challenge>, Error> {
        let v2 = req.url.find("/v2/").map_or(req.url.as_str(), |i| &req.url[..i + 4]);
        let ping = Req {
            method: "GET",
            url: v2.to_owned(),
            registry: req.registry,
            scope: String::new(),
            headers: vec![],
        };
        // Not retried here: the request that needs it is.
        let resp = self
            .agent
            .get(&ping.url)
            .call()
            .map_err(|e| transport_error(req.registry, "GET", &ping.url, e))?;
        if is_transient_status(resp.status().as_u16()) {
            return Err(error_from_status(&ping, "the API version check", resp, None));
        }
        Ok(match resp.status().as_u16() {
            401 => header(&resp, "WWW-Authenticate").and_then(|h| Challenge::parse(&h)),
            _ => None,
        })
    }

    /// The token endpoint of the bearer flow (`realm?service=…&scope=…`), with basic
    /// credentials when there are any (anonymous pulls get a token without).
    fn fetch_token(
        &self,
        req: &Req,
        realm: &str,
        service: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<(String, Option<Instant>), Error> {
        let mut url = realm.to_owned();
        if let Some(s) = service {
            url = with_query(&url, "service", s);
        }
        for s in req.scope.split(' ').filter(|s| !s.is_empty()) {
            url = with_query(&url, "scope", s);
        }
        // An identity token (Docker's `identitytoken`, a helper's `<token>` user) is an
        // OAuth2 refresh token, exchanged by POST; a password goes as basic auth on GET.
        let refresh = creds.filter(|c| c.username == IDENTITY_TOKEN_USER);
        let token_req = Req {
            method: if refresh.is_some() { "POST" } else { "GET" },
            url: if refresh.is_some() { realm.to_owned() } else { url.clone() },
            registry: req.registry,
            scope: req.scope.clone(),
            headers: vec![],
        };
        // Not retried here: the request that needs the token is.
        let sent = match refresh {
            Some(c) => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=nix-layer&refresh_token={}",
                    query_escape(&c.password)
                );
                if let Some((_, service_and_scopes)) = url.split_once('?') {
                    form = format!("{form}&{service_and_scopes}");
                }
                self.agent
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .send(form.as_bytes())
            }
            None => {
                let mut r = self.agent.get(&url);
                if let Some(c) = creds {
                    r = r.header("Authorization", c.basic_header());
                }
                r.call()
            }
        };
        let mut resp =
            sent.map_err(|e| transport_error(req.registry, token_req.method, &token_req.url, e))?;
        if resp.status() != 200 {
            // Called with the auth state locked: the user is known here.
            let user = creds.map(|c| c.username.clone());
            return Err(error_from_status(&token_req, "the token request", resp, user));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let protocol = |reason: String| Error::Protocol {
            registry: req.registry.to_owned(),
            what: format!("{} {}", token_req.method, token_req.url),
            reason,
        };
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| protocol(e.to_string()))?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
        let token =
            answer.token.or(answer.access_token).ok_or_else(|| protocol("no token in the answer".into()))?;
        // Renew a little early; the spec's default lifetime is 60 s.
        let expiry =
            Instant::now() + Duration::from_secs(answer.expires_in.unwrap_or(60).saturating_sub(10).max(1));
        Ok((token, Some(expiry)))
    }

    /// After a 401: adopt the challenge and drop the rejected token, or fail if trying again
    /// cannot help (no credentials for basic auth, or basic credentials just refused).
    fn learn_challenge(&self, req: &Req, resp: &Response<ureq::Body>) -> Result<(), Error> {
        let challenge = header(resp, "WWW-Authenticate").and_then(|h| Challenge::parse(&h));
        let mut hosts = self.hosts.lock().expect("auth state poisoned");
        let st = hosts.entry(req.registry.to_owned()).or_default();
        if st.creds.is_none() {
            st.creds = Some(self.credentials.lookup(req.registry)?);
        }
        let creds = st.creds.clone().flatten();
        let refused = |message: &str| Error::Unauthorized {
            registry: req.registry.to_owned(),
            scope: req.scope.clone(),
            status: 401,
            user: creds.as_ref().map(|c| c.username.clone()),
            message: message.to_owned(),
        };
        match &challenge {
            None => return Err(refused("the registry sent no usable WWW-Authenticate challenge")),
            Some(Challenge::Basic) if creds.is_none() => {
                return Err(refused("the registry requires a login (docker login, --creds or an auth file)"))
            }
            Some(Challenge::Basic) if st.challenge == Some(Some(Challenge::Basic)) => {
                return Err(refused("wrong user name or password"))
            }
            _ => {}
        }
        st.tokens.remove(&req.scope);
        st.challenge = Some(challenge);
        Ok(())
    }

    /// The error for an unexpected status, with the registry's own error text.
    pub(crate) fn status_error(&self, req: &Req, what: &str, resp: Response<ureq::Body>) -> Error {
        let user = || {
            let hosts = self.hosts.lock().ok()?;
            hosts.get(req.registry)?.creds.clone().flatten().map(|c| c.username)
        };
        let user = if matches!(resp.status().as_u16(), 401 | 403) { user() } else { None };
        error_from_status(req, what, resp, user)
    }
}

/// The error for an unexpected status; `user` is who was refused, for 401 and 403.
fn error_from_status(req: &Req, what: &str, mut resp: Response<ureq::Body>, user: Option<String>) -> Error {
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

impl Client {
    // ---------------------------------------------------------------- blobs

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
    /// [`Client::fetch_blob_to_path`] for a file that exists only when verified).
    pub fn fetch_blob(&self, repo: &Reference, digest: &Digest, out: &mut dyn Write) -> Result<u64, Error> {
        self.download(repo, digest, out, &mut false)
    }

    /// [`Client::fetch_blob`], setting `streaming` once the body has started to arrive.
    fn download(
        &self,
        repo: &Reference,
        digest: &Digest,
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
        *streaming = true;
        let mut body = resp.into_body().into_reader();
        let mut w = HashingWriter::new(out);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(transport_error(&repo.registry, "GET", &req.url, ureq::Error::Io(e))),
            };
            w.write_all(&buf[..n]).map_err(Error::io("writing blob to", Path::new("(output)")))?;
        }
        let (_, actual, size) = w.finish();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("blob downloaded from {}/{}", repo.registry, repo.repository),
                expected: *digest,
                actual: actual.to_string(),
            });
        }
        Ok(size)
    }

    /// Downloads a blob to `dest` through a temporary file beside it, renamed into place
    /// only once the digest is verified. A download cut off mid-body starts again (the
    /// requests themselves are already retried).
    pub fn fetch_blob_to_path(&self, repo: &Reference, digest: &Digest, dest: &Path) -> Result<u64, Error> {
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
            match self.download(repo, digest, &mut w, &mut streaming) {
                Ok(size) => {
                    w.flush().map_err(Error::io("writing", dest))?;
                    break size;
                }
                Err(e) if streaming && e.is_transient() && retry + 1 < self.options.retry.attempts => {
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
    fn push_blobs_known(
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
                Err(e) if e.is_transient() && retry + 1 < self.options.retry.attempts => {
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
        let size = blob.size();
        let chunk = self.options.chunk_size.max(min_chunk).max(1);
        let mut source = SourceReader::new(blob.open().map_err(|cause| Error::Source { digest, cause })?);
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
            put(&location, &mut source, size)?;
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
                location = self.location(&req, &base, &resp)?;
                offset += n;
            }
            put(&location, &mut source, 0)?;
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

    // ---------------------------------------------------------------- manifests

    /// Fetches the manifest or index `r` names (by digest if pinned, else by tag), verifying
    /// its digest against the pin and against the registry's `Docker-Content-Digest`.
    pub fn get_manifest(&self, r: &Reference) -> Result<Manifest, Error> {
        let reference = r.manifest_reference();
        let mut req = self.req("GET", r, &format!("manifests/{reference}"), pull_scope(&r.repository));
        req.headers.push(("Accept", ACCEPT_MANIFESTS.into()));
        let mut resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(not_found(r, format!("manifest {reference}"))),
            _ => return Err(self.status_error(&req, &format!("the manifest {reference}"), resp)),
        }
        let protocol = |reason: String| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("GET {}", req.url),
            reason,
        };
        let header_digest = header(&resp, "Docker-Content-Digest");
        let content_type =
            header(&resp, "Content-Type").map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|e| protocol(e.to_string()))?;
        let digest = Digest::of(&bytes);
        let what = || format!("manifest {reference} of {}/{}", r.registry, r.repository);
        if let Some(expected) = r.digest.filter(|d| *d != digest) {
            return Err(Error::DigestMismatch { what: what(), expected, actual: digest.to_string() });
        }
        if let Some(h) = header_digest.filter(|h| *h != digest.to_string()) {
            return Err(Error::DigestMismatch {
                what: format!("{} (the registry's digest)", what()),
                expected: digest,
                actual: h,
            });
        }
        #[derive(serde::Deserialize)]
        struct MediaType {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let embedded = serde_json::from_slice::<MediaType>(&bytes)
            .map_err(|e| protocol(format!("not JSON: {e}")))?
            .media_type;
        let media_type = embedded.or(content_type).ok_or_else(|| protocol("no media type".into()))?;
        Ok(Manifest { bytes, media_type, digest })
    }

    /// Fetches `r`; if it is an index, picks the manifest for `platform` and fetches that.
    pub fn resolve_image(&self, r: &Reference, platform: &Platform) -> Result<ResolvedImage, Error> {
        let top = self.get_manifest(r)?;
        if !top.is_index() {
            return Ok(ResolvedImage { index: None, manifest: top });
        }
        let index: IndexDoc = serde_json::from_slice(&top.bytes).map_err(|e| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("index {r}"),
            reason: e.to_string(),
        })?;
        let chosen = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)) && !is_index(&d.media_type));
        let Some(chosen) = chosen else {
            let available: Vec<String> =
                index.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
            return Err(Error::NoPlatform {
                reference: r.to_string(),
                wanted: platform.to_string(),
                available: available.join(", "),
            });
        };
        let manifest = self.get_manifest(&r.with_digest(chosen.digest))?;
        Ok(ResolvedImage { index: Some(top), manifest })
    }

    /// PUTs manifest bytes unchanged under `reference` (a tag or the digest) and checks that
    /// the registry's digest is ours. Returns the digest and the `OCI-Subject` header.
    pub(crate) fn put_manifest(
        &self,
        repo: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, Option<String>), Error> {
        let digest = Digest::of(bytes);
        let mut req = self.req("PUT", repo, &format!("manifests/{reference}"), push_scope(&repo.repository));
        req.headers.push(("Content-Type", media_type.to_owned()));
        let resp = self.send(&req, ReqBody::Bytes(bytes))?;
        if !matches!(resp.status().as_u16(), 200 | 201) {
            return Err(self.status_error(&req, &format!("manifest {digest} as {reference}"), resp));
        }
        if let Some(theirs) = header(&resp, "Docker-Content-Digest").filter(|h| *h != digest.to_string()) {
            return Err(Error::DigestMismatch {
                what: format!(
                    "manifest pushed to {}/{}:{reference} (the registry's digest)",
                    repo.registry, repo.repository
                ),
                expected: digest,
                actual: theirs,
            });
        }
        Ok((digest, header(&resp, "OCI-Subject")))
    }

    /// Pushes a manifest (or index) whose blobs are already in `repo`, under each tag, or
    /// by digest alone when `tags` is empty. Returns its digest.
    pub fn push_manifest(
        &self,
        repo: &Reference,
        tags: &[&str],
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        if tags.is_empty() {
            self.put_manifest(repo, &digest.to_string(), bytes, media_type)?;
        }
        for tag in tags {
            repo.with_tag(tag)?;
            self.put_manifest(repo, tag, bytes, media_type)?;
        }
        Ok(digest)
    }

    /// Pushes an image: every blob the registry lacks (HEAD first, so a re-run after an
    /// interruption sends only the rest), each confirmed present, and only then the
    /// manifest bytes, under `target`'s tag and each of `tags` (by digest if none).
    /// A digest pinned in `target` must be the manifest's.
    pub fn push_image(
        &self,
        target: &Reference,
        tags: &[&str],
        image: &ImageUpload,
    ) -> Result<PushReport, Error> {
        self.push_image_known(target, tags, image, &HashSet::new())
    }

    /// [`Client::push_image`] when a HEAD of this same run already found some blobs in
    /// `target`'s repository at their size: those in `present` are reported present without
    /// another HEAD. Only a HEAD's answer belongs there, never a hint such as the layer
    /// cache index's entries; every other blob is checked (and uploaded) as usual.
    pub fn push_image_known(
        &self,
        target: &Reference,
        tags: &[&str],
        image: &ImageUpload,
        present: &HashSet<Digest>,
    ) -> Result<PushReport, Error> {
        let digest = Digest::of(image.manifest);
        if let Some(pinned) = target.digest.filter(|d| *d != digest) {
            return Err(Error::DigestMismatch {
                what: format!("manifest to push to {target}"),
                expected: pinned,
                actual: digest.to_string(),
            });
        }
        let mut all_tags: Vec<&str> = Vec::new();
        for t in target.tag.as_deref().into_iter().chain(tags.iter().copied()) {
            if !all_tags.contains(&t) {
                all_tags.push(t);
            }
        }
        for t in &all_tags {
            target.with_tag(t)?;
        }
        let blobs = self.push_blobs_known(target, image.blobs, image.mount_from, present)?;
        self.push_manifest(target, &all_tags, image.manifest, image.media_type)?;
        Ok(PushReport {
            manifest_digest: digest,
            blobs,
            tags: all_tags.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// Pushes a multi-platform image: each platform's image by digest (its blobs first),
    /// then the index or manifest list bytes under `target`'s tag and `tags`. The report
    /// lists the blobs of all platforms.
    pub fn push_index(
        &self,
        target: &Reference,
        tags: &[&str],
        images: &[ImageUpload],
        index: &[u8],
        media_type: &str,
    ) -> Result<PushReport, Error> {
        let repo = target.with_repository(&target.repository)?;
        let mut blobs = Vec::new();
        for image in images {
            blobs.extend(self.push_image(&repo, &[], image)?.blobs);
        }
        let upload = ImageUpload { blobs: &[], manifest: index, media_type, mount_from: &[] };
        let report = self.push_image(target, tags, &upload)?;
        Ok(PushReport { blobs, ..report })
    }

    /// The descriptor of manifest `r` from a HEAD (`None` if absent): to resolve a tag to a
    /// digest without downloading.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Descriptor>, Error> {
        let reference = r.manifest_reference();
        let mut req = self.req("HEAD", r, &format!("manifests/{reference}"), pull_scope(&r.repository));
        req.headers.push(("Accept", ACCEPT_MANIFESTS.into()));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_error(&req, &format!("the manifest {reference}"), resp)),
        }
        let protocol = |reason: &str| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("HEAD {}", req.url),
            reason: reason.into(),
        };
        let digest =
            header(&resp, "Docker-Content-Digest").ok_or_else(|| protocol("no Docker-Content-Digest"))?;
        let digest = digest.parse::<Digest>().map_err(|e| protocol(&e.to_string()))?;
        let size = header(&resp, "Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let media_type = header(&resp, "Content-Type").unwrap_or_default();
        Ok(Some(Descriptor {
            media_type,
            digest,
            size,
            artifact_type: None,
            platform: None,
            annotations: Default::default(),
        }))
    }
}

/// Reads a blob source while hashing it and keeping its own I/O error apart from the
/// network's, so a failing source is reported as such (and not retried).
struct SourceReader<'a> {
    inner: HashingReader<Box<dyn Read + 'a>>,
    error: Option<io::Error>,
}

impl<'a> SourceReader<'a> {
    fn new(inner: Box<dyn Read + 'a>) -> Self {
        SourceReader { inner: HashingReader::new(inner), error: None }
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
        self.inner.read(buf).inspect_err(|e| self.error = Some(io::Error::new(e.kind(), e.to_string())))
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

fn not_found(r: &Reference, what: String) -> Error {
    Error::NotFound { registry: r.registry.clone(), repository: r.repository.clone(), what }
}

fn with_attempts(mut e: Error, n: u32) -> Error {
    if let Error::Unreachable { attempts, .. } = &mut e {
        *attempts = n;
    }
    e
}

pub(crate) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn transport_error(registry: &str, method: &str, url: &str, e: ureq::Error) -> Error {
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
fn resolve_location(base: &str, request_url: &str, loc: &str) -> String {
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
