use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_layer_blob::{HashingReader, HashingWriter};
use nix_layer_tar::{EntryKind, Header, TarWriter};
use serde_json::{json, Value};
use tempfile::NamedTempFile;

use crate::{config_diff_ids, Digest, Error, LayerBlob};

/// The index annotation that names an image in a layout (`skopeo … oci:DIR:<name>`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYOUT_VERSION: &str = "1.0.0";
/// Prefix of files being written; never part of the layout (skipped by the oci-archive).
const TMP_PREFIX: &str = ".nix-layer-tmp-";
/// mtime of oci-archive entries: dockerTools' default time, 1970-01-01T00:00:01Z.
const ARCHIVE_MTIME: u64 = 1;

/// What a manifest says about one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl From<&LayerBlob> for LayerDescriptor {
    fn from(b: &LayerBlob) -> Self {
        LayerDescriptor { media_type: b.media_type().to_owned(), digest: b.digest, size: b.size }
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) that
/// images are added to. Blobs are content-addressed, so layers shared between images are
/// stored once. Every file appears under its final name by an atomic rename or link.
///
/// Several writers may add images at once: blobs are content-addressed, and the
/// read-modify-write of `index.json` holds an exclusive lock on the layout directory.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `dir`, creating it (and `dir`) if `dir` is missing or empty.
    /// An existing layout is checked (`oci-layout` version, `index.json` shape) and kept:
    /// images are added to it.
    pub fn open_or_create(dir: &Path) -> Result<Self, Error> {
        let layout = OciLayout { dir: dir.to_owned() };
        let bad = |problem: String| Error::BadLayout { path: dir.to_owned(), problem };
        fs::create_dir_all(dir).map_err(Error::io("cannot create the OCI layout directory", dir))?;
        let marker = dir.join("oci-layout");
        match fs::read(&marker) {
            Ok(bytes) => {
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("`oci-layout` is not valid JSON: {e}")))?;
                let version = v.get("imageLayoutVersion").and_then(Value::as_str);
                if version != Some(LAYOUT_VERSION) {
                    return Err(bad(format!(
                        "`oci-layout` declares version {version:?}; only {LAYOUT_VERSION} is supported"
                    )));
                }
                layout.read_index()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut entries = fs::read_dir(dir).map_err(Error::io("cannot list", dir))?;
                if entries.next().is_some() {
                    return Err(bad(
                        "the directory is not empty and has no `oci-layout` file; give a new or empty directory".into(),
                    ));
                }
                let index = json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [] });
                layout.write_file("index.json", &serde_json::to_vec(&index).expect("JSON"))?;
                // Written last: a layout is only recognised once it is complete.
                let marker = json!({ "imageLayoutVersion": LAYOUT_VERSION });
                layout.write_file("oci-layout", &serde_json::to_vec(&marker).expect("JSON"))?;
            }
            Err(e) => return Err(Error::io("cannot read", &marker)(e)),
        }
        let blobs = layout.blobs_dir();
        fs::create_dir_all(&blobs).map_err(Error::io("cannot create the blob directory", &blobs))?;
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// True if the layout holds a blob named `digest` with `size` bytes.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    fn temp_file(&self, dir: &Path) -> Result<NamedTempFile, Error> {
        tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)
            .map_err(Error::io("cannot create a file in", dir))
    }

    /// Writes `name` in the layout's top directory atomically.
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let dest = self.dir.join(name);
        let mut tmp = self.temp_file(&self.dir)?;
        tmp.write_all(bytes).map_err(Error::io("cannot write", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| Error::io("cannot replace", &dest)(e.error))?;
        Ok(())
    }

    /// Moves a finished temporary blob into place (read-only). If the name already exists
    /// (a concurrent writer, same bytes) the existing file is kept.
    fn install(&self, tmp: NamedTempFile, digest: &Digest) -> Result<(), Error> {
        let dest = self.blob_path(digest);
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(Error::io("cannot make the blob read-only", tmp.path()))?;
        match tmp.persist_noclobber(&dest) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("cannot store the blob", &dest)(e.error)),
        }
    }

    /// Adds the blob in `path`, which must hash to `digest`. It is hard-linked when source
    /// and layout share a file system (blob files from `nix-layer-blob` are read-only, so
    /// sharing the inode is safe), and otherwise copied and verified. A blob already
    /// present with the same size is left alone.
    pub fn add_blob_from_file(&self, path: &Path, digest: &Digest) -> Result<(), Error> {
        let dest = self.blob_path(digest);
        let src_len = fs::metadata(path).map_err(Error::io("cannot read the blob file", path))?.len();
        if let Ok(existing) = fs::symlink_metadata(&dest) {
            if existing.is_file() && existing.len() == src_len {
                return Ok(());
            }
            // Wrong size: a damaged copy; replace it.
            fs::remove_file(&dest).map_err(Error::io("cannot remove the damaged blob", &dest))?;
        }
        match fs::hard_link(path, &dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            // Other file system, or a link not permitted: copy instead.
            Err(_) => {}
        }
        self.copy_verified(path, digest)
    }

    /// Copies `path` into the layout, checking that it hashes to `digest`.
    fn copy_verified(&self, path: &Path, digest: &Digest) -> Result<(), Error> {
        let mut src = File::open(path).map_err(Error::io("cannot open the blob file", path))?;
        let (copied, _) = self.add_blob_from_reader(&mut src)?;
        if copied != *digest {
            // The copy is named by its real digest and belongs to no image: remove it.
            let _ = fs::remove_file(self.blob_path(&copied));
            return Err(Error::DigestMismatch {
                what: format!("blob file `{}`", path.display()),
                expected: *digest,
                actual: copied,
                hint: "the file changed after it was written; rebuild it",
            });
        }
        Ok(())
    }

    /// Stores everything `reader` yields as a blob; returns its digest and size.
    pub fn add_blob_from_reader(&self, reader: &mut dyn Read) -> Result<(Digest, u64), Error> {
        let blobs = self.blobs_dir();
        let tmp = self.temp_file(&blobs)?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
        let mut r = HashingReader::new(reader);
        io::copy(&mut r, &mut w).map_err(Error::io("cannot copy a blob into", &blobs))?;
        let (buffered, digest, size) = w.finish();
        buffered.into_inner().map_err(|e| Error::io("cannot write a blob into", &blobs)(e.into_error()))?;
        self.install(tmp, &digest)?;
        Ok((digest, size))
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub fn add_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest, bytes.len() as u64) {
            self.add_blob_from_reader(&mut { bytes })?;
        }
        Ok(digest)
    }

    /// Adds an image made of `layers` (their files are added to the layout) and
    /// `config_json`, and names it `ref_name` in `index.json`, replacing an older image
    /// of that name. `annotations` go into the manifest. Returns the manifest digest.
    pub fn add_image(
        &mut self,
        layers: &[LayerBlob],
        config_json: &[u8],
        ref_name: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<Digest, Error> {
        let diff_ids = config_diff_ids(config_json)?;
        let ours: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        if diff_ids != ours {
            return Err(Error::ConfigLayersMismatch(format!(
                "the config lists {} diff_ids, the image has {} layers (or they differ); \
                 build the config from the same layers",
                diff_ids.len(),
                ours.len()
            )));
        }
        for l in layers {
            self.add_blob_from_file(&l.path, &l.digest)?;
        }
        let descriptors: Vec<LayerDescriptor> = layers.iter().map(LayerDescriptor::from).collect();
        self.add_manifest(&descriptors, config_json, ref_name, annotations)
    }

    /// Like [`add_image`](Self::add_image) for layers whose blobs are already in the
    /// layout (e.g. copied from a base image).
    pub fn add_manifest(
        &mut self,
        layers: &[LayerDescriptor],
        config_json: &[u8],
        ref_name: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<Digest, Error> {
        check_ref_name(ref_name)
            .map_err(|problem| Error::BadReference { input: ref_name.to_owned(), problem })?;
        let config: Value = serde_json::from_slice(config_json)
            .map_err(|e| Error::BadConfig(format!("the image config is not valid JSON: {e}")))?;
        let diff_ids = crate::diff_ids_of(&config).map_err(Error::BadConfig)?;
        if diff_ids.len() != layers.len() {
            return Err(Error::ConfigLayersMismatch(format!(
                "the config lists {} diff_ids but the manifest has {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        for l in layers {
            if !self.has_blob(&l.digest, l.size) {
                return Err(Error::BadLayout {
                    path: self.dir.clone(),
                    problem: format!(
                        "layer blob {} ({} bytes) is not in the layout; add it before the manifest",
                        l.digest, l.size
                    ),
                });
            }
        }
        let config_digest = self.add_blob_bytes(config_json)?;
        let layer_values: Vec<Value> = layers
            .iter()
            .map(|l| json!({ "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size }))
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config_json.len() },
            "layers": layer_values,
        });
        if !annotations.is_empty() {
            manifest["annotations"] = json!(annotations);
        }
        let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON");
        let manifest_digest = self.add_blob_bytes(&manifest_bytes)?;

        let mut descriptor = json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
            "annotations": { REF_NAME_ANNOTATION: ref_name },
        });
        if let (Some(arch), Some(os)) = (config["architecture"].as_str(), config["os"].as_str()) {
            let mut platform = json!({ "architecture": arch, "os": os });
            if let Some(variant) = config["variant"].as_str() {
                platform["variant"] = variant.into();
            }
            descriptor["platform"] = platform;
        }
        // Another process may be adding an image too: update the index under a lock
        // (flock on the directory itself, so the layout gains no extra file).
        let lock = fs::File::open(&self.dir).map_err(Error::io("cannot open", &self.dir))?;
        lock.lock().map_err(Error::io("cannot lock", &self.dir))?;
        let mut index = self.read_index()?;
        let manifests = index["manifests"].as_array_mut().expect("checked by read_index");
        manifests.retain(|m| m["annotations"][REF_NAME_ANNOTATION].as_str() != Some(ref_name));
        manifests.push(descriptor);
        self.write_file("index.json", &serde_json::to_vec(&index).expect("JSON"))?;
        drop(lock);
        Ok(manifest_digest)
    }

    /// `index.json`, checked to be an image index with a `manifests` list.
    pub fn read_index(&self) -> Result<Value, Error> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io("cannot read the layout's index", &path))?;
        let bad = |problem: String| Error::BadLayout { path: self.dir.clone(), problem };
        let index: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("`index.json` is not valid JSON: {e}")))?;
        if index.get("schemaVersion") != Some(&json!(2))
            || !index.get("manifests").is_some_and(Value::is_array)
        {
            return Err(bad(
                "`index.json` is not an image index (schemaVersion 2 with a manifests list)".into()
            ));
        }
        Ok(index)
    }

    /// The named images in `index.json`: (ref name, manifest digest), in index order.
    pub fn refs(&self) -> Result<Vec<(String, Digest)>, Error> {
        let index = self.read_index()?;
        let mut refs = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let (Some(name), Some(digest)) =
                (m["annotations"][REF_NAME_ANNOTATION].as_str(), m["digest"].as_str())
            else {
                continue;
            };
            refs.push((name.to_owned(), digest.parse()?));
        }
        Ok(refs)
    }
}

