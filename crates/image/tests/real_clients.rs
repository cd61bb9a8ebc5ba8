//! End to end with the real clients: images written by this crate are read by skopeo and
//! umoci, and loaded and run by Docker. Each part prints why it is skipped when its
//! client (or /bin/busybox, from Debian's busybox-static) is missing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix_layer_blob::{write_blob, Compression, LayerBlob};
use nix_layer_image::{
    go_arch, inherit_env, write_oci_archive, BaseImage, ConfigSpec, DockerArchiveWriter, HistoryEntry, Image,
    ImageConfigInput, ImageRef, OciLayout,
};
use nix_layer_tar::{EntryKind, Header, TarWriter};
use serde_json::Value;

const BUSYBOX: &str = "/bin/busybox";
const CREATED: &str = "1970-01-01T00:00:01Z";

fn header(name: &str, kind: EntryKind, mode: u32) -> Header {
    Header {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        uname: "root".into(),
        gname: "root".into(),
        mtime: 1,
    }
}

/// A layer with `bin/busybox` (the static binary), `bin/sh` → busybox, and `tmp/`.
fn busybox_layer(dir: &Path, compression: Compression) -> LayerBlob {
    write_blob(dir, compression, |w| {
        let mut t = TarWriter::new(w);
        let mut bin = File::open(BUSYBOX)?;
        let size = bin.metadata()?.len();
        let entries = [
            (header("bin/", EntryKind::Directory, 0o755), None),
            (header("bin/busybox", EntryKind::Regular { size }, 0o755), Some(&mut bin)),
            (header("bin/sh", EntryKind::Symlink { target: b"busybox".to_vec() }, 0o777), None),
            (header("tmp/", EntryKind::Directory, 0o1777), None),
        ];
        for (h, data) in entries {
            match data {
                Some(file) => t.append(&h, file),
                None => t.append(&h, &mut io::empty()),
            }
            .map_err(io::Error::other)?;
        }
        t.finish().map(drop).map_err(io::Error::other)
    })
    .unwrap()
}

/// A layer with one text file.
fn file_layer(dir: &Path, name: &str, contents: &[u8]) -> LayerBlob {
    write_blob(dir, Compression::None, |w| {
        let mut t = TarWriter::new(w);
        let h = header(name, EntryKind::Regular { size: contents.len() as u64 }, 0o644);
        t.append_bytes(&h, contents).map_err(io::Error::other)?;
        t.finish().map(drop).map_err(io::Error::other)
    })
    .unwrap()
}

/// The image `reference` (`name:tag`) of `layers`, with `env` and `cmd`.
fn image(reference: &str, layers: &[&LayerBlob], env: Vec<String>, cmd: &[&str]) -> Image {
    let history = layers
        .iter()
        .map(|_| HistoryEntry { created: CREATED.into(), comment: "test layer".into(), created_by: None })
        .collect();
    let input = ImageConfigInput {
        created: CREATED.into(),
        architecture: go_arch(std::env::consts::ARCH).into(),
        os: "linux".into(),
        variant: None,
        config: ConfigSpec {
            Cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            Env: Some(env),
            ..Default::default()
        },
        history,
    };
    let (name, tag) = reference.rsplit_once(':').unwrap();
    let layers = layers.iter().map(|l| l.info().clone()).collect();
    let ann = BTreeMap::from([("org.opencontainers.image.title".to_owned(), "busybox".to_owned())]);
    Image::new(ImageRef::new(name, tag).unwrap(), &input, layers, &ann).unwrap()
}

