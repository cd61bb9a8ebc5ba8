use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_layer_scratch::ScratchFile;
use nix_layer_tar::{EntryKind, Header, TarWriter};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
};
use serde_json::{json, Value};

use crate::model::{Document, REF_NAME_ANNOTATION};
use crate::{Digest, Error, Image, LayerBlob};

const LAYOUT_VERSION: &str = "1.0.0";
/// Prefix of files being written; never part of the layout (the oci-archive skips every
/// name that starts with a dot).
const TMP_PREFIX: &str = ".nix-layer-tmp-";
/// mtime of oci-archive entries: dockerTools' default time, 1970-01-01T00:00:01Z.
const ARCHIVE_MTIME: u64 = 1;

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) that
/// images are added to. Blobs are content-addressed, so layers shared between images are
/// stored once. Every file appears under its final name by an atomic rename or link, with
/// the permissions the umask allows (others can read the layout unless the umask says no).
///
/// Images are named in `index.json` by their full reference
/// (`org.opencontainers.image.ref.name` = `registry.example/app:1`), so two images never
/// share a name; adding an image under a name the layout has replaces that entry.
/// Several writers may add images at once: the read-modify-write of `index.json` holds
/// an exclusive lock on the layout directory.
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
                let index = ImageIndexBuilder::default()
                    .schema_version(2u32)
                    .media_type(MediaType::ImageIndex)
                    .manifests(Vec::<Descriptor>::new())
                    .build()
                    .expect("every required index field is set");
                layout.write_index(&index)?;
                // Written last: a layout is only recognised once it is complete.
                let marker = json!({ "imageLayoutVersion": LAYOUT_VERSION });
                layout.write_file("oci-layout", &serde_json::to_vec(&marker).expect("JSON"))?;
            }
            Err(e) => return Err(Error::io("cannot read", &marker)(e)),
        }
        let blobs = layout.blobs_dir();
        fs::create_dir_all(&blobs).map_err(Error::io("cannot create the blob directory", &blobs))?;
        layout.sweep();
        Ok(layout)
    }

    /// Opens an existing layout only to read it: nothing is created, swept or written
    /// (a layout in the Nix store or another user's cache is read-only). `oci-layout` and
    /// `index.json` are checked.
    pub fn open_read(dir: &Path) -> Result<Self, Error> {
        let bad = |problem: String| Error::BadLayout { path: dir.to_owned(), problem };
        let marker = dir.join("oci-layout");
        let bytes = match nix_layer_blob::open_no_follow(&marker) {
            Ok(f) => {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(f, 4096), &mut bytes)
                    .map_err(Error::io("cannot read", &marker))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(bad(
                    "the directory has no `oci-layout` file, so it is not an OCI image layout".into()
                ))
            }
            Err(e) => return Err(Error::io("cannot read", &marker)(e)),
        };
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("`oci-layout` is not valid JSON: {e}")))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
            return Err(bad("`oci-layout` declares no imageLayoutVersion".into()));
        }
        let layout = OciLayout { dir: dir.to_owned() };
        layout.read_index()?;
        Ok(layout)
    }

    /// Opens a layout that must already exist.
    pub fn open_existing(dir: &Path) -> Result<Self, Error> {
        if !dir.join("oci-layout").is_file() {
            return Err(Error::BadLayout {
                path: dir.to_owned(),
                problem: "it has no `oci-layout` file".into(),
            });
        }
        Self::open_or_create(dir)
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

    /// A file being written into the layout: locked while written, removed if the process
    /// is interrupted, swept by the next writer if it was killed outright.
    fn temp_file(&self, dir: &Path) -> Result<ScratchFile, Error> {
        ScratchFile::new_in(dir, TMP_PREFIX).map_err(Error::io("cannot create a file in", dir))
    }

    /// Removes what killed writers left (their locks are free; live writers' stay).
    fn sweep(&self) {
        nix_layer_scratch::sweep(&self.dir, TMP_PREFIX);
        nix_layer_scratch::sweep(&self.blobs_dir(), TMP_PREFIX);
        nix_layer_blob::sweep_temporaries(&self.blobs_dir());
    }

    /// Writes `name` in the layout's top directory atomically, readable as the umask allows.
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let dest = self.dir.join(name);
        let mut tmp = self.temp_file(&self.dir)?;
        tmp.write_all(bytes).map_err(Error::io("cannot write", tmp.path()))?;
        set_mode(tmp.file(), 0o644).map_err(Error::io("cannot write", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| Error::io("cannot replace", &dest)(e.source))?;
        Ok(())
    }

    /// Stores a JSON document (config, manifest, index) as a blob. A file already under its
    /// name is kept only if it holds exactly these bytes.
    pub fn add_document(&self, doc: &Document) -> Result<(), Error> {
        let dest = self.blob_path(&doc.digest());
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file())
            && fs::read(&dest).is_ok_and(|b| b == doc.bytes())
        {
            return Ok(());
        }
        let mut tmp = self.temp_file(&self.blobs_dir())?;
        tmp.write_all(doc.bytes()).map_err(Error::io("cannot write", tmp.path()))?;
        set_mode(tmp.file(), 0o444).map_err(Error::io("cannot write", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| Error::io("cannot store the blob", &dest)(e.source))?;
        Ok(())
    }

    /// Adds `image`, whose layers are `blobs` (verified blobs: hard-linked when the file
    /// systems allow, else copied and checked), and names it by its reference in
    /// `index.json`, replacing an older image of that name. Returns the manifest digest.
    pub fn add_image(&self, image: &Image, blobs: &[LayerBlob]) -> Result<Digest, Error> {
        let given: Vec<_> = blobs.iter().map(|b| b.info()).collect();
        let described: Vec<_> = image.layers().iter().collect();
        if given != described {
            return Err(Error::ConfigLayersMismatch(format!(
                "the image has {} layers but {} blobs were given (or they differ)",
                described.len(),
                given.len()
            )));
        }
        for b in blobs {
            b.install_at(&self.blob_path(&b.digest))?;
        }
        self.add_document(image.config())?;
        self.add_document(image.manifest())?;
        self.add_index_entry(image.index_descriptor())?;
        Ok(image.manifest().digest())
    }

    /// Adds a descriptor (whose blob is already stored) to `index.json`, replacing entries
    /// with the same ref name. Another process may be adding an image too: the update
    /// holds a lock (flock on the directory itself, so the layout gains no extra file).
    pub fn add_index_entry(&self, descriptor: Descriptor) -> Result<(), Error> {
        let name = ref_name(&descriptor).map(str::to_owned);
        if let Some(name) = &name {
            check_ref_name(name).map_err(|problem| Error::BadReference { input: name.clone(), problem })?;
        }
        let lock = File::open(&self.dir).map_err(Error::io("cannot open", &self.dir))?;
        lock.lock().map_err(Error::io("cannot lock", &self.dir))?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        if name.is_some() {
            manifests.retain(|m| ref_name(m) != name.as_deref());
        }
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)?;
        drop(lock);
        Ok(())
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), Error> {
        self.write_file("index.json", Document::new(index, MediaType::ImageIndex.as_ref()).bytes())
    }

    /// `index.json`, checked to be an image index.
    pub fn read_index(&self) -> Result<ImageIndex, Error> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io("cannot read the layout's index", &path))?;
        let bad = |problem: String| Error::BadLayout { path: self.dir.clone(), problem };
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("`index.json` is not an image index: {e}")))?;
        if index.schema_version() != 2 {
            return Err(bad("`index.json` is not an image index (schemaVersion 2)".into()));
        }
        Ok(index)
    }

    /// The named images in `index.json`: (ref name, manifest digest), in index order.
    pub fn refs(&self) -> Result<Vec<(String, Digest)>, Error> {
        let mut refs = Vec::new();
        for m in self.read_index()?.manifests() {
            if let Some(name) = ref_name(m) {
                refs.push((name.to_owned(), m.digest().to_string().parse()?));
            }
        }
        Ok(refs)
    }
}

