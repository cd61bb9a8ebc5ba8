use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_layer_blob::{open_no_follow, write_blob, write_stored_blob, HashingReader};
use nix_layer_scratch::ScratchFile;
use serde_json::Value;

use crate::{diff_ids_of, Compression, Digest, Error, LayerBlob, OciLayout};

/// What an OCI manifest says about a stored layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Reads up to `buf.len()` bytes, fewer only at end of file.
fn read_prefix(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where a base layer's stored bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobSource {
    /// A whole file (a blob of an OCI layout).
    File(PathBuf),
    /// `len` bytes at `offset` in an uncompressed tar archive (a docker-archive member).
    ArchiveMember { archive: PathBuf, offset: u64, len: u64 },
}

impl BlobSource {
    /// A reader over the stored bytes.
    pub fn open(&self) -> io::Result<Box<dyn Read>> {
        match self {
            // Not through a symlink: a layout's blob names must not lead elsewhere.
            BlobSource::File(path) => Ok(Box::new(open_no_follow(path)?)),
            BlobSource::ArchiveMember { archive, offset, len } => {
                let mut f = File::open(archive)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(f.take(*len)))
            }
        }
    }

    /// Length of the stored bytes.
    pub fn stored_len(&self) -> io::Result<u64> {
        match self {
            BlobSource::File(path) => Ok(fs::metadata(path)?.len()),
            BlobSource::ArchiveMember { len, .. } => Ok(*len),
        }
    }

    fn path(&self) -> &Path {
        match self {
            BlobSource::File(path) => path,
            BlobSource::ArchiveMember { archive, .. } => archive,
        }
    }
}

/// One layer of a base image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseLayer {
    /// From the base image config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// The stored blob's descriptor, when the source has one (OCI layouts; a
    /// docker-archive has none).
    pub descriptor: Option<LayerDescriptor>,
    /// How the stored bytes are compressed (from the media type, else the magic number).
    pub compression: Compression,
    pub source: BlobSource,
}

/// A base image (`--from-image`): its layers, bottom first, and its config.
#[derive(Debug)]
pub struct BaseImage {
    pub layers: Vec<BaseLayer>,
    /// The whole image config (`config.Env`, `rootfs`, `history`, …).
    pub config: Value,
    /// The config's bytes as stored (its digest is the image's identity).
    pub config_bytes: Vec<u8>,
    /// What was opened, for messages.
    origin: PathBuf,
    /// A docker-archive that was compressed as a whole is unpacked here; held only so the
    /// file lives (and is removed) with the image.
    _unpacked: Option<ScratchFile>,
}

/// Which image of a docker-archive to open.
#[derive(Clone, Copy)]
enum Pick<'a> {
    First,
    Only,
    Named(&'a str),
}

impl BaseImage {
    /// Opens a docker-archive (a `docker save` tar, possibly gzip- or zstd-compressed as a
    /// whole, as dockerTools' `buildImage` makes) or an OCI image layout directory (its
    /// first image).
    pub fn open(path: &Path) -> Result<BaseImage, Error> {
        if path.is_dir() {
            Self::open_oci_layout(path, None)
        } else {
            Self::open_docker_archive(path)
        }
    }

