//! Shared helpers: the real binary, real Nix store fixtures, a real engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nix_layer_registry_testkit::TestRegistry;

pub fn nix_layer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nix-layer"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("e2e-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// Debian's docker-registry on 127.0.0.1, stopped when dropped.
pub fn registry() -> TestRegistry {
    TestRegistry::start_or_skip().expect("docker-registry is not installed; scripts/setup.sh installs it")
}

/// The app fixture as a docker-archive `arch:1` at `archive`.
pub fn app_archive(archive: &Path) {
    let f = fixtures();
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "arch:1", "--quiet", "-o"])
        .arg(archive));
}

/// An OCI layout at `layout` holding the app fixture built for amd64 and for arm64, and
/// `multi:1`, the index of both.
pub fn multi_platform_layout(layout: &Path) {
    let f = fixtures();
    for arch in ["amd64", "arm64"] {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", &format!("multi:{arch}"), "--arch", arch, "--format", "oci", "--quiet", "-o"])
            .arg(layout));
    }
    run(nix_layer().args(["index", "--layout"]).arg(layout).args([
        "--name",
        "multi:1",
        "multi:amd64",
        "multi:arm64",
    ]));
}

/// Store paths built once per test run (see fixtures.nix).
pub struct Fixtures {
    pub busybox: String,
    pub euid: String,
    pub hello: String,
    pub app: String,
    pub other: String,
    pub deep: String,
    pub link: String,
}

impl Fixtures {
    pub fn closure(&self, roots: &[&str]) -> Vec<String> {
        let out = stdout(Command::new("nix-store").arg("-qR").args(roots));
        out.lines().map(str::to_owned).collect()
    }
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        // A static program that reports its effective uid: it stands in for sudo.
        let src = dir.join("euid.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"euid=%d uid=%d\\n\",(int)geteuid(),(int)getuid());return 0;}\n",
        )
        .unwrap();
        let euid_bin = dir.join("euid");
        run(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&euid_bin).arg(&src));
        let nix = repo_root().join("tests/e2e/fixtures.nix");
        let build = |attr: &str| -> String {
            let link = dir.join(format!("result-{attr}"));
            stdout(
                Command::new("nix-build")
                    .arg(&nix)
                    .args(["-A", attr, "--option", "substituters", "", "--option", "build-users-group", ""])
                    .args(["--arg", "busyboxBin", "/bin/busybox", "--arg", "euidBin"])
                    .arg(&euid_bin)
                    .arg("-o")
                    .arg(&link),
            )
            .trim()
            .to_owned()
        };
        Fixtures {
            busybox: build("busybox"),
            euid: build("euid"),
            hello: build("hello"),
            app: build("app"),
            other: build("other"),
            deep: build("deep"),
            link: build("link"),
        }
    })
}

/// The container engine the tests drive: Docker where its daemon answers,
/// otherwise Podman configured by the project's containers.conf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

pub fn engine() -> Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    *E.get_or_init(|| {
        if Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
            return Engine::Docker;
        }
        let podman = Command::new("podman").arg("info").env("CONTAINERS_CONF", containers_conf()).output();
        if podman.is_ok_and(|o| o.status.success()) {
            return Engine::Podman;
        }
        panic!("neither `docker info` nor `podman info` works: the end-to-end tests need a container engine");
    })
}

pub fn containers_conf() -> PathBuf {
    repo_root().join("scripts/containers.conf")
}

impl Engine {
    pub fn cmd(self) -> Command {
        match self {
            Engine::Docker => Command::new("docker"),
            Engine::Podman => {
                let mut c = Command::new("podman");
                c.env("CONTAINERS_CONF", containers_conf());
                c
            }
        }
    }

    /// Loads a docker-archive; returns the image reference to run.
    pub fn load(self, archive: &Path, reference: &str) -> Loaded {
        let guard = self.lock();
        let out = stdout(self.cmd().arg("load").arg("-i").arg(archive));
        assert!(out.contains(reference.split(':').next().unwrap()), "load output: {out}");
        Loaded { engine: self, reference: reference.to_owned(), _guard: guard }
    }