/// The media type of a multi-platform index: OCI's, or Docker's manifest list for tools
/// that only know that one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Oci,
    DockerManifestList,
}

impl IndexKind {
    pub fn media_type(self) -> &'static str {
        match self {
            IndexKind::Oci => "application/vnd.oci.image.index.v1+json",
            IndexKind::DockerManifestList => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }
}

impl OciLayout {
    /// The index entry named `name` (its descriptor), if any.
    pub fn find(&self, name: &str) -> Result<Option<Descriptor>, Error> {
        Ok(self.read_index()?.manifests().iter().find(|m| ref_name(m) == Some(name)).cloned())
    }

    /// Combines images of this layout, one per platform, into a multi-platform index named
    /// `name` (stored as a blob and named in `index.json`; the per-platform entries stay).
    /// Two images of one platform are refused: a client could not choose between them.
    /// Returns the index document.
    pub fn add_platform_index(
        &self,
        name: &str,
        members: &[String],
        kind: IndexKind,
    ) -> Result<Document, Error> {
        let bad = |problem: String| Error::BadLayout { path: self.dir.clone(), problem };
        let mut manifests = Vec::new();
        for member in members {
            manifests
                .push(self.find(member)?.ok_or_else(|| bad(format!("it has no image named `{member}`")))?);
        }
        let doc = crate::model::platform_index(manifests, kind)?;
        self.add_document(&doc)?;
        let mut entry = doc.descriptor();
        entry.set_annotations(Some(std::collections::HashMap::from([
            (REF_NAME_ANNOTATION.to_owned(), name.to_owned()),
            (crate::CONTAINERD_NAME_ANNOTATION.to_owned(), name.to_owned()),
        ])));
        self.add_index_entry(entry)?;
        Ok(doc)
    }
}

