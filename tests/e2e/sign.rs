//! `nix-layer keygen`, `sign` and `verify` against a real registry, cross-checked with an
//! independent ECDSA implementation (openssl) in both directions, with the policy of
//! podman and skopeo (`sigstoreSigned`), with skopeo's signing and with cosign, in both
//! directions: Debian trixie's builds, run by scripts/sigstore-run.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{BytesBlob, Client, ImageUpload, Reference, OCI_MANIFEST};
use nix_layer_registry_testkit::TestRegistry;
use serde_json::{json, Value};

use crate::support::*;

fn registry() -> TestRegistry {
    TestRegistry::start_or_skip().expect("docker-registry is not installed; scripts/setup.sh installs it")
}

fn keygen(dir: &Path, prefix: &str, password: &str) {
    run(nix_layer()
        .current_dir(dir)
        .args(["keygen", "--output-prefix", prefix])
        .env("COSIGN_PASSWORD", password));
}

/// Runs without a terminal on stdin, returning the output whatever the status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A one-layer image pushed with the registry client; its manifest digest.
fn push_image(client: &Client, target: &Reference, content: &[u8]) -> Digest {
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
    let r = registry();
    let dir = scratch();
    let d = dir.path();
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
    let image = format!("{}/tty:v1", r.host());
    push_image(&r.client(None), &Reference::parse(&image).unwrap(), b"tty");
    run(nix_layer()
        .args(["sign", "--plain-http", &image, "--key"])
        .arg(d.join("t.key"))
        .env("COSIGN_PASSWORD", "typed-secret"));
}

