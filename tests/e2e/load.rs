//! `nix-layer load` into real engines: Docker (only missing layers sent), Podman, and a
//! containerd started by the test and driven with `ctr`.

use std::process::{Child, Command, Output};

use crate::support::{
    archive_manifest, containers_conf, engine, fixtures, nix_layer, run, scratch, stdout, Engine,
};

/// `nix-layer load --engine ENGINE -v` of the app's closure, named `name`; `mtime` makes
/// the layers this test's own, so nothing from other tests can be in the engine already.
fn load(engine: &str, name: &str, mtime: u64, extra: &[&str]) -> Command {
    let f = fixtures();
    let mut c = nix_layer();
    c.args(["load", "--engine", engine, "-v", "--name", name, "--mtime", &mtime.to_string()])
        .args(extra)
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .env("CONTAINERS_CONF", containers_conf());
    c
}

/// The summary line's "sent N bytes to ENGINE (M layers already there)".
fn sent(out: &Output) -> (u64, usize) {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains(" bytes to ")).unwrap_or_else(|| panic!("no summary: {err}"));
    let n = line.split("sent ").nth(1).and_then(|s| s.split(' ').next()).unwrap();
    let m = line.split(" (").nth(1).and_then(|s| s.split(' ').next()).unwrap();
    (n.parse().unwrap(), m.parse().unwrap())
}

fn unique_mtime() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Removes the named images from an engine when dropped.
struct Images(Engine, Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["rmi", "-f"]).args(&self.1).output();
    }
}

/// The diff_ids of the image `build -o FILE` writes for the same arguments as `load`:
/// the stream a load sends is the file's bytes, so the engine must hold exactly these.
fn file_diff_ids(name: &str, mtime: u64, extra: &[&str]) -> Vec<String> {
    let f = fixtures();
    let dir = scratch();
    let file = dir.path().join("image.tar");
    run(nix_layer()
        .args(["build", "--quiet", "--name", name, "--mtime", &mtime.to_string()])
        .args(extra)
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .arg("-o")
        .arg(&file));
    let (_, config) = archive_manifest(&file);
    config["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect()
}

/// The layers an engine holds for `reference`, bottom first.
fn engine_diff_ids(engine: Engine, reference: &str) -> Vec<String> {
    let out =
        stdout(engine.cmd().args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference]));
    serde_json::from_str(out.trim()).unwrap()
}

fn run_app(engine: Engine, reference: &str) -> String {
    let f = fixtures();
    let app = format!("{}/bin/app", f.app);
    stdout(engine.cmd().args(["run", "--rm", "--network", "none", reference, &app]))
}

#[test]
fn docker_load_sends_only_missing_layers() {
    if engine() != Engine::Docker {
        eprintln!("skipped: no Docker daemon answers `docker info`");
        return;
    }
    let driver = stdout(Command::new("docker").args(["info", "--format", "{{json .DriverStatus}}"]));
    let containerd_store = driver.contains("io.containerd.snapshotter");
    let tag = std::process::id();
    let (a, b) = (format!("nix-layer-e2e-load-a:{tag}"), format!("nix-layer-e2e-load-b:{tag}"));
    let _images = Images(Engine::Docker, vec![a.clone(), b.clone()]);
    let mtime = unique_mtime();

    let first = run(&mut load("docker", &a, mtime, &[]));
    let (sent_a, there_a) = sent(&first);
    assert_eq!(there_a, 0, "the layers are new to Docker");
    assert!(run_app(Engine::Docker, &a).contains("hello from nix-layer"));
    // The one-pass stream (members named by position, config and manifest last) loads
    // as the image the file writer makes.
    assert_eq!(engine_diff_ids(Engine::Docker, &a), file_diff_ids(&a, mtime, &[]));

    // The same closure under another name and config: every layer is Docker's already.
    let dir = scratch();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"Env":["SECOND=1"]}"#).unwrap();
    let second = run(&mut load("docker", &b, mtime, &["--config", config.to_str().unwrap()]));
    let (sent_b, there_b) = sent(&second);
    assert!(run_app(Engine::Docker, &b).contains("hello from nix-layer"));
    let layers =
        stdout(Command::new("docker").args(["image", "inspect", "--format", "{{len .RootFS.Layers}}", &b]));
    let layers: usize = layers.trim().parse().unwrap();
    if containerd_store {
        // The containerd image store takes no layer by ChainID: everything is sent.
        assert_eq!(there_b, 0);
    } else {
        assert_eq!(there_b, layers, "every layer of the second image was there");
        assert!(sent_b * 20 < sent_a, "second load sent {sent_b} bytes, the first {sent_a}");
    }
    eprintln!(
        "docker load: first {sent_a} bytes, second {sent_b} bytes ({there_b} of {layers} layers there)"
    );
}

#[test]
fn podman_load_runs() {
    let _podman = crate::support::podman_lock();
    let name = format!("nix-layer-e2e-load-podman:{}", std::process::id());
    let _images = Images(Engine::Podman, vec![format!("localhost/{name}")]);
    let mtime = unique_mtime();
    let out = run(&mut load("podman", &name, mtime, &[]));
    let (sent, there) = sent(&out);
    assert!(sent > 1_000_000 && there == 0, "podman gets every layer: {sent} bytes, {there} skipped");
    let reference = format!("localhost/{name}");
    assert!(run_app(Engine::Podman, &reference).contains("hello from nix-layer"));
    assert_eq!(engine_diff_ids(Engine::Podman, &reference), file_diff_ids(&name, mtime, &[]));
}

