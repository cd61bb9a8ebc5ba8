//! nix-layer writes a correct image or fails non-zero leaving nothing behind: the cases
//! that used to exit 0 with a wrong image, each tried as an adversarial user would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

fn build(args: &[&str]) -> Command {
    let f = fixtures();
    let mut c = nix_layer();
    c.arg("build").arg("--closure").args(f.closure(&[&f.app])).args(args);
    c
}

/// A scratch directory another user can reach: in the system's temporary directory, not
/// under the checkout, whose ancestors may be private to this user (a `mktemp -d` clone).
fn shared_scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("nix-layer-e2e-").tempdir_in("/tmp").unwrap()
}

/// Two images with the same tag in one layout: both stay, each under its own name.
#[test]
fn a_layout_keeps_every_image_written_into_it() {
    let dir = scratch();
    let layout = dir.path().join("L");
    for name in ["alpha:latest", "beta:latest"] {
        run(build(&["--name", name, "--format", "oci", "--quiet", "-o"]).arg(&layout));
    }
    assert_eq!(verify_layout(&layout), 2);
    for name in ["alpha:latest", "beta:latest"] {
        run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{name}", layout.display())));
    }
    umoci_unpack(&layout, "beta:latest", &dir.path().join("bundle"));
    // Rebuilding one name replaces its entry and keeps the other.
    run(build(&["--name", "alpha:latest", "--format", "oci", "--compression", "zstd", "--quiet", "-o"])
        .arg(&layout));
    assert_eq!(verify_layout(&layout), 2);
}

/// Files follow the umask, and another user can read the layout with skopeo and umoci.
#[test]
fn another_user_reads_the_layout() {
    let dir = shared_scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let layout = dir.path().join("L");
    run(build(&["--name", "shared/app:1", "--format", "oci", "--compression", "gzip", "--quiet", "-o"])
        .arg(&layout));
    for f in ["index.json", "oci-layout"] {
        let mode = std::fs::metadata(layout.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f} under umask 022");
    }
    let nobody = |program: &str| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", program]);
        c
    };
    run(nobody("skopeo").arg("inspect").arg(format!("oci:{}:shared/app:1", layout.display())));
    let bundle = dir.path().join("nobody-bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o777)).unwrap();
    run(nobody("umoci")
        .env("HOME", &bundle)
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:shared/app:1", layout.display()))
        .arg(bundle.join("b")));
}