    /// The value of `config.Env`, for [`inherit_env`](crate::inherit_env).
    pub fn env(&self) -> Vec<String> {
        self.config
            .pointer("/config/Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The path the image was opened from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id).collect()
    }

    /// Opens a docker-archive; if it holds several images, the first.
    pub fn open_docker_archive(path: &Path) -> Result<BaseImage, Error> {
        Self::open_archive_image(path, Pick::First)
    }

    /// Opens the image of a docker-archive named `name` (one of its `RepoTags`), or its
    /// only image when `name` is `None`: an archive of several images is refused then,
    /// never read as its first.
    pub fn open_docker_archive_image(path: &Path, name: Option<&str>) -> Result<BaseImage, Error> {
        Self::open_archive_image(path, name.map_or(Pick::Only, Pick::Named))
    }

    fn open_archive_image(path: &Path, pick: Pick) -> Result<BaseImage, Error> {
        let bad = |problem: String| Error::BadBaseImage { path: path.to_owned(), problem };
        let mut file = File::open(path).map_err(Error::io("cannot open the base image", path))?;
        let mut magic = [0u8; 4];
        let n = read_prefix(&mut file, &mut magic).map_err(Error::io("cannot read the base image", path))?;
        let unpacked = match Compression::detect(&magic[..n]) {
            Compression::None => None,
            c => Some(unpack(path, c)?),
        };
        let archive_path = unpacked.as_ref().map_or(path, |t| t.path()).to_owned();
        let members =
            list_members(&archive_path).map_err(|e| bad(format!("not a readable tar archive: {e}")))?;
        let member = |name: &str| -> Result<BlobSource, Error> {
            let (offset, len) =
                resolve(&members, name).ok_or_else(|| bad(format!("it has no member `{name}`")))?;
            Ok(BlobSource::ArchiveMember { archive: archive_path.clone(), offset, len })
        };
        let read_member = |name: &str| -> Result<Vec<u8>, Error> {
            let mut bytes = Vec::new();
            member(name)?
                .open()
                .and_then(|mut r| r.read_to_end(&mut bytes))
                .map_err(Error::io("cannot read the base image", path))?;
            Ok(bytes)
        };

        if resolve(&members, "manifest.json").is_none() {
            return Err(bad(
                "it has no manifest.json, so it is not a docker-archive (for an OCI layout give its directory)"
                    .into(),
            ));
        }
        let manifest: Value = serde_json::from_slice(&read_member("manifest.json")?)
            .map_err(|e| bad(format!("manifest.json is not valid JSON: {e}")))?;
        let images = manifest.as_array().map(Vec::as_slice).unwrap_or_default();
        let tags = |i: &Value| -> Vec<String> {
            i["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        };
        let image = match pick {
            Pick::First => images.first(),
            Pick::Only if images.len() > 1 => {
                let names: Vec<String> = images.iter().flat_map(tags).collect();
                return Err(bad(format!(
                    "it holds {} images ({}); name one with --image",
                    images.len(),
                    names.join(", ")
                )));
            }
            Pick::Only => images.first(),
            Pick::Named(n) => {
                let latest = format!("{n}:latest");
                let found = images.iter().find(|i| tags(i).iter().any(|t| *t == n || *t == latest));
                Some(found.ok_or_else(|| bad(format!("it has no image named `{n}`")))?)
            }
        }
        .ok_or_else(|| bad("manifest.json lists no image".into()))?;
        let config_name =
            image["Config"].as_str().ok_or_else(|| bad("manifest.json has no Config entry".into()))?;
        let layer_names: Vec<&str> = image["Layers"]
            .as_array()
            .ok_or_else(|| bad("manifest.json has no Layers list".into()))?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| bad("manifest.json Layers holds a non-string".into())))
            .collect::<Result<_, _>>()?;
        let config_bytes = read_member(config_name)?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("the config `{config_name}` is not valid JSON: {e}")))?;
        let diff_ids = diff_ids_of(&config).map_err(bad)?;
        if diff_ids.len() != layer_names.len() {
            return Err(bad(format!(
                "the config lists {} diff_ids but the manifest {} layers",
                diff_ids.len(),
                layer_names.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.into_iter().zip(diff_ids) {
            let source = member(name)?;
            let mut prefix = [0u8; 4];
            let n = source
                .open()
                .and_then(|mut r| read_prefix(&mut r, &mut prefix))
                .map_err(Error::io("cannot read the base image", path))?;
            let compression = Compression::detect(&prefix[..n]);
            layers.push(BaseLayer { diff_id, descriptor: None, compression, source });
        }
        Ok(BaseImage { layers, config, config_bytes, origin: path.to_owned(), _unpacked: unpacked })
    }

    /// Opens an image of an OCI layout: the one whose `org.opencontainers.image.ref.name`
    /// is `ref_name`, or the first one. An index entry that is itself an index (a
    /// multi-platform image) is followed to its first Linux manifest.
    pub fn open_oci_layout(dir: &Path, ref_name: Option<&str>) -> Result<BaseImage, Error> {
        let bad = |problem: String| Error::BadBaseImage { path: dir.to_owned(), problem };
        // Typed and verified reads: every document is checked against its descriptor.
        let layout = OciLayout::open_read(dir)?;
        let images = layout.images()?;
        let mut desc = match ref_name {
            None => images.first().ok_or_else(|| bad("the layout holds no image".into()))?.1.clone(),
            Some(want) => images
                .iter()
                .find(|(name, _)| name.as_deref() == Some(want))
                .map(|(_, d)| d.clone())
                .ok_or_else(|| {
                    let names: Vec<&str> = images.iter().filter_map(|(n, _)| n.as_deref()).collect();
                    bad(format!("it has no image named `{want}`; it has: {}", names.join(", ")))
                })?,
        };
        if is_index_type(desc.media_type().as_ref()) {
            let nested = layout.read_image_index(&desc)?;
            let list = nested.manifests();
            desc = list
                .iter()
                .find(|m| m.platform().as_ref().is_some_and(|p| p.os().to_string() == "linux"))
                .or(list.first())
                .cloned()
                .ok_or_else(|| bad("its image index lists no manifest".into()))?;
        }
        let manifest = layout.read_manifest(&desc)?;
        let config_bytes = layout.read_blob(manifest.config())?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("the config is not valid JSON: {e}")))?;
        let diff_ids = diff_ids_of(&config).map_err(bad)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(bad(format!(
                "the config lists {} diff_ids but the manifest {} layers",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        let mut layers = Vec::new();
        for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let media_type = d.media_type().to_string();
            let compression = Compression::from_layer_media_type(&media_type)
                .ok_or_else(|| bad(format!("layer media type `{media_type}` is not a tar layer")))?;
            let digest: Digest = d.digest().to_string().parse()?;
            let size = d.size();
            let path = layout.blob_path(&digest);
            let meta = fs::symlink_metadata(&path).map_err(Error::io("cannot find the layer blob", &path))?;
            if !meta.is_file() {
                return Err(bad(format!(
                    "layer blob {digest} is not a regular file (a symlink is not followed)"
                )));
            }
            let actual = meta.len();
            if actual != size {
                return Err(bad(format!("layer blob {digest} has {actual} bytes, the manifest says {size}")));
            }
            layers.push(BaseLayer {
                diff_id,
                descriptor: Some(LayerDescriptor { media_type, digest, size }),
                compression,
                source: BlobSource::File(path),
            });
        }
        Ok(BaseImage { layers, config, config_bytes, origin: dir.to_owned(), _unpacked: None })
    }

    fn layer(&self, i: usize) -> Result<&BaseLayer, Error> {
        self.layers.get(i).ok_or_else(|| Error::BadBaseImage {
            path: self.origin.clone(),
            problem: format!("it has {} layers; there is no layer {i}", self.layers.len()),
        })
    }

    /// Reader over layer `i`'s uncompressed tar.
    pub fn open_layer(&self, i: usize) -> Result<Box<dyn Read + '_>, Error> {
        let layer = self.layer(i)?;
        let path = layer.source.path();
        let stored = layer.source.open().map_err(Error::io("cannot read the base layer in", path))?;
        layer.compression.decoder(stored).map_err(Error::io("cannot decompress the base layer in", path))
    }

    /// Layer `i` copied into `dir` as a verified blob for our own writers: uncompressed if
    /// `uncompressed` (as a docker-archive needs), else as stored. Both the stored bytes
    /// (against the manifest's digest, when the source has one) and the uncompressed tar
    /// (against the config's diff_id) are checked on the way in; nothing is linked, so the
    /// output never shares an inode with the base image.
    pub fn materialize_layer(&self, i: usize, dir: &Path, uncompressed: bool) -> Result<LayerBlob, Error> {
        let layer = self.layer(i)?;
        let path = layer.source.path();
        let read_err = Error::io("cannot read the base layer in", path);
        let mut stored = layer.source.open().map_err(read_err)?;
        let (blob, stored_digest) = if uncompressed && layer.compression != Compression::None {
            // Decompressed into the blob; the stored bytes are hashed on the way through.
            let mut hashed = HashingReader::new(stored);
            let blob = {
                let mut reader = layer
                    .compression
                    .decoder(&mut hashed)
                    .map_err(Error::io("cannot decompress the base layer in", path))?;
                write_blob(dir, Compression::None, |w| io::copy(&mut reader, w).map(drop))?
            };
            io::copy(&mut hashed, &mut io::sink())
                .map_err(Error::io("cannot read the base layer in", path))?;
            let (_, digest, size) = hashed.finish();
            (blob, (digest, size))
        } else {
            let blob = write_stored_blob(dir, layer.compression, &mut stored)?;
            let stored = (blob.digest, blob.size);
            (blob, stored)
        };
        if let Some(d) = &layer.descriptor {
            if stored_digest != (d.digest, d.size) {
                return Err(Error::DigestMismatch {
                    what: format!("the stored base layer in `{}`", path.display()),
                    expected: d.digest,
                    actual: stored_digest.0,
                    hint: "the base image is damaged or its manifest lies; export it again",
                });
            }
        }
        check_diff_id(layer, blob.diff_id)?;
        Ok(blob)
    }

    /// Calls `f(name, size)` for every entry of layer `i` (names as stored, e.g.
    /// `nix/store/…` or `./etc/passwd`) and returns the layer's uncompressed length.
    pub fn for_each_entry(&self, i: usize, f: &mut dyn FnMut(&str, u64)) -> Result<u64, Error> {
        let layer = self.layer(i)?;
        let path = layer.source.path();
        let io_err = Error::io("cannot read the base layer in", path);
        let mut counted = HashingReader::new(self.open_layer(i)?);
        let listed: io::Result<()> = (|| {
            for entry in tar::Archive::new(&mut counted).entries()? {
                let entry = entry?;
                f(&entry.path()?.to_string_lossy(), entry.size());
            }
            Ok(())
        })();
        listed.map_err(Error::io("cannot read the base layer in", path))?;
        // The tar reader stops at the end-of-archive blocks; count the padding after them.
        io::copy(&mut counted, &mut io::sink()).map_err(io_err)?;
        Ok(counted.bytes_read())
    }
}

fn check_diff_id(layer: &BaseLayer, actual: Digest) -> Result<(), Error> {
    if actual == layer.diff_id {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: format!("the uncompressed base layer in `{}`", layer.source.path().display()),
            expected: layer.diff_id,
            actual,
            hint: "the base image is damaged or its config lies; export it again",
        })
    }
}

