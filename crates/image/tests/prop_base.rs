//! Property tests of base-image reading: damaged or hostile docker-archives
//! and OCI layouts given to `BaseImage::open` give an error or an image that
//! holds together, never a panic, and never point outside what was given.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix_layer_image::{BaseImage, BlobSource, Digest};
use nix_layer_tar::{EntryKind, Header, TarWriter};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

fn header(name: &str, kind: EntryKind) -> Header {
    Header {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime: 1,
    }
}

/// A tar of files (`data`) and symlinks (`-> target`).
fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    for (name, data) in members {
        match data.strip_prefix(b"-> ") {
            Some(target) => {
                t.append_bytes(&header(name, EntryKind::Symlink { target: target.to_vec() }), b"")
            }
            None => t.append_bytes(&header(name, EntryKind::Regular { size: data.len() as u64 }), data),
        }
        .unwrap();
    }
    t.finish().unwrap()
}

/// Layer tars: each a few small files.
fn layers() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let file = ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..64));
    proptest::collection::vec(proptest::collection::vec(file, 0..3), 1..4).prop_map(|layers| {
        layers
            .into_iter()
            .map(|files| tar_of(&files.into_iter().map(|(n, d)| (format!("etc/{n}"), d)).collect::<Vec<_>>()))
            .collect()
    })
}

fn config_for(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]},
                               "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap()
}

/// A valid docker-archive's members.
fn archive_members(layers: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let config = config_for(layers);
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut members: Vec<(String, Vec<u8>)> =
        layers.iter().map(|l| (format!("{}/layer.tar", Digest::of(l).hex()), l.clone())).collect();
    let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let manifest = json!([{"Config": config_name, "RepoTags": ["base:1"], "Layers": names}]);
    members.push((config_name, config));
    members.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
    members
}

/// Writes a valid OCI layout of `layers` into `dir`; returns the manifest.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Value {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        fs::write(blobs.join(d.hex()), bytes).unwrap();
        json!({"digest": d.to_string(), "size": bytes.len()})
    };
    let mut config = put(&config_for(layers));
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut d = put(l);
            d["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
            d
        })
        .collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": config, "layers": layer_descs});
    write_index(dir, &manifest);
    manifest
}

/// Stores `manifest` as a blob (under its true digest) and points index.json at it.
fn write_index(dir: &Path, manifest: &Value) {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let d = Digest::of(&bytes);
    fs::write(dir.join("blobs/sha256").join(d.hex()), &bytes).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": d.to_string(), "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

use nix_layer_testkit::{edits, mutate};

/// What a hostile manifest may name: a member that exists, a path
/// outside, or something that is not a name at all.
#[derive(Debug, Clone)]
enum Name {
    Inside(Index),
    Fixed(&'static str),
    Number(u64),
    Null,
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        any::<Index>().prop_map(Name::Inside),
        proptest::sample::select(vec![
            "../outside/secret",
            "/etc/passwd",
            "./manifest.json",
            "link",
            "",
            "../../../../etc/hostname",
        ])
        .prop_map(Name::Fixed),
        any::<u64>().prop_map(Name::Number),
        Just(Name::Null),
    ]
}

impl Name {
    fn json(&self, inside: &[String]) -> Value {
        match self {
            Name::Inside(i) => json!(i.get(inside)),
            Name::Fixed(s) => json!(s),
            Name::Number(n) => json!(n),
            Name::Null => Value::Null,
        }
    }
}

/// An image that opened must hold together, and all its bytes must come
/// from what was given (`given`: the archive file or the layout directory).
fn assert_consistent(img: &BaseImage, given: &Path) {
    let ids = img.config.pointer("/rootfs/diff_ids").and_then(Value::as_array).expect("diff_ids");
    assert_eq!(ids.len(), img.layers.len());
    assert_eq!(img.diff_ids().iter().map(|d| json!(d.to_string())).collect::<Vec<_>>(), *ids);
    let root = given.canonicalize().unwrap();
    for (i, layer) in img.layers.iter().enumerate() {
        match &layer.source {
            BlobSource::File(path) => {
                let real = path.canonicalize().unwrap();
                assert!(real.starts_with(&root), "{} is outside {}", real.display(), root.display());
            }
            BlobSource::ArchiveMember { archive, offset, len } => {
                // The archive itself, or its unpacked copy.
                let unpacked =
                    archive.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nix-layer-base-"));
                assert!(archive == given || unpacked, "{}", archive.display());
                assert!(offset + len <= fs::metadata(archive).unwrap().len());
            }
        }
        // Reading may fail (damaged data), but must not panic; what reads
        // in full and matches its diff_id is the layer's true content.
        if let Ok(mut r) = img.open_layer(i) {
            let mut data = Vec::new();
            if r.by_ref().take(1 << 24).read_to_end(&mut data).is_ok() && Digest::of(&data) == layer.diff_id {
                let tmp = tempfile::tempdir().unwrap();
                let blob = img.materialize_layer(i, tmp.path(), true).unwrap();
                assert_eq!(blob.diff_id, layer.diff_id);
            }
        }
    }
}

struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    /// A temp dir with a secret next to where the image goes.
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), "SECRET").unwrap();
        Scene { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn open_archive(&self, bytes: &[u8]) -> Option<BaseImage> {
        let path = self.path("image.tar");
        fs::write(&path, bytes).unwrap();
        let img = BaseImage::open(&path).ok()?;
        assert_consistent(&img, &path);
        Some(img)
    }
}