/// A time past the classic tar field is written with PAX records and loads.
#[test]
fn times_past_the_classic_field_load() {
    let dir = scratch();
    let out = dir.path().join("far.tar");
    run(build(&[
        "--name",
        "nix-layer-e2e/far:t",
        "--mtime",
        "9999-12-31T23:59:59Z",
        "--created",
        "9999-12-31T23:59:59Z",
        "--quiet",
        "-o",
    ])
    .arg(&out));
    let loaded = engine().load(&out, "nix-layer-e2e/far:t");
    assert_eq!(loaded.run(&[&format!("{}/bin/app", fixtures().app)]).trim(), "hello from nix-layer");
    // Nonsense times are refused before anything is written.
    for bad in ["2024-02-30T00:00:00Z", "10000-01-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
        let o =
            build(&["--name", "x:t", "--mtime", bad, "-o"]).arg(dir.path().join("bad.tar")).output().unwrap();
        assert!(!o.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--mtime"), "{bad}");
        assert!(!dir.path().join("bad.tar").exists());
    }
}

/// A cached blob changed in place (same size, mtime and inode) or swapped for a symlink
/// is never served: the build rebuilds it, and the layout verifies.
#[test]
fn a_tampered_cache_is_never_served() {
    let dir = scratch();
    let cache = dir.path().join("cache");
    let build_into = |out: &str| {
        let o = run(build(&["--name", "c:t", "--format", "oci", "--verbose", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(dir.path().join(out)));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(build_into("one").contains("(0 from cache)"));
    let blobs: Vec<PathBuf> =
        std::fs::read_dir(cache.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(blobs.len(), 3, "app's three store layers are cached");
    // One edited in place with its mtime restored, one replaced by a symlink to a copy.
    let edited = &blobs[0];
    let mtime = std::fs::metadata(edited).unwrap().modified().unwrap();
    std::fs::set_permissions(edited, std::fs::Permissions::from_mode(0o644)).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(edited).unwrap();
        f.write_all_at(b"\xff\xfe", 0).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let swapped = &blobs[1];
    let decoy = dir.path().join("decoy");
    std::fs::copy(swapped, &decoy).unwrap();
    std::fs::remove_file(swapped).unwrap();
    std::os::unix::fs::symlink(&decoy, swapped).unwrap();

    let stderr = build_into("two");
    assert!(stderr.contains("(1 from cache)"), "only the intact layer is served: {stderr}");
    let layout = dir.path().join("two");
    verify_layout(&layout);
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let t = entry.unwrap().file_type().unwrap();
        assert!(t.is_file() && !t.is_symlink(), "only regular files in the output");
    }
    assert_eq!(
        std::fs::read(dir.path().join("one/index.json")).unwrap(),
        std::fs::read(layout.join("index.json")).unwrap(),
        "the rebuild is the same image"
    );
}

/// A base image whose stored blob does not match its digest is refused, and the output
/// never shares an inode with the base.
#[test]
fn a_tampered_base_image_is_refused() {
    let dir = scratch();
    let base = dir.path().join("base");
    run(build(&["--name", "base:1", "--format", "oci", "--compression", "gzip", "--quiet", "-o"]).arg(&base));
    let derived = dir.path().join("derived");
    let f = fixtures();
    let derive = |out: &Path| {
        let mut c = nix_layer();
        c.arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.other]))
            .args(["--name", "derived:1", "--format", "oci", "--quiet", "--from-image"])
            .arg(&base)
            .arg("-o")
            .arg(out);
        c
    };
    run(&mut derive(&derived));
    verify_layout(&derived);
    use std::os::unix::fs::MetadataExt;
    let inodes = |l: &Path| -> Vec<u64> {
        std::fs::read_dir(l.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    let theirs = inodes(&base);
    assert!(inodes(&derived).iter().all(|i| !theirs.contains(i)), "no blob shares the base's inode");

    // Recompress one base layer: same contents, other bytes, under the old name.
    let manifest_digest = stdout(
        Command::new("skopeo")
            .args(["inspect", "--format", "{{.Digest}}"])
            .arg(format!("oci:{}:base:1", base.display())),
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(base.join("blobs/sha256").join(manifest_digest.trim().trim_start_matches("sha256:")))
            .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let path = base.join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9] ^= 0xff; // gzip's OS byte: the layer decompresses the same
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.path().join("refused");
    let o = derive(&out).output().unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("stored base layer") && stderr.contains(&layer), "{stderr}");
    assert!(!out.exists());
}

/// `-o -` streams: with a $TMPDIR far smaller than the image, the stream still works
/// and gives the bytes `-o FILE` gives.
#[test]
fn stdout_is_a_stream_with_bounded_temporary_space() {
    let dir = scratch();
    let tmp = dir.path().join("tiny-tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(&tmp).status();
    assert!(mounted.is_ok_and(|s| s.success()), "mounting a small tmpfs needs root (CI runs as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(tmp.clone());
    let f = fixtures();
    // The deep fixture is bigger than the tmpfs: busybox alone is about 1 MiB.
    let mut c = nix_layer();
    c.arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app, &f.deep]))
        .args(["--name", "s:t", "--quiet", "-o", "-"]);
    let streamed = run(c.env("TMPDIR", &tmp)).stdout;
    assert!(streamed.len() > 512 * 1024, "the image is bigger than $TMPDIR");
    let file = dir.path().join("file.tar");
    let mut c = nix_layer();
    c.arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app, &f.deep]))
        .args(["--name", "s:t", "--quiet", "-o"])
        .arg(&file);
    run(&mut c);
    assert!(std::fs::read(&file).unwrap() == streamed, "stream and file give the same bytes");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing left in $TMPDIR");
}

