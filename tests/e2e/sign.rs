//! `nix-layer keygen`, `sign` and `verify` against a real registry, cross-checked with an
//! independent ECDSA implementation (openssl) in both directions; `push --sign` and its
//! provenance. Interop with Debian trixie's podman, skopeo and cosign is in interop.rs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{BytesBlob, Client, ImageUpload, Reference, OCI_MANIFEST};
use nix_layer_registry_testkit::TestRegistry;
use serde_json::{json, Value};

use crate::support::*;

// Shared with interop.rs.

/// What nearly every signing test starts from: a registry, its client, a scratch
/// directory and the key pairs `nix-layer keygen` made there, `(prefix, password)` each.
pub(crate) struct Signing {
    pub r: TestRegistry,
    pub client: Client,
    dir: tempfile::TempDir,
}

impl Signing {
    pub fn new(keys: &[(&str, &str)]) -> Signing {
        let r = registry();
        let client = r.client(None);
        let s = Signing { r, client, dir: scratch() };
        s.keygen(keys);
        s
    }

    pub fn keygen(&self, keys: &[(&str, &str)]) {
        for (prefix, password) in keys {
            keygen(self.d(), prefix, password);
        }
    }

    /// The scratch directory: the key files, and whatever else a test writes.
    pub fn d(&self) -> &Path {
        self.dir.path()
    }

    /// `name` (`repo:tag` or `repo@digest`) on the registry.
    pub fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.r.host())
    }

    /// `nix-layer sign` of `reference` with the key file `key`, COSIGN_PASSWORD set to
    /// `password` or unset.
    pub fn sign(&self, reference: &str, key: &str, password: Option<&str>) -> Command {
        let mut cmd = nix_layer();
        cmd.args(["sign", "--plain-http", reference, "--key"])
            .arg(self.d().join(key))
            .env_remove("COSIGN_PASSWORD");
        if let Some(p) = password {
            cmd.env("COSIGN_PASSWORD", p);
        }
        cmd
    }

    /// `nix-layer verify` of `reference` with the public key file `key`, its output
    /// whatever the status.
    pub fn verify(&self, reference: &str, key: &str, attestations: bool) -> Output {
        let mut cmd = nix_layer();
        cmd.args(["verify", "--plain-http", reference, "--key"]).arg(self.d().join(key));
        if attestations {
            cmd.arg("--attestations");
        }
        output(&mut cmd)
    }
}

pub(crate) fn keygen(dir: &Path, prefix: &str, password: &str) {
    run(nix_layer()
        .current_dir(dir)
        .args(["keygen", "--output-prefix", prefix])
        .env("COSIGN_PASSWORD", password));
}

/// Runs without a terminal on stdin, returning the output whatever the status.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A one-layer image pushed with the registry client; its manifest digest.
pub(crate) fn push_image(client: &Client, target: &Reference, content: &[u8]) -> Digest {
    let layer = BytesBlob::new(content.to_vec());
    let config = BytesBlob::new(
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]}}))
        .unwrap(),
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest.to_string(), "size": layer.bytes.len()}],
    }))
    .unwrap();
    let blobs: [&dyn nix_layer_registry::BlobSource; 2] = [&config, &layer];
    let upload =
        ImageUpload { blobs: &blobs, manifest: &manifest, media_type: OCI_MANIFEST, mount_from: &[] };
    client.push_image(target, &[], &upload).unwrap().manifest_digest
}

/// `push --closure … --plain-http` plus `extra`, the key's password in COSIGN_PASSWORD and
/// GitHub's workflow variables set (fixed, so the provenance's builder is known).
pub(crate) fn push_signed(dest: &str, roots: &[&str], password: &str, extra: &[&std::ffi::OsStr]) -> Output {
    let f = fixtures();
    output(
        nix_layer()
            .args(["push", dest, "--plain-http", "--closure"])
            .args(f.closure(roots))
            .args(extra)
            .env("COSIGN_PASSWORD", password)
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_REPOSITORY", "org/app")
            .env("GITHUB_WORKFLOW_REF", "org/app/.github/workflows/build.yml@refs/heads/main")
            .env("GITHUB_RUN_ID", "7")
            .env("GITHUB_RUN_ATTEMPT", "1"),
    )
}

