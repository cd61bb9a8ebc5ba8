//! The distribution API client, split by concern: [`transport`] sends one request
//! (timeouts, stalls, redirects, retries), [`auth`] answers challenges and caches tokens,
//! [`blobs`] moves blobs, [`manifests`] reads and writes manifests and whole images.
//! This module holds the public types and the client itself.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nix_layer_blob::Digest;

use crate::auth::CredentialSource;
use crate::manifest::Manifest;
use crate::Reference;

mod auth;
mod blobs;
mod manifests;
mod tls;
mod transport;

#[allow(unused_imports)] // kept for the layer cache index and referrers
pub(crate) use transport::{header, query_escape, with_query, Req, ReqBody};

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
    pub timeouts: Timeouts,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            retry: RetryPolicy::default(),
            parallel_uploads: 4,
            chunk_size: 64 << 20,
            user_agent: concat!("nix-layer/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeouts: Timeouts::default(),
        }
    }
}

/// How long the client waits for a registry. Every request has all of them; together with
/// [`RetryPolicy`] they bound how long a registry that stops answering can hold a command
/// ([`ClientOptions::give_up_bound`]).
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// To open a TCP (and TLS) connection.
    pub connect: Duration,
    /// From the request sent to the response's status line and headers.
    pub response: Duration,
    /// The longest a body (either direction) may go without a byte, and the window over
    /// which it must move at least [`Timeouts::min_progress`] bytes (a trickle is a stall).
    pub stall: Duration,
    pub min_progress: u64,
    /// Once a registry has answered nothing for this long, no request or retry to it starts.
    pub give_up: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(30),
            stall: Duration::from_secs(30),
            min_progress: 1024,
            give_up: Duration::from_secs(40),
        }
    }
}

impl ClientOptions {
    /// The longest a registry that stops answering can hold a command: the last request
    /// starts before the give-up time and ends within its connect, response and stall
    /// timeouts (110 s with the defaults).
    pub fn give_up_bound(&self) -> Duration {
        let t = &self.timeouts;
        t.give_up + t.connect + t.response + t.stall
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
    hosts: Mutex<HashMap<String, auth::HostAuth>>,
    health: transport::Health,
}

pub(crate) fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

pub(crate) fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    pub fn new(options: ClientOptions, credentials: CredentialSource) -> Client {
        let t = &options.timeouts;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .https_only(!options.plain_http)
            .user_agent(options.user_agent.as_str())
            // Redirects are followed in `send`, so credentials never cross to another host.
            .max_redirects(0)
            .tls_config(tls::config())
            .timeout_connect(Some(t.connect))
            .timeout_send_request(Some(t.stall))
            .timeout_recv_response(Some(t.response))
            .timeout_per_read(Some(t.stall))
            .timeout_per_write(Some(t.stall))
            .build();
        Client {
            agent: config.new_agent(),
            options,
            credentials,
            hosts: Mutex::new(HashMap::new()),
            health: transport::Health::default(),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `scheme://api-host` of a reference's registry.
    pub(crate) fn base(&self, r: &Reference) -> String {
        self.origin_of(&r.registry)
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
}