/// SIGINT and SIGTERM remove the staging directory; what SIGKILL leaves, the next build
/// sweeps.
#[test]
fn interrupted_builds_leave_nothing() {
    let dir = scratch();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let f = fixtures();
    // A reader that never reads: the build blocks on a full pipe with its staging
    // directory in place.
    let start = || {
        let mut c = nix_layer();
        c.arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app, &f.deep]))
            .args(["--name", "i:t", "--quiet", "--cache"])
            .arg(dir.path().join("cache"))
            .args(["-o", "-"])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        for _ in 0..200 {
            if !leftovers().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!leftovers().is_empty(), "the build has a staging directory");
        std::thread::sleep(std::time::Duration::from_millis(300));
        child
    };
    for signal in ["INT", "TERM", "HUP"] {
        let mut child = start();
        run(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()));
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}");
        assert!(leftovers().is_empty(), "SIG{signal} left {:?}", leftovers());
    }
    let mut child = start();
    run(Command::new("kill").arg("-KILL").arg(child.id().to_string()));
    child.wait().unwrap();
    assert!(!leftovers().is_empty(), "SIGKILL cannot be caught");
    let mut c = nix_layer();
    c.arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "i:t", "--quiet", "-o", "-"])
        .env("TMPDIR", &tmp);
    run(&mut c);
    assert!(leftovers().is_empty(), "the next build swept {:?}", leftovers());
}

/// Reports to a closed pipe or a full disk: no panic, a clear status.
#[test]
fn reports_to_closed_or_full_stdout() {
    let f = fixtures();
    let closure = f.closure(&[&f.app, &f.other]);
    let plan = |shell_tail: &str| {
        let cmd = format!(
            "{} plan --closure {} {shell_tail}; echo \"status=${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_nix-layer"),
            closure.join(" ")
        );
        Command::new("bash").args(["-c", &cmd]).output().unwrap()
    };
    let o = plan("| head -c 5 >/dev/null");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("status=141") || out.contains("status=0"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    let o = plan("> /dev/full");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("status=1"), "{out}");
    assert!(err.contains("cannot write to stdout") && !err.contains("panicked"), "{err}");
}

/// `cache-verify` of a directory that is not a cache fails and creates nothing.
#[test]
fn cache_verify_needs_a_cache() {
    let dir = scratch();
    let missing = dir.path().join("nope");
    let o = nix_layer().arg("cache-verify").arg(&missing).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a layer cache"));
    assert!(!missing.exists());
}

/// A cache made by another user is used read-only: its hits are served, misses built
/// outside it.
#[test]
fn another_users_cache_is_used_read_only() {
    let f = fixtures();
    let dir = shared_scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = dir.path().join("cache");
    run(build(&["--name", "ro:t", "--format", "oci", "--quiet", "--cache"])
        .arg(&cache)
        .arg("-o")
        .arg(dir.path().join("root-out")));
    // The graph as a file: the other user need not read Nix's database.
    let graph = dir.path().join("graph.json");
    let info = stdout(
        Command::new("nix")
            .args(["path-info", "--json", "--option", "substituters", ""])
            .args(f.closure(&[&f.app, &f.other])),
    );
    std::fs::write(&graph, info).unwrap();
    let out = dir.path().join("nobody-out");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nix-layer"))
        .args(["build", "--graph"])
        .arg(&graph)
        .args(["--root", &f.app, "--name", "ro:t", "--format", "oci", "--verbose", "--cache"])
        .arg(&cache)
        .arg("-o")
        .arg(&out)
        .env("TMPDIR", dir.path()));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("(0 from cache)"), "hits are served: {stderr}");
    verify_layout(&out);
}

