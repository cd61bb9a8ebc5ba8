//! The client against a real registry (Debian's `docker-registry`) on 127.0.0.1, with skopeo
//! as an independent reader. Request counts come from the registry's own access log.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use nix_layer_blob::{compress_bytes, Compression, Digest};
use nix_layer_registry::{
    AuthEnvironment, BlobOutcome, BlobSource, BytesBlob, CachedLayer, Client, ClientOptions,
    CredentialSource, Credentials, Error, ImageUpload, PlatformExt, Reference, ReferrersVia,
    IDENTITY_TOKEN_USER, OCI_INDEX, OCI_MANIFEST,
};
use nix_layer_registry_testkit::{test_client, LoggedRequest, TestRegistry, TestRegistryConfig};
use oci_spec::image::{Descriptor, MediaType, Platform};

// ------------------------------------------------------------------ fixtures

/// A descriptor's digest, in this project's type.
fn dg(d: &Descriptor) -> Digest {
    nix_layer_registry::blob_digest(d.digest()).unwrap()
}

/// Incompressible, reproducible bytes (xorshift), so layers keep their size under gzip.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut x = Digest::of(seed.as_bytes())
        .bytes()
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15u64, |a, b| a.rotate_left(8) ^ *b as u64);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A gzip layer holding one file of `len` noisy bytes; returns the blob and its diff_id.
fn layer(seed: &str, len: usize) -> (BytesBlob, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    let data = noise(seed, len);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_cksum();
    b.append_data(&mut h, format!("{seed}.bin"), &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    (BytesBlob::new(compress_bytes(Compression::Gzip, &tar).unwrap()), Digest::of(&tar))
}

struct TestImage {
    config: BytesBlob,
    layers: Vec<BytesBlob>,
    manifest: Vec<u8>,
}

impl TestImage {
    fn new(layers: &[(BytesBlob, Digest)], arch: &str) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.to_string()).collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = BytesBlob::new(serde_json::to_vec(&config).unwrap());
        let descriptors: Vec<_> = layers
            .iter()
            .map(|(b, _)| serde_json::json!({ "mediaType": Compression::Gzip.layer_media_type(), "digest": b.digest.to_string(), "size": b.bytes.len() }))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.bytes.len() },
            "layers": descriptors,
        });
        let layers = layers.iter().map(|(b, _)| b.clone()).collect();
        TestImage { config, layers, manifest: serde_json::to_vec(&manifest).unwrap() }
    }

    fn blobs(&self) -> Vec<&dyn BlobSource> {
        std::iter::once(&self.config as &dyn BlobSource)
            .chain(self.layers.iter().map(|l| l as &dyn BlobSource))
            .collect()
    }

    fn digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    fn descriptor(&self) -> Descriptor {
        nix_layer_registry::descriptor_of(OCI_MANIFEST, &self.manifest)
    }

    fn push(
        &self,
        client: &Client,
        target: &Reference,
        tags: &[&str],
        mount_from: &[&str],
    ) -> Result<nix_layer_registry::PushReport, Error> {
        let blobs = self.blobs();
        client.push_image(
            target,
            tags,
            &ImageUpload { blobs: &blobs, manifest: &self.manifest, media_type: OCI_MANIFEST, mount_from },
        )
    }
}

fn count(reqs: &[LoggedRequest], method: &str, path_has: &str) -> usize {
    reqs.iter().filter(|r| r.method == method && r.path.contains(path_has)).count()
}