proptest! {
    // Valid images are read in full: fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_images_open_with_their_layers(layers in layers()) {
        let scene = Scene::new();
        let img = scene.open_archive(&tar_of(&archive_members(&layers))).expect("a valid archive opens");
        prop_assert_eq!(img.layers.len(), layers.len());
        prop_assert_eq!(img.env(), vec!["A=1".to_string()]);
        let dir = scene.path("layout");
        write_layout(&dir, &layers);
        let img = BaseImage::open(&dir).unwrap();
        assert_consistent(&img, &dir);
        prop_assert_eq!(img.diff_ids(), layers.iter().map(|l| Digest::of(l)).collect::<Vec<_>>());
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_docker_archives_never_panic(layers in layers(), edits in edits(7)) {
        let mut bytes = tar_of(&archive_members(&layers));
        mutate(&mut bytes, &edits);
        Scene::new().open_archive(&bytes);
    }

    #[test]
    fn hostile_docker_manifests_stay_inside(
        layers in layers(),
        layer_names in proptest::collection::vec(name(), 0..4),
        config_name in name(),
        links in proptest::collection::vec((name(), name()), 0..3),
    ) {
        let mut members = archive_members(&layers);
        let mut names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
        names.push("link".into());
        let layer_names: Vec<Value> = layer_names.iter().map(|n| n.json(&names)).collect();
        let manifest = json!([{"Config": config_name.json(&names), "Layers": layer_names}]);
        members.retain(|(n, _)| n != "manifest.json");
        members.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
        // Symlink members, inside or out, under any name.
        for (at, target) in links {
            if let (Value::String(at), Value::String(target)) = (at.json(&names), target.json(&names)) {
                if !at.is_empty() && !target.is_empty() {
                    members.push((at, format!("-> {target}").into_bytes()));
                }
            }
        }
        Scene::new().open_archive(&tar_of(&members));
    }

    #[test]
    fn mutated_oci_layouts_never_panic(
        layers in layers(),
        which in 0usize..3,
        edits in edits(7),
        digest_edit in any::<bool>(),
    ) {
        let scene = Scene::new();
        let dir = scene.path("layout");
        let manifest = write_layout(&dir, &layers);
        let blob = |v: &Value| dir.join("blobs/sha256").join(v["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        // Damage index.json, the manifest (re-stored under its new digest so
        // it is read), or a layer blob.
        match which {
            0 => {
                let mut bytes = fs::read(dir.join("index.json")).unwrap();
                mutate(&mut bytes, &edits);
                fs::write(dir.join("index.json"), bytes).unwrap();
            }
            1 => {
                let mut bytes = serde_json::to_vec(&manifest).unwrap();
                mutate(&mut bytes, &edits);
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if !digest_edit => write_index(&dir, &v),
                    _ => fs::write(blob(&json!({"digest": Digest::of(&serde_json::to_vec(&manifest).unwrap()).to_string()})), bytes).unwrap(),
                }
            }
            _ => {
                let path = blob(&manifest["layers"][0]);
                let mut bytes = fs::read(&path).unwrap();
                mutate(&mut bytes, &edits);
                fs::write(path, bytes).unwrap();
            }
        }
        if let Ok(img) = BaseImage::open(&dir) {
            assert_consistent(&img, &dir);
        }
    }

    #[test]
    fn hostile_oci_manifests_stay_inside(
        layers in layers(),
        layer_digest in prop_oneof![
            Just(json!("sha256:../../outside/secret")),
            Just(json!(format!("sha256:{}", "0".repeat(64)))),
            Just(json!("sha512:abc")),
            Just(json!(7)),
        ],
        size in prop_oneof![Just(json!(6)), Just(json!(-1)), Just(json!("6")), Just(Value::Null)],
        media in prop_oneof![
            Just(json!("application/vnd.oci.image.layer.v1.tar+gzip")),
            Just(json!("application/vnd.oci.image.index.v1+json")),
            Just(json!("text/plain")),
        ],
    ) {
        let scene = Scene::new();
        let dir = scene.path("layout");
        let mut manifest = write_layout(&dir, &layers);
        manifest["layers"][0]["digest"] = layer_digest;
        manifest["layers"][0]["size"] = size;
        write_index(&dir, &manifest);
        if let Ok(img) = BaseImage::open(&dir) {
            assert_consistent(&img, &dir);
        }
        manifest["layers"][0]["mediaType"] = media;
        write_index(&dir, &manifest);
        if let Ok(img) = BaseImage::open(&dir) {
            assert_consistent(&img, &dir);
        }
    }
}

proptest! {
    /// The typed layout reader base images use takes a blob only with exactly its
    /// descriptor's bytes: any edit (same length or not) of a layer or the config is
    /// refused, an unedited blob is read.
    #[test]
    fn the_layout_reader_takes_only_exact_blobs(layers in layers(), edits in edits(7), config in any::<bool>()) {
        let scene = Scene::new();
        let dir = scene.path("layout");
        write_layout(&dir, &layers);
        let layout = nix_layer_image::OciLayout::open_read(&dir).unwrap();
        let images = layout.images().unwrap();
        let manifest = layout.read_manifest(&images[0].1).unwrap();
        let desc = if config { manifest.config().clone() } else { manifest.layers()[0].clone() };
        let path = dir.join("blobs/sha256").join(desc.digest().digest());
        let original = fs::read(&path).unwrap();
        let mut bytes = original.clone();
        mutate(&mut bytes, &edits);
        fs::write(&path, &bytes).unwrap();
        let read = layout.verify_blob(&desc);
        prop_assert_eq!(read.is_ok(), bytes == original, "{:?}", read.err());
    }
}

/// A layout whose blob is a symlink to a file outside it (with the right
/// bytes, so every digest matches) must not be read through the link.
#[test]
fn symlinked_blobs_are_not_followed_out_of_the_layout() {
    let scene = Scene::new();
    let layers = vec![tar_of(&[("etc/f".into(), b"x".to_vec())])];
    let dir = scene.path("layout");
    let manifest = write_layout(&dir, &layers);
    let hex = Digest::of(&layers[0]).hex();
    let outside = scene.path("outside/layer");
    fs::rename(dir.join("blobs/sha256").join(&hex), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("blobs/sha256").join(&hex)).unwrap();
    assert_eq!(manifest["layers"][0]["digest"], json!(format!("sha256:{hex}")));
    if let Ok(img) = BaseImage::open(&dir) {
        assert_consistent(&img, &dir);
    }
}