/// The largest JSON document (index, manifest, config) a layout read accepts: real ones
/// are kilobytes; a bigger file is damage or an attack, not an image.
pub const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

/// Reading: every blob is checked against its descriptor (size and digest) before its
/// bytes are used, and blob names are never followed through symlinks.
impl OciLayout {
    /// The images of `index.json` with their names (`org.opencontainers.image.ref.name`,
    /// `None` for an unnamed entry), in index order.
    pub fn images(&self) -> Result<Vec<(Option<String>, Descriptor)>, Error> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .map(|d| (ref_name(d).map(str::to_owned), d.clone()))
            .collect())
    }

    /// A blob's bytes (at most [`MAX_DOCUMENT_SIZE`]), checked against `desc`.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        let digest = descriptor_digest(desc)?;
        let path = self.blob_path(&digest);
        if desc.size() > MAX_DOCUMENT_SIZE {
            return Err(Error::BadLayout {
                path: self.dir.clone(),
                problem: format!(
                    "the document {digest} is {} bytes, more than a document may be",
                    desc.size()
                ),
            });
        }
        let mut bytes = Vec::new();
        let mut blob = self.open_blob(desc)?;
        io::Read::read_to_end(&mut blob, &mut bytes).map_err(Error::io("cannot read the blob", &path))?;
        Ok(bytes)
    }

    /// A reader over a blob that fails (`InvalidData`) at its end unless the bytes had
    /// exactly `desc`'s size and digest; it never reads past that size.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifiedBlob, Error> {
        let digest = descriptor_digest(desc)?;
        let path = self.blob_path(&digest);
        let file = nix_layer_blob::open_no_follow(&path)
            .map_err(Error::io("cannot open the blob (symlinks are not followed)", &path))?;
        Ok(VerifiedBlob {
            // One byte more than declared, so a longer file is noticed.
            inner: Some(nix_layer_blob::HashingReader::new(io::Read::take(file, desc.size() + 1))),
            expected: (digest, desc.size()),
            path,
        })
    }

    /// Reads the whole blob and checks it against `desc`.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<(), Error> {
        let mut blob = self.open_blob(desc)?;
        let path = blob.path.clone();
        io::copy(&mut blob, &mut io::sink()).map_err(Error::io("cannot read the blob", &path))?;
        Ok(())
    }

    /// The image manifest `desc` points at (OCI or Docker schema 2), verified.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<ImageManifest, Error> {
        self.read_json(desc, "image manifest")
    }

    /// The image index `desc` points at (OCI index or Docker manifest list), verified.
    pub fn read_image_index(&self, desc: &Descriptor) -> Result<ImageIndex, Error> {
        self.read_json(desc, "image index")
    }

    /// An image config, verified, with its bytes as stored (their digest is the image's
    /// identity, so callers that copy it must keep them).
    pub fn read_config(&self, desc: &Descriptor) -> Result<(ImageConfiguration, Vec<u8>), Error> {
        let bytes = self.read_blob(desc)?;
        let config = serde_json::from_slice(&bytes).map_err(|e| Error::BadLayout {
            path: self.dir.clone(),
            problem: format!("the config {} is not an image config: {e}", desc.digest()),
        })?;
        Ok((config, bytes))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor, what: &str) -> Result<T, Error> {
        let bytes = self.read_blob(desc)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadLayout {
            path: self.dir.clone(),
            problem: format!("the {what} {} is not valid: {e}", desc.digest()),
        })
    }
}