/// Uploads finished (the PUT that closes an upload session).
fn upload_puts(reqs: &[LoggedRequest]) -> usize {
    reqs.iter().filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201).count()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("running skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

// ------------------------------------------------------------------ tests

#[test]
fn push_then_pull_back_and_skopeo_agrees() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let img = TestImage::new(&[layer("a", 50_000), layer("b", 80_000)], "amd64");
    let target = reg.reference("app/one:v1");
    let report = img.push(&client, &target, &["latest", "v1"], &[]).unwrap();
    assert_eq!(report.manifest_digest, img.digest());
    assert_eq!(report.tags, ["v1", "latest"]);
    assert_eq!(report.uploaded(), 3);
    assert_eq!(report.bytes_uploaded(), img.blobs().iter().map(|b| b.size()).sum::<u64>());

    for r in [target.clone(), target.with_tag("latest").unwrap(), target.with_digest(img.digest())] {
        let m = client.get_manifest(&r).unwrap();
        assert_eq!(
            (m.bytes.as_slice(), m.digest, m.media_type.as_str()),
            (img.manifest.as_slice(), img.digest(), OCI_MANIFEST)
        );
    }
    let (config, layers) = client.get_manifest(&target).unwrap().blobs().unwrap();
    assert_eq!(dg(&config), img.config.digest);
    let dir = tempfile::tempdir().unwrap();
    for (d, blob) in layers.iter().zip(&img.layers) {
        let mut got = Vec::new();
        assert_eq!(client.fetch_blob(&target, &dg(d), &mut got).unwrap(), blob.bytes.len() as u64);
        assert_eq!(got, blob.bytes);
        let path = dir.path().join(dg(d).hex());
        client.fetch_blob_to_path(&target, &dg(d), &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), blob.bytes);
    }
    assert_eq!(dg(&client.head_manifest(&target).unwrap().unwrap()), img.digest());

    // skopeo, an independent client, sees the same digest and bytes, and copies the image
    // (verifying every blob) into an OCI layout.
    let url = format!("docker://{}/app/one:latest", reg.host());
    let inspect: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &url])).unwrap();
    assert_eq!(inspect["Digest"], img.digest().to_string());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(skopeo(&["inspect", "--raw", "--tls-verify=false", &url]).as_bytes(), img.manifest.as_slice());
    let layout = dir.path().join("layout");
    skopeo(&[
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        &url,
        &format!("oci:{}:x", layout.display()),
    ]);
    assert!(layout.join("blobs/sha256").join(img.layers[1].digest.hex()).exists());
}

#[test]
fn a_second_image_uploads_only_its_new_blobs() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let (a, b, c) = (layer("a", 40_000), layer("b", 40_000), layer("c", 30_000));
    let first = TestImage::new(&[a.clone(), b.clone()], "amd64");
    first.push(&client, &reg.reference("app:1"), &[], &[]).unwrap();
    let before = reg.requests().len();

    let second = TestImage::new(&[a, b, c.clone()], "amd64");
    let report = second.push(&client, &reg.reference("app:2"), &[], &[]).unwrap();
    let reqs = &reg.requests()[before..];
    // Only the new layer and the new config went up.
    assert_eq!(upload_puts(reqs), 2, "{reqs:#?}");
    assert_eq!(count(reqs, "PATCH", "/blobs/"), 0);
    assert_eq!(report.uploaded(), 2);
    assert_eq!(report.bytes_uploaded(), c.0.bytes.len() as u64 + second.config.bytes.len() as u64);
    let present: Vec<_> =
        report.blobs.iter().filter(|b| b.outcome == BlobOutcome::Present).map(|b| b.digest).collect();
    assert_eq!(present, [first.layers[0].digest, first.layers[1].digest]);

    // Pushing it again sends no blob at all: HEADs and the manifest.
    let before = reg.requests().len();
    let again = second.push(&client, &reg.reference("app:2"), &[], &[]).unwrap();
    let reqs = &reg.requests()[before..];
    assert_eq!((again.uploaded(), upload_puts(reqs), count(reqs, "POST", "")), (0, 0, 0), "{reqs:#?}");
    assert_eq!(count(reqs, "HEAD", "/blobs/"), 4);
    assert_eq!(count(reqs, "PUT", "/manifests/2"), 1);
}