fn is_index_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// Decompresses a whole-archive-compressed base image to a temporary file.
/// It lives in `$TMPDIR` while the image is open, and goes with the process on a signal.
fn unpack(path: &Path, compression: Compression) -> Result<ScratchFile, Error> {
    let tmp = ScratchFile::new_in(&std::env::temp_dir(), "nix-layer-base-")
        .map_err(Error::io("cannot create a temporary file to unpack", path))?;
    let src = File::open(path).map_err(Error::io("cannot open the base image", path))?;
    let mut decoder =
        compression.decoder(io::BufReader::new(src)).map_err(Error::io("cannot decompress", path))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, tmp.file());
    io::copy(&mut decoder, &mut out).map_err(Error::io("cannot decompress", path))?;
    out.flush().map_err(Error::io("cannot unpack", path))?;
    drop(out);
    Ok(tmp)
}

enum Member {
    Data {
        offset: u64,
        len: u64,
    },
    /// A symlink (target relative to the member's directory) or hard link (target from
    /// the archive root), stored as the resolved archive name.
    Link(String),
}

/// Names (without `./`, without trailing `/`) of the archive's files and links.
fn list_members(archive: &Path) -> io::Result<HashMap<String, Member>> {
    let mut a = tar::Archive::new(File::open(archive)?);
    let mut members = HashMap::new();
    for entry in a.entries_with_seek()? {
        let entry = entry?;
        let name = normalize(&entry.path()?.to_string_lossy());
        let kind = entry.header().entry_type();
        let member = if kind.is_file() || kind.is_contiguous() {
            Member::Data { offset: entry.raw_file_position(), len: entry.size() }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name()?.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            let resolved = if kind.is_symlink() && !target.starts_with('/') {
                let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
                join_relative(parent, &target)
            } else {
                normalize(&target)
            };
            Member::Link(resolved)
        } else {
            continue;
        };
        members.insert(name, member);
    }
    Ok(members)
}