/// Base images from a registry (`--from-image REG/repo@sha256:…`), as an attacker and a
/// shared cache would try them.
mod registry_bases {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use nix_layer_blob::Digest;
    use nix_layer_registry::{BlobSource, BytesBlob, Client, PlatformExt, OCI_INDEX, OCI_MANIFEST};
    use nix_layer_registry_testkit::TestRegistry;
    use nix_layer_tar::{EntryKind, Header, TarWriter};
    use oci_spec::image::Platform;
    use serde_json::{json, Value};

    use crate::support::*;

    fn desc(media_type: &str, bytes: &[u8]) -> Value {
        json!({ "mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len() })
    }

    /// A one-layer image for `platform` whose Env names the platform and `repo`, pushed by
    /// digest; returns its index entry (with the platform).
    fn push_image(client: &Client, r: &TestRegistry, repo: &str, platform: &str) -> Value {
        let p = Platform::parse(platform).unwrap();
        let mut t = TarWriter::new(Vec::new());
        let h = Header {
            name: b"etc/base-platform".to_vec(),
            kind: EntryKind::Regular { size: platform.len() as u64 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 1,
        };
        t.append_bytes(&h, platform.as_bytes()).unwrap();
        let tar = t.finish().unwrap();
        let mut config = json!({
            "architecture": p.architecture().to_string(), "os": p.os().to_string(),
            "config": { "Env": [format!("BASE={repo} {platform}")] },
            "rootfs": { "type": "layers", "diff_ids": [Digest::of(&tar).to_string()] },
        });
        if let Some(v) = p.variant() {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar", &tar)],
        }))
        .unwrap();
        let reference = r.reference(repo);
        let blobs = [BytesBlob::new(config), BytesBlob::new(tar)];
        let refs: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
        client.push_blobs(&reference, &refs, &[]).unwrap();
        client.push_manifest(&reference, &[], &manifest, OCI_MANIFEST).unwrap();
        let mut d = desc(OCI_MANIFEST, &manifest);
        d["platform"] = serde_json::to_value(&p).unwrap();
        d
    }

    fn pinned(r: &TestRegistry, repo: &str, entry: &Value) -> String {
        format!("{}/{repo}@{}", r.host(), entry["digest"].as_str().unwrap())
    }

    /// `nix-layer build --from-image BASE ARGS -o OUT --cache CACHE` under umask 022.
    fn build(base: &str, cache: &Path, out: &Path, args: &[&str]) -> Output {
        let f = fixtures();
        Command::new("sh")
            .args(["-c", "umask 022; exec \"$0\" \"$@\""])
            .arg(nix_layer().get_program())
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.other]))
            .args(["--name", "derived:1", "--format", "oci", "--plain-http", "--quiet", "--from-image", base])
            .args(args)
            .arg("--cache")
            .arg(cache)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    }

    fn built(o: Output) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// The `BASE=…` Env entry the built image inherited.
    fn inherited(out: &Path) -> String {
        let env = nix_layer_image::BaseImage::open(out).unwrap().env();
        env.into_iter().find(|e| e.starts_with("BASE=")).unwrap_or_default()
    }

    fn kept(cache: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(cache.join("bases"))
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn flip(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// After `--arch arm --variant v7`, a `--variant v6` build gets the v6 image.
    #[test]
    fn a_v6_build_never_reuses_the_kept_v7_base() {
        let r = registry();
        let client = r.client(None);
        let entries: Vec<Value> =
            ["linux/arm/v7", "linux/arm/v6"].iter().map(|p| push_image(&client, &r, "e2e/arm", p)).collect();
        let index =
            serde_json::to_vec(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries }))
                .unwrap();
        let digest = client.push_manifest(&r.reference("e2e/arm"), &["1"], &index, OCI_INDEX).unwrap();
        let base = format!("{}/e2e/arm@{digest}", r.host());
        let dir = scratch();
        let cache = dir.path().join("cache");
        for v in ["v7", "v6"] {
            let out = dir.path().join(v);
            built(build(&base, &cache, &out, &["--arch", "arm", "--variant", v]));
            assert_eq!(inherited(&out), format!("BASE=e2e/arm linux/arm/{v}"));
        }
    }

    /// A single-platform amd64 pin built for arm64: refused, nothing written.
    #[test]
    fn a_base_of_another_platform_is_refused() {
        let r = registry();
        let entry = push_image(&r.client(None), &r, "e2e/amd", "linux/amd64");
        let dir = scratch();
        let out = dir.path().join("out");
        let o = build(&pinned(&r, "e2e/amd", &entry), &dir.path().join("cache"), &out, &["--arch", "arm64"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "exit 0 with an arm64 config over amd64 layers");
        assert!(err.contains("linux/amd64") && err.contains("linux/arm64"), "{err}");
        assert!(!out.exists());
    }

    /// Another self-consistent image swapped in under the pin is not used; a damaged kept
    /// blob is fetched again; kept files are readable by others under umask 022.
    #[test]
    fn a_kept_base_is_checked_against_its_pin_every_time() {
        let r = registry();
        let client = r.client(None);
        let one = push_image(&client, &r, "e2e/one", "linux/amd64");
        let other = push_image(&client, &r, "e2e/other", "linux/amd64");
        let (base, impostor) = (pinned(&r, "e2e/one", &one), pinned(&r, "e2e/other", &other));
        let dir = scratch();
        let (cache, cache2) = (dir.path().join("cache"), dir.path().join("cache2"));
        built(build(&base, &cache, &dir.path().join("a"), &["--arch", "amd64"]));
        assert_eq!(inherited(&dir.path().join("a")), "BASE=e2e/one linux/amd64");
        let kept_one = kept(&cache);
        assert_eq!(kept_one.len(), 1, "{kept_one:?}");
        for f in walkdir(&kept_one[0]) {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "{} is {mode:o}: another user cannot read it", f.display());
        }

        // The other image, kept elsewhere, copied over the first one's directory.
        built(build(&impostor, &cache2, &dir.path().join("b"), &["--arch", "amd64"]));
        let kept_other = kept(&cache2);
        run(Command::new("rm").arg("-rf").arg(&kept_one[0]));
        run(Command::new("cp").arg("-a").arg(&kept_other[0]).arg(&kept_one[0]));
        let c = dir.path().join("c");
        built(build(&base, &cache, &c, &["--arch", "amd64"]));
        assert_eq!(inherited(&c), "BASE=e2e/one linux/amd64", "the swapped-in image was used");

        // A kept layer flipped on disk: fetched again, the build succeeds.
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(kept_one[0].join("blobs/sha256").join(&one["digest"].as_str().unwrap()[7..]))
                .unwrap(),
        )
        .unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_owned();
        flip(&kept_one[0].join("blobs/sha256").join(&layer));
        let d = dir.path().join("d");
        built(build(&base, &cache, &d, &["--arch", "amd64"]));
        assert_eq!(inherited(&d), "BASE=e2e/one linux/amd64");
        // Damaged in the registry too: an error, nothing written.
        flip(&r.blob_data_path(&format!("sha256:{layer}").parse().unwrap()));
        flip(&kept_one[0].join("blobs/sha256").join(&layer));
        let e = dir.path().join("e");
        let o = build(&base, &cache, &e, &["--arch", "amd64"]);
        assert!(!o.status.success() && !e.exists(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// An unpinned registry image: "pin it by digest", not "No such file or directory".
    #[test]
    fn an_unpinned_registry_base_is_told_to_pin_it() {
        let dir = scratch();
        let out = dir.path().join("out");
        let o = build("127.0.0.1:1/e2e/base:1", &dir.path().join("cache"), &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !out.exists());
        assert!(err.contains("pinned by digest") && !err.contains("No such file"), "{err}");
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.to_owned()];
        let mut i = 0;
        while i < out.len() {
            if out[i].is_dir() {
                out.extend(std::fs::read_dir(&out[i]).unwrap().map(|e| e.unwrap().path()));
            }
            i += 1;
        }
        out
    }
}