/// Blobs a HEAD of the same run already found are not asked about again; the rest are
/// HEADed, uploaded and confirmed as usual.
#[test]
fn blobs_known_present_are_not_headed_again() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let (a, b) = (layer("a", 20_000), layer("b", 20_000));
    TestImage::new(std::slice::from_ref(&a), "amd64")
        .push(&client, &reg.reference("known:1"), &[], &[])
        .unwrap();
    let img = TestImage::new(&[a, b], "amd64");
    let known = img.layers[0].digest;
    let before = reg.requests().len();
    let blobs = img.blobs();
    let upload =
        ImageUpload { blobs: &blobs, manifest: &img.manifest, media_type: OCI_MANIFEST, mount_from: &[] };
    let present = std::collections::HashSet::from([known]);
    let report = client.push_image_known(&reg.reference("known:2"), &[], &upload, &present).unwrap();
    let reqs = &reg.requests()[before..];
    assert_eq!(count(reqs, "HEAD", &known.to_string()), 0, "{reqs:#?}");
    // The new layer and the config: a HEAD (absent), the upload, a HEAD (confirmed).
    for d in [img.layers[1].digest, img.config.digest] {
        assert_eq!(count(reqs, "HEAD", &format!("/blobs/{d}")), 2, "{reqs:#?}");
    }
    assert_eq!(upload_puts(reqs), 2, "{reqs:#?}");
    let outcomes: Vec<_> = report.blobs.iter().map(|b| (b.digest, b.outcome.clone())).collect();
    assert!(outcomes.contains(&(known, BlobOutcome::Present)), "{outcomes:?}");
    assert_eq!(report.uploaded(), 2);
}

#[test]
fn blobs_are_mounted_across_repositories() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let (a, b) = (layer("a", 20_000), layer("b", 20_000));
    TestImage::new(&[a.clone(), b.clone()], "amd64")
        .push(&client, &reg.reference("base/img:1"), &[], &[])
        .unwrap();
    let before = reg.requests().len();

    // Two layers exist in base/img, the new one and the config do not.
    let img = TestImage::new(&[a, b, layer("new", 10_000)], "amd64");
    let report = img.push(&client, &reg.reference("team/app:1"), &[], &["team/none", "base/img"]).unwrap();
    let reqs = &reg.requests()[before..];
    assert_eq!(report.mounted(), 2);
    assert_eq!(report.uploaded(), 2);
    let mounted: Vec<_> = report
        .blobs
        .iter()
        .filter_map(|b| match &b.outcome {
            BlobOutcome::Mounted { from } => Some(from.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(mounted, ["base/img", "base/img"]);
    let mounts_ok =
        reqs.iter().filter(|r| r.method == "POST" && r.path.contains("mount=") && r.status == 201).count();
    assert_eq!(mounts_ok, 2, "{reqs:#?}");
    // Failed mounts open the upload session that is used: no extra POST without mount.
    assert_eq!(reqs.iter().filter(|r| r.method == "POST" && !r.path.contains("mount=")).count(), 0);
    assert_eq!(upload_puts(reqs), 2);
    // The sessions opened by the first candidate's failed mounts were cancelled.
    let cancelled =
        reqs.iter().filter(|r| r.method == "DELETE" && r.path.contains("/blobs/uploads/") && r.status == 204);
    assert_eq!(cancelled.count(), 4, "{reqs:#?}");
    let pulled = client.get_manifest(&reg.reference("team/app:1")).unwrap();
    for d in pulled.blobs().unwrap().1 {
        client.fetch_blob(&reg.reference("team/app"), &dg(&d), &mut io::sink()).unwrap();
    }
}

/// Reads half of a blob, then fails, like a producer that dies mid-layer.
struct FailsHalfWay(BytesBlob);

impl BlobSource for FailsHalfWay {
    fn digest(&self) -> Digest {
        self.0.digest
    }
    fn size(&self) -> u64 {
        self.0.bytes.len() as u64
    }
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let half = &self.0.bytes[..self.0.bytes.len() / 2];
        Ok(Box::new(half.chain(io::Cursor::new(Vec::new())).chain(Broken)))
    }
}

struct Broken;
impl Read for Broken {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
}

#[test]
fn an_interrupted_push_resumes_without_resending() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    // One upload at a time, so which blobs arrived before the failure is known.
    let client = Client::new(
        ClientOptions { parallel_uploads: 1, plain_http: true, ..test_options() },
        CredentialSource::default(),
    );
    let img = TestImage::new(&[layer("a", 30_000), layer("b", 30_000), layer("c", 30_000)], "amd64");
    let target = reg.reference("app:v1");
    let failing = FailsHalfWay(img.layers[1].clone());
    let blobs: [&dyn BlobSource; 4] = [&img.config, &img.layers[0], &failing, &img.layers[2]];
    let err = client
        .push_image(
            &target,
            &[],
            &ImageUpload {
                blobs: &blobs,
                manifest: &img.manifest,
                media_type: OCI_MANIFEST,
                mount_from: &[],
            },
        )
        .unwrap_err();
    assert!(matches!(&err, Error::Source { digest, .. } if *digest == img.layers[1].digest), "{err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    // No tag points at the image, and the failed and unstarted blobs are absent.
    assert!(client.head_manifest(&target).unwrap().is_none());
    let present: Vec<bool> =
        img.blobs().iter().map(|b| client.head_blob(&target, &b.digest()).unwrap().is_some()).collect();
    assert_eq!(present, [true, true, false, false]);

    let before = reg.requests().len();
    let report = img.push(&client, &target, &[], &[]).unwrap();
    let reqs = &reg.requests()[before..];
    assert_eq!(upload_puts(reqs), 2, "only the two missing blobs: {reqs:#?}");
    let outcomes: Vec<_> = report.blobs.iter().map(|b| matches!(b.outcome, BlobOutcome::Present)).collect();
    assert_eq!(outcomes, [true, true, false, false]);
    assert_eq!(client.get_manifest(&target).unwrap().digest, img.digest());
}

/// Counts how many of its readers are open at once; each read is slow.
struct Slow<'a> {
    blob: BytesBlob,
    active: &'a AtomicUsize,
    max: &'a AtomicUsize,
}

