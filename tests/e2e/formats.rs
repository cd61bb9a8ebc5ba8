//! Every output format loads and runs in a real engine and passes skopeo and umoci.

use std::process::Command;

use crate::support::*;

fn build_hello(dir: &std::path::Path, format: &str, extra: &[&str]) -> std::path::PathBuf {
    let f = fixtures();
    let out = dir.join(format!("hello-{format}"));
    let config = dir.join("config.json");
    std::fs::write(&config, format!(r#"{{"Cmd": ["{}/bin/app"], "Env": ["GREETING=hi"]}}"#, f.app)).unwrap();
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", &format!("nix-layer-e2e/hello-{format}:t1"), "--format", format, "--config"])
        .arg(&config)
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg("--quiet"));
    out
}

#[test]
fn docker_archive_loads_runs_and_inspects() {
    let dir = scratch();
    let archive = build_hello(dir.path(), "docker-archive", &[]);
    let loaded = engine().load(&archive, "nix-layer-e2e/hello-docker-archive:t1");
    assert_eq!(loaded.run(&[]).trim(), "hello from nix-layer");
    let inspect =
        stdout(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", archive.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Created"], "1970-01-01T00:00:01Z");
    // 4 store paths (busybox, hello, app) + top layer, each path its own layer.
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4);
    // The engine sees the same diff_ids as the archive's config.
    let (_, config) = archive_manifest(&archive);
    let ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(loaded.diff_ids(), ids);
}

#[test]
fn docker_archive_streams_to_stdout() {
    let f = fixtures();
    let dir = scratch();
    let out = run(nix_layer().arg("build").arg("--closure").args(f.closure(&[&f.app])).args([
        "--name",
        "nix-layer-e2e/stream:t1",
        "-o",
        "-",
        "--quiet",
    ]));
    let path = dir.path().join("streamed.tar");
    std::fs::write(&path, &out.stdout).unwrap();
    // Streaming and writing a file give the same bytes.
    let file = dir.path().join("file.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "nix-layer-e2e/stream:t1", "--quiet", "-o"])
        .arg(&file));
    assert_eq!(std::fs::read(&file).unwrap(), out.stdout);
    let loaded = engine().load(&path, "nix-layer-e2e/stream:t1");
    assert_eq!(loaded.run(&[&format!("{}/bin/app", f.app)]).trim(), "hello from nix-layer");
}

#[test]
fn oci_layout_inspects_unpacks_and_runs() {
    for compression in ["none", "gzip", "zstd"] {
        let dir = scratch();
        let layout = build_hello(dir.path(), "oci", &["--compression", compression]);
        let src = format!("oci:{}:nix-layer-e2e/hello-oci:t1", layout.display());
        let v: serde_json::Value =
            serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", &src]))).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{compression}");
        let f = fixtures();
        if compression == "zstd" {
            // umoci 0.4 and Docker 20.10 cannot read zstd layers; Podman can.
            let loaded = Engine::Podman.copy_in(&src, "nix-layer-e2e/hello-oci-zstd:t1");
            assert_eq!(loaded.run(&[]).trim(), "hello from nix-layer");
            continue;
        }
        let bundle = dir.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:nix-layer-e2e/hello-oci:t1", layout.display()))
            .arg(&bundle));
        let app = bundle.join("rootfs").join(f.app.trim_start_matches('/')).join("bin/app");
        assert!(
            app.symlink_metadata().is_ok(),
            "{compression}: {} missing after umoci unpack",
            app.display()
        );
        let loaded = engine().copy_in(&src, &format!("nix-layer-e2e/hello-oci-{compression}:t1"));
        assert_eq!(loaded.run(&[]).trim(), "hello from nix-layer");
    }
}

#[test]
fn oci_archive_inspects_and_runs() {
    let dir = scratch();
    let archive = build_hello(dir.path(), "oci-archive", &["--compression", "gzip"]);
    let src = format!("oci-archive:{}:nix-layer-e2e/hello-oci-archive:t1", archive.display());
    let v: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", &src]))).unwrap();
    assert_eq!(v["Env"][0], "GREETING=hi");
    let loaded = engine().copy_in(&src, "nix-layer-e2e/hello-oci-archive:t1");
    assert_eq!(loaded.run(&[]).trim(), "hello from nix-layer");
}