/// Whether `program` can be run at all.
fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs a command, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> Output {
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

fn run_json(cmd: &mut Command) -> Value {
    serde_json::from_slice(&run(cmd).stdout).unwrap()
}

fn missing_busybox() -> bool {
    if Path::new(BUSYBOX).is_file() {
        return false;
    }
    eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
    true
}

#[test]
fn oci_layout_and_archive_are_read_by_skopeo_and_umoci() {
    if missing_busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    fs::create_dir(&blobs).unwrap();
    let layer = busybox_layer(&blobs, Compression::Gzip);
    let cmd = ["/bin/busybox", "echo", "hi"];
    let layout_dir = dir.path().join("oci");
    let layout = OciLayout::open_or_create(&layout_dir).unwrap();
    let test = image("test:1", &[&layer], vec!["PATH=/bin".into()], &cmd);
    let manifest = layout.add_image(&test, std::slice::from_ref(&layer)).unwrap();
    // A second image sharing the layer, stored as a zstd copy next to it.
    let zstd = busybox_layer(&blobs, Compression::Zstd);
    let zstd_image = image("zstd:1", &[&zstd], vec!["PATH=/bin".into()], &cmd);
    layout.add_image(&zstd_image, std::slice::from_ref(&zstd)).unwrap();

    if have("skopeo") {
        let image = format!("oci:{}:test:1", layout_dir.display());
        let info = run_json(Command::new("skopeo").args(["inspect", &image]));
        assert_eq!(info["Digest"], manifest.to_string());
        assert_eq!(info["Layers"], serde_json::json!([layer.digest.to_string()]));
        assert_eq!(info["Architecture"], go_arch(std::env::consts::ARCH));
        assert_eq!(info["Os"], "linux");
        assert_eq!(info["Env"], serde_json::json!(["PATH=/bin"]));
        let raw_config = run(Command::new("skopeo").args(["inspect", "--config", "--raw", &image])).stdout;
        assert_eq!(raw_config, test.config().bytes(), "skopeo sees our exact config bytes");
        let raw_manifest = run(Command::new("skopeo").args(["inspect", "--raw", &image])).stdout;
        assert_eq!(raw_manifest, test.manifest().bytes(), "and our exact manifest bytes");
        let zstd_info = run_json(
            Command::new("skopeo").args(["inspect", &format!("oci:{}:zstd:1", layout_dir.display())]),
        );
        assert_eq!(zstd_info["Layers"], serde_json::json!([zstd.digest.to_string()]));

        let archive = dir.path().join("image.oci.tar");
        let out = BufWriter::new(File::create(&archive).unwrap());
        write_oci_archive(&layout_dir, out).unwrap().flush().unwrap();
        let info = run_json(
            Command::new("skopeo").args(["inspect", &format!("oci-archive:{}:test:1", archive.display())]),
        );
        assert_eq!(info["Digest"], manifest.to_string());
    } else {
        eprintln!("SKIPPED skopeo checks: skopeo is not installed");
    }

    if have("umoci") {
        let bundle = dir.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:test:1", layout_dir.display()))
            .arg(&bundle));
        let unpacked = bundle.join("rootfs/bin/busybox");
        let meta = fs::metadata(&unpacked).unwrap();
        assert_eq!(meta.len(), fs::metadata(BUSYBOX).unwrap().len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(), PathBuf::from("busybox"));
        let runtime: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(runtime["process"]["args"], serde_json::json!(["/bin/busybox", "echo", "hi"]));
    } else {
        eprintln!("SKIPPED umoci checks: umoci is not installed");
    }
}

/// Removes the named images when dropped, so a failing test leaves nothing behind.
struct LoadedImages(Vec<String>);

impl Drop for LoadedImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "--force", image]).output();
        }
    }
}

fn docker_is_up() -> bool {
    match Command::new("docker").arg("info").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIPPED docker checks: `docker info` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED docker checks: cannot run docker: {e}");
            false
        }
    }
}