struct SlowReader<'a> {
    inner: &'a [u8],
    active: &'a AtomicUsize,
}

impl BlobSource for Slow<'_> {
    fn digest(&self) -> Digest {
        self.blob.digest
    }
    fn size(&self) -> u64 {
        self.blob.bytes.len() as u64
    }
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Ok(Box::new(SlowReader { inner: &self.blob.bytes, active: self.active }))
    }
}

impl Read for SlowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        thread::sleep(std::time::Duration::from_millis(50));
        self.inner.read(buf)
    }
}

impl Drop for SlowReader<'_> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn uploads_run_in_parallel_within_the_bound() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client =
        Client::new(ClientOptions { parallel_uploads: 3, ..test_options() }, CredentialSource::default());
    let (active, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let slow: Vec<Slow> =
        (0..7).map(|i| Slow { blob: layer(&format!("p{i}"), 3_000).0, active: &active, max: &max }).collect();
    let blobs: Vec<&dyn BlobSource> = slow.iter().map(|s| s as &dyn BlobSource).collect();
    let reports = client.push_blobs(&reg.reference("par"), &blobs, &[]).unwrap();
    assert_eq!(reports.len(), 7);
    assert!(reports.iter().all(|r| matches!(r.outcome, BlobOutcome::Uploaded { .. })));
    let max = max.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "{max} uploads at once");
    assert_eq!(active.load(Ordering::SeqCst), 0);
}

#[test]
fn large_blobs_go_in_chunks_behind_relative_locations() {
    let config = TestRegistryConfig { relative_urls: true, ..Default::default() };
    let Some(reg) = TestRegistry::start_configured_or_skip(&config) else { return };
    let client = Client::new(
        ClientOptions { chunk_size: 16 << 10, plain_http: true, ..test_options() },
        CredentialSource::default(),
    );
    let img = TestImage::new(&[layer("big", 100_000), layer("small", 1_000)], "arm64");
    let target = reg.reference("chunked:v1");
    let before = reg.requests().len();
    img.push(&client, &target, &[], &[]).unwrap();
    let reqs = &reg.requests()[before..];
    let big = img.layers[0].bytes.len() as u64;
    let chunks = big.div_ceil(16 << 10) as usize;
    assert_eq!(count(reqs, "PATCH", "/blobs/uploads/"), chunks, "{reqs:#?}");
    assert!(reqs.iter().all(|r| r.status < 400 || (r.method == "HEAD" && r.status == 404)), "{reqs:#?}");
    let mut got = Vec::new();
    client.fetch_blob(&target, &img.layers[0].digest, &mut got).unwrap();
    assert_eq!(got, img.layers[0].bytes);
}

