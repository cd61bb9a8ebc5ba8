//! The client against a real registry (Debian's `docker-registry`) behind a fault-injecting
//! proxy: every fault of a network or a registry gone wrong fails within the time its
//! options promise (or is survived), downloads are bounded by their size, and credentials
//! go only to the registry's own origin. Table-driven: one row per fault.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{
    AuthEnvironment, BlobSource, BytesBlob, Client, ClientOptions, CredentialSource, Credentials, Error,
    ImageUpload, Reference, RetryPolicy, Timeouts, OCI_MANIFEST,
};
use nix_layer_registry_testkit::{Fault, FaultProxy, Rule, TestRegistry, TestRegistryConfig};

/// Short timeouts so each fault costs seconds; the bound they promise is checked.
fn fast_options() -> ClientOptions {
    ClientOptions {
        plain_http: true,
        retry: RetryPolicy {
            attempts: 3,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(1),
            stall: Duration::from_secs(1),
            min_progress: 1024,
            give_up: Duration::from_secs(2),
        },
        ..ClientOptions::default()
    }
}

fn client(options: ClientOptions, creds: Option<Credentials>) -> Client {
    Client::new(options, CredentialSource { explicit: creds, env: AuthEnvironment::default() })
}

/// Reproducible noise (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A config and one layer blob (the registry does not look inside) and their manifest.
struct Image {
    config: BytesBlob,
    layer: BytesBlob,
    manifest: Vec<u8>,
}

impl Image {
    fn new(seed: u64, layer_len: usize) -> Image {
        let config =
            BytesBlob::new(format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes());
        let layer = BytesBlob::new(noise(seed, layer_len));
        let d = |b: &BytesBlob, t: &str| serde_json::json!({ "mediaType": t, "digest": b.digest.to_string(), "size": b.bytes.len() });
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": d(&config, "application/vnd.oci.image.config.v1+json"),
            "layers": [d(&layer, "application/vnd.oci.image.layer.v1.tar")],
        }))
        .unwrap();
        Image { config, layer, manifest }
    }

    fn push(&self, client: &Client, target: &Reference, tags: &[&str]) -> Result<Digest, Error> {
        let blobs: [&dyn BlobSource; 2] = [&self.config, &self.layer];
        let upload = ImageUpload {
            blobs: &blobs,
            manifest: &self.manifest,
            media_type: OCI_MANIFEST,
            mount_from: &[],
        };
        client.push_image(target, tags, &upload).map(|r| r.manifest_digest)
    }
}

/// Counts what a download wrote, to prove an endless body was cut at the blob's size.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Op {
    /// Push a fresh image with a layer of this many bytes under tags v1 and v2.
    Push(usize),
    /// Download the layer of an image pushed beforehand, bounded by its size.
    FetchSized,
    /// Read the manifest of an image pushed beforehand.
    GetManifest,
}

/// What a case's operation came to, for its check.
struct Outcome<'a> {
    result: &'a Result<(), Error>,
    proxy: &'a FaultProxy,
    /// A client straight to the registry, past the faults.
    direct: &'a Client,
    /// The repository the operation used, on the registry itself.
    target: &'a Reference,
    /// Bytes a download wrote.
    written: u64,
}

type Check = fn(&Outcome) -> Result<(), String>;

struct Case {
    name: &'static str,
    rule: Rule,
    op: Op,
    check: Check,
    /// The registry keeps answering other requests (HEADs between tries), so the give-up
    /// clock never runs: each try is bounded instead.
    per_try: bool,
}

/// A row of the table: the proxy applies `rule`, the operation is `op`, `check` judges it.
fn case(name: &'static str, rule: Rule, op: Op, check: Check) -> Case {
    Case { name, rule, op, check, per_try: false }
}

/// Passes if `ok`; otherwise says what was expected and what came.
fn expect(ok: bool, what: &str, o: &Outcome) -> Result<(), String> {
    ok.then_some(()).ok_or_else(|| format!("expected {what}, got {:?}", o.result))
}

fn fails_unreachable(o: &Outcome) -> Result<(), String> {
    match o.result {
        Err(e @ Error::Unreachable { .. }) => {
            let text = e.to_string();
            (!text.is_empty()).then_some(()).ok_or(text)
        }
        other => Err(format!("expected Unreachable, got {other:?}")),
    }
}