    /// Podman's storage is not safe against one test removing an image whose layers
    /// another test is committing ("layer not known"): Podman work is one at a time.
    fn lock(self) -> Option<std::sync::MutexGuard<'static, ()>> {
        (self == Engine::Podman).then(podman_lock)
    }

    /// Copies an OCI layout or archive into the engine with skopeo.
    pub fn copy_in(self, source: &str, reference: &str) -> Loaded {
        let dest = match self {
            Engine::Docker => format!("docker-daemon:{reference}"),
            Engine::Podman => format!("containers-storage:{reference}"),
        };
        let guard = self.lock();
        run(Command::new("skopeo")
            .args(["copy", "--quiet", source, &dest])
            .env("CONTAINERS_CONF", containers_conf()));
        Loaded { engine: self, reference: reference.to_owned(), _guard: guard }
    }
}

/// An image in the engine, removed again when dropped.
pub struct Loaded {
    engine: Engine,
    pub reference: String,
    // Last: released after the image is removed.
    _guard: Option<std::sync::MutexGuard<'static, ()>>,
}

/// Held while a test uses Podman's storage (see [`Engine::lock`]).
pub fn podman_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

impl Loaded {
    pub fn run(&self, args: &[&str]) -> String {
        self.run_as(None, args)
    }

    pub fn run_as(&self, user: Option<&str>, args: &[&str]) -> String {
        let mut c = self.engine.cmd();
        c.args(["run", "--rm", "--network", "none"]);
        if let Some(u) = user {
            c.args(["--user", u]);
        }
        c.arg(&self.reference).args(args);
        stdout(&mut c)
    }

    pub fn diff_ids(&self) -> Vec<String> {
        let out = stdout(self.engine.cmd().args([
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            &self.reference,
        ]));
        serde_json::from_str(out.trim()).unwrap()
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = self.engine.cmd().args(["rmi", "-f", &self.reference]).output();
    }
}

/// Reads `manifest.json` and the config of a docker-archive.
pub fn archive_manifest(archive: &Path) -> (serde_json::Value, serde_json::Value) {
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut manifest = None;
    let mut configs = std::collections::HashMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "manifest.json" || name.ends_with(".json") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            if name == "manifest.json" {
                manifest = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
            } else {
                configs.insert(name, serde_json::from_str::<serde_json::Value>(&s).unwrap());
            }
        }
    }
    let manifest = manifest.expect("no manifest.json");
    let config = configs.remove(manifest[0]["Config"].as_str().unwrap()).expect("config missing");
    (manifest, config)
}

/// Lists entry names of every layer in a docker-archive, per layer.
pub fn archive_layer_entries(archive: &Path) -> Vec<Vec<String>> {
    let (manifest, _) = archive_manifest(archive);
    let layers: Vec<String> =
        manifest[0]["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect();
    let mut by_name = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if layers.contains(&name) {
            let mut inner = tar::Archive::new(e);
            let names: Vec<String> =
                inner.entries().unwrap().map(|x| x.unwrap().path().unwrap().display().to_string()).collect();
            by_name.insert(name, names);
        }
    }
    layers.iter().map(|l| by_name.remove(l).unwrap()).collect()
}

/// Checks an OCI layout the way a registry or runtime would: every blob hashes to its
/// name, and every manifest the index names has its config and layers present with the
/// sizes it declares. Returns the number of images.
pub fn verify_layout(layout: &Path) -> usize {
    use sha2::{Digest as _, Sha256};
    let blobs = layout.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "a temporary file was left in {}: {name}", blobs.display());
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), name, "blob {name} does not match its digest");
    }
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| -> PathBuf {
        let digest = d["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let path = blobs.join(digest);
        let size = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{digest}: {e}")).len();
        assert_eq!(Some(size), d["size"].as_u64(), "size of {digest}");
        path
    };
    fn check(doc: &serde_json::Value, blob: &dyn Fn(&serde_json::Value) -> PathBuf) {
        let json =
            |p: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
        match doc.get("manifests") {
            // An index: each entry is a manifest (or an index) present in full.
            Some(list) => list.as_array().unwrap().iter().for_each(|m| check(&json(&blob(m)), blob)),
            None => {
                blob(&doc["config"]);
                doc["layers"].as_array().unwrap().iter().for_each(|l| drop(blob(l)));
            }
        }
    }
    let index = json(&layout.join("index.json"));
    check(&index, &blob);
    index["manifests"].as_array().unwrap().len()
}

/// `umoci unpack` of one image of a layout (it checks every blob it reads).
pub fn umoci_unpack(layout: &Path, reference: &str, bundle: &Path) {
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{reference}", layout.display()))
        .arg(bundle));
}