#[test]
fn htpasswd_auth_with_right_wrong_and_missing_credentials() {
    let Some(reg) = TestRegistry::start_with_htpasswd_or_skip("ci", "s3cret") else { return };
    let img = TestImage::new(&[layer("a", 5_000)], "amd64");
    let target = reg.reference("private/app:v1");

    let wrong =
        img.push(&reg.client(Some(Credentials::parse("ci:nope").unwrap())), &target, &[], &[]).unwrap_err();
    assert!(matches!(wrong, Error::Unauthorized { status: 401, .. }), "{wrong:?}");
    let msg = wrong.to_string();
    assert!(
        msg.contains(&reg.host()) && msg.contains("`ci`") && msg.contains("wrong user name or password"),
        "{msg}"
    );

    let anonymous = reg.client(None).get_manifest(&target).unwrap_err().to_string();
    assert!(
        anonymous.contains("without credentials") && anonymous.contains("requires a login"),
        "{anonymous}"
    );

    // Right credentials, from a podman-style auth file.
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    let token = base64_encode("ci:s3cret");
    std::fs::write(&auth_file, format!(r#"{{"auths": {{"{}": {{"auth": "{token}"}}}}}}"#, reg.host()))
        .unwrap();
    let env = AuthEnvironment { registry_auth_file: Some(auth_file), ..Default::default() };
    let client = Client::new(
        ClientOptions { plain_http: true, ..test_options() },
        CredentialSource { explicit: None, env },
    );
    img.push(&client, &target, &[], &[]).unwrap();
    assert_eq!(client.get_manifest(&target).unwrap().bytes, img.manifest);
    let creds = "--creds=ci:s3cret";
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", creds, &format!("docker://{target}")]);
    assert_eq!(raw.as_bytes(), img.manifest.as_slice());
}

fn base64_encode(s: &str) -> String {
    // The auth file's `auth` field; encoded by a real tool rather than by this crate.
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    out.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn bearer_tokens_are_fetched_per_scope_and_cached() {
    let token_auth = Some(("ci".to_owned(), "t0ken".to_owned()));
    let Some(reg) =
        TestRegistry::start_configured_or_skip(&TestRegistryConfig { token_auth, ..Default::default() })
    else {
        return;
    };
    let img = TestImage::new(&[layer("a", 5_000), layer("b", 5_000)], "amd64");
    let target = reg.reference("org/app:v1");
    let client = reg.client(Some(Credentials::parse("ci:t0ken").unwrap()));
    img.push(&client, &target, &["v2"], &[]).unwrap();
    // One token for the pull scope (HEADs), one for pull,push; reused across blobs and tags.
    assert_eq!(reg.tokens_issued(), 2);
    assert_eq!(client.get_manifest(&target).unwrap().bytes, img.manifest);
    for b in img.blobs() {
        client.fetch_blob(&target, &b.digest(), &mut io::sink()).unwrap();
    }
    assert_eq!(reg.tokens_issued(), 2, "the pull reuses the cached pull token");
    // Another repository is another scope.
    client.get_manifest(&reg.reference("org/other:v1")).unwrap_err();
    assert_eq!(reg.tokens_issued(), 3);

    let wrong = reg.client(Some(Credentials::parse("ci:nope").unwrap())).get_manifest(&target).unwrap_err();
    assert!(matches!(wrong, Error::Unauthorized { status: 401, .. }), "{wrong:?}");
    assert!(wrong.to_string().contains("`ci`"), "{wrong}");
    let anonymous = reg.client(None).get_manifest(&target).unwrap_err();
    assert!(matches!(anonymous, Error::Unauthorized { user: None, .. }), "{anonymous:?}");
    // An identity token from Docker's config file is exchanged as an OAuth2 refresh token.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"identitytoken": "t0ken"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let env = AuthEnvironment { docker_config: Some(dir.path().to_owned()), ..Default::default() };
    let oauth = Client::new(test_options(), CredentialSource { explicit: None, env });
    let before = reg.tokens_issued();
    assert_eq!(oauth.get_manifest(&target).unwrap().digest, img.digest());
    assert_eq!(reg.tokens_issued(), before + 1);
    let bad_token =
        reg.client(Some(Credentials { username: IDENTITY_TOKEN_USER.into(), password: "old".into() }));
    assert!(matches!(bad_token.get_manifest(&target), Err(Error::Unauthorized { .. })));
    // skopeo speaks the same flow to the same registry.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds=ci:t0ken",
        &format!("docker://{target}"),
    ]);
    assert_eq!(raw.as_bytes(), img.manifest.as_slice());
}

/// Credentials are looked up only when a registry asks for them: a broken credential store
/// does not stop pushes to an open registry, and is named when a registry wants a login.
#[test]
fn credentials_are_looked_up_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"credsStore": "nix-layer-missing"}"#).unwrap();
    let env = AuthEnvironment {
        docker_config: Some(dir.path().to_owned()),
        path: Some("/nonexistent".into()),
        ..Default::default()
    };
    let client = || Client::new(test_options(), CredentialSource { explicit: None, env: env.clone() });
    let img = TestImage::new(&[layer("a", 1_000)], "amd64");
    let Some(open) = TestRegistry::start_or_skip() else { return };
    img.push(&client(), &open.reference("app:v1"), &[], &[]).unwrap();
    let Some(private) = TestRegistry::start_with_htpasswd_or_skip("u", "p") else { return };
    let err = img.push(&client(), &private.reference("app:v1"), &[], &[]).unwrap_err();
    assert!(matches!(err, Error::Credentials { .. }), "{err:?}");
    assert!(err.to_string().contains("docker-credential-nix-layer-missing"), "{err}");
}

