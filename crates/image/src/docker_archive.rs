use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

use nix_layer_tar::{EntryKind, Header, TarWriter};
use serde_json::json;

use crate::{config_diff_ids, Compression, Digest, Error, ImageRef};

/// An uncompressed layer tar on disk, as a docker-archive holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveLayer {
    pub diff_id: Digest,
    /// Length of the uncompressed tar.
    pub size: u64,
    pub path: PathBuf,
}

/// Writes a docker-archive (the `docker save` / `docker load` format) one layer at a time:
/// `<diff_id hex>/layer.tar` for each layer, then `<config sha256>.json`, then
/// `manifest.json`. Every entry is mode 0644, owner 0:0, with the given mtime, so the
/// archive's bytes depend only on its contents.
///
/// A layer that appears twice is stored once and listed twice in `manifest.json`.
pub struct DockerArchiveWriter<W: Write> {
    tar: TarWriter<W>,
    mtime: u64,
    layers: Vec<Digest>,
    stored: HashSet<Digest>,
}

const FORMAT: &str = "docker-archive";

fn tar_err(cause: nix_layer_tar::Error) -> Error {
    Error::Tar { format: FORMAT, cause }
}

fn file_header(name: String, size: u64, mtime: u64) -> Header {
    Header {
        name: name.into_bytes(),
        kind: EntryKind::Regular { size },
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime,
    }
}

impl<W: Write> DockerArchiveWriter<W> {
    pub fn new(out: W, mtime: u64) -> Self {
        DockerArchiveWriter { tar: TarWriter::new(out), mtime, layers: Vec::new(), stored: HashSet::new() }
    }

    /// Appends a layer: exactly `size` bytes of uncompressed tar read from `data`. `data`
    /// is not read if a layer with this `diff_id` was already added.
    pub fn add_layer(&mut self, diff_id: Digest, size: u64, data: &mut dyn Read) -> Result<(), Error> {
        self.layers.push(diff_id);
        if !self.stored.insert(diff_id) {
            return Ok(());
        }
        self.tar.append(&layer_header(&diff_id, size, self.mtime), data).map_err(tar_err)
    }

    /// Appends a layer from its file, after checking that the file has the declared size
    /// and is not compressed (Docker would reject the archive later, with a vaguer error).
    pub fn add_layer_file(&mut self, layer: &ArchiveLayer) -> Result<(), Error> {
        if self.stored.contains(&layer.diff_id) {
            self.layers.push(layer.diff_id);
            return Ok(());
        }
        let path = &layer.path;
        let mut file = File::open(path).map_err(Error::io("cannot open the layer file", path))?;
        let actual = file.metadata().map_err(Error::io("cannot stat the layer file", path))?.len();
        if actual != layer.size {
            return Err(Error::LayerSize { path: path.clone(), expected: layer.size, actual });
        }
        let mut magic = [0u8; 4];
        let n = read_prefix(&mut file, &mut magic).map_err(Error::io("cannot read the layer file", path))?;
        let compression = Compression::detect(&magic[..n]);
        if compression != Compression::None {
            return Err(Error::CompressedLayer { path: path.clone(), compression });
        }
        file.rewind().map_err(Error::io("cannot read the layer file", path))?;
        self.add_layer(layer.diff_id, layer.size, &mut file)
    }

    /// Writes the config and `manifest.json`, ends the archive and returns the output.
    /// `config_json` must list the added layers' diff_ids in order; each repo tag must be
    /// a valid `name:tag`.
    pub fn finish(mut self, config_json: &[u8], repo_tags: &[String]) -> Result<W, Error> {
        for (header, data) in tail_members(&self.layers, config_json, repo_tags, self.mtime)? {
            self.tar.append_bytes(&header, &data).map_err(tar_err)?;
        }
        self.tar.finish().map_err(tar_err)
    }
}

fn layer_header(diff_id: &Digest, size: u64, mtime: u64) -> Header {
    file_header(format!("{}/layer.tar", diff_id.hex()), size, mtime)
}