/// A containerd of the test's own (root, state and socket in a temporary directory),
/// stopped when dropped.
struct Containerd {
    child: Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = scratch();
        let d = dir.path();
        // CRI needs CNI and Kubernetes' settings; the test needs only images and tasks.
        std::fs::write(
            d.join("config.toml"),
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let socket = d.join("sock").display().to_string();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .args(["--address", &socket])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start containerd (Debian package `containerd`)");
        let mut c = Containerd { child, socket, _dir: dir };
        for _ in 0..100 {
            if c.ctr().arg("version").output().is_ok_and(|o| o.status.success()) {
                return c;
            }
            assert!(c.child.try_wait().unwrap().is_none(), "containerd exited: {}", c.log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("containerd did not answer on {}: {}", c.socket, c.log());
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.args(["--address", &self.socket]);
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containerd_import_lists_and_runs() {
    let containerd = Containerd::start();
    let name = "nix-layer-e2e-load:ctr";
    let out = run(&mut load("containerd", name, unique_mtime(), &["--address", &containerd.socket]));
    assert_eq!(sent(&out).1, 0, "containerd gets every layer");
    let reference = format!("docker.io/library/{name}");
    let images = stdout(containerd.ctr().args(["images", "ls", "-q"]));
    assert!(images.lines().any(|l| l == reference), "ctr images ls: {images}");
    let f = fixtures();
    let app = format!("{}/bin/app", f.app);
    let ran = stdout(containerd.ctr().args(["run", "--rm", &reference, "nix-layer-e2e-id1", &app]));
    assert!(ran.contains("hello from nix-layer"), "ctr run printed: {ran}");

    // An image for another platform is imported too, as built.
    let arm = "nix-layer-e2e-load:arm64";
    run(&mut load("containerd", arm, unique_mtime(), &["--address", &containerd.socket, "--arch", "arm64"]));
    let listed = stdout(containerd.ctr().args(["images", "ls"]));
    let line = listed.lines().find(|l| l.contains(arm)).unwrap_or_else(|| panic!("ctr images ls: {listed}"));
    assert!(line.contains("linux/arm64"), "{line}");

    // A loader that stops at once (here: ctr refuses the namespace) stops the build, and
    // the error quotes it.
    let out = load("containerd", name, 1, &["--address", &containerd.socket, "--namespace", "bad/ns"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed import must fail the load");
    assert!(err.contains("images import") && err.contains("namespace validation"), "{err}");

    // The same with layers bigger than the stream's buffers, so workers are blocked on
    // full ones when the loader goes: the load ends, every time, with the loader's error.
    let work = scratch();
    let (store, graph) = crate::formats::big_store(work.path(), 6, 6);
    for round in 0..10 {
        let mut c = Command::new("timeout");
        c.args(["120", env!("CARGO_BIN_EXE_nix-layer"), "load", "--engine", "containerd", "--name", "x:1"])
            .args(["--address", &containerd.socket, "--namespace", "bad/ns", "-j", "4", "--store-dir"])
            .arg(&store)
            .arg("--graph")
            .arg(&graph);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(124), "round {round}: the load hung");
        assert!(!out.status.success() && err.contains("namespace validation"), "round {round}: {err}");
    }
}

#[test]
fn missing_engines_fail_clearly() {
    let dir = scratch();
    // A PATH with nix-store (to read the closure) and no engine clients.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let nix_store = stdout(Command::new("sh").args(["-c", "command -v nix-store"]));
    std::os::unix::fs::symlink(nix_store.trim(), bin.join("nix-store")).unwrap();
    for engine in ["docker", "podman", "containerd"] {
        let out = load(engine, "nix-layer-e2e-load:missing", 1, &[]).env("PATH", &bin).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("is not installed"), "{engine}: {err}");
    }
    let nowhere = dir.path().join("no.sock");
    for (engine, words) in
        [("docker", "Docker daemon does not answer"), ("containerd", "no containerd socket")]
    {
        let out = load(engine, "nix-layer-e2e-load:missing", 1, &["--address", nowhere.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(words), "{engine}: {err}");
    }
}

#[test]
fn a_failing_build_loads_nothing() {
    let dir = scratch();
    let spec = dir.path().join("top.json");
    let missing = dir.path().join("missing");
    let entry = format!(
        r#"{{"entries":[{{"path":"/x","type":"copy","source":"{}","mode":"0644"}}]}}"#,
        missing.display()
    );
    std::fs::write(&spec, entry).unwrap();
    let name = format!("nix-layer-e2e-load-fail:{}", std::process::id());
    let engine_name = if engine() == Engine::Docker { "docker" } else { "podman" };
    let out = load(engine_name, &name, 1, &["--allow-host-files", "--top-layer", spec.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(missing.to_str().unwrap()), "{err}");
    // The loader was stopped before it saw the end of the stream: no image.
    let inspect = engine().cmd().args(["image", "inspect", &name]).output().unwrap();
    assert!(!inspect.status.success(), "{name} was loaded from a failed build");
}