#[test]
fn tampered_blobs_and_manifests_are_refused() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let img = TestImage::new(&[layer("a", 10_000)], "amd64");
    let target = reg.reference("app:v1");
    img.push(&client, &target, &[], &[]).unwrap();

    let d = img.layers[0].digest;
    let data = reg.blob_data_path(&d);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let err = client.fetch_blob(&target, &d, &mut io::sink()).unwrap_err();
    assert!(matches!(&err, Error::DigestMismatch { expected, .. } if *expected == d), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("layer");
    assert!(matches!(client.fetch_blob_to_path(&target, &d, &dest), Err(Error::DigestMismatch { .. })));
    assert!(!dest.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 0, "nothing left behind");

    // A manifest altered in storage no longer matches the digest it is fetched by.
    let m = reg.blob_data_path(&img.digest());
    let text = std::fs::read_to_string(&m).unwrap().replace("\"schemaVersion\":2", "\"schemaVersion\": 2");
    std::fs::write(&m, text).unwrap();
    let err = client.get_manifest(&target.with_digest(img.digest())).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[test]
fn rejected_manifests_and_disputed_digests_fail_clearly() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let img = TestImage::new(&[layer("a", 1_000)], "amd64");
    // The manifest names blobs the registry does not have.
    let err = client.push_manifest(&reg.reference("app"), &["v1"], &img.manifest, OCI_MANIFEST).unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
    // A target pinned to another digest is refused before anything is sent.
    let before = reg.requests().len();
    let pinned = reg.reference(&format!("app@{}", Digest::of(b"other")));
    let err = img.push(&client, &pinned, &[], &[]).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(reg.requests().len(), before);
    // Pinned to its own digest, it is pushed by digest.
    img.push(&client, &reg.reference(&format!("app@{}", img.digest())), &[], &[]).unwrap();
    assert!(client.head_manifest(&reg.reference(&format!("app@{}", img.digest()))).unwrap().is_some());
}