/// `podman load` of the same archive, when podman works here.
fn podman_loads_and_runs(archive: &Path, tag: &str) {
    match Command::new("podman").arg("info").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("SKIPPED podman checks: `podman info` fails or podman is not installed");
            return;
        }
    }
    let loaded = run(Command::new("podman").arg("load").arg("-i").arg(archive));
    // podman qualifies short names (`localhost/…`); take the name it reports.
    let stdout = String::from_utf8_lossy(&loaded.stdout).into_owned();
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: ").or_else(|| l.strip_prefix("Loaded image(s): ")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("podman load did not name the image: {stdout}"))
        .to_owned();
    assert!(name.ends_with(tag), "{name}");
    // Explicit limits: podman's defaults raise nofile/nproc above what sandboxed hosts
    // (like this project's machines) allow, and runc then fails with EPERM.
    let out = Command::new("podman")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &name,
            "/bin/busybox",
            "echo",
            "hi",
        ])
        .output();
    let _ = Command::new("podman").args(["rmi", "--force", &name]).output();
    let out = out.unwrap();
    assert!(out.status.success(), "podman run failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

fn write_archive(path: &Path, layers: &[&LayerBlob], image: &Image) {
    let mut w = DockerArchiveWriter::new(BufWriter::new(File::create(path).unwrap()), 1);
    for l in layers {
        w.add_blob(l).unwrap();
    }
    w.finish(image).unwrap().flush().unwrap();
}

fn docker_run(image: &str, args: &[&str]) -> String {
    let out = run(Command::new("docker").args(["run", "--rm", "--network", "none", image]).args(args));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn docker_archive_loads_runs_and_serves_as_a_base() {
    if missing_busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = busybox_layer(dir.path(), Compression::None);
    let tag = format!("nix-layer-test/busybox:t{}", std::process::id());
    let img = image(
        &tag,
        &[&layer],
        vec!["PATH=/bin".into(), "GREETING=base".into()],
        &["/bin/busybox", "echo", "hi"],
    );
    let archive = dir.path().join("image.tar");
    write_archive(&archive, &[&layer], &img);

    if have("skopeo") {
        let info = run_json(
            Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", archive.display())]),
        );
        assert_eq!(info["Layers"], serde_json::json!([layer.diff_id.to_string()]));
    }
    podman_loads_and_runs(&archive, &tag);
    if !docker_is_up() {
        return;
    }
    let derived_tag = format!("nix-layer-test/derived:t{}", std::process::id());
    let _cleanup = LoadedImages(vec![tag.clone(), derived_tag.clone()]);
    let loaded = run(Command::new("docker").arg("load").arg("-i").arg(&archive));
    assert!(String::from_utf8_lossy(&loaded.stdout).contains(&tag), "{loaded:?}");
    assert_eq!(docker_run(&tag, &["/bin/busybox", "echo", "hi"]), "hi\n");
    assert_eq!(docker_run(&tag, &[]), "hi\n", "the config's Cmd runs");

    // What docker saves back is a base image for the next one.
    let saved = dir.path().join("saved.tar");
    run(Command::new("docker").args(["save", "-o"]).arg(&saved).arg(&tag));
    let base = BaseImage::open(&saved).unwrap();
    assert_eq!(base.diff_ids(), vec![layer.diff_id]);
    assert_eq!(base.env(), ["PATH=/bin", "GREETING=base"]);

    let top = file_layer(dir.path(), "hello.txt", b"hello from the top layer\n");
    let env = inherit_env(&base.env(), &["GREETING=derived".into(), "EXTRA=1".into()]);
    let base_layer = base.materialize_layer(0, dir.path(), true).unwrap();
    let derived_image =
        image(&derived_tag, &[&base_layer, &top], env, &["/bin/busybox", "cat", "/hello.txt"]);
    let derived = dir.path().join("derived.tar");
    write_archive(&derived, &[&base_layer, &top], &derived_image);
    run(Command::new("docker").arg("load").arg("-i").arg(&derived));
    assert_eq!(docker_run(&derived_tag, &[]), "hello from the top layer\n");
    let env_out = docker_run(&derived_tag, &["/bin/busybox", "env"]);
    let ours: Vec<&str> = env_out
        .lines()
        .filter(|l| ["PATH=", "GREETING=", "EXTRA="].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(ours, ["PATH=/bin", "GREETING=derived", "EXTRA=1"]);
}
