//! The docker-archive format (`docker save` / `docker load`): `<n>/layer.tar` for layer
//! `n` (from 1, bottom first), then `<config sha256>.json`, then `manifest.json`. Every
//! entry is mode 0644, owner 0:0, with the given mtime, so the archive's bytes depend only
//! on its contents.
//!
//! Layers are named by position, not by diff_id (as `docker save` once did): a layer's
//! member can then go out before its bytes are hashed, and a stream reads each layer once.
//! Loaders find layers through `manifest.json`, which comes last, so no name is assumed.
//!
//! Two writers make the same bytes: [`DockerArchiveWriter`] appends layers in order to any
//! stream (stdout); [`SlotArchive`] lays the archive out from the layer sizes and lets
//! threads fill each layer's slot of one file at once.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix_layer_blob::{HashingReader, HashingWriter};
use nix_layer_tar::{EntryKind, Header, TarWriter};
use serde_json::json;

use crate::{Compression, Digest, Error, Image, LayerBlob};

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

/// The member name of layer `index` (0-based).
fn layer_name(index: usize) -> String {
    format!("{}/layer.tar", index + 1)
}

fn layer_header(index: usize, size: u64, mtime: u64) -> Header {
    file_header(layer_name(index), size, mtime)
}

/// Bytes layer member `index` of `size` bytes takes: its header blocks (PAX records
/// included, which a large mtime or size needs) and its data padded to 512 bytes.
fn member_len(index: usize, size: u64, mtime: u64) -> u64 {
    nix_layer_tar::header_len(&layer_header(index, size, mtime))
}

/// Refuses a layer that is compressed: a docker-archive holds uncompressed tars, and
/// Docker would reject the archive later with a vaguer error.
fn check_uncompressed(blob: &LayerBlob) -> Result<(), Error> {
    if blob.compression != Compression::None {
        return Err(Error::CompressedLayer { path: blob.path().to_owned(), compression: blob.compression });
    }
    Ok(())
}

/// The members after the layers: `<config sha256>.json` and `manifest.json`, naming the
/// image by its reference.
fn tail_members(image: &Image, mtime: u64) -> [(Header, Vec<u8>); 2] {
    let config = image.config();
    let config_name = format!("{}.json", config.digest().hex());
    let layer_names: Vec<String> = (0..image.layers().len()).map(layer_name).collect();
    let manifest = json!([{ "Config": config_name, "RepoTags": [image.reference().to_string()], "Layers": layer_names }]);
    let manifest = serde_json::to_vec(&manifest).expect("a JSON value serialises");
    [
        (file_header(config_name, config.len(), mtime), config.bytes().to_vec()),
        (file_header("manifest.json".into(), manifest.len() as u64, mtime), manifest),
    ]
}

/// Checks that an image's layers are what the archive holds, in order.
fn check_layers(image: &Image, written: &[Digest]) -> Result<(), Error> {
    if image.diff_ids() != written {
        return Err(Error::ConfigLayersMismatch(format!(
            "the image lists {} layers but the archive has {} (or they differ in order or content)",
            image.layers().len(),
            written.len()
        )));
    }
    if let Some(l) = image.layers().iter().find(|l| l.compression != Compression::None) {
        return Err(Error::ConfigLayersMismatch(format!(
            "layer {} is {}-compressed; a docker-archive image must describe uncompressed layers",
            l.digest, l.compression
        )));
    }
    Ok(())
}

/// Writes a docker-archive one layer at a time, in order, to any stream.
pub struct DockerArchiveWriter<W: Write> {
    tar: TarWriter<W>,
    mtime: u64,
    layers: Vec<Digest>,
}

impl<W: Write> DockerArchiveWriter<W> {
    pub fn new(out: W, mtime: u64) -> Self {
        DockerArchiveWriter { tar: TarWriter::new(out), mtime, layers: Vec::new() }
    }

    /// Appends a layer: exactly `size` bytes of uncompressed tar read from `data` (which
    /// must then end), and returns their diff_id. The bytes are out before the hash is
    /// known, so no layer needs a pass of its own to be named.
    pub fn add_layer(&mut self, size: u64, data: &mut dyn Read) -> Result<Digest, Error> {
        let index = self.layers.len();
        let mut hashed = HashingReader::new(data);
        let appended = self.tar.append(&layer_header(index, size, self.mtime), &mut hashed);
        let wrong_size = |actual| Error::LayerSize { path: layer_name(index).into(), expected: size, actual };
        match appended {
            Ok(()) => {}
            Err(nix_layer_tar::Error::ShortRead { got, .. }) => return Err(wrong_size(got)),
            Err(e) => return Err(tar_err(e)),
        }
        let (data, diff_id, _) = hashed.finish();
        // More bytes than declared: the layer grew after it was measured.
        let extra =
            io::copy(data, &mut io::sink()).map_err(Error::io("cannot read", layer_name(index).as_ref()))?;
        if extra > 0 {
            return Err(wrong_size(size + extra));
        }
        self.layers.push(diff_id);
        Ok(diff_id)
    }