fn fails_stalled(o: &Outcome) -> Result<(), String> {
    expect(matches!(o.result, Err(e) if e.to_string().contains("stalled")), "a stall", o)
}

fn succeeds(o: &Outcome) -> Result<(), String> {
    o.result.as_ref().map(|_| ()).map_err(|e| format!("expected success, got {e}"))
}

fn cut_at_size(o: &Outcome) -> Result<(), String> {
    let ok = matches!(o.result, Err(Error::SizeMismatch { .. }) if o.written <= 5_000);
    expect(ok, &format!("a size mismatch with at most 5000 bytes written ({})", o.written), o)
}

fn manifest_too_long(o: &Outcome) -> Result<(), String> {
    let ok = matches!(o.result, Err(e @ Error::Protocol { .. }) if e.to_string().contains("longer than"));
    expect(ok, "a too-long manifest", o)
}

fn rejected_500(o: &Outcome) -> Result<(), String> {
    expect(matches!(o.result, Err(Error::Rejected { status: 500, .. })), "HTTP 500", o)
}

fn cancels_upload(o: &Outcome) -> Result<(), String> {
    expect(matches!(o.result, Err(Error::Rejected { status: 400, .. })), "HTTP 400", o)?;
    let seen = o.proxy.seen();
    let deletes = seen.iter().filter(|s| s.method == "DELETE" && s.path.contains("/blobs/uploads/")).count();
    (deletes > 0).then_some(()).ok_or_else(|| format!("no DELETE of the abandoned upload session: {seen:?}"))
}

fn no_tag_moved(o: &Outcome) -> Result<(), String> {
    expect(matches!(o.result, Err(Error::DigestMismatch { .. })), "a disputed digest", o)?;
    for tag in ["v1", "v2"] {
        let at = o.target.with_tag(tag).unwrap();
        if o.direct.head_manifest(&at).map_err(|e| e.to_string())?.is_some() {
            return Err(format!("tag {tag} was written although the registry disputed the digest"));
        }
    }
    Ok(())
}