#[test]
fn an_index_resolves_to_the_platform_asked_for() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let amd = TestImage::new(&[layer("x86", 2_000)], "amd64");
    let arm = TestImage::new(&[layer("arm", 2_000)], "arm64");
    let repo = reg.reference("multi");
    let mut manifests = Vec::new();
    for (img, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let mut d = img.descriptor();
        d.set_platform(Some(nix_layer_registry::platform("linux", arch, None)));
        manifests.push(d);
    }
    let index = serde_json::to_vec(
        &serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
    )
    .unwrap();
    let (amd_blobs, arm_blobs) = (amd.blobs(), arm.blobs());
    let images = [
        ImageUpload { blobs: &amd_blobs, manifest: &amd.manifest, media_type: OCI_MANIFEST, mount_from: &[] },
        ImageUpload { blobs: &arm_blobs, manifest: &arm.manifest, media_type: OCI_MANIFEST, mount_from: &[] },
    ];
    let report =
        client.push_index(&repo.with_tag("both").unwrap(), &["latest"], &images, &index, OCI_INDEX).unwrap();
    assert_eq!((report.manifest_digest, report.blobs.len(), report.uploaded()), (Digest::of(&index), 4, 4));
    assert_eq!(report.tags, ["both", "latest"]);
    // skopeo sees the index and both platforms.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}:latest", repo)]);
    assert_eq!(raw.as_bytes(), index.as_slice());
    for arch in ["amd64", "arm64"] {
        let url = format!("docker://{}:both", repo);
        let seen = skopeo(&["inspect", "--tls-verify=false", &format!("--override-arch={arch}"), &url]);
        let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
        assert_eq!(seen["Architecture"], arch);
    }

    let pinned = repo.with_digest(Digest::of(&index));
    let got = client.resolve_image(&pinned, &Platform::parse("linux/arm64/v8").unwrap()).unwrap();
    assert_eq!(got.index.unwrap().digest, Digest::of(&index));
    assert_eq!(got.manifest.digest, arm.digest());
    let got = client
        .resolve_image(&repo.with_tag("both").unwrap(), &Platform::parse("linux/amd64").unwrap())
        .unwrap();
    assert_eq!(got.manifest.bytes, amd.manifest);
    let err =
        client.resolve_image(&pinned, &Platform::parse("linux/s390x").unwrap()).unwrap_err().to_string();
    assert!(err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64"), "{err}");
    // A plain image resolves to itself.
    assert!(client
        .resolve_image(&repo.with_digest(amd.digest()), &Platform::host())
        .unwrap()
        .index
        .is_none());
}

#[test]
fn the_layer_cache_index_round_trips_and_merges() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let repo = reg.reference("ci/cache");
    assert!(client.read_layer_cache(&repo).unwrap().is_empty(), "absent is empty");
    let entry = |n: &str| {
        let (blob, diff_id) = layer(n, 100);
        (
            format!("key-{n}"),
            CachedLayer {
                digest: blob.digest,
                diff_id,
                size: blob.bytes.len() as u64,
                media_type: Compression::Gzip.layer_media_type().into(),
            },
        )
    };
    let first: BTreeMap<_, _> = [entry("a"), entry("b")].into();
    client.write_layer_cache(&repo, &first, 2).unwrap();
    let read = client.read_layer_cache(&repo).unwrap();
    assert_eq!(read.get("key-a"), first.get("key-a"));
    assert_eq!(read.len(), 2);
    // A second writer (another CI job, another client) merges; the bound evicts the oldest.
    let other = test_client(None);
    let written = other.write_layer_cache(&repo, &[entry("c")].into(), 2).unwrap();
    let read = client.read_layer_cache(&repo).unwrap();
    assert_eq!(read, written);
    assert_eq!(
        (read.len(), read.get("key-a"), read.get("key-b").is_some(), read.get("key-c").is_some()),
        (2, None, true, true)
    );
    // skopeo reads it as an ordinary artifact.
    let raw =
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}:nix-layer-cache", repo)]);
    assert!(raw.contains(nix_layer_registry::CACHE_ARTIFACT_TYPE), "{raw}");
}