#[test]
fn podman_loads_the_docker_archive_too() {
    let _podman = podman_lock();
    if Command::new("podman").arg("--version").output().is_err() {
        panic!("podman is not installed; .ci/run installs it");
    }
    let dir = scratch();
    let archive = build_hello(dir.path(), "docker-archive", &[]);
    let out = stdout(
        Command::new("podman").env("CONTAINERS_CONF", containers_conf()).arg("load").arg("-i").arg(&archive),
    );
    assert!(out.contains("nix-layer-e2e/hello-docker-archive:t1"), "{out}");
    let _ = Command::new("podman")
        .env("CONTAINERS_CONF", containers_conf())
        .args(["rmi", "-f", "nix-layer-e2e/hello-docker-archive:t1"])
        .output();
}

#[test]
fn several_images_share_blobs_in_one_layout() {
    let f = fixtures();
    let dir = scratch();
    let layout = dir.path().join("layout");
    for (root, tag) in [(&f.app, "app"), (&f.other, "other")] {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[root]))
            .args(["--name", &format!("nix-layer-e2e/multi:{tag}"), "--format", "oci", "--quiet", "-o"])
            .arg(&layout));
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    // busybox's layer is in both images but stored once: count blobs.
    let blobs = std::fs::read_dir(layout.join("blobs/sha256")).unwrap().count();
    // app: busybox, hello, app, top, config, manifest = 6; other adds its own
    // layer, config and manifest; busybox and the (empty) top layer are shared.
    assert_eq!(blobs, 9);
    for tag in ["app", "other"] {
        let r = format!("oci:{}:nix-layer-e2e/multi:{tag}", layout.display());
        run(Command::new("skopeo").arg("inspect").arg(r));
    }
}

#[test]
fn pushes_to_a_real_registry() {
    let dir = scratch();
    let layout = build_hello(dir.path(), "oci", &["--compression", "gzip"]);
    let registry = Registry::start(dir.path());
    let dest = format!("docker://{}/nix-layer-e2e/hello:t1", registry.addr);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:nix-layer-e2e/hello-oci:t1", layout.display()))
        .arg(&dest));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", "--tls-verify=false", &dest])))
            .unwrap();
    let local: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:nix-layer-e2e/hello-oci:t1", layout.display())),
    ))
    .unwrap();
    // Same compressed layer digests on both sides: the registry stores our bytes.
    assert_eq!(v["Layers"], local["Layers"]);
}

/// A `docker-registry` (distribution) on 127.0.0.1, stopped when dropped.
struct Registry {
    child: std::process::Child,
    addr: String,
}

impl Registry {
    fn start(dir: &std::path::Path) -> Registry {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is not installed; .ci/run installs it");
        let mut registry = Registry { child, addr };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = registry.child.kill();
        let _ = registry.child.wait();
        panic!("the registry did not start on {}", registry.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn concurrent_builds_into_one_layout_keep_every_image() {
    let f = fixtures();
    let dir = scratch();
    let layout = dir.path().join("layout");
    let closure = f.closure(&[&f.app, &f.other]);
    let children: Vec<_> = (0..6)
        .map(|i| {
            nix_layer()
                .arg("build")
                .arg("--closure")
                .args(&closure)
                .args(["--name", &format!("nix-layer-e2e/conc:t{i}"), "--format", "oci", "--quiet", "-o"])
                .arg(&layout)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap())
        .collect();
    refs.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("nix-layer-e2e/conc:t{i}")).collect();
    assert_eq!(refs, expected);
    for r in refs {
        run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:{r}", layout.display())));
    }
}

/// Per-platform images combine into one index that skopeo reads and copies whole to a
/// registry, both platforms included.
#[test]
fn platform_images_combine_into_one_index() {
    let f = fixtures();
    let dir = scratch();
    let layout = dir.path().join("L");
    for arch in ["amd64", "arm64"] {
        let mut c = nix_layer();
        c.arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", &format!("nix-layer-e2e/multi:1-{arch}"), "--arch", arch, "--format", "oci"])
            .args(["--compression", "gzip", "--quiet", "-o"])
            .arg(&layout);
        if arch == "arm64" {
            c.args(["--variant", "v8"]);
        }
        run(&mut c);
    }
    let out = stdout(nix_layer().args(["index", "--layout"]).arg(&layout).args([
        "--name",
        "nix-layer-e2e/multi:1",
        "nix-layer-e2e/multi:1-amd64",
        "nix-layer-e2e/multi:1-arm64",
    ]));
    assert!(out.starts_with("sha256:"), "{out}");
    assert_eq!(verify_layout(&layout), 3);
    let src = format!("oci:{}:nix-layer-e2e/multi:1", layout.display());
    let raw: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", "--raw", &src]))).unwrap();
    let platforms: Vec<(String, String)> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().into(),
                m["platform"]["os"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(platforms, [("amd64".into(), "linux".into()), ("arm64".into(), "linux".into())]);
    let arm: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        "inspect",
        &src,
    ])))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    let registry = Registry::start(dir.path());
    let dest = format!("docker://{}/nix-layer-e2e/multi:1", registry.addr);
    run(Command::new("skopeo").args(["copy", "--all", "--quiet", "--dest-tls-verify=false", &src, &dest]));
    let remote: serde_json::Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &dest,
    ])))
    .unwrap();
    assert_eq!(remote, raw, "the registry holds our index bytes");
}