#[test]
fn faults_fail_in_bounded_time_or_are_survived() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let direct = client(fast_options(), None);
    let seeded = Image::new(7, 5_000);
    seeded.push(&direct, &reg.reference("seeded:v1"), &[]).unwrap();
    let blob = |f| Rule::new("GET", &format!("/blobs/{}", seeded.layer.digest), f);
    let rule = Rule::new;
    let (push, big, fetch, get) = (Op::Push(1_000), Op::Push(4 << 20), Op::FetchSized, Op::GetManifest);
    let (manifests, uploads) = ("/manifests/", "/blobs/uploads/");
    let disputed = Fault::Header("Docker-Content-Digest".into(), format!("sha256:{}", "0".repeat(64)));
    let cases = [
        case("API check never answered", rule("GET", "=/v2/", Fault::Stall), push, fails_unreachable),
        case("blob HEAD never answered", rule("HEAD", "/blobs/", Fault::Stall), push, fails_unreachable),
        case("connections dropped", rule("", "/v2/", Fault::Drop), push, fails_unreachable),
        case("blob body stops", blob(Fault::StallBody(10)), fetch, fails_unreachable),
        case("blob body trickles", blob(Fault::Trickle(Duration::from_millis(200))), fetch, fails_stalled),
        case("endless blob body", blob(Fault::EndlessBody), fetch, cut_at_size),
        case("endless manifest body", rule("GET", manifests, Fault::EndlessBody), get, manifest_too_long),
        Case {
            per_try: true,
            ..case("upload body never read", rule("PUT", uploads, Fault::NoReadBody), big, fails_unreachable)
        },
        case("one 503 on the manifest", rule("PUT", manifests, Fault::Status(503)).times(1), push, succeeds),
        case("one dropped HEAD", rule("HEAD", "/blobs/", Fault::Drop).times(1), push, succeeds),
        case("upload sessions always 500", rule("POST", uploads, Fault::Status(500)), push, rejected_500),
        case("rejected upload is cancelled", rule("PUT", uploads, Fault::Status(400)), push, cancels_upload),
        case("disputed manifest digest", rule("PUT", manifests, disputed), push, no_tag_moved),
    ];
    let options = fast_options();
    // The last request starts before the give-up time and ends within its timeouts; the
    // rest is scheduling slack on a loaded machine.
    let slack = Duration::from_secs(3);
    let t = &options.timeouts;
    let per_try = (t.connect + t.response + t.stall) * options.retry.attempts;
    let mut failures = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let proxy = FaultProxy::start(reg.port(), vec![case.rule]).unwrap();
        let c = client(options.clone(), None);
        // Made before the clock starts: hashing a large blob is not the fault's time.
        let image = match case.op {
            Op::Push(len) => Some(Image::new(100 + i as u64, len)),
            _ => None,
        };
        let started = Instant::now();
        let mut written = Counter(0);
        let (target, result) = match case.op {
            Op::Push(_) => {
                let target = Reference::parse(&format!("{}/case{i}:v1", proxy.host())).unwrap();
                (target.clone(), image.as_ref().unwrap().push(&c, &target, &["v2"]).map(|_| ()))
            }
            Op::FetchSized => {
                let target = Reference::parse(&format!("{}/seeded", proxy.host())).unwrap();
                let size = seeded.layer.bytes.len() as u64;
                (
                    target.clone(),
                    c.fetch_blob_sized(&target, &seeded.layer.digest, size, &mut written).map(|_| ()),
                )
            }
            Op::GetManifest => {
                let target = Reference::parse(&format!("{}/seeded:v1", proxy.host())).unwrap();
                (target.clone(), c.get_manifest(&target).map(|_| ()))
            }
        };
        let took = started.elapsed();
        let bound = if case.per_try { per_try } else { options.give_up_bound() } + slack;
        eprintln!("{}: {:?} in {took:?}", case.name, result.as_ref().map_err(|e| e.to_string()));
        if took > bound {
            failures.push(format!("{}: took {took:?}, the bound is {bound:?}", case.name));
        }
        // Checks read the registry directly, past the faults.
        let at = reg.reference(&target.repository);
        let outcome =
            Outcome { result: &result, proxy: &proxy, direct: &direct, target: &at, written: written.0 };
        if let Err(why) = (case.check)(&outcome) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_default_timeouts_give_up_within_two_minutes() {
    let o = ClientOptions::default();
    assert!(o.give_up_bound() <= Duration::from_secs(120), "{:?}", o.give_up_bound());
    // Every phase is bounded.
    let t = &o.timeouts;
    for d in [t.connect, t.response, t.stall, t.give_up] {
        assert!(d > Duration::ZERO && d < Duration::from_secs(120));
    }
    assert!(t.min_progress > 0);
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// An upload `Location` and a download redirect on another host (another port) get no
/// credentials, though the registry's own requests do; the other host completes them with
/// its own (as a storage backend would), so the push and the pull succeed.
#[test]
fn credentials_never_follow_uploads_or_redirects_to_another_host() {
    let Some(reg) = TestRegistry::start_with_htpasswd_or_skip("alice", "s3cret") else { return };
    let foreign = FaultProxy::start_with(reg.port(), vec![], Some(basic("alice", "s3cret"))).unwrap();
    let proxy = FaultProxy::start(
        reg.port(),
        vec![
            Rule::new("POST", "/blobs/uploads/", Fault::LocationTo(foreign.origin())),
            Rule::new("GET", "/blobs/sha256:", Fault::Redirect(foreign.origin())),
        ],
    )
    .unwrap();
    let c = client(fast_options(), Some(Credentials::parse("alice:s3cret").unwrap()));
    let target = Reference::parse(&format!("{}/team/app:v1", proxy.host())).unwrap();
    let img = Image::new(3, 20_000);
    img.push(&c, &target, &[]).unwrap();
    let mut got = Vec::new();
    c.fetch_blob(&target, &img.layer.digest, &mut got).unwrap();
    assert_eq!(got, img.layer.bytes);

    let there = foreign.seen();
    assert!(there.iter().any(|s| s.method == "PUT"), "the uploads went to the other host: {there:?}");
    assert!(there.iter().any(|s| s.method == "GET"), "the download was redirected: {there:?}");
    let leaked: Vec<_> = there.iter().filter(|s| s.authorization.is_some()).collect();
    assert!(leaked.is_empty(), "credentials sent to another host: {leaked:?}");
    let here = proxy.seen();
    assert!(
        here.iter().any(|s| s.authorization.as_deref() == Some(basic("alice", "s3cret").as_str())),
        "the registry itself was given the credentials: {here:?}"
    );
}

/// The bearer flow: the login goes to the token realm the challenge names (the token
/// server, another port), the registry sees only bearer tokens.
#[test]
fn the_token_flow_sends_the_login_to_the_realm_and_the_token_to_the_registry() {
    let token_auth = Some(("ci".to_owned(), "t0ken".to_owned()));
    let Some(reg) =
        TestRegistry::start_configured_or_skip(&TestRegistryConfig { token_auth, ..Default::default() })
    else {
        return;
    };
    let proxy = FaultProxy::start(reg.port(), vec![]).unwrap();
    let c = client(fast_options(), Some(Credentials::parse("ci:t0ken").unwrap()));
    let target = Reference::parse(&format!("{}/org/app:v1", proxy.host())).unwrap();
    Image::new(5, 2_000).push(&c, &target, &[]).unwrap();
    assert!(reg.tokens_issued() >= 1);
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s.authorization.as_deref().is_some_and(|a| a.starts_with("Bearer "))),
        "{seen:?}"
    );
    let basic: Vec<_> =
        seen.iter().filter(|s| s.authorization.as_deref().is_some_and(|a| a.starts_with("Basic "))).collect();
    assert!(basic.is_empty(), "the password went to the registry instead of the realm: {basic:?}");
}