    /// Lists a layer in the manifest without its bytes, for a reader that already holds it
    /// (`docker load` takes a layer whose chain it has from its own store).
    pub fn omit_layer(&mut self, diff_id: Digest) -> Result<(), Error> {
        self.layers.push(diff_id);
        Ok(())
    }

    /// Appends a verified uncompressed layer blob.
    pub fn add_blob(&mut self, blob: &LayerBlob) -> Result<(), Error> {
        check_uncompressed(blob)?;
        let actual = self.add_layer(blob.uncompressed_size, &mut blob.reader())?;
        if actual != blob.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {} of the docker-archive", self.layers.len()),
                expected: blob.diff_id,
                actual,
                hint: "its blob changed after it was verified; is something modifying it?",
            });
        }
        Ok(())
    }

    /// Writes the config and `manifest.json` of `image`, whose layers must be the ones
    /// added, ends the archive and returns the output.
    pub fn finish(mut self, image: &Image) -> Result<W, Error> {
        check_layers(image, &self.layers)?;
        for (header, data) in tail_members(image, self.mtime) {
            self.tar.append_bytes(&header, &data).map_err(tar_err)?;
        }
        self.tar.finish().map_err(tar_err)
    }
}

/// A docker-archive file laid out before any layer exists: every member's offset follows
/// from the layer sizes (which `lstat` gives for store layers), so threads write their
/// layers straight into their slots (`pwrite`). The store is read once and the archive
/// written once; the bytes are the same as [`DockerArchiveWriter`]'s.
pub struct SlotArchive {
    file: File,
    path: PathBuf,
    mtime: u64,
    /// Offset of each layer member's header, and its declared size.
    slots: Vec<(u64, u64)>,
    /// The diff_id each slot received.
    written: Mutex<Vec<Option<Digest>>>,
    /// Where the members after the layers (config, manifest) begin.
    end: u64,
}

impl SlotArchive {
    /// Creates `path` (which must not exist) sized for layers of `sizes` bytes.
    pub fn create(path: &Path, sizes: &[u64], mtime: u64) -> Result<Self, Error> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(Error::io("cannot create", path))?;
        let mut slots = Vec::with_capacity(sizes.len());
        let mut pos = 0;
        for (index, &size) in sizes.iter().enumerate() {
            slots.push((pos, size));
            pos += member_len(index, size, mtime);
        }
        // Sized up front: slots are filled out of order.
        file.set_len(pos).map_err(Error::io("cannot size", path))?;
        let written = Mutex::new(vec![None; sizes.len()]);
        Ok(SlotArchive { file, path: path.to_owned(), mtime, slots, written, end: pos })
    }

    fn slot(&self, index: usize) -> (u64, u64) {
        self.slots[index]
    }

    /// The header blocks' length: the member's length less its padded data.
    fn header_len(&self, index: usize, size: u64) -> u64 {
        member_len(index, size, self.mtime) - size.next_multiple_of(512)
    }

    /// Fills slot `index` with what `produce` writes, which must be exactly the declared
    /// size; returns the layer's diff_id.
    pub fn write_layer(
        &self,
        index: usize,
        produce: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Digest, Error> {
        let (offset, expected) = self.slot(index);
        let start = offset + self.header_len(index, expected);
        let mut w = HashingWriter::new(PositionedWriter { file: &self.file, pos: start });
        produce(&mut w).map_err(Error::io("cannot write a layer into", &self.path))?;
        let (_, diff_id, size) = w.finish();
        if size != expected {
            return Err(Error::LayerSize { path: self.path.clone(), expected, actual: size });
        }
        self.seal(index, diff_id, size)?;
        Ok(diff_id)
    }

    /// Fills slot `index` with a verified uncompressed layer blob.
    pub fn copy_blob(&self, index: usize, blob: &LayerBlob) -> Result<(), Error> {
        check_uncompressed(blob)?;
        let diff_id = self.write_layer(index, &mut |w| io::copy(&mut blob.reader(), w).map(drop))?;
        debug_assert_eq!(diff_id, blob.diff_id);
        Ok(())
    }

    fn seal(&self, index: usize, diff_id: Digest, size: u64) -> Result<(), Error> {
        let header = nix_layer_tar::encode_header(&layer_header(index, size, self.mtime));
        self.file.write_all_at(&header, self.slot(index).0).map_err(Error::io("cannot write", &self.path))?;
        self.written.lock().expect("no thread panics holding it")[index] = Some(diff_id);
        Ok(())
    }

    /// Writes the config, manifest and end of the archive; every slot must be filled with
    /// `image`'s layers, in order. The file is complete (not synced, not renamed).
    pub fn finish(self, image: &Image) -> Result<(), Error> {
        let written = self.written.into_inner().expect("no thread panics holding it");
        let filled: Option<Vec<Digest>> = written.into_iter().collect();
        let filled =
            filled.ok_or_else(|| Error::ConfigLayersMismatch("a layer slot was never written".into()))?;
        check_layers(image, &filled)?;
        let mut tail = Vec::new();
        for (header, data) in tail_members(image, self.mtime) {
            tail.extend(nix_layer_tar::encode_header(&header));
            tail.extend(&data);
            tail.resize(tail.len().next_multiple_of(512), 0);
        }
        let end = nix_layer_tar::archive_len(self.end + tail.len() as u64);
        tail.resize((end - self.end) as usize, 0);
        self.file.write_all_at(&tail, self.end).map_err(Error::io("cannot write", &self.path))?;
        self.file.set_len(end).map_err(Error::io("cannot write", &self.path))
    }
}