/// The members after the layers: `<config sha256>.json` and `manifest.json`, after
/// checking that the config lists `layers` and that every tag is a valid `name:tag`.
fn tail_members(
    layers: &[Digest],
    config_json: &[u8],
    repo_tags: &[String],
    mtime: u64,
) -> Result<[(Header, Vec<u8>); 2], Error> {
    let diff_ids = config_diff_ids(config_json)?;
    if diff_ids != layers {
        return Err(Error::ConfigLayersMismatch(format!(
            "the config lists {} diff_ids but the archive has {} layers (or they differ in order or content); \
             build the config from the same layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    for tag in repo_tags {
        if ImageRef::split(tag)?.1.is_none() {
            return Err(Error::BadReference {
                input: tag.clone(),
                problem: "a docker-archive's RepoTags need a tag (`name:tag`)".into(),
            });
        }
    }
    let config_name = format!("{}.json", Digest::of(config_json).hex());
    let layer_names: Vec<String> = layers.iter().map(|d| format!("{}/layer.tar", d.hex())).collect();
    let manifest = json!([{ "Config": config_name, "RepoTags": repo_tags, "Layers": layer_names }]);
    let manifest = serde_json::to_vec(&manifest).expect("a JSON value serialises");
    Ok([
        (file_header(config_name, config_json.len() as u64, mtime), config_json.to_vec()),
        (file_header("manifest.json".into(), manifest.len() as u64, mtime), manifest),
    ])
}

/// Bytes that layer member `<diff_id>/layer.tar` of `size` bytes takes in a docker-archive:
/// its header and its data padded to 512 bytes. With `size` 0, the header's length.
///
/// With [`docker_archive_layer_header`] and [`docker_archive_tail`], this lets a writer
/// place layer data at known offsets itself (several layers at once, straight into one
/// file) and still produce exactly the bytes [`DockerArchiveWriter`] writes. Assumes an
/// mtime below 8^11 s (year 4147), as every header is then the same length.
pub fn docker_archive_member_len(size: u64) -> u64 {
    nix_layer_tar::header_len(&layer_header(&Digest::from_bytes([0; 32]), size, 0))
}

/// The header blocks of layer member `<diff_id>/layer.tar` of `size` bytes; its data
/// follows, padded with zeros to a multiple of 512 bytes.
pub fn docker_archive_layer_header(diff_id: &Digest, size: u64, mtime: u64) -> Vec<u8> {
    nix_layer_tar::encode_header(&layer_header(diff_id, size, mtime))
}

/// Everything after the layer members: the config, `manifest.json` and the end of the
/// archive. `offset` is where the tail starts (the layer members' total length), which
/// decides the final padding. Checks the same things as [`DockerArchiveWriter::finish`].
pub fn docker_archive_tail(
    diff_ids: &[Digest],
    config_json: &[u8],
    repo_tags: &[String],
    mtime: u64,
    offset: u64,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for (header, data) in tail_members(diff_ids, config_json, repo_tags, mtime)? {
        out.extend(nix_layer_tar::encode_header(&header));
        out.extend(&data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    let end = nix_layer_tar::archive_len(offset + out.len() as u64);
    out.resize((end - offset) as usize, 0);
    Ok(out)
}

/// Reads up to `buf.len()` bytes, fewer only at end of file.
pub(crate) fn read_prefix(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// Writes a whole docker-archive: `layers` (uncompressed tars, bottom first), the config,
/// and a manifest naming `repo_tags` (`name:tag` each). Every entry gets `mtime`.
/// Each layer file is read once, straight into the output.
pub fn write_docker_archive<W: Write>(
    out: W,
    layers: &[ArchiveLayer],
    config_json: &[u8],
    repo_tags: &[String],
    mtime: u64,
) -> Result<W, Error> {
    let mut w = DockerArchiveWriter::new(out, mtime);
    for layer in layers {
        w.add_layer_file(layer)?;
    }
    w.finish(config_json, repo_tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{image_config_json, ConfigSpec, ImageConfigInput};
    use std::path::Path;

    fn layer_file(dir: &Path, name: &str, contents: &[u8]) -> ArchiveLayer {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        ArchiveLayer { diff_id: Digest::of(contents), size: contents.len() as u64, path }
    }

    fn config_for(layers: &[&ArchiveLayer]) -> Vec<u8> {
        image_config_json(&ImageConfigInput {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ConfigSpec { Cmd: Some(vec!["/bin/sh".into()]), ..Default::default() },
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
            history: vec![],
        })
    }

    /// Entries of a tar archive: name → (mode, uid, gid, mtime, contents), in order.
    fn read_back(archive: &[u8]) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap(), data)
            })
            .collect()
    }

    #[test]
    fn archive_has_layers_config_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        // Stand-ins for layer tars: docker-archive treats them as opaque bytes.
        let a = layer_file(dir.path(), "a", &vec![b'a'; 3000]);
        let b = layer_file(dir.path(), "b", b"second layer");
        let config = config_for(&[&a, &b, &a]);
        let tags = vec!["example.com:5000/app:1".to_owned(), "app:latest".to_owned()];
        let out =
            write_docker_archive(Vec::new(), &[a.clone(), b.clone(), a.clone()], &config, &tags, 1).unwrap();
        assert_eq!(out.len() % 10240, 0, "padded to whole records");

        let entries = read_back(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let (la, lb) = (format!("{}/layer.tar", a.diff_id.hex()), format!("{}/layer.tar", b.diff_id.hex()));
        assert_eq!(names, [la.as_str(), lb.as_str(), config_name.as_str(), "manifest.json"]);
        for (name, mode, uid, gid, mtime, _) in &entries {
            assert_eq!((*mode, *uid, *gid, *mtime), (0o644, 0, 0, 1), "{name}");
        }
        assert_eq!(entries[0].5, vec![b'a'; 3000]);
        assert_eq!(entries[1].5, b"second layer");
        assert_eq!(entries[2].5, config);
        let manifest: serde_json::Value = serde_json::from_slice(&entries[3].5).unwrap();
        assert_eq!(
            manifest,
            json!([{ "Config": config_name, "RepoTags": tags, "Layers": [la.clone(), lb, la] }])
        );
    }

    #[test]
    fn assembled_by_parts_equals_the_writer_output() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes around block boundaries, and a repeated layer.
        let a = layer_file(dir.path(), "a", &vec![1u8; 512]);
        let b = layer_file(dir.path(), "b", &vec![2u8; 10_241]);
        let c = layer_file(dir.path(), "c", b"");
        let layers = [a.clone(), b.clone(), c.clone(), a.clone()];
        let config = config_for(&[&a, &b, &c, &a]);
        let tags = ["app:1".to_owned()];
        let whole = write_docker_archive(Vec::new(), &layers, &config, &tags, 5).unwrap();

        let mut parts = Vec::new();
        for l in &layers[..3] {
            let data = std::fs::read(&l.path).unwrap();
            let start = parts.len() as u64;
            parts.extend(docker_archive_layer_header(&l.diff_id, l.size, 5));
            assert_eq!(parts.len() as u64 - start, docker_archive_member_len(0));
            parts.extend(&data);
            parts.resize(parts.len().next_multiple_of(512), 0);
            assert_eq!(parts.len() as u64 - start, docker_archive_member_len(l.size));
        }
        let ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let tail = docker_archive_tail(&ids, &config, &tags, 5, parts.len() as u64).unwrap();
        parts.extend(tail);
        assert_eq!(parts, whole);
        assert!(docker_archive_tail(&ids[..2], &config, &tags, 5, 0).is_err());
    }

    #[test]
    fn archive_bytes_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = layer_file(dir.path(), "a", b"layer");
        let config = config_for(&[&a]);
        let tags = ["app:1".to_owned()];
        let x = write_docker_archive(Vec::new(), std::slice::from_ref(&a), &config, &tags, 7).unwrap();
        let y = write_docker_archive(Vec::new(), &[a], &config, &tags, 7).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn rejects_compressed_or_resized_layers() {
        let dir = tempfile::tempdir().unwrap();
        let gz = nix_layer_blob::compress_bytes(Compression::Gzip, b"tar bytes").unwrap();
        let a = layer_file(dir.path(), "a.gz", &gz);
        let config = config_for(&[&a]);
        let err = write_docker_archive(Vec::new(), &[a], &config, &["app:1".into()], 1).unwrap_err();
        assert!(matches!(err, Error::CompressedLayer { compression: Compression::Gzip, .. }), "{err}");
        assert!(err.to_string().contains("compression `none`"), "{err}");

        let mut b = layer_file(dir.path(), "b", b"12345");
        b.size = 4;
        let config = config_for(&[&b]);
        let err = write_docker_archive(Vec::new(), &[b], &config, &["app:1".into()], 1).unwrap_err();
        assert!(matches!(err, Error::LayerSize { expected: 4, actual: 5, .. }), "{err}");
    }

    #[test]
    fn rejects_config_that_does_not_match_layers() {
        let dir = tempfile::tempdir().unwrap();
        let a = layer_file(dir.path(), "a", b"one");
        let b = layer_file(dir.path(), "b", b"two");
        let config = config_for(&[&b, &a]);
        let err = write_docker_archive(Vec::new(), &[a, b], &config, &["app:1".into()], 1).unwrap_err();
        assert!(matches!(err, Error::ConfigLayersMismatch(_)), "{err}");
    }

    #[test]
    fn rejects_tags_without_tag_or_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let a = layer_file(dir.path(), "a", b"one");
        let config = config_for(&[&a]);
        for bad in ["app", "App:1", "app@sha256:00"] {
            let err = write_docker_archive(Vec::new(), std::slice::from_ref(&a), &config, &[bad.into()], 1)
                .unwrap_err();
            assert!(matches!(err, Error::BadReference { .. }), "{bad}: {err}");
        }
        // No tags at all is allowed: `docker load` then loads an untagged image.
        write_docker_archive(Vec::new(), &[a], &config, &[], 1).unwrap();
    }

    #[test]
    fn streaming_writer_takes_readers() {
        let data = b"streamed layer".to_vec();
        let diff_id = Digest::of(&data);
        let config = image_config_json(&ImageConfigInput {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: "arm64".into(),
            os: "linux".into(),
            config: ConfigSpec::default(),
            diff_ids: vec![diff_id],
            history: vec![],
        });
        let mut w = DockerArchiveWriter::new(Vec::new(), 0);
        w.add_layer(diff_id, data.len() as u64, &mut &data[..]).unwrap();
        let out = w.finish(&config, &["x:y".into()]).unwrap();
        let entries = read_back(&out);
        assert_eq!(entries[0].5, data);

        // A reader that ends early is an error, not a short archive.
        let mut w = DockerArchiveWriter::new(Vec::new(), 0);
        let err = w.add_layer(diff_id, 100, &mut &data[..]).unwrap_err();
        assert!(err.to_string().contains("docker-archive"), "{err}");
    }
}