#[test]
fn sign_and_verify_on_the_command_line_interoperate_with_openssl() {
    let r = registry();
    let client = r.client(None);
    let dir = scratch();
    let d = dir.path();
    keygen(d, "a", "pw-a");
    keygen(d, "b", "pw-b");
    let image = format!("{}/app:v1", r.host());
    let digest = push_image(&client, &Reference::parse(&image).unwrap(), b"app layer");
    let verify = |key: &str, reference: &str| {
        output(nix_layer().args(["verify", "--plain-http", reference, "--key"]).arg(d.join(key)))
    };
    let sign = |key: &str, password: Option<&str>, reference: &str| {
        let mut cmd = nix_layer();
        cmd.args(["sign", "--plain-http", reference, "--key"]).arg(d.join(key)).env_remove("COSIGN_PASSWORD");
        if let Some(p) = password {
            cmd.env("COSIGN_PASSWORD", p);
        }
        output(&mut cmd)
    };

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
    let image2 = format!("{}/other:v1", r.host());
    let repo2 = Reference::parse(&image2).unwrap();
    let digest2 = push_image(&client, &repo2, b"other layer");
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

/// A one-layer image podman can unpack (a tar holding one file).
fn push_runnable_image(client: &Client, target: &Reference, text: &str) -> Digest {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", text.as_bytes()).unwrap();
    push_image(client, target, &tar.into_inner().unwrap())
}

/// `tool` (skopeo, podman, cosign) as Debian trixie builds it, through scripts/sigstore-run
/// in the root scripts/sigstore-tools.sh makes (run by scripts/setup.sh): Debian 12's
/// skopeo 1.9 and podman 4.3 are built with sigstore removed ("sigstore disabled"), and
/// trixie's binaries need a newer glibc than the host's. `dir` is bound at the same path
/// inside, and is the working directory.
fn trixie(tool: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(repo_root().join("scripts/sigstore-run"));
    cmd.arg(tool).env("NIX_LAYER_SIGSTORE_BIND", dir).current_dir(dir);
    cmd
}

/// Fails (never skips) unless trixie's root is there. Its builds are checked when
/// scripts/sigstore-tools.sh makes it (skopeo signs with a sigstore key there), and a
/// build with sigstore disabled would fail each test below by itself.
fn require_trixie_tools(dir: &Path) {
    let o = output(trixie("skopeo", dir).arg("--version"));
    assert!(o.status.success(), "trixie's skopeo is missing: run scripts/sigstore-tools.sh ({})", stderr(&o));
}

/// registries.d (under `dir`/home, where containers/image looks for HOME's) telling skopeo
/// and podman to read and write sigstore signatures as attachments (the `.sig` tag) at
/// `host`; its path.
fn sigstore_registries_d(dir: &Path, host: &str) -> std::path::PathBuf {
    let rd = dir.join("home/.config/containers/registries.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(
        rd.join("local.yaml"),
        format!("docker:\n  {host}:\n    use-sigstore-attachments: true\n"),
    )
    .unwrap();
    rd
}

/// podman and skopeo (trixie's, built with sigstore support) enforce nix-layer's
/// signatures with a `sigstoreSigned` policy on nix-layer's public key: the signed image
/// (by tag and by digest) is accepted; an unsigned one, one signed by another key, the
/// signed manifest under another tag, a tag moved to another manifest with the old
/// signature put under the new digest, and a tampered signature are each refused, with
/// containers/image's reason for that case.
#[test]
fn podman_and_skopeo_enforce_the_signatures_under_a_sigstore_policy() {
    let r = registry();
    let client = r.client(None);
    let dir = scratch();
    let d = dir.path();
    require_trixie_tools(d);
    keygen(d, "a", "pw");
    keygen(d, "b", "pw");
    let at = |name: &str| format!("{}/{name}", r.host());
    let parse = |image: &str| Reference::parse(image).unwrap();
    let sign = |key: &str, image: &str| {
        run(nix_layer()
            .args(["sign", "--plain-http", image, "--key"])
            .arg(d.join(key))
            .env("COSIGN_PASSWORD", "pw"));
    };
    let sig_manifest = |image: &str, digest: &Digest| {
        client.get_manifest(&parse(image).with_tag(&format!("sha256-{}.sig", digest.hex())).unwrap()).unwrap()
    };
    let put_sig = |image: &str, digest: &Digest, bytes: &[u8]| {
        client
            .push_manifest(&parse(image), &[&format!("sha256-{}.sig", digest.hex())], bytes, OCI_MANIFEST)
            .unwrap();
    };

    // Signed by a (the control: accepted with the same policy, registry and tools).
    let signed = at("app:signed");
    let digest = push_runnable_image(&client, &parse(&signed), "signed");
    sign("a.key", &signed);
    // Unsigned.
    let unsigned = at("app:unsigned");
    push_runnable_image(&client, &parse(&unsigned), "unsigned");
    // Signed by b.
    let by_b = at("other:v1");
    push_runnable_image(&client, &parse(&by_b), "by b");
    sign("b.key", &by_b);
    // a's signed manifest under another tag: the signature names app:signed.
    let retagged = at("app:retagged");
    let m = client.get_manifest(&parse(&signed)).unwrap();
    client.push_manifest(&parse(&retagged), &["retagged"], &m.bytes, OCI_MANIFEST).unwrap();
    // moved:v1 signed at digest A, then the tag moved to B, and A's signature put under
    // B's .sig tag: the identity matches, the signed digest does not.
    let moved = at("moved:v1");
    let first = push_runnable_image(&client, &parse(&moved), "first");
    sign("a.key", &moved);
    let second = push_runnable_image(&client, &parse(&moved), "second");
    put_sig(&moved, &second, &sig_manifest(&moved, &first).bytes);
    // a's signature with one bit flipped.
    let tampered = at("tampered:v1");
    let tdigest = push_runnable_image(&client, &parse(&tampered), "tampered");
    sign("a.key", &tampered);
    let mut sig: Value = serde_json::from_slice(&sig_manifest(&tampered, &tdigest).bytes).unwrap();
    let annotation = &mut sig["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let mut bytes = B64.decode(annotation.as_str().unwrap()).unwrap();
    bytes[10] ^= 1;
    *annotation = B64.encode(bytes).into();
    put_sig(&tampered, &tdigest, &serde_json::to_vec(&sig).unwrap());

    let rd = sigstore_registries_d(d, &r.host());
    std::fs::create_dir_all(d.join("out")).unwrap();
    let policy = json!({"default": [{"type": "reject"}], "transports": {"docker": {r.host(): [
        {"type": "sigstoreSigned", "keyPath": d.join("a.pub"), "signedIdentity": {"type": "matchRepoDigestOrExact"}}]}}});
    std::fs::write(d.join("policy.json"), policy.to_string()).unwrap();
    // No runc and no systemd in the root: cgroupfs, and pulls need no runtime.
    std::fs::write(
        d.join("containers.conf"),
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();

    let skopeo = |image: &str| {
        let out = d.join("out").join(image.replace(['/', ':', '@'], "_"));
        output(
            trixie("skopeo", d)
                .arg("--policy")
                .arg(d.join("policy.json"))
                .arg("--registries.d")
                .arg(&rd)
                .args(["copy", "--src-tls-verify=false", &format!("docker://{image}")])
                .arg(format!("dir:{}", out.display())),
        )
    };
    let podman = |image: &str| {
        output(
            trixie("podman", d)
                .env("HOME", d.join("home"))
                .env("CONTAINERS_CONF", d.join("containers.conf"))
                // vfs: no overlay mount is left behind in the scratch directory.
                .args(["--storage-driver", "vfs", "--root"])
                .arg(d.join("storage"))
                .arg("--runroot")
                .arg(d.join("run"))
                .args(["pull", "--tls-verify=false", "--signature-policy"])
                .arg(d.join("policy.json"))
                .arg(image),
        )
    };
    let by_digest = format!("{}@{digest}", at("app"));
    for (name, tool) in [("podman", &podman as &dyn Fn(&str) -> Output), ("skopeo", &skopeo)] {
        for image in [&signed, &by_digest] {
            let o = tool(image);
            assert!(
                !stderr(&o).contains("sigstore disabled"),
                "{name} is built without sigstore: {}",
                stderr(&o)
            );
            assert!(o.status.success(), "{name} refused the signed image {image}: {}", stderr(&o));
        }
        // containers/image's reason for each case (all its fragments, as skopeo's log quotes
        // the identity), so a refusal for another reason (the registry unreachable, say)
        // fails the test.
        let first = first.to_string();
        for (refused, why) in [
            (&unsigned, &["a signature was required, but no signature exists"][..]),
            (&by_b, &["cryptographic signature verification failed"]),
            (&retagged, &["signature for identity", &signed, "is not accepted"]),
            (&moved, &["signature for digest", &first, "does not match"]),
            (&tampered, &["cryptographic signature verification failed"]),
        ] {
            let o = tool(refused);
            let e = stderr(&o).to_lowercase();
            assert!(!o.status.success(), "{name} accepted {refused}");
            assert!(
                e.contains("source image rejected") && why.iter().all(|w| e.contains(w)),
                "{name} on {refused}, expected {why:?}: {e}"
            );
        }
    }
}

/// skopeo signs with a key `nix-layer keygen` wrote (`--sign-by-sigstore-private-key`, its
/// password from a file), storing the signature under the `.sig` tag, and `nix-layer verify`
/// accepts it, naming that tag; with another key it refuses.
#[test]
fn skopeo_signs_with_a_nix_layer_key_and_nix_layer_verifies_it() {
    let r = registry();
    let client = r.client(None);
    let dir = scratch();
    let d = dir.path();
    require_trixie_tools(d);
    keygen(d, "a", "pw-a");
    keygen(d, "b", "pw-b");
    std::fs::write(d.join("pass"), "pw-a").unwrap();
    let src = format!("{}/src:v1", r.host());
    let digest = push_runnable_image(&client, &Reference::parse(&src).unwrap(), "to sign");
    let dest = format!("{}/by-skopeo:v1", r.host());
    let rd = sigstore_registries_d(d, &r.host());
    let o = output(
        trixie("skopeo", d)
            .arg("--registries.d")
            .arg(&rd)
            .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests"])
            .arg("--sign-by-sigstore-private-key")
            .arg(d.join("a.key"))
            .arg("--sign-passphrase-file")
            .arg(d.join("pass"))
            .args([format!("docker://{src}"), format!("docker://{dest}")]),
    );
    assert!(o.status.success(), "skopeo did not sign with nix-layer's key: {}", stderr(&o));
    // Where skopeo put it: the cosign `.sig` tag of the copied digest.
    let sig: Value = serde_json::from_slice(
        &client
            .get_manifest(
                &Reference::parse(&format!("{}/by-skopeo:sha256-{}.sig", r.host(), digest.hex())).unwrap(),
            )
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(sig["layers"][0]["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json", "{sig}");

    let verify =
        |key: &str| output(nix_layer().args(["verify", "--plain-http", &dest, "--key"]).arg(d.join(key)));
    let o = verify("a.pub");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{digest} verified: signed as {dest} (sha256-{}.sig)\n", digest.hex())
    );
    let o = verify("b.pub");
    assert!(!o.status.success() && stderr(&o).contains("does not verify with this key"), "{}", stderr(&o));
}

/// cosign 2.5 (trixie's) and nix-layer read each other's keys and signatures: a pair
/// made by `cosign generate-key-pair` signs with `nix-layer sign` and `cosign verify --key`
/// accepts that (and refuses it with a key from `nix-layer keygen`); `cosign sign` with a
/// key from `nix-layer keygen` is accepted by `nix-layer verify`. No transparency log
/// here: nix-layer uploads to none, so cosign is told not to.
#[test]
fn cosign_and_nix_layer_read_each_others_keys_and_signatures() {
    let r = registry();
    let client = r.client(None);
    let dir = scratch();
    let d = dir.path();
    require_trixie_tools(d);
    let cosign = |password: &str| {
        let mut cmd = trixie("cosign", d);
        cmd.env("COSIGN_PASSWORD", password).env("HOME", d.join("home"));
        cmd
    };
    let o = output(cosign("pw-c").arg("generate-key-pair"));
    assert!(o.status.success(), "{}", stderr(&o));
    keygen(d, "n", "pw-n");

    // cosign's key signs with nix-layer; cosign verifies, with its key only.
    let image = format!("{}/by-nix-layer:v1", r.host());
    let digest = push_image(&client, &Reference::parse(&image).unwrap(), b"signed by nix-layer");
    run(nix_layer()
        .args(["sign", "--plain-http", &image, "--key"])
        .arg(d.join("cosign.key"))
        .env("COSIGN_PASSWORD", "pw-c"));
    let cosign_verify = |key: &str| {
        output(
            cosign("")
                .args(["verify", "--insecure-ignore-tlog=true", "--allow-http-registry", "--key"])
                .arg(d.join(key))
                .arg(&image),
        )
    };
    let o = cosign_verify("cosign.pub");
    assert!(o.status.success(), "cosign refused nix-layer's signature: {}", stderr(&o));
    let claims: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(claims[0]["critical"]["image"]["docker-manifest-digest"], digest.to_string(), "{claims}");
    let o = cosign_verify("n.pub");
    assert!(!o.status.success() && stderr(&o).contains("no matching signatures"), "{}", stderr(&o));

    // nix-layer's key signs with cosign; nix-layer verifies.
    let image = format!("{}/by-cosign:v1", r.host());
    let digest = push_image(&client, &Reference::parse(&image).unwrap(), b"signed by cosign");
    let o = output(
        cosign("pw-n")
            .args(["sign", "--yes", "--tlog-upload=false", "--allow-http-registry", "--key"])
            .arg(d.join("n.key"))
            .arg(format!("{}/by-cosign@{digest}", r.host())),
    );
    assert!(o.status.success(), "cosign did not sign with nix-layer's key: {}", stderr(&o));
    let o = output(nix_layer().args(["verify", "--plain-http", &image, "--key"]).arg(d.join("n.pub")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .starts_with(&format!("{digest} verified: signed as {}/by-cosign ", r.host())),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = output(nix_layer().args(["verify", "--plain-http", &image, "--key"]).arg(d.join("cosign.pub")));
    assert!(!o.status.success() && stderr(&o).contains("does not verify with this key"), "{}", stderr(&o));

    // nix-layer's provenance, as cosign (and so policy-controller and Kyverno) reads
    // attestations: the `.att` tag, the SLSA v1 type, nix-layer's key only.
    let f = fixtures();
    let image = format!("{}/attested:v1", r.host());
    let o = push_signed(
        &image,
        &[&f.app],
        "pw-n",
        &[os("--sign"), d.join("n.key").as_os_str(), os("--provenance")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = client.get_manifest(&Reference::parse(&image).unwrap()).unwrap().digest;
    let verify_attestation = |key: &str| {
        output(
            cosign("")
                .args(["verify-attestation", "--insecure-ignore-tlog=true", "--allow-http-registry"])
                .args(["--type", "slsaprovenance1", "--key"])
                .arg(d.join(key))
                .arg(format!("{}/attested@{digest}", r.host())),
        )
    };
    let o = verify_attestation("n.pub");
    assert!(o.status.success(), "cosign refused nix-layer's attestation: {}", stderr(&o));
    let envelope: Value = serde_json::from_slice(o.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let statement = statement_of(&serde_json::to_vec(&envelope).unwrap());
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex(), "{statement}");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let o = verify_attestation("cosign.pub");
    assert!(!o.status.success() && stderr(&o).contains("no matching attestations"), "{}", stderr(&o));
}

/// The keyless workflow's path with a key standing in for Fulcio: `push
/// --provenance-predicate F` (no key) writes the predicate `--provenance` signs, once the
/// push is done; `cosign sign` and `cosign attest --type slsaprovenance1 --predicate F`
/// put it under the `.att` tag; `cosign verify-attestation` shows that predicate and
/// `nix-layer verify --attestations` accepts cosign's attestation, both with that key only.
#[test]
fn cosign_attests_the_provenance_predicate_nix_layer_wrote() {
    let r = registry();
    let client = r.client(None);
    let f = fixtures();
    let dir = scratch();
    let d = dir.path();
    require_trixie_tools(d);
    keygen(d, "n", "pw-n");
    keygen(d, "o", "pw-o");
    let cosign = |password: &str| {
        let mut cmd = trixie("cosign", d);
        cmd.env("COSIGN_PASSWORD", password).env("HOME", d.join("home"));
        cmd
    };
    let lock = json!({ "version": 7, "root": "root", "nodes": {
        "root": { "inputs": { "nixpkgs": "nixpkgs" } },
        "nixpkgs": { "locked": { "type": "github", "owner": "NixOS", "repo": "nixpkgs",
            "rev": "a".repeat(40), "narHash": "sha256-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" } },
    }});
    std::fs::write(d.join("flake.lock"), serde_json::to_vec(&lock).unwrap()).unwrap();
    std::fs::write(d.join("bad.lock"), b"{}").unwrap();
    let predicate = d.join("provenance.json");
    let dest = format!("{}/e2e/keyless:1", r.host());
    let (good, bad) = (d.join("flake.lock"), d.join("bad.lock"));
    fn args<'a>(predicate: &'a Path, lock: &'a Path) -> [&'a std::ffi::OsStr; 4] {
        [os("--provenance-predicate"), predicate.as_os_str(), os("--flake-lock"), lock.as_os_str()]
    }

    // A failed push writes no predicate.
    let o = push_signed(&dest, &[&f.app], "", &args(&predicate, &bad));
    assert!(!o.status.success() && stderr(&o).contains("bad.lock"), "{}", stderr(&o));
    assert!(!predicate.exists());
    let o = push_signed(&dest, &[&f.app], "", &args(&predicate, &good));
    assert!(o.status.success(), "{}", stderr(&o));
    let digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let written = std::fs::read(&predicate).unwrap();
    let p: Value = serde_json::from_slice(&written).unwrap();
    let deps = p["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert_eq!(deps.len(), f.closure(&[&f.app]).len() + 1, "{p}");
    assert_eq!(deps.last().unwrap()["name"], "nixpkgs");
    // The same bytes as the predicate of the statement `--provenance` signs.
    let o = push_signed(
        &dest,
        &[&f.app],
        "pw-o",
        &[
            os("--sign"),
            d.join("o.key").as_os_str(),
            os("--provenance"),
            os("--flake-lock"),
            good.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let envs = envelopes(&client, &Reference::parse(&dest).unwrap(), &digest);
    let e: Value = serde_json::from_slice(&envs[0]).unwrap();
    let signed = String::from_utf8(B64.decode(e["payload"].as_str().unwrap()).unwrap()).unwrap();
    let written = String::from_utf8(written).unwrap();
    assert!(signed.contains(&format!(r#""predicate":{written},"predicateType""#)), "{signed}\n{written}");

    // Signed and attested by cosign, by digest (the other key's signature and attestation
    // from the push above are on a copy elsewhere: a fresh repository holds only cosign's).
    let image = format!("{}/e2e/keyless-cosign:1", r.host());
    let o = push_signed(&image, &[&f.app], "", &[os("--provenance-predicate"), predicate.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let pinned = format!("{}/e2e/keyless-cosign@{digest}", r.host());
    // Both keys sign the image (so `nix-layer verify` reaches the attestations with
    // either); only n attests.
    for (k, pw) in [("n.key", "pw-n"), ("o.key", "pw-o")] {
        let o = output(
            cosign(pw)
                .args(["sign", "--yes", "--tlog-upload=false", "--allow-http-registry", "--key"])
                .arg(d.join(k))
                .arg(&pinned),
        );
        assert!(o.status.success(), "cosign sign: {}", stderr(&o));
    }
    let o = output(
        cosign("pw-n")
            .args([
                "attest",
                "--yes",
                "--tlog-upload=false",
                "--allow-http-registry",
                "--type",
                "slsaprovenance1",
            ])
            .arg("--predicate")
            .arg(&predicate)
            .arg("--key")
            .arg(d.join("n.key"))
            .arg(&pinned),
    );
    assert!(o.status.success(), "cosign attest: {}", stderr(&o));

    let cosign_verify = |key: &str| {
        output(
            cosign("")
                .args(["verify-attestation", "--insecure-ignore-tlog=true", "--allow-http-registry"])
                .args(["--type", "slsaprovenance1", "--key"])
                .arg(d.join(key))
                .arg(&pinned),
        )
    };
    let o = cosign_verify("n.pub");
    assert!(o.status.success(), "cosign verify-attestation: {}", stderr(&o));
    let envelope = o.stdout.split(|b| *b == b'\n').next().unwrap();
    let statement = statement_of(envelope);
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex(), "{statement}");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    // An in-toto v0.1 statement (the same fields as v1): nix-layer reads both.
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v0.1");
    // cosign rebuilds the predicate through in-toto-golang's SLSA v1 type: trixie's build
    // names `runDetails.metadata.invocationId` `invocationID` (that type's JSON name in the
    // in-toto-golang it was built with). Everything else is the file's, as it is.
    let file: Value = serde_json::from_slice(&std::fs::read(&predicate).unwrap()).unwrap();
    assert!(file["runDetails"]["metadata"]["invocationId"].is_string(), "{file}");
    let mut shown = statement["predicate"].clone();
    let metadata = shown["runDetails"]["metadata"].as_object_mut().unwrap();
    if let Some(id) = metadata.remove("invocationID") {
        metadata.insert("invocationId".into(), id);
    }
    assert_eq!(shown, file);
    let o = cosign_verify("o.pub");
    assert!(!o.status.success() && stderr(&o).contains("no matching attestations"), "{}", stderr(&o));

    let verify = |key: &str| {
        output(
            nix_layer().args(["verify", "--plain-http", &image, "--attestations", "--key"]).arg(d.join(key)),
        )
    };
    let o = verify("n.pub");
    assert!(o.status.success(), "nix-layer refused cosign's attestation: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let att = format!("sha256-{}.att layer 0) verified: https://slsa.dev/provenance/v1", digest.hex());
    assert_eq!(out.matches(&att).count(), 1, "{out}");
    let o = verify("o.pub");
    let refused = format!("sha256-{}.att layer 0: the signature does not verify with this key", digest.hex());
    assert!(!o.status.success() && stderr(&o).contains(&refused), "{}", stderr(&o));
}

/// `push --closure … --plain-http` plus `extra`, the key's password in COSIGN_PASSWORD and
/// GitHub's workflow variables set (fixed, so the provenance's builder is known).
fn push_signed(dest: &str, roots: &[&str], password: &str, extra: &[&std::ffi::OsStr]) -> Output {
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

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The envelope bytes of each in-toto referrer of `digest` in `repo`.
fn envelopes(client: &Client, repo: &Reference, digest: &Digest) -> Vec<Vec<u8>> {
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

fn statement_of(envelope: &[u8]) -> Value {
    let e: Value = serde_json::from_slice(envelope).unwrap();
    assert_eq!(e["payloadType"], "application/vnd.in-toto+json");
    serde_json::from_slice(&B64.decode(e["payload"].as_str().unwrap()).unwrap()).unwrap()
}

/// `push --sign` opens the key before sending anything and signs the digest it pushed;
/// `--provenance` attaches signed SLSA provenance naming every store path with its NAR
/// hash; `verify --attestations` accepts it and refuses a tampered envelope, one about
/// another manifest and one signed by another key.
#[test]
fn push_sign_with_provenance_and_verify_attestations() {
    let r = registry();
    let client = r.client(None);
    let f = fixtures();
    let dir = scratch();
    let d = dir.path();
    keygen(d, "a", "pw-a");
    keygen(d, "b", "pw-b");
    let key = |k: &str| d.join(k).into_os_string();
    let verify = |reference: &str, pubkey: &str, attestations: bool| {
        let mut cmd = nix_layer();
        cmd.args(["verify", "--plain-http", reference, "--key"]).arg(d.join(pubkey));
        if attestations {
            cmd.arg("--attestations");
        }
        output(&mut cmd)
    };
    let at = |name: &str| format!("{}/{name}", r.host());

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
    let envs = envelopes(&client, &repo, &digest);
    assert_eq!(envs.len(), 1);
    let s = statement_of(&envs[0]);
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(s["subject"], json!([{"name": at("e2e/prov"), "digest": {"sha256": digest.hex()}}]));
    let p = &s["predicate"];
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
    std::fs::write(d.join("statement.json"), serde_json::to_vec(&s).unwrap()).unwrap();
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
    let envs = envelopes(&client, &repo, &digest);
    assert_eq!(envs.len(), 2);
    let payload = |e: &[u8]| serde_json::from_slice::<Value>(e).unwrap()["payload"].clone();
    assert_eq!(payload(&envs[0]), payload(&envs[1]));

    // Another image's valid attestation, a tampered one, and one by key b, each attached
    // to a signed copy of the image: each refused, saying why.
    let other = at("e2e/other:1");
    let o = push_signed(&other, &[&f.hello], "pw-a", &[os("--sign"), &key("a.key"), os("--provenance")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other_digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let other_env = envelopes(&client, &Reference::parse(&other).unwrap(), &other_digest).remove(0);
    let mut tampered: Value = serde_json::from_slice(&envs[0]).unwrap();
    let mut s2 = s.clone();
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
            Some(e) => attach_envelope(&client, &t, digest, &e),
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
    let r = registry();
    let client = r.client(None);
    let f = fixtures();
    let dir = scratch();
    let d = dir.path();
    keygen(d, "a", "pw");
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
    let dest = format!("{}/e2e/flake:1", r.host());
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
    let o = output(
        nix_layer().args(["verify", "--plain-http", &dest, "--attestations", "--key"]).arg(d.join("a.pub")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = statement_of(&envelopes(&client, &repo, &digest)[0]);
    let deps = s["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap().clone();
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
    let r = registry();
    let client = r.client(None);
    let f = fixtures();
    let dir = scratch();
    let d = dir.path();
    keygen(d, "a", "pw");
    let layout = d.join("L");
    for arch in ["amd64", "arm64"] {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", &format!("multi:{arch}"), "--arch", arch, "--format", "oci", "--quiet", "-o"])
            .arg(&layout));
    }
    run(nix_layer().args(["index", "--layout"]).arg(&layout).args([
        "--name",
        "multi:1",
        "multi:amd64",
        "multi:arm64",
    ]));
    let dest = format!("{}/e2e/signed-multi:1", r.host());
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
        refs.push(format!("{}/e2e/signed-multi@{}", r.host(), m["digest"].as_str().unwrap()));
    }
    assert_eq!(refs.len(), 3);

    // A docker-archive: its pushed manifest, signed by digest.
    let archive = d.join("app.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "arch:1", "--quiet", "-o"])
        .arg(&archive));
    let dest = format!("{}/e2e/signed-archive:1", r.host());
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
    refs.push(format!("{}/e2e/signed-archive@{digest}", r.host()));
    for reference in refs {
        let o =
            output(nix_layer().args(["verify", "--plain-http", &reference, "--key"]).arg(d.join("a.pub")));
        assert!(o.status.success(), "{reference}: {}", stderr(&o));
    }
}