pub(crate) fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The envelope bytes of each in-toto referrer of `digest` in `repo`.
pub(crate) fn envelopes(client: &Client, repo: &Reference, digest: &Digest) -> Vec<Vec<u8>> {
    let list = client.list_referrers(repo, digest, Some("application/vnd.in-toto+json")).unwrap();
    list.iter()
        .map(|r| {
            let m: Value = serde_json::from_slice(
                &client
                    .get_manifest(&repo.with_digest(nix_layer_registry::blob_digest(r.digest()).unwrap()))
                    .unwrap()
                    .bytes,
            )
            .unwrap();
            assert_eq!(m["layers"][0]["mediaType"], "application/vnd.dsse.envelope.v1+json");
            let mut bytes = Vec::new();
            client
                .fetch_blob(repo, &m["layers"][0]["digest"].as_str().unwrap().parse().unwrap(), &mut bytes)
                .unwrap();
            bytes
        })
        .collect()
}

pub(crate) fn statement_of(envelope: &[u8]) -> Value {
    let e: Value = serde_json::from_slice(envelope).unwrap();
    assert_eq!(e["payloadType"], "application/vnd.in-toto+json");
    serde_json::from_slice(&B64.decode(e["payload"].as_str().unwrap()).unwrap()).unwrap()
}