fn normalize(name: &str) -> String {
    join_relative("", name)
}

/// `parent/target` with `.` and `..` resolved, no leading or trailing `/`.
fn join_relative(parent: &str, target: &str) -> String {
    let mut parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Follows links (at most 16) to a data member: (offset, len).
fn resolve(members: &HashMap<String, Member>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalize(name);
    for _ in 0..16 {
        match members.get(&name)? {
            Member::Data { offset, len } => return Some((*offset, *len)),
            Member::Link(target) => name = target.clone(),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::image;
    use crate::{DockerArchiveWriter, Image, OciLayout};
    use nix_layer_tar::{EntryKind, Header, TarWriter};

    /// A real layer tar with the given files.
    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut t = TarWriter::new(Vec::new());
        for (name, data) in files {
            let h = Header {
                name: name.as_bytes().to_vec(),
                kind: EntryKind::Regular { size: data.len() as u64 },
                mode: 0o644,
                uid: 0,
                gid: 0,
                uname: "root".into(),
                gname: "root".into(),
                mtime: 1,
            };
            t.append_bytes(&h, data).unwrap();
        }
        t.finish().unwrap()
    }

    /// A docker-archive of `image` with `layers` as its bytes.
    fn docker_archive_bytes(image: &Image, layers: &[&LayerBlob]) -> Vec<u8> {
        let mut w = DockerArchiveWriter::new(Vec::new(), 1);
        for l in layers {
            w.add_blob(l).unwrap();
        }
        w.finish(image).unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        tars: Vec<Vec<u8>>,
    }

    fn fixture() -> Fixture {
        let tars = vec![
            layer_tar(&[("etc/os-release", b"ID=test\n"), ("bin/sh", &[7u8; 5000])]),
            layer_tar(&[("nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x/file", b"x")]),
        ];
        Fixture { dir: tempfile::tempdir().unwrap(), tars }
    }

    impl Fixture {
        fn diff_ids(&self) -> Vec<Digest> {
            self.tars.iter().map(|t| Digest::of(t)).collect()
        }

        fn blobs(&self, compression: Compression) -> Vec<LayerBlob> {
            let blobs = self.dir.path().join("blobs");
            fs::create_dir_all(&blobs).unwrap();
            self.tars.iter().map(|t| write_blob(&blobs, compression, |w| w.write_all(t)).unwrap()).collect()
        }

        fn docker_archive(&self, name: &str) -> PathBuf {
            let layers = self.blobs(Compression::None);
            let refs: Vec<&LayerBlob> = layers.iter().collect();
            let out = docker_archive_bytes(&image("base:1", &refs, "amd64", &["PATH=/bin", "LANG=C"]), &refs);
            let path = self.dir.path().join(format!("{name}.tar"));
            fs::write(&path, out).unwrap();
            path
        }

        fn oci_layout(&self, compression: Compression) -> PathBuf {
            let layers = self.blobs(compression);
            let refs: Vec<&LayerBlob> = layers.iter().collect();
            let root = self.dir.path().join(format!("oci-{compression}"));
            let layout = OciLayout::open_or_create(&root).unwrap();
            layout.add_image(&image("base:1", &refs, "amd64", &["PATH=/bin"]), &layers).unwrap();
            root
        }
    }

    fn uncompressed(base: &BaseImage, i: usize) -> Vec<u8> {
        let mut v = Vec::new();
        base.open_layer(i).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn reads_a_docker_archive() {
        let f = fixture();
        let base = BaseImage::open(&f.docker_archive("plain")).unwrap();
        assert_eq!(base.diff_ids(), f.diff_ids());
        assert_eq!(base.env(), ["PATH=/bin", "LANG=C"]);
        for (i, l) in base.layers.iter().enumerate() {
            assert_eq!(l.compression, Compression::None);
            assert!(l.descriptor.is_none());
            assert_eq!(uncompressed(&base, i), f.tars[i]);
        }
    }

    #[test]
    fn reads_a_compressed_docker_archive_and_compressed_members() {
        let f = fixture();
        let plain = fs::read(f.docker_archive("plain")).unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let path = f.dir.path().join(format!("whole.{c}"));
            fs::write(&path, nix_layer_blob::compress_bytes(c, &plain).unwrap()).unwrap();
            let base = BaseImage::open(&path).unwrap();
            assert_eq!(base.diff_ids(), f.diff_ids(), "{c}");
            assert_eq!(uncompressed(&base, 1), f.tars[1]);
        }

        // Layers gzip-compressed inside the archive (as some tools save them), with
        // the manifest pointing through a symlink.
        let mut t = TarWriter::new(Vec::new());
        let gz: Vec<Vec<u8>> =
            f.tars.iter().map(|t| nix_layer_blob::compress_bytes(Compression::Gzip, t).unwrap()).collect();
        let cfg = image("x:1", &f.blobs(Compression::None).iter().collect::<Vec<_>>(), "amd64", &[])
            .config()
            .bytes()
            .to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "config.json", "RepoTags": [], "Layers": ["l0/layer.tar", "./l1/layer.tar"]
        }]))
        .unwrap();
        let file = |name: &str, len: usize| Header {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::Regular { size: len as u64 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
        };
        t.append_bytes(&file("l0/layer.tar", gz[0].len()), &gz[0]).unwrap();
        t.append_bytes(&file("common/layer.tar", gz[1].len()), &gz[1]).unwrap();
        let mut link = file("l1/layer.tar", 0);
        link.kind = EntryKind::Symlink { target: b"../common/layer.tar".to_vec() };
        t.append_bytes(&link, &[]).unwrap();
        t.append_bytes(&file("config.json", cfg.len()), &cfg).unwrap();
        t.append_bytes(&file("manifest.json", manifest.len()), &manifest).unwrap();
        let path = f.dir.path().join("gz-members.tar");
        fs::write(&path, t.finish().unwrap()).unwrap();

        let base = BaseImage::open(&path).unwrap();
        assert_eq!(base.layers[1].compression, Compression::Gzip);
        assert_eq!(uncompressed(&base, 0), f.tars[0]);
        assert_eq!(uncompressed(&base, 1), f.tars[1]);
    }

    #[test]
    fn reads_an_oci_layout() {
        let f = fixture();
        for c in Compression::ALL {
            let root = f.oci_layout(c);
            let base = BaseImage::open(&root).unwrap();
            assert_eq!(base.diff_ids(), f.diff_ids());
            assert_eq!(base.env(), ["PATH=/bin"]);
            for (i, l) in base.layers.iter().enumerate() {
                assert_eq!(l.compression, c);
                assert_eq!(l.descriptor.as_ref().unwrap().media_type, c.layer_media_type());
                assert_eq!(uncompressed(&base, i), f.tars[i]);
            }
            assert!(BaseImage::open_oci_layout(&root, Some("base:1")).is_ok());
            let e = BaseImage::open_oci_layout(&root, Some("nope")).unwrap_err().to_string();
            assert!(e.contains("no image named `nope`; it has: base:1"), "{e}");
        }
    }

    #[test]
    fn materialize_copies_and_verifies() {
        let f = fixture();
        let scratch = f.dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let oci_root = f.oci_layout(Compression::Gzip);
        let oci = BaseImage::open(&oci_root).unwrap();
        let docker = BaseImage::open(&f.docker_archive("plain")).unwrap();
        for base in [&oci, &docker] {
            for i in 0..2 {
                let raw = base.materialize_layer(i, &scratch, true).unwrap();
                assert_eq!((raw.diff_id, raw.compression), (f.diff_ids()[i], Compression::None));
                assert_eq!(fs::read(raw.path()).unwrap(), f.tars[i]);
                let kept = base.materialize_layer(i, &scratch, false).unwrap();
                assert_eq!(kept.diff_id, f.diff_ids()[i]);
                assert_eq!(kept.uncompressed_size, f.tars[i].len() as u64);
                assert_eq!(kept.compression, base.layers[i].compression);
                assert_eq!(Digest::of(&fs::read(kept.path()).unwrap()), kept.digest);
            }
        }
        // Copied, never the base's own inode.
        use std::os::unix::fs::MetadataExt;
        let kept = oci.materialize_layer(0, &scratch, false).unwrap();
        let BlobSource::File(src) = &oci.layers[0].source else { panic!("an OCI blob") };
        assert_ne!(fs::metadata(kept.path()).unwrap().ino(), fs::metadata(src).unwrap().ino());

        // A stored blob whose bytes do not match its digest is refused, even when it
        // decompresses to the right layer (a recompressed blob, say).
        let d = oci.layers[1].descriptor.clone().unwrap();
        let other = nix_layer_blob::compress_bytes(Compression::Gzip, &f.tars[1]).unwrap();
        let mut recompressed = other.clone();
        recompressed[9] ^= 0xff; // the gzip OS byte: same contents, other bytes
        assert_eq!(recompressed.len() as u64, d.size);
        let path = oci_root.join("blobs/sha256").join(d.digest.hex());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, &recompressed).unwrap();
        for uncompressed in [false, true] {
            let e = oci.materialize_layer(1, &scratch, uncompressed).unwrap_err();
            assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
            assert!(e.to_string().contains("stored base layer"), "{e}");
        }
        // A blob name that is a symlink is not followed.
        fs::remove_file(&path).unwrap();
        let elsewhere = f.dir.path().join("elsewhere");
        fs::write(&elsewhere, &other).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(oci.materialize_layer(1, &scratch, false).is_err());
    }

    #[test]
    fn lists_layer_entries() {
        let f = fixture();
        let base = BaseImage::open(&f.oci_layout(Compression::Zstd)).unwrap();
        let mut seen = Vec::new();
        let len = base.for_each_entry(0, &mut |name, size| seen.push((name.to_owned(), size))).unwrap();
        assert_eq!(seen, [("etc/os-release".to_owned(), 8), ("bin/sh".to_owned(), 5000)]);
        assert_eq!(len, f.tars[0].len() as u64);
    }

    #[test]
    fn detects_a_lying_config() {
        let f = fixture();
        let root = f.oci_layout(Compression::Gzip);
        let mut base = BaseImage::open(&root).unwrap();
        base.layers[0].diff_id = Digest::of(b"not this");
        let scratch = tempfile::tempdir().unwrap();
        let e = base.materialize_layer(0, scratch.path(), true).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(base.materialize_layer(0, scratch.path(), false).is_err());
    }

    #[test]
    fn explains_what_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let e = BaseImage::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
        let junk = dir.path().join("junk");
        fs::write(&junk, b"hello").unwrap();
        let e = BaseImage::open(&junk).unwrap_err().to_string();
        assert!(e.contains("cannot read base image") && e.contains("junk"), "{e}");
        let tar_without_manifest = dir.path().join("t.tar");
        fs::write(&tar_without_manifest, layer_tar(&[("a", b"b")])).unwrap();
        let e = BaseImage::open(&tar_without_manifest).unwrap_err().to_string();
        assert!(e.contains("no manifest.json"), "{e}");
        let e = BaseImage::open(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn link_resolution() {
        assert_eq!(join_relative("a/b", "../c/./d"), "a/c/d");
        assert_eq!(normalize("./x/y/"), "x/y");
        let mut m = HashMap::new();
        m.insert("a".to_owned(), Member::Link("b".into()));
        m.insert("b".to_owned(), Member::Data { offset: 512, len: 3 });
        m.insert("loop".to_owned(), Member::Link("loop".into()));
        assert_eq!(resolve(&m, "./a"), Some((512, 3)));
        assert_eq!(resolve(&m, "loop"), None);
        assert_eq!(resolve(&m, "missing"), None);
    }
}
