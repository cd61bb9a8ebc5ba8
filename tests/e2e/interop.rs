//! nix-layer's keys, signatures and provenance with Debian trixie's podman, skopeo and
//! cosign (run by scripts/sigstore-run), in both directions: the policy of podman and
//! skopeo (`sigstoreSigned`), skopeo's signing, cosign's signing and attestations.

use std::path::Path;
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{Client, Reference, OCI_MANIFEST};
use serde_json::{json, Value};

use crate::sign::{envelopes, os, output, push_image, push_signed, statement_of, stderr, Signing};
use crate::support::*;

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

/// [`Signing`] with its keys made once trixie's tools are known to be there.
fn trixie_signing(keys: &[(&str, &str)]) -> Signing {
    let s = Signing::new(&[]);
    require_trixie_tools(s.d());
    s.keygen(keys);
    s
}

/// `cosign` (trixie's) with its password and HOME in the scratch directory `d`.
fn cosign(d: &Path, password: &str) -> Command {
    let mut cmd = trixie("cosign", d);
    cmd.env("COSIGN_PASSWORD", password).env("HOME", d.join("home"));
    cmd
}

/// `cosign verify-attestation` of `image`'s SLSA v1 provenance with the public key file
/// `key` in `d`, no transparency log.
fn cosign_verify_attestation(d: &Path, key: &str, image: &str) -> Output {
    output(
        cosign(d, "")
            .args(["verify-attestation", "--insecure-ignore-tlog=true", "--allow-http-registry"])
            .args(["--type", "slsaprovenance1", "--key"])
            .arg(d.join(key))
            .arg(image),
    )
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
    let s = trixie_signing(&[("a", "pw"), ("b", "pw")]);
    let (r, client, d) = (&s.r, &s.client, s.d());
    let at = |name: &str| s.at(name);
    let parse = |image: &str| Reference::parse(image).unwrap();
    let sign = |key: &str, image: &str| {
        run(&mut s.sign(image, key, Some("pw")));
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
    let digest = push_runnable_image(client, &parse(&signed), "signed");
    sign("a.key", &signed);
    // Unsigned.
    let unsigned = at("app:unsigned");
    push_runnable_image(client, &parse(&unsigned), "unsigned");
    // Signed by b.
    let by_b = at("other:v1");
    push_runnable_image(client, &parse(&by_b), "by b");
    sign("b.key", &by_b);
    // a's signed manifest under another tag: the signature names app:signed.
    let retagged = at("app:retagged");
    let m = client.get_manifest(&parse(&signed)).unwrap();
    client.push_manifest(&parse(&retagged), &["retagged"], &m.bytes, OCI_MANIFEST).unwrap();
    // moved:v1 signed at digest A, then the tag moved to B, and A's signature put under
    // B's .sig tag: the identity matches, the signed digest does not.
    let moved = at("moved:v1");
    let first = push_runnable_image(client, &parse(&moved), "first");
    sign("a.key", &moved);
    let second = push_runnable_image(client, &parse(&moved), "second");
    put_sig(&moved, &second, &sig_manifest(&moved, &first).bytes);
    // a's signature with one bit flipped.
    let tampered = at("tampered:v1");
    let tdigest = push_runnable_image(client, &parse(&tampered), "tampered");
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
    let s = trixie_signing(&[("a", "pw-a"), ("b", "pw-b")]);
    let (r, client, d) = (&s.r, &s.client, s.d());
    std::fs::write(d.join("pass"), "pw-a").unwrap();
    let src = s.at("src:v1");
    let digest = push_runnable_image(client, &Reference::parse(&src).unwrap(), "to sign");
    let dest = s.at("by-skopeo:v1");
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
                &Reference::parse(&s.at(&format!("by-skopeo:sha256-{}.sig", digest.hex()))).unwrap(),
            )
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(sig["layers"][0]["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json", "{sig}");

    let verify = |key: &str| s.verify(&dest, key, false);
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
    let s = trixie_signing(&[]);
    let (client, d) = (&s.client, s.d());
    let cosign = |password: &str| cosign(d, password);
    let o = output(cosign("pw-c").arg("generate-key-pair"));
    assert!(o.status.success(), "{}", stderr(&o));
    s.keygen(&[("n", "pw-n")]);

    // cosign's key signs with nix-layer; cosign verifies, with its key only.
    let image = s.at("by-nix-layer:v1");
    let digest = push_image(client, &Reference::parse(&image).unwrap(), b"signed by nix-layer");
    run(&mut s.sign(&image, "cosign.key", Some("pw-c")));
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
    let image = s.at("by-cosign:v1");
    let digest = push_image(client, &Reference::parse(&image).unwrap(), b"signed by cosign");
    let o = output(
        cosign("pw-n")
            .args(["sign", "--yes", "--tlog-upload=false", "--allow-http-registry", "--key"])
            .arg(d.join("n.key"))
            .arg(s.at(&format!("by-cosign@{digest}"))),
    );
    assert!(o.status.success(), "cosign did not sign with nix-layer's key: {}", stderr(&o));
    let o = s.verify(&image, "n.pub", false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .starts_with(&format!("{digest} verified: signed as {} ", s.at("by-cosign"))),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = s.verify(&image, "cosign.pub", false);
    assert!(!o.status.success() && stderr(&o).contains("does not verify with this key"), "{}", stderr(&o));

    // nix-layer's provenance, as cosign (and so policy-controller and Kyverno) reads
    // attestations: the `.att` tag, the SLSA v1 type, nix-layer's key only.
    let f = fixtures();
    let image = s.at("attested:v1");
    let o = push_signed(
        &image,
        &[&f.app],
        "pw-n",
        &[os("--sign"), d.join("n.key").as_os_str(), os("--provenance")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = client.get_manifest(&Reference::parse(&image).unwrap()).unwrap().digest;
    let verify_attestation =
        |key: &str| cosign_verify_attestation(d, key, &s.at(&format!("attested@{digest}")));
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
    let s = trixie_signing(&[("n", "pw-n"), ("o", "pw-o")]);
    let (client, d, f) = (&s.client, s.d(), fixtures());
    let cosign = |password: &str| cosign(d, password);
    let lock = json!({ "version": 7, "root": "root", "nodes": {
        "root": { "inputs": { "nixpkgs": "nixpkgs" } },
        "nixpkgs": { "locked": { "type": "github", "owner": "NixOS", "repo": "nixpkgs",
            "rev": "a".repeat(40), "narHash": "sha256-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" } },
    }});
    std::fs::write(d.join("flake.lock"), serde_json::to_vec(&lock).unwrap()).unwrap();
    std::fs::write(d.join("bad.lock"), b"{}").unwrap();
    let predicate = d.join("provenance.json");
    let dest = s.at("e2e/keyless:1");
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
    let envs = envelopes(client, &Reference::parse(&dest).unwrap(), &digest);
    let e: Value = serde_json::from_slice(&envs[0]).unwrap();
    let signed = String::from_utf8(B64.decode(e["payload"].as_str().unwrap()).unwrap()).unwrap();
    let written = String::from_utf8(written).unwrap();
    assert!(signed.contains(&format!(r#""predicate":{written},"predicateType""#)), "{signed}\n{written}");

    // Signed and attested by cosign, by digest (the other key's signature and attestation
    // from the push above are on a copy elsewhere: a fresh repository holds only cosign's).
    let image = s.at("e2e/keyless-cosign:1");
    let o = push_signed(&image, &[&f.app], "", &[os("--provenance-predicate"), predicate.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let digest: Digest = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let pinned = s.at(&format!("e2e/keyless-cosign@{digest}"));
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

    let cosign_verify = |key: &str| cosign_verify_attestation(d, key, &pinned);
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

    let verify = |key: &str| s.verify(&image, key, true);
    let o = verify("n.pub");
    assert!(o.status.success(), "nix-layer refused cosign's attestation: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let att = format!("sha256-{}.att layer 0) verified: https://slsa.dev/provenance/v1", digest.hex());
    assert_eq!(out.matches(&att).count(), 1, "{out}");
    let o = verify("o.pub");
    let refused = format!("sha256-{}.att layer 0: the signature does not verify with this key", digest.hex());
    assert!(!o.status.success() && stderr(&o).contains(&refused), "{}", stderr(&o));
}