#[test]
fn sboms_are_pushed_as_referrers() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let client = reg.client(None);
    let img = TestImage::new(&[layer("a", 1_000)], "amd64");
    let repo = reg.reference("app");
    img.push(&client, &repo.with_tag("v1").unwrap(), &[], &[]).unwrap();
    let sbom_type = "application/vnd.cyclonedx+json";
    let mut pushed = Vec::new();
    for n in 0..2 {
        let sbom =
            BytesBlob::new(format!(r#"{{"bomFormat":"CycloneDX","serialNumber":"{n}"}}"#).into_bytes());
        let notes: BTreeMap<String, String> =
            [("org.opencontainers.image.created".to_owned(), "1970-01-01T00:00:01Z".to_owned())].into();
        let r = client.push_referrer(&repo, &img.descriptor(), sbom_type, &sbom, sbom_type, &notes).unwrap();
        // distribution 2.8 has no referrers API: the tag schema is used.
        assert_eq!(r.via, ReferrersVia::TagSchema);
        assert_eq!(r.manifest.artifact_type().as_ref(), Some(&MediaType::from(sbom_type)));
        let artifact = client.get_manifest(&repo.with_digest(dg(&r.manifest))).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&artifact.bytes).unwrap();
        assert_eq!(doc["subject"]["digest"], img.digest().to_string());
        assert_eq!(doc["artifactType"], sbom_type);
        pushed.push(r.manifest);
    }
    let listed = client.list_referrers(&repo, &img.digest(), Some(sbom_type)).unwrap();
    assert_eq!(listed, pushed);
    assert!(client.list_referrers(&repo, &img.digest(), Some("application/spdx+json")).unwrap().is_empty());
    assert!(client.list_referrers(&repo, &Digest::of(b"none"), None).unwrap().is_empty());
}

// ------------------------------------------------------------------ retries

fn test_options() -> ClientOptions {
    test_client(None).options().clone()
}

/// A TCP proxy in front of the registry that fails the first `fail` connections, answering
/// with the status line and headers `answer`, or hanging up without a word if it is `None`;
/// then it forwards.
fn flaky_proxy(upstream: u16, fail: usize, answer: Option<&'static str>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = failed.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            if counter.load(Ordering::SeqCst) < fail {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                if let Some(status) = answer {
                    let _ = client.write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                }
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let mut server = server;
            thread::spawn(move || {
                let _ = io::copy(&mut c2, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            thread::spawn(move || {
                let _ = io::copy(&mut s2, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, failed)
}

#[test]
fn server_errors_and_dropped_connections_are_retried() {
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let img = TestImage::new(&[layer("a", 20_000)], "amd64");
    const UNAVAILABLE: &str = "503 Service Unavailable";
    // A rate limit asking for 30 s: honoured only up to the policy's longest delay (100 ms).
    const RATE_LIMITED: &str = "429 Too Many Requests\r\nRetry-After: 30";
    for (case, answer) in [("503", Some(UNAVAILABLE)), ("429", Some(RATE_LIMITED)), ("drop", None)] {
        let started = std::time::Instant::now();
        let (port, failed) = flaky_proxy(reg.port(), 3, answer);
        let client = test_client(None);
        let target = Reference::parse(&format!("127.0.0.1:{port}/retry-{case}:v1")).unwrap();
        let report = img.push(&client, &target, &[], &[]).unwrap();
        assert_eq!(failed.load(Ordering::SeqCst), 3, "{case}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{case}: {:?}", started.elapsed());
        assert_eq!(report.manifest_digest, img.digest());
        assert_eq!(client.get_manifest(&target).unwrap().bytes, img.manifest);
    }
    // A registry that keeps failing: the error says so, after the bounded attempts.
    let (port, failed) = flaky_proxy(reg.port(), usize::MAX, Some(UNAVAILABLE));
    let target = Reference::parse(&format!("127.0.0.1:{port}/down:v1")).unwrap();
    let err = test_client(None).get_manifest(&target).unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 503, .. }) && err.is_transient(), "{err:?}");
    assert_eq!(failed.load(Ordering::SeqCst), test_options().retry.attempts as usize);
    let err = img.push(&test_client(None), &target, &[], &[]).unwrap_err();
    assert!(err.to_string().contains("HTTP 503"), "{err}");
}

#[test]
fn an_unreachable_registry_fails_clearly() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = Reference::parse(&format!("127.0.0.1:{port}/app:v1")).unwrap();
    let err = test_client(None).get_manifest(&target).unwrap_err();
    assert!(matches!(err, Error::Unreachable { attempts: 4, .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("cannot reach registry 127.0.0.1:{port}")), "{err}");
    // TLS is the default, even for localhost: a plain-HTTP registry is not silently used.
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let tls = Client::new(ClientOptions { plain_http: false, ..test_options() }, CredentialSource::default());
    let err = tls.get_manifest(&reg.reference("app:v1")).unwrap_err().to_string();
    assert!(err.contains("TLS") || err.contains("tls"), "{err}");
}