fn descriptor_digest(desc: &Descriptor) -> Result<Digest, Error> {
    Ok(nix_layer_blob::blob_digest(desc.digest())?)
}

/// A blob being read from a layout; see [`OciLayout::open_blob`].
pub struct VerifiedBlob {
    /// `None` once the end was reached and checked.
    inner: Option<nix_layer_blob::HashingReader<io::Take<File>>>,
    expected: (Digest, u64),
    path: PathBuf,
}

impl VerifiedBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl io::Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else { return Ok(0) };
        let n = inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let (_, digest, size) = self.inner.take().expect("checked above").finish();
            if (digest, size) != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the blob {} holds {size} bytes of digest {digest}, not {} bytes of {}: the layout is damaged",
                        self.path.display(),
                        self.expected.1,
                        self.expected.0
                    ),
                ));
            }
        }
        Ok(n)
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME_ANNOTATION).map(String::as_str)
}

fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(nix_layer_scratch::final_mode(mode)))
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
        .filter_entry(|e| !e.file_name().as_bytes().starts_with(b"."));
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
    use nix_layer_blob::{write_blob, Compression};
    use std::io::Read;

    fn blob(dir: &Path, data: &[u8], c: Compression) -> LayerBlob {
        write_blob(dir, c, |w| w.write_all(data)).unwrap()
    }

    fn image(name: &str, layers: &[&LayerBlob], arch: &str) -> Image {
        crate::test_support::image(name, layers, arch, &[])
    }

    fn add(layout: &OciLayout, name: &str, layers: &[&LayerBlob]) -> Digest {
        let owned: Vec<LayerBlob> = layers.iter().map(|l| (*l).clone()).collect();
        layout.add_image(&image(name, layers, "amd64"), &owned).unwrap()
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
    fn creates_a_valid_empty_layout_readable_as_the_umask_allows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/layout");
        let layout = OciLayout::open_or_create(&root).unwrap();
        assert_eq!(fs::read_to_string(root.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
        assert!(layout.read_index().unwrap().manifests().is_empty());
        assert!(root.join("blobs/sha256").is_dir());
        let mask = nix_layer_scratch::umask();
        for f in ["oci-layout", "index.json"] {
            let mode = fs::metadata(root.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644 & !mask, "{f}");
        }
    }

    /// The typed reader: names, manifest and config as oci-spec types, every blob checked
    /// against its descriptor (bytes, length), nothing written by a read-only open.
    #[test]
    fn typed_reads_are_verified_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layer = blob(dir.path(), b"layer bytes", Compression::Gzip);
        let root = dir.path().join("layout");
        let manifest_digest = add(&OciLayout::open_or_create(&root).unwrap(), "app:1", &[&layer]);
        let before = blob_names(&OciLayout { dir: root.clone() });
        let layout = OciLayout::open_read(&root).unwrap();
        let images = layout.images().unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].0.as_deref(), Some("app:1"));
        assert_eq!(images[0].1.digest().to_string(), manifest_digest.to_string());
        let manifest = layout.read_manifest(&images[0].1).unwrap();
        let (config, bytes) = layout.read_config(manifest.config()).unwrap();
        assert_eq!(config.architecture().to_string(), "amd64");
        assert_eq!(Digest::of(&bytes).to_string(), manifest.config().digest().to_string());
        layout.verify_blob(&manifest.layers()[0]).unwrap();
        assert_eq!(blob_names(&layout), before, "a read writes nothing");

        let path_of = |d: &Descriptor| layout.blob_path(&d.digest().to_string().parse().unwrap());
        let tamper = |path: &Path, bytes: &[u8]| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(path, bytes).unwrap();
        };
        // Other bytes of the same length, then a longer file: both refused.
        let layer_path = path_of(&manifest.layers()[0]);
        let mut flipped = fs::read(&layer_path).unwrap();
        flipped[5] ^= 1;
        tamper(&layer_path, &flipped);
        let e = layout.verify_blob(&manifest.layers()[0]).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        let config_path = path_of(manifest.config());
        let mut longer = bytes.clone();
        longer.push(b' ');
        tamper(&config_path, &longer);
        assert!(layout.read_config(manifest.config()).is_err());
        // A missing marker: not a layout, and nothing created.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let e = OciLayout::open_read(&empty).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
        assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    }

    /// The case that used to lose an image: two names with the same tag.
    #[test]
    fn images_with_the_same_tag_keep_their_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        let shared = blob(dir.path(), b"shared layer", Compression::Gzip);
        let a_top = blob(dir.path(), b"top of a", Compression::Gzip);
        let b_top = blob(dir.path(), b"top of b", Compression::Zstd);
        let root = dir.path().join("layout");
        let a = add(&OciLayout::open_or_create(&root).unwrap(), "alpha:latest", &[&shared, &a_top]);
        // Reopened, as a second build would.
        let layout = OciLayout::open_or_create(&root).unwrap();
        let b = add(&layout, "registry.example:5000/beta:latest", &[&shared, &b_top]);
        assert_eq!(
            layout.refs().unwrap(),
            vec![("alpha:latest".to_owned(), a), ("registry.example:5000/beta:latest".to_owned(), b)]
        );
        // shared + 2 tops + 2 configs + 2 manifests, the shared layer once.
        assert_eq!(blob_names(&layout).len(), 7);
        // Same inode: hard-linked from the blob directory, not copied.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&layout.blob_path(&shared.digest)), ino(shared.path()));
        let index = layout.read_index().unwrap();
        let d = &index.manifests()[1];
        assert_eq!(
            d.annotations().as_ref().unwrap()["io.containerd.image.name"],
            "registry.example:5000/beta:latest"
        );
        assert_eq!(d.size(), fs::metadata(layout.blob_path(&b)).unwrap().len());
    }

    #[test]
    fn same_reference_replaces_the_older_entry() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = blob(dir.path(), b"v1", Compression::None);
        let l2 = blob(dir.path(), b"v2", Compression::None);
        let layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        add(&layout, "app:1", &[&l1]);
        add(&layout, "other:1", &[&l1]);
        let m2 = add(&layout, "app:1", &[&l2]);
        let refs = layout.refs().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1], ("app:1".to_owned(), m2));
    }

    #[test]
    fn add_image_checks_the_blobs_and_replaces_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let l = blob(dir.path(), b"layer", Compression::None);
        let other = blob(dir.path(), b"other", Compression::None);
        let layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
        let e = layout.add_image(&image("a:1", &[&l], "amd64"), std::slice::from_ref(&other)).unwrap_err();
        assert!(matches!(e, Error::ConfigLayersMismatch(_)), "{e}");
        // A damaged file under a blob's name is replaced by the verified blob.
        fs::write(layout.blob_path(&l.digest), b"garbage").unwrap();
        add(&layout, "a:1", &[&l]);
        assert_eq!(fs::read(layout.blob_path(&l.digest)).unwrap(), b"layer");
    }

    #[test]
    fn layout_bytes_are_deterministic_and_the_archive_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let l = blob(dir.path(), b"layer", Compression::Gzip);
        let mut archives = Vec::new();
        for name in ["x", "y"] {
            let layout = OciLayout::open_or_create(&dir.path().join(name)).unwrap();
            add(&layout, "t:1", &[&l]);
            // A stray temporary file is not part of the archive.
            fs::write(layout.blobs_dir().join(format!("{TMP_PREFIX}x")), b"partial").unwrap();
            archives.push(write_oci_archive(layout.dir(), Vec::new()).unwrap());
        }
        assert_eq!(archives[0], archives[1]);
        let mut archive = tar::Archive::new(&archives[0][..]);
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 1));
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                assert_eq!(Digest::of(&data).hex(), hex);
            }
            names.push(name);
        }
        assert_eq!(names.len(), 2 + 3 + 2, "{names:?}");
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
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
    fn ref_names_follow_the_oci_grammar() {
        for bad in ["", "a b", "-x", "x..y", "a//b"] {
            assert!(check_ref_name(bad).is_err(), "{bad:?}");
        }
        for good in ["latest", "v1.0", "ghcr.io/o/app:1", "a--b", "A_1", "localhost:5000/x/y:z"] {
            check_ref_name(good).unwrap();
        }
    }

    #[test]
    fn platform_images_combine_into_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let a = blob(dir.path(), b"amd64 layer", Compression::Gzip);
        let b = blob(dir.path(), b"arm64 layer", Compression::Gzip);
        let layout = OciLayout::open_or_create(&dir.path().join("L")).unwrap();
        layout.add_image(&image("app:1-amd64", &[&a], "amd64"), std::slice::from_ref(&a)).unwrap();
        layout.add_image(&image("app:1-arm64", &[&b], "arm64"), std::slice::from_ref(&b)).unwrap();
        let members = ["app:1-amd64".to_owned(), "app:1-arm64".to_owned()];
        for kind in [IndexKind::Oci, IndexKind::DockerManifestList] {
            let doc = layout.add_platform_index("app:1", &members, kind).unwrap();
            let index: ImageIndex = serde_json::from_slice(doc.bytes()).unwrap();
            let archs: Vec<String> = index
                .manifests()
                .iter()
                .map(|m| m.platform().as_ref().unwrap().architecture().to_string())
                .collect();
            assert_eq!(archs, ["amd64", "arm64"]);
            assert_eq!(index.media_type().as_ref().unwrap().to_string(), kind.media_type());
            let entry = layout.find("app:1").unwrap().unwrap();
            assert_eq!(entry.digest().to_string(), doc.digest().to_string());
            assert!(layout.blob_path(&doc.digest()).is_file());
        }
        // The per-platform entries stay; the index replaced its older self.
        assert_eq!(layout.refs().unwrap().len(), 3);
        let twice = ["app:1-amd64".to_owned(), "app:1-amd64".to_owned()];
        assert!(layout.add_platform_index("x:1", &twice, IndexKind::Oci).is_err());
        assert!(layout.add_platform_index("x:1", &["nope:1".to_owned()], IndexKind::Oci).is_err());
    }
}