#[test]
fn keygen_writes_a_pair_openssl_reads_and_never_overwrites() {
    let dir = scratch();
    // No password variable and no terminal: a clear error, no files.
    let o = output(nix_layer().current_dir(dir.path()).args(["keygen"]).env_remove("COSIGN_PASSWORD"));
    assert!(!o.status.success() && stderr(&o).contains("COSIGN_PASSWORD"), "{}", stderr(&o));
    assert!(!dir.path().join("cosign.key").exists() && !dir.path().join("cosign.pub").exists());

    keygen(dir.path(), "cosign", "pw");
    let key = std::fs::read_to_string(dir.path().join("cosign.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "{key}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.path().join("cosign.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // The public key is a PKIX P-256 key to openssl.
    let text = stdout(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-text", "-in"])
            .arg(dir.path().join("cosign.pub")),
    );
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");

    let o = output(nix_layer().current_dir(dir.path()).args(["keygen"]).env("COSIGN_PASSWORD", "other"));
    assert!(!o.status.success() && stderr(&o).contains("never overwrites"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("cosign.key")).unwrap(), key);
}

/// On a terminal (a pty from util-linux's `script`), keygen asks twice without echo, and
/// the key opens with that password.
#[test]
fn a_password_typed_on_a_terminal_is_asked_twice_and_not_echoed() {
    let s = Signing::new(&[]);
    let d = s.d();
    let cmd = format!("{} keygen --output-prefix {}", env!("CARGO_BIN_EXE_nix-layer"), d.join("t").display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("COSIGN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux's script (a pseudo-terminal) is needed");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..2 {
            std::thread::sleep(std::time::Duration::from_millis(700));
            stdin.write_all(b"typed-secret\n").unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    assert_eq!(shown.matches("Enter password for private key").count(), 2, "{shown}");
    assert!(!shown.contains("typed-secret"), "the password was echoed: {shown}");
    let image = s.at("tty:v1");
    push_image(&s.client, &Reference::parse(&image).unwrap(), b"tty");
    run(&mut s.sign(&image, "t.key", Some("typed-secret")));
}

#[test]
fn sign_and_verify_on_the_command_line_interoperate_with_openssl() {
    let s = Signing::new(&[("a", "pw-a"), ("b", "pw-b")]);
    let (client, d) = (&s.client, s.d());
    let image = s.at("app:v1");
    let digest = push_image(client, &Reference::parse(&image).unwrap(), b"app layer");
    let verify = |key: &str, reference: &str| s.verify(reference, key, false);
    let sign =
        |key: &str, password: Option<&str>, reference: &str| output(&mut s.sign(reference, key, password));

    // Unsigned.
    let o = verify("a.pub", &image);
    assert!(!o.status.success() && stderr(&o).contains("has no signatures"), "{}", stderr(&o));
    // Wrong password, no password: nothing signed.
    let o = sign("a.key", Some("wrong"), &image);
    assert!(!o.status.success() && stderr(&o).contains("cannot be decrypted"), "{}", stderr(&o));
    let o = sign("a.key", None, &image);
    assert!(!o.status.success() && stderr(&o).contains("COSIGN_PASSWORD"), "{}", stderr(&o));
    assert!(!verify("a.pub", &image).status.success());

    let o = sign("a.key", Some("pw-a"), &image);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{digest} signed\n"));
    let o = sign("a.key", Some("pw-a"), &image);
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{digest} already signed\n"));
    let o = verify("a.pub", &image);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("{digest} verified: signed as {image} ")));
    // Another key's public key: refused, saying so.
    let o = verify("b.pub", &image);
    assert!(!o.status.success() && stderr(&o).contains("does not verify with this key"), "{}", stderr(&o));
    // A public key file that is not one.
    std::fs::write(d.join("garbled.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        .unwrap();
    let o = verify("garbled.pub", &image);
    assert!(!o.status.success() && stderr(&o).contains("only P-256"), "{}", stderr(&o));

    // openssl verifies the stored signature over the stored payload with the public key.
    let repo = Reference::parse(&image).unwrap();
    let sig_tag = format!("sha256-{}.sig", digest.hex());
    let sig: Value =
        serde_json::from_slice(&client.get_manifest(&repo.with_tag(&sig_tag).unwrap()).unwrap().bytes)
            .unwrap();
    let layer = &sig["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
    let mut payload = Vec::new();
    client.fetch_blob(&repo, &layer["digest"].as_str().unwrap().parse().unwrap(), &mut payload).unwrap();
    let p: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(p["critical"]["image"]["docker-manifest-digest"], digest.to_string());
    assert_eq!(p["critical"]["identity"]["docker-reference"], image);
    assert_eq!(p["critical"]["type"], "cosign container image signature");
    let signature =
        B64.decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
    std::fs::write(d.join("payload"), &payload).unwrap();
    std::fs::write(d.join("sig.der"), &signature).unwrap();
    let ok = stdout(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(d.join("a.pub"))
            .arg("-signature")
            .arg(d.join("sig.der"))
            .arg(d.join("payload")),
    );
    assert_eq!(ok.trim(), "Verified OK");

    // The other direction: a key and signature made by openssl, stored in cosign's layout
    // by hand, verify with nix-layer; the same signature for another image does not.
    run(Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(d.join("o.pem")));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(d.join("o.pem"))
        .arg("-out")
        .arg(d.join("o.pub")));
    let image2 = s.at("other:v1");
    let repo2 = Reference::parse(&image2).unwrap();
    let digest2 = push_image(client, &repo2, b"other layer");
    let payload2 = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{image2}"}},"image":{{"docker-manifest-digest":"{digest2}"}},"type":"cosign container image signature"}},"optional":{{"by":"openssl"}}}}"#
    );
    std::fs::write(d.join("payload2"), &payload2).unwrap();
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(d.join("o.pem"))
        .arg("-out")
        .arg(d.join("sig2.der"))
        .arg(d.join("payload2")));
    let blob = BytesBlob::new(payload2.into_bytes());
    let config = BytesBlob::new(b"{}".to_vec());
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": blob.digest.to_string(),
            "size": blob.bytes.len(), "annotations": {"dev.cosignproject.cosign/signature": B64.encode(std::fs::read(d.join("sig2.der")).unwrap())}}],
    }))
    .unwrap();
    for (repo, dig) in [(&repo2, digest2), (&repo, digest)] {
        client.push_blobs(repo, &[&blob, &config], &[]).unwrap();
        client.push_manifest(repo, &[&format!("sha256-{}.sig", dig.hex())], &manifest, OCI_MANIFEST).unwrap();
    }
    let o = verify("o.pub", &image2);
    assert!(o.status.success(), "{}", stderr(&o));
    // Under image one's .sig tag (its own signature replaced): a signature for another digest.
    let o = verify("o.pub", &image);
    assert!(!o.status.success() && stderr(&o).contains("for another manifest"), "{}", stderr(&o));
}