/// OCI annotations on the manifest: from --annotation, and from config labels of the
/// `org.opencontainers.image.` family (the flag wins).
#[test]
fn annotations_are_on_the_manifest() {
    let f = fixtures();
    let dir = scratch();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"Labels": {"org.opencontainers.image.source": "https://example.org/app", "org.opencontainers.image.version": "1", "other": "x"}}"#,
    )
    .unwrap();
    let layout = dir.path().join("L");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "ann:1", "--format", "oci", "--quiet", "--config"])
        .arg(&config)
        .args([
            "--annotation",
            "org.opencontainers.image.version=2",
            "--annotation",
            "org.opencontainers.image.revision=abc",
        ])
        .arg("-o")
        .arg(&layout));
    let raw: serde_json::Value = serde_json::from_str(&stdout(
        Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:ann:1", layout.display())),
    ))
    .unwrap();
    assert_eq!(
        raw["annotations"],
        serde_json::json!({
            "org.opencontainers.image.revision": "abc",
            "org.opencontainers.image.source": "https://example.org/app",
            "org.opencontainers.image.version": "2",
        })
    );
}

/// A store of `n` paths of `mib` MiB each (one file each, no references), and its graph.
pub(crate) fn big_store(
    dir: &std::path::Path,
    n: usize,
    mib: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let store = dir.join("store");
    let mut graph = Vec::new();
    for i in 0..n {
        let hash: String = (0..32).map(|k| NIX32[(i * 7 + k * 3) % 32] as char).collect();
        let p = store.join(format!("{hash}-path{i}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("data"), vec![i as u8; mib << 20]).unwrap();
        graph.push(format!(r#"{{"path":"{}","narSize":{},"references":[]}}"#, p.display(), mib << 20));
    }
    let g = dir.join("graph.json");
    std::fs::write(&g, format!("[{}]", graph.join(","))).unwrap();
    (store, g)
}

/// `build -o - | head -c 100`, 60 times with four workers, on layers bigger than the
/// buffers (so workers are blocked on full ones when the reader goes): every run ends
/// non-zero, none hangs. Each run is bounded by `timeout`.
#[test]
fn a_stream_whose_reader_stops_always_ends() {
    let work = scratch();
    let (store, graph) = big_store(work.path(), 8, 6);
    let script = format!(
        "for i in $(seq 60); do \
           timeout 120 {bin} build --store-dir {store} --graph {graph} --name race:1 --quiet -j 4 -o - \
             2>/dev/null | head -c 100 >/dev/null; \
           echo \"status=${{PIPESTATUS[0]}}\"; \
         done",
        bin = env!("CARGO_BIN_EXE_nix-layer"),
        store = store.display(),
        graph = graph.display(),
    );
    let out = run(Command::new("bash").args(["-c", &script]));
    let statuses: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(statuses.len(), 60, "{statuses:?}");
    let hung = statuses.iter().filter(|s| *s == "status=124").count();
    assert_eq!(hung, 0, "{hung} of 60 runs hung until `timeout` killed them");
    // A cut stream is a failure, never a success.
    assert!(statuses.iter().all(|s| s != "status=0"), "{statuses:?}");
}

/// The stream reads each store path once, after planning measured it: a path that grows
/// in between fails the build non-zero, though the reader has seen the start already.
#[test]
fn a_store_path_changing_under_a_stream_fails_it() {
    use std::io::{Read, Write};
    let work = scratch();
    // Far more than the stream buffers ahead (one worker: 4 MiB, plus 1 MiB of output
    // buffer and a pipe), so the second layer is still unread when the reader acts.
    let (store, g) = big_store(work.path(), 2, 24);
    let paths: Vec<_> = std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().path()).collect();
    let mut child = nix_layer()
        .args(["build", "--name", "x:y", "--quiet", "-j", "1", "--store-dir"])
        .arg(&store)
        .arg("--graph")
        .arg(&g)
        .args(["-o", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = child.stdout.take().unwrap();
    let mut head = [0u8; 100];
    stream.read_exact(&mut head).unwrap();
    for p in &paths {
        std::fs::OpenOptions::new().append(true).open(p.join("data")).unwrap().write_all(b"more").unwrap();
    }
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stream of a store that changed must fail");
    assert!(err.contains("changed while"), "{err}");
}

/// The gzip members of a blob: nix-layer cuts layers into 1 MiB members (see
/// crates/blob/src/members.rs); every member must decode on its own.
fn gzip_members(blob: &[u8]) -> usize {
    use std::io::Read;
    let mut rest = blob;
    let mut n = 0;
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut d.by_ref(), &mut std::io::sink()).unwrap();
        rest = d.into_inner();
        n += 1;
    }
    n
}

/// The blobs of an OCI layout's image, by media type.
fn layout_layers(layout: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let read_json = |digest: &str| -> serde_json::Value {
        let path = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read_json(index["manifests"][0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap().iter();
    layers
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            (
                l["mediaType"].as_str().unwrap().to_owned(),
                std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap(),
            )
        })
        .collect()
}

/// Multi-member gzip layers (busybox's layer is two members) pass skopeo into Docker and
/// into Podman's storage, run in both, and unpack with umoci.
#[test]
fn multi_member_gzip_layers_copy_unpack_and_run() {
    let dir = scratch();
    let layout = build_hello(dir.path(), "oci", &["--compression", "gzip:9"]);
    let layers = layout_layers(&layout);
    let most = layers.iter().map(|(_, b)| gzip_members(b)).max().unwrap();
    assert!(most >= 2, "no layer has several gzip members: the test proves nothing");
    assert!(layers.iter().all(|(t, _)| t == "application/vnd.oci.image.layer.v1.tar+gzip"));
    let src = format!("oci:{}:nix-layer-e2e/hello-oci:t1", layout.display());
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:nix-layer-e2e/hello-oci:t1", layout.display()))
        .arg(&bundle));
    let busybox = bundle.join("rootfs").join(fixtures().busybox.trim_start_matches('/')).join("bin/busybox");
    let unpacked = std::fs::read(&busybox).unwrap();
    assert_eq!(unpacked, std::fs::read(fixtures().busybox.clone() + "/bin/busybox").unwrap());
    for engine in [Engine::Docker, Engine::Podman] {
        let loaded = engine.copy_in(&src, "nix-layer-e2e/hello-multi-member:t1");
        assert_eq!(loaded.run(&[]).trim(), "hello from nix-layer", "{engine:?}");
    }
}

/// gzip layers are the same bytes whatever `--jobs`, and as dense as at the default.
#[test]
fn gzip_layout_is_the_same_on_any_jobs() {
    let dir = scratch();
    let mut layouts = Vec::new();
    for jobs in ["1", "2", "4"] {
        let sub = dir.path().join(jobs);
        std::fs::create_dir(&sub).unwrap();
        layouts.push(build_hello(&sub, "oci", &["--compression", "gzip", "--jobs", jobs]));
    }
    let index = |l: &std::path::Path| std::fs::read(l.join("index.json")).unwrap();
    for l in &layouts[1..] {
        assert_eq!(index(l), index(&layouts[0]), "{}", l.display());
        assert_eq!(layout_layers(l), layout_layers(&layouts[0]));
    }
}