/// The OCI grammar for `org.opencontainers.image.ref.name`: components of alphanumerics
/// joined by one of `-._:@+` or `--`, separated by `/`.
fn check_ref_name(name: &str) -> Result<(), String> {
    let rule = "a ref name is letters and digits joined by one of `-._:@+` (or `--`), in `/`-separated parts";
    if name.is_empty() {
        return Err(format!("the ref name is empty; {rule}"));
    }
    for component in name.split('/') {
        let b = component.as_bytes();
        let mut i = 0;
        loop {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i == start {
                return Err(rule.into());
            }
            if i == b.len() {
                break;
            }
            let sep_start = i;
            while i < b.len() && !b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let sep = &component[sep_start..i];
            if !(sep == "--" || (sep.len() == 1 && "-._:@+".contains(sep))) {
                return Err(format!("separator `{sep}` is not allowed; {rule}"));
            }
        }
    }
    Ok(())
}

/// Writes the layout in `layout_dir` as one tar (the `oci-archive` format): relative
/// names, sorted, directories 0755 and files 0644, owner 0:0, mtime 1970-01-01T00:00:01Z.
pub fn write_oci_archive<W: Write>(layout_dir: &Path, out: W) -> Result<W, Error> {
    if !layout_dir.join("oci-layout").is_file() {
        return Err(Error::BadLayout {
            path: layout_dir.to_owned(),
            problem: "it has no `oci-layout` file".into(),
        });
    }
    let tar_err = |cause| Error::Tar { format: "oci-archive", cause };
    let mut tar = TarWriter::new(out);
    let walk = walkdir::WalkDir::new(layout_dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !e.file_name().as_bytes().starts_with(TMP_PREFIX.as_bytes()));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(layout_dir).to_owned();
            Error::Io { action: "cannot read the layout", path, cause: e.into() }
        })?;
        let name = entry.path().strip_prefix(layout_dir).expect("walkdir yields paths under its root");
        let mut header = Header {
            name: name.as_os_str().as_bytes().to_vec(),
            kind: EntryKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: ARCHIVE_MTIME,
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            tar.append(&header, &mut io::empty()).map_err(tar_err)?;
        } else if ft.is_file() {
            let path = entry.path();
            let mut file = File::open(path).map_err(Error::io("cannot open", path))?;
            let size = file.metadata().map_err(Error::io("cannot stat", path))?.len();
            header.kind = EntryKind::Regular { size };
            header.mode = 0o644;
            tar.append(&header, &mut file).map_err(tar_err)?;
        } else {
            return Err(Error::BadLayout {
                path: layout_dir.to_owned(),
                problem: format!("`{}` is neither a file nor a directory", name.display()),
            });
        }
    }
    tar.finish().map_err(tar_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{image_config_json, ConfigSpec, ImageConfigInput};
    use nix_layer_blob::{write_blob, Compression};

    fn blob(dir: &Path, data: &[u8], c: Compression) -> LayerBlob {
        write_blob(dir, c, |w| w.write_all(data)).unwrap()
    }

    fn config(layers: &[&LayerBlob], arch: &str) -> Vec<u8> {
        image_config_json(&ImageConfigInput {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: arch.into(),
            os: "linux".into(),
            config: ConfigSpec::default(),
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
            history: vec![],
        })
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn blob_names(layout: &OciLayout) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(layout.blobs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_a_valid_empty_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/layout");
        let layout = OciLayout::open_or_create(&root).unwrap();
        assert_eq!(fs::read_to_string(root.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: oci_spec::image::ImageIndex =
            serde_json::from_value(read_json(&root.join("index.json"))).unwrap();
        assert!(index.manifests().is_empty());
        assert!(root.join("blobs/sha256").is_dir());
        assert!(layout.refs().unwrap().is_empty());
    }

    #[test]
    fn two_images_share_a_blob_and_both_refs_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        let shared = blob(&blobs, b"shared layer", Compression::Gzip);
        let a_top = blob(&blobs, b"top of a", Compression::Gzip);
        let b_top = blob(&blobs, b"top of b", Compression::Zstd);
        let root = dir.path().join("layout");

        let mut layout = OciLayout::open_or_create(&root).unwrap();
        let ann = BTreeMap::from([("org.opencontainers.image.title".to_owned(), "a".to_owned())]);
        let a_cfg = config(&[&shared, &a_top], "amd64");
        let a = layout.add_image(&[shared.clone(), a_top.clone()], &a_cfg, "a", ann).unwrap();
        // Reopened, as a second build would.
        let mut layout = OciLayout::open_or_create(&root).unwrap();
        let b_cfg = config(&[&shared, &b_top], "arm64");
        let b = layout.add_image(&[shared.clone(), b_top.clone()], &b_cfg, "b", BTreeMap::new()).unwrap();

        // shared + 2 tops + 2 configs + 2 manifests, the shared layer once.
        let mut expected: Vec<String> = [shared.digest, a_top.digest, b_top.digest, a, b]
            .iter()
            .chain(&[Digest::of(&a_cfg), Digest::of(&b_cfg)])
            .map(Digest::hex)
            .collect();
        expected.sort();
        assert_eq!(blob_names(&layout), expected);
        assert_eq!(layout.refs().unwrap(), vec![("a".to_owned(), a), ("b".to_owned(), b)]);

        // The documents parse as OCI types and say what we put in.
        let index: oci_spec::image::ImageIndex =
            serde_json::from_value(layout.read_index().unwrap()).unwrap();
        let b_desc = &index.manifests()[1];
        assert_eq!(b_desc.platform().as_ref().unwrap().architecture().to_string(), "arm64");
        assert_eq!(b_desc.size(), fs::metadata(layout.blob_path(&b)).unwrap().len());
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_value(read_json(&layout.blob_path(&a))).unwrap();
        assert_eq!(manifest.schema_version(), 2);
        assert_eq!(manifest.config().digest().to_string(), Digest::of(&a_cfg).to_string());
        assert_eq!(manifest.layers()[0].digest().to_string(), shared.digest.to_string());
        assert_eq!(
            manifest.layers()[1].media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(manifest.annotations().as_ref().unwrap()["org.opencontainers.image.title"], "a");
        let b_manifest = read_json(&layout.blob_path(&b));
        assert_eq!(b_manifest["layers"][1]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
        assert!(b_manifest.get("annotations").is_none());
        // Same inode: hard-linked from the blob directory, not copied.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&layout.blob_path(&shared.digest)), ino(&shared.path));
    }

    #[test]
    fn same_ref_name_replaces_the_older_entry() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = blob(dir.path(), b"v1", Compression::None);
        let l2 = blob(dir.path(), b"v2", Compression::None);
        let mut layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        layout
            .add_image(std::slice::from_ref(&l1), &config(&[&l1], "amd64"), "app", BTreeMap::new())
            .unwrap();
        layout
            .add_image(std::slice::from_ref(&l1), &config(&[&l1], "amd64"), "other", BTreeMap::new())
            .unwrap();
        let m2 = layout
            .add_image(std::slice::from_ref(&l2), &config(&[&l2], "amd64"), "app", BTreeMap::new())
            .unwrap();
        let refs = layout.refs().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1], ("app".to_owned(), m2));
    }

    #[test]
    fn layout_bytes_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let l = blob(dir.path(), b"layer", Compression::Gzip);
        let cfg = config(&[&l], "amd64");
        let mut archives = Vec::new();
        for name in ["x", "y"] {
            let mut layout = OciLayout::open_or_create(&dir.path().join(name)).unwrap();
            layout.add_image(std::slice::from_ref(&l), &cfg, "t", BTreeMap::new()).unwrap();
            archives.push(write_oci_archive(layout.dir(), Vec::new()).unwrap());
        }
        assert_eq!(archives[0], archives[1]);
    }

    #[test]
    fn oci_archive_holds_the_sorted_layout() {
        let dir = tempfile::tempdir().unwrap();
        let l = blob(dir.path(), b"layer", Compression::Gzip);
        let cfg = config(&[&l], "amd64");
        let mut layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        let m = layout.add_image(std::slice::from_ref(&l), &cfg, "t", BTreeMap::new()).unwrap();
        // A stray temporary file is not part of the archive.
        fs::write(layout.blobs_dir().join(format!("{TMP_PREFIX}x")), b"partial").unwrap();
        let out = write_oci_archive(layout.dir(), Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 1));
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let expected_mode = if h.entry_type().is_dir() { 0o755 } else { 0o644 };
            assert_eq!(h.mode().unwrap(), expected_mode, "{name}");
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                assert_eq!(Digest::of(&data).hex(), hex);
            }
            names.push(name);
        }
        let mut blobs: Vec<String> =
            [l.digest, m, Digest::of(&cfg)].iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect();
        blobs.sort();
        let mut expected = vec!["blobs/".to_owned(), "blobs/sha256/".to_owned()];
        expected.extend(blobs);
        expected.extend(["index.json".to_owned(), "oci-layout".to_owned()]);
        assert_eq!(names, expected);
    }

    #[test]
    fn refuses_foreign_or_broken_directories() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("file"), b"x").unwrap();
        let e = OciLayout::open_or_create(&busy).unwrap_err().to_string();
        assert!(e.contains("not empty and has no `oci-layout`"), "{e}");

        let old = dir.path().join("old");
        OciLayout::open_or_create(&old).unwrap();
        fs::write(old.join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        let e = OciLayout::open_or_create(&old).unwrap_err().to_string();
        assert!(e.contains("only 1.0.0"), "{e}");

        let broken = dir.path().join("broken");
        OciLayout::open_or_create(&broken).unwrap();
        fs::write(broken.join("index.json"), "{}").unwrap();
        let e = OciLayout::open_or_create(&broken).unwrap_err().to_string();
        assert!(e.contains("not an image index"), "{e}");

        let e = write_oci_archive(&busy, Vec::new()).unwrap_err().to_string();
        assert!(e.contains("no `oci-layout`"), "{e}");
    }

    #[test]
    fn add_checks_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let l = blob(dir.path(), b"layer", Compression::None);
        let mut layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        let cfg = config(&[&l], "amd64");
        for bad in ["", "a b", "-x", "x..y", "a//b"] {
            let e = layout.add_image(std::slice::from_ref(&l), &cfg, bad, BTreeMap::new()).unwrap_err();
            assert!(matches!(e, Error::BadReference { .. }), "{bad:?}: {e}");
        }
        for good in ["latest", "v1.0", "ghcr.io/o/app:1", "a--b", "A_1"] {
            layout.add_image(std::slice::from_ref(&l), &cfg, good, BTreeMap::new()).unwrap();
        }
        let e = layout.add_image(&[l.clone(), l.clone()], &cfg, "t", BTreeMap::new()).unwrap_err();
        assert!(matches!(e, Error::ConfigLayersMismatch(_)), "{e}");
        let missing = LayerDescriptor {
            media_type: Compression::None.layer_media_type().into(),
            digest: Digest::of(b"?"),
            size: 1,
        };
        let e = layout.add_manifest(&[missing], &cfg, "t", BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("is not in the layout"), "{e}");
    }

    #[test]
    fn copies_and_verifies_when_it_cannot_link() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"blob bytes").unwrap();
        let digest = Digest::of(b"blob bytes");
        // The fallback used when a hard link fails (another file system, EPERM).
        layout.copy_verified(&src, &digest).unwrap();
        let stored = layout.blob_path(&digest);
        assert_eq!(fs::read(&stored).unwrap(), b"blob bytes");
        assert_eq!(fs::metadata(&stored).unwrap().permissions().mode() & 0o777, 0o444);
        // Already present: adding again is a no-op.
        layout.add_blob_from_file(&src, &digest).unwrap();

        let wrong = Digest::of(b"something else");
        let e = layout.copy_verified(&src, &wrong).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("rebuild"), "{e}");
        assert!(!layout.blob_path(&wrong).exists());

        // A blob of the wrong size under the right name is replaced.
        let other = blob(dir.path(), b"fresh", Compression::None);
        fs::write(layout.blob_path(&other.digest), b"stale, longer").unwrap();
        layout.add_blob_from_file(&other.path, &other.digest).unwrap();
        assert_eq!(fs::read(layout.blob_path(&other.digest)).unwrap(), b"fresh");
    }
}