/// Stores `envelope` as an in-toto referrer of `digest` (what an attacker or a broken
/// tool could put there).
fn attach_envelope(client: &Client, repo: &Reference, digest: Digest, envelope: &[u8]) {
    let m = client.get_manifest(&repo.with_digest(digest)).unwrap();
    let subject = nix_layer_registry::descriptor_of(&m.media_type, &m.bytes);
    let blob = BytesBlob::new(envelope.to_vec());
    client
        .push_referrer(
            repo,
            &subject,
            "application/vnd.in-toto+json",
            &blob,
            "application/vnd.dsse.envelope.v1+json",
            &Default::default(),
        )
        .unwrap();
}

/// `push --sign` opens the key before sending anything and signs the digest it pushed;
/// `--provenance` attaches signed SLSA provenance naming every store path with its NAR
/// hash; `verify --attestations` accepts it and refuses a tampered envelope, one about
/// another manifest and one signed by another key.
#[test]
fn push_sign_with_provenance_and_verify_attestations() {
    let s = Signing::new(&[("a", "pw-a"), ("b", "pw-b")]);
    let (client, d, f) = (&s.client, s.d(), fixtures());
    let key = |k: &str| d.join(k).into_os_string();
    let verify =
        |reference: &str, pubkey: &str, attestations: bool| s.verify(reference, pubkey, attestations);
    let at = |name: &str| s.at(name);

    // A wrong password: refused before the push, so the registry holds nothing.
    let dest = at("e2e/prov:1");
    let o = push_signed(&dest, &[&f.app], "wrong", &[os("--sign"), &key("a.key"), os("--provenance")]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be decrypted"), "{}", stderr(&o));
    assert!(matches!(
        client.get_manifest(&Reference::parse(&dest).unwrap()),
        Err(nix_layer_registry::Error::NotFound { .. })
    ));
    // No password at all (no variable, no terminal): the same.
    let o = output(
        nix_layer()
            .args(["push", &dest, "--plain-http", "--sign"])
            .arg(d.join("a.key"))
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .env_remove("COSIGN_PASSWORD"),
    );
    assert!(!o.status.success() && stderr(&o).contains("COSIGN_PASSWORD"), "{}", stderr(&o));
    assert!(matches!(
        client.get_manifest(&Reference::parse(&dest).unwrap()),
        Err(nix_layer_registry::Error::NotFound { .. })
    ));
    // --provenance without --sign is refused by the argument parser.
    let o = push_signed(&dest, &[&f.app], "pw-a", &[os("--provenance")]);
    assert!(!o.status.success() && stderr(&o).contains("--sign"), "{}", stderr(&o));

    let o = push_signed(
        &dest,
        &[&f.app],
        "pw-a",
        &[os("--sign"), &key("a.key"), os("--provenance"), os("--sbom")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let repo = Reference::parse(&dest).unwrap();
    assert_eq!(client.get_manifest(&repo).unwrap().digest, digest);
    let o = verify(&dest, "a.pub", true);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with(&format!("{digest} verified: signed as {dest} ")), "{out}");
    assert!(out.contains("verified: https://slsa.dev/provenance/v1"), "{out}");
    assert_eq!(out.matches(" SBOM sha256:").count(), 1, "{out}");
    assert!(!verify(&dest, "b.pub", true).status.success());

    // The SBOM referrer carries the same signature.
    let sboms = client.list_referrers(&repo, &digest, Some("application/vnd.cyclonedx+json")).unwrap();
    assert_eq!(sboms.len(), 1);
    let o = verify(&format!("{}@{}", at("e2e/prov"), sboms[0].digest()), "a.pub", false);
    assert!(o.status.success(), "the SBOM referrer is not signed: {}", stderr(&o));

    // The statement: subject, builder, every store path of the closure with its NAR hash.
    let envs = envelopes(client, &repo, &digest);
    assert_eq!(envs.len(), 1);
    let statement = statement_of(&envs[0]);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"], json!([{"name": at("e2e/prov"), "digest": {"sha256": digest.hex()}}]));
    let p = &statement["predicate"];
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        "https://github.com/org/app/.github/workflows/build.yml@refs/heads/main"
    );
    assert_eq!(p["runDetails"]["builder"]["version"]["nix-layer"], env!("CARGO_PKG_VERSION"));
    let params = &p["buildDefinition"]["externalParameters"];
    assert_eq!((&params["name"], &params["tag"]), (&json!(at("e2e/prov")), &json!("1")));
    assert!(params["compression"].as_str().unwrap().starts_with("gzip:"), "{params}");
    let deps: Vec<(String, String)> = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_owned(), d["digest"]["sha256"].as_str().unwrap().to_owned()))
        .collect();
    let mut expected: Vec<(String, String)> = f
        .closure(&[&f.app])
        .into_iter()
        .map(|path| {
            let nix32 = stdout(Command::new("nix-store").args(["-q", "--hash", &path]));
            let hex = stdout(
                Command::new("nix-hash")
                    .args(["--type", "sha256", "--to-base16"])
                    .arg(nix32.trim().trim_start_matches("sha256:")),
            );
            (path, hex.trim().to_owned())
        })
        .collect();
    expected.sort();
    assert_eq!(deps, expected);
    // The statement as pushed validates against the in-toto Statement / SLSA v1 schema.
    std::fs::write(d.join("statement.json"), serde_json::to_vec(&statement).unwrap()).unwrap();
    let schema_dir = repo_root().join("crates/sign/tests");
    let o = output(
        Command::new(schema_dir.join("validate.sh"))
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("jsonschema-venv"))
            .arg(schema_dir.join("provenance.schema.json"))
            .arg(d.join("statement.json")),
    );
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));

    // The same image pushed again: the same statement bytes (a second attestation; the
    // ECDSA signatures differ, the statements do not).
    let o = push_signed(&dest, &[&f.app], "pw-a", &[os("--sign"), &key("a.key"), os("--provenance")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let envs = envelopes(client, &repo, &digest);
    assert_eq!(envs.len(), 2);
    let payload = |e: &[u8]| serde_json::from_slice::<Value>(e).unwrap()["payload"].clone();
    assert_eq!(payload(&envs[0]), payload(&envs[1]));

    // Another image's valid attestation, a tampered one, and one by key b, each attached
    // to a signed copy of the image: each refused, saying why.
    let other = at("e2e/other:1");
    let o = push_signed(&other, &[&f.hello], "pw-a", &[os("--sign"), &key("a.key"), os("--provenance")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other_digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let other_env = envelopes(client, &Reference::parse(&other).unwrap(), &other_digest).remove(0);
    let mut tampered: Value = serde_json::from_slice(&envs[0]).unwrap();
    let mut s2 = statement.clone();
    s2["predicate"]["runDetails"]["builder"]["id"] = json!("https://evil.example/builder");
    tampered["payload"] = json!(B64.encode(serde_json::to_vec(&s2).unwrap()));
    let tampered = serde_json::to_vec(&tampered).unwrap();
    for (name, envelope, why) in [
        ("tampered", Some(tampered), "does not verify with this key"),
        ("another", Some(other_env), "for another manifest"),
        ("bykeyb", None, "does not verify with this key"),
    ] {
        let target = at(&format!("e2e/{name}:1"));
        let o = push_signed(&target, &[&f.app], "pw-a", &[os("--sign"), &key("a.key")]);
        assert!(o.status.success(), "{}", stderr(&o));
        let t = Reference::parse(&target).unwrap();
        match envelope {
            Some(e) => attach_envelope(client, &t, digest, &e),
            None => {
                let o = push_signed(
                    &target,
                    &[&f.app],
                    "pw-b",
                    &[os("--sign"), &key("b.key"), os("--provenance")],
                );
                assert!(o.status.success(), "{}", stderr(&o));
            }
        }
        // The signature alone still verifies; the attestations do not.
        assert!(verify(&target, "a.pub", false).status.success());
        let o = verify(&target, "a.pub", true);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(
            stderr(&o).contains("do not verify with this key") && stderr(&o).contains(why),
            "{name}: {}",
            stderr(&o)
        );
    }
    // An image without attestations.
    let o = verify(&at("e2e/tampered:1"), "a.pub", false);
    assert!(o.status.success());
    let plain = at("e2e/plain:1");
    assert!(push_signed(&plain, &[&f.app], "pw-a", &[os("--sign"), &key("a.key")]).status.success());
    let o = verify(&plain, "a.pub", true);
    assert!(!o.status.success() && stderr(&o).contains("has no in-toto attestations"), "{}", stderr(&o));
    // An SBOM referrer nobody signed (pushed without --sign) fails --attestations.
    let unsigned = at("e2e/unsigned-sbom:1");
    assert!(push_signed(&unsigned, &[&f.app], "pw-a", &[os("--sign"), &key("a.key"), os("--provenance")])
        .status
        .success());
    assert!(verify(&unsigned, "a.pub", true).status.success());
    assert!(push_signed(&unsigned, &[&f.app], "", &[os("--sbom")]).status.success());
    let o = verify(&unsigned, "a.pub", true);
    assert!(!o.status.success() && stderr(&o).contains("has no signatures"), "{}", stderr(&o));
}

/// `push --provenance --flake-lock FILE` lists the lock's locked inputs (the transitive
/// ones too) after the store paths, with NAR hash and commit; a lock that cannot be read
/// stops the push before anything is sent, and `--flake-lock` needs `--provenance`.
#[test]
fn push_provenance_lists_the_flake_lock_inputs() {
    let s = Signing::new(&[("a", "pw")]);
    let (client, d, f) = (&s.client, s.d(), fixtures());
    let nar = "sha256-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let gh = |owner: &str, repo: &str, rev: &str| json!({ "locked": { "type": "github", "owner": owner, "repo": repo, "rev": rev, "narHash": nar } });
    let mut utils = gh("numtide", "flake-utils", &"b".repeat(40));
    utils["inputs"] = json!({ "systems": "systems" });
    let lock = json!({ "version": 7, "root": "root", "nodes": {
        "root": { "inputs": { "nixpkgs": "nixpkgs", "flake-utils": "flake-utils" } },
        "nixpkgs": gh("NixOS", "nixpkgs", &"a".repeat(40)),
        "flake-utils": utils,
        "systems": gh("nix-systems", "default", &"c".repeat(40)),
    }});
    std::fs::write(d.join("flake.lock"), serde_json::to_vec(&lock).unwrap()).unwrap();
    std::fs::write(d.join("bad.lock"), br#"{"version": 3, "nodes": {}, "root": "root"}"#).unwrap();
    let key = d.join("a.key").into_os_string();
    let dest = s.at("e2e/flake:1");
    let repo = Reference::parse(&dest).unwrap();

    let o = push_signed(
        &dest,
        &[&f.app],
        "pw",
        &[os("--sign"), &key, os("--flake-lock"), d.join("flake.lock").as_os_str()],
    );
    assert!(!o.status.success() && stderr(&o).contains("--provenance"), "{}", stderr(&o));
    let o = push_signed(
        &dest,
        &[&f.app],
        "pw",
        &[os("--sign"), &key, os("--provenance"), os("--flake-lock"), d.join("bad.lock").as_os_str()],
    );
    assert!(!o.status.success() && stderr(&o).contains("bad.lock: lock file version 3"), "{}", stderr(&o));
    assert!(matches!(client.get_manifest(&repo), Err(nix_layer_registry::Error::NotFound { .. })));

    let o = push_signed(
        &dest,
        &[&f.app],
        "pw",
        &[os("--sign"), &key, os("--provenance"), os("--flake-lock"), d.join("flake.lock").as_os_str()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let o = s.verify(&dest, "a.pub", true);
    assert!(o.status.success(), "{}", stderr(&o));
    let statement = statement_of(&envelopes(client, &repo, &digest)[0]);
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap().clone();
    let store = f.closure(&[&f.app]).len();
    assert_eq!(deps.len(), store + 3, "{deps:?}");
    assert_eq!(
        deps[store..],
        [
            json!({ "name": "flake-utils", "uri": format!("github:numtide/flake-utils/{}", "b".repeat(40)),
                    "digest": { "sha256": hex, "gitCommit": "b".repeat(40) } }),
            json!({ "name": "flake-utils/systems", "uri": format!("github:nix-systems/default/{}", "c".repeat(40)),
                    "digest": { "sha256": hex, "gitCommit": "c".repeat(40) } }),
            json!({ "name": "nixpkgs", "uri": format!("github:NixOS/nixpkgs/{}", "a".repeat(40)),
                    "digest": { "sha256": hex, "gitCommit": "a".repeat(40) } }),
        ]
    );
    assert!(deps[..store].iter().all(|d| d["name"].as_str().unwrap().starts_with("/nix/store/")));
}

/// `push --layout --sign` of a multi-platform layout signs the index and each platform's
/// manifest, by digest; `push --archive --sign` the manifest it pushed.
#[test]
fn push_layout_and_archive_sign_what_they_pushed() {
    let s = Signing::new(&[("a", "pw")]);
    let (client, d) = (&s.client, s.d());
    let layout = d.join("L");
    multi_platform_layout(&layout);
    let dest = s.at("e2e/signed-multi:1");
    let o = output(
        nix_layer()
            .args(["push", &dest, "--layout"])
            .arg(&layout)
            .args(["--image", "multi:1", "--plain-http", "--sign"])
            .arg(d.join("a.key"))
            .env("COSIGN_PASSWORD", "pw"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let index: Value =
        serde_json::from_slice(&client.get_manifest(&Reference::parse(&dest).unwrap()).unwrap().bytes)
            .unwrap();
    let mut refs = vec![dest.clone()];
    for m in index["manifests"].as_array().unwrap() {
        refs.push(s.at(&format!("e2e/signed-multi@{}", m["digest"].as_str().unwrap())));
    }
    assert_eq!(refs.len(), 3);

    // A docker-archive: its pushed manifest, signed by digest.
    let archive = d.join("app.tar");
    app_archive(&archive);
    let dest = s.at("e2e/signed-archive:1");
    let o = output(
        nix_layer()
            .args(["push", &dest, "--plain-http", "--archive"])
            .arg(&archive)
            .arg("--sign")
            .arg(d.join("a.key"))
            .env("COSIGN_PASSWORD", "pw"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    refs.push(s.at(&format!("e2e/signed-archive@{digest}")));
    for reference in refs {
        let o = s.verify(&reference, "a.pub", false);
        assert!(o.status.success(), "{reference}: {}", stderr(&o));
    }
}