/// The auth state is not locked across network I/O: while one registry's API check hangs,
/// a push to another registry through the same client goes on.
#[test]
fn a_hanging_registry_does_not_hold_up_another() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let hanging = FaultProxy::start(reg.port(), vec![Rule::new("GET", "=/v2/", Fault::Stall)]).unwrap();
    let healthy = FaultProxy::start(reg.port(), vec![]).unwrap();
    let mut options = fast_options();
    options.timeouts.response = Duration::from_secs(3);
    options.timeouts.give_up = Duration::from_secs(4);
    let c = client(options, None);
    let (slow_image, image) = (Image::new(11, 1_000), Image::new(12, 1_000));
    let slow_target = Reference::parse(&format!("{}/slow:v1", hanging.host())).unwrap();
    let target = Reference::parse(&format!("{}/quick:v1", healthy.host())).unwrap();
    std::thread::scope(|s| {
        let slow = s.spawn(|| slow_image.push(&c, &slow_target, &[]));
        // Let the slow push get into its API check.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !hanging.seen().iter().any(|r| r.path == "/v2/") {
            assert!(Instant::now() < deadline, "the slow push never reached the registry");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        image.push(&c, &target, &[]).unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "the healthy push waited {took:?} for the hanging registry");
        assert!(slow.join().unwrap().is_err());
    });
}

/// A base image's blob fetched to a file: an endless body is cut off at the descriptor's
/// size and leaves no file behind (nor a temporary one).
#[test]
fn an_endless_blob_leaves_no_file() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let img = Image::new(21, 3_000);
    img.push(&client(fast_options(), None), &reg.reference("base:v1"), &[]).unwrap();
    let proxy =
        FaultProxy::start(reg.port(), vec![Rule::new("GET", "/blobs/sha256:", Fault::EndlessBody)]).unwrap();
    let c = client(fast_options(), None);
    let target = Reference::parse(&format!("{}/base", proxy.host())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let size = img.layer.bytes.len() as u64;
    let err = c.fetch_blob_to_path_sized(&target, &img.layer.digest, size, &dest).unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "files left behind");
    // Without the fault, the same call fetches the blob.
    proxy.set_rules(vec![]);
    assert_eq!(c.fetch_blob_to_path_sized(&target, &img.layer.digest, size, &dest).unwrap(), size);
    assert_eq!(std::fs::read(&dest).unwrap(), img.layer.bytes);
}