/// A `Write` at a moving offset of a shared file (`pwrite`), so threads can fill disjoint
/// regions of one file. (Shared mappings avoid the inode lock that concurrent `pwrite`s
/// take, but measured slower here: page faults on ext4 cost more than the lock.)
struct PositionedWriter<'a> {
    file: &'a File,
    pos: u64,
}

impl Write for PositionedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix_layer_blob::write_blob;

    fn blob(dir: &Path, contents: &[u8]) -> LayerBlob {
        write_blob(dir, Compression::None, |w| w.write_all(contents)).unwrap()
    }

    fn image(layers: &[&LayerBlob]) -> Image {
        crate::test_support::image("example.com:5000/app:1", layers, "amd64", &[])
    }

    fn stream(layers: &[&LayerBlob], mtime: u64) -> Vec<u8> {
        let mut w = DockerArchiveWriter::new(Vec::new(), mtime);
        for l in layers {
            w.add_blob(l).unwrap();
        }
        w.finish(&image(layers)).unwrap()
    }

    fn slots(dir: &Path, layers: &[&LayerBlob], mtime: u64, name: &str) -> Vec<u8> {
        let path = dir.join(name);
        let sizes: Vec<u64> = layers.iter().map(|l| l.uncompressed_size).collect();
        let archive = SlotArchive::create(&path, &sizes, mtime).unwrap();
        // Out of order, as threads fill them.
        for i in (0..layers.len()).rev() {
            archive.copy_blob(i, layers[i]).unwrap();
        }
        archive.finish(&image(layers)).unwrap();
        std::fs::read(&path).unwrap()
    }

    /// Entries of a tar archive: (name, mode, uid, gid, mtime, contents), in order.
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
                // A time past the classic field is in the PAX record, as Go's reader takes it.
                let pax_mtime = e.pax_extensions().unwrap().and_then(|mut exts| {
                    exts.find_map(|x| {
                        x.ok().filter(|x| x.key() == Ok("mtime")).map(|x| x.value().unwrap().parse().unwrap())
                    })
                });
                let mtime = pax_mtime.unwrap_or_else(|| h.mtime().unwrap());
                (name, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), mtime, data)
            })
            .collect()
    }

    #[test]
    fn archive_has_layers_config_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let a = blob(dir.path(), &vec![b'a'; 3000]);
        let b = blob(dir.path(), b"second layer");
        let out = stream(&[&a, &b], 1);
        assert_eq!(out.len() % 10240, 0, "padded to whole records");
        let img = image(&[&a, &b]);
        let entries = read_back(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let config_name = format!("{}.json", img.config().digest().hex());
        let (la, lb) = ("1/layer.tar".to_owned(), "2/layer.tar".to_owned());
        assert_eq!(names, [la.as_str(), lb.as_str(), config_name.as_str(), "manifest.json"]);
        for (name, mode, uid, gid, mtime, _) in &entries {
            assert_eq!((*mode, *uid, *gid, *mtime), (0o644, 0, 0, 1), "{name}");
        }
        assert_eq!(entries[0].5, vec![b'a'; 3000]);
        assert_eq!(entries[2].5, img.config().bytes());
        let manifest: serde_json::Value = serde_json::from_slice(&entries[3].5).unwrap();
        assert_eq!(
            manifest,
            json!([{ "Config": config_name, "RepoTags": ["example.com:5000/app:1"], "Layers": [la, lb] }])
        );
    }

    /// The two writers give the same bytes, for sizes around block boundaries, a repeated
    /// layer, and an mtime past the classic header field (PAX records shift every offset).
    #[test]
    fn slot_archive_equals_the_stream_writer() {
        let dir = tempfile::tempdir().unwrap();
        let a = blob(dir.path(), &vec![1u8; 512]);
        let b = blob(dir.path(), &vec![2u8; 10_241]);
        let c = blob(dir.path(), b"");
        let layers = [&a, &b, &c, &a];
        for (i, mtime) in [0u64, 5, 8u64.pow(11) - 1, 8u64.pow(11), 253402300799].into_iter().enumerate() {
            let streamed = stream(&layers, mtime);
            let slotted = slots(dir.path(), &layers, mtime, &format!("slots{i}"));
            let first_difference = streamed.iter().zip(&slotted).position(|(a, b)| a != b);
            assert!(
                streamed.len() == slotted.len() && first_difference.is_none(),
                "mtime {mtime}: lengths {} and {}, first difference at {first_difference:?}",
                streamed.len(),
                slotted.len()
            );
            let entries = read_back(&streamed);
            assert!(entries.iter().all(|e| e.4 == mtime), "mtime {mtime} reads back");
        }
    }

    #[test]
    fn archive_bytes_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = blob(dir.path(), b"layer");
        assert_eq!(stream(&[&a], 7), stream(&[&a], 7));
    }

    #[test]
    fn refuses_compressed_layers_and_wrong_contents() {
        let dir = tempfile::tempdir().unwrap();
        let gz = write_blob(dir.path(), Compression::Gzip, |w| w.write_all(b"tar bytes")).unwrap();
        let mut w = DockerArchiveWriter::new(Vec::new(), 1);
        let err = w.add_blob(&gz).unwrap_err();
        assert!(matches!(err, Error::CompressedLayer { compression: Compression::Gzip, .. }), "{err}");

        let mut w = DockerArchiveWriter::new(Vec::new(), 1);
        assert_eq!(w.add_layer(5, &mut &b"12345"[..]).unwrap(), Digest::of(b"12345"));

        // A reader that ends early, or goes on past the declared size (a layer that
        // changed after it was measured), is an error, not a wrong archive.
        let mut w = DockerArchiveWriter::new(Vec::new(), 0);
        let err = w.add_layer(100, &mut &b"x"[..]).unwrap_err();
        assert!(matches!(err, Error::LayerSize { expected: 100, actual: 1, .. }), "{err}");
        let mut w = DockerArchiveWriter::new(Vec::new(), 0);
        let err = w.add_layer(3, &mut &b"12345"[..]).unwrap_err();
        assert!(matches!(err, Error::LayerSize { expected: 3, actual: 5, .. }), "{err}");
    }

    #[test]
    fn finish_checks_the_image_against_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let a = blob(dir.path(), b"one");
        let b = blob(dir.path(), b"two");
        let mut w = DockerArchiveWriter::new(Vec::new(), 1);
        w.add_blob(&a).unwrap();
        w.add_blob(&b).unwrap();
        let err = w.finish(&image(&[&b, &a])).unwrap_err();
        assert!(matches!(err, Error::ConfigLayersMismatch(_)), "{err}");

        let path = dir.path().join("slots");
        let archive = SlotArchive::create(&path, &[3, 3], 1).unwrap();
        archive.copy_blob(0, &a).unwrap();
        let err = archive.finish(&image(&[&a, &b])).unwrap_err();
        assert!(err.to_string().contains("never written"), "{err}");
        let archive = SlotArchive::create(&dir.path().join("short"), &[2], 1).unwrap();
        let err = archive.copy_blob(0, &a).unwrap_err();
        assert!(matches!(err, Error::LayerSize { expected: 2, actual: 3, .. }), "{err}");
    }
}
