//! Output formats, written so that they appear whole or not at all.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::os::unix::fs::FileExt;

use nix_layer_blob::{Digest, HashingWriter, LayerBlob};
use nix_layer_image::{ArchiveLayer, OciLayout};
use nix_layer_store::StorePath;
use tempfile::TempDir;

use crate::layers::{LayerSink, Produced};
use crate::{io_err, BuildRequest, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    DockerArchive,
    Oci,
    OciArchive,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker-archive" => Ok(OutputFormat::DockerArchive),
            "oci" => Ok(OutputFormat::Oci),
            "oci-archive" => Ok(OutputFormat::OciArchive),
            _ => Err(format!("unknown format `{s}`; use docker-archive, oci or oci-archive")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Path(PathBuf),
    Stdout,
}

/// A scratch directory for blobs, on the output's file system when there is
/// one (so finished files are renamed or hard-linked into place, not copied).
/// Dropping it removes everything a failed build wrote.
pub(crate) struct Staging {
    dir: TempDir,
    blobs: PathBuf,
}

impl Staging {
    pub fn new(output: &Output) -> Result<Self, Error> {
        let parent = match output {
            Output::Path(p) => parent_dir(p)?,
            Output::Stdout => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix(".nix-layer-")
            .tempdir_in(&parent)
            .map_err(io_err(format!("cannot create a staging directory in {}", parent.display())))?;
        let blobs = dir.path().join("blobs");
        fs::create_dir(&blobs).map_err(io_err(format!("cannot create {}", blobs.display())))?;
        Ok(Staging { dir, blobs })
    }

    pub fn blob_dir(&self) -> &Path {
        &self.blobs
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn parent_dir(p: &Path) -> Result<PathBuf, Error> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::Invalid(format!(
            "cannot write {}: directory {} does not exist",
            p.display(),
            parent.display()
        )));
    }
    Ok(parent)
}

pub(crate) fn write(
    req: &BuildRequest,
    staging: &Staging,
    layers: &[&LayerBlob],
    config_json: &[u8],
    image: &str,
    tag: &str,
    mtime: u64,
) -> Result<(), Error> {
    match (req.format, &req.output) {
        (OutputFormat::DockerArchive, out) => {
            let archive: Vec<ArchiveLayer> = layers
                .iter()
                .map(|b| ArchiveLayer { diff_id: b.diff_id, size: b.uncompressed_size, path: b.path.clone() })
                .collect();
            let tags = [image.to_owned()];
            write_file_or_stdout(out, staging, |w| {
                nix_layer_image::write_docker_archive(w, &archive, config_json, &tags, mtime)?;
                Ok(())
            })
        }
        (OutputFormat::Oci, Output::Stdout) => Err(Error::Invalid(
            "an OCI layout is a directory and cannot go to stdout; give -o DIR or use --format oci-archive"
                .into(),
        )),
        (OutputFormat::Oci, Output::Path(dir)) => {
            if dir.exists() && !dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "{} is a file; an OCI layout is a directory (give a new or layout directory, or use --format oci-archive)",
                    dir.display()
                )));
            }
            if dir.exists() {
                // Adding to an existing layout: blobs are content-addressed, so
                // only index.json changes, and it is replaced atomically.
                add_to_layout(dir, layers, config_json, image, tag)
            } else {
                let tmp = staging.path().join("layout");
                add_to_layout(&tmp, layers, config_json, image, tag)?;
                match fs::rename(&tmp, dir) {
                    Ok(()) => Ok(()),
                    // Another build created the layout meanwhile: add to it instead.
                    Err(_) if dir.is_dir() => add_to_layout(dir, layers, config_json, image, tag),
                    Err(e) => Err(io_err(format!("cannot move the layout to {}", dir.display()))(e)),
                }
            }
        }
        (OutputFormat::OciArchive, out) => {
            let tmp = staging.path().join("layout");
            add_to_layout(&tmp, layers, config_json, image, tag)?;
            write_file_or_stdout(out, staging, |w| {
                nix_layer_image::write_oci_archive(&tmp, w)?;
                Ok(())
            })
        }
    }
}

fn add_to_layout(
    dir: &Path,
    layers: &[&LayerBlob],
    config_json: &[u8],
    image: &str,
    tag: &str,
) -> Result<(), Error> {
    let mut layout = OciLayout::open_or_create(dir)?;
    let owned: Vec<LayerBlob> = layers.iter().map(|b| (*b).clone()).collect();
    for b in &owned {
        layout.add_blob_from_file(&b.path, &b.digest)?;
    }
    let annotations = BTreeMap::from([("io.containerd.image.name".to_owned(), image.to_owned())]);
    layout.add_image(&owned, config_json, tag, annotations)?;
    Ok(())
}

/// Writes through a temporary file renamed into place, or straight to stdout.
fn write_file_or_stdout(
    out: &Output,
    staging: &Staging,
    write: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<(), Error> {
    match out {
        Output::Stdout => {
            let stdout = io::stdout();
            let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
            write(&mut w)?;
            w.flush().map_err(io_err("cannot write to stdout"))
        }
        Output::Path(p) => {
            if p.is_dir() {
                return Err(Error::Invalid(format!("{} is a directory; give a file name", p.display())));
            }
            let tmp = staging.path().join("output");
            let file = fs::File::create(&tmp).map_err(io_err(format!("cannot create {}", tmp.display())))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            write(&mut w)?;
            w.flush().map_err(io_err(format!("cannot write {}", tmp.display())))?;
            drop(w);
            fs::rename(&tmp, p).map_err(io_err(format!("cannot move the image to {}", p.display())))
        }
    }
}

/// A docker-archive written in place: every member's offset follows from the
/// layer sizes, which `lstat` alone gives for store layers, so worker threads
/// write their layers straight into their slots of the output file. Store
/// bytes are read once and the archive is written once, with no staging copy;
/// the bytes are the same as [`nix_layer_image::write_docker_archive`]'s.
pub(crate) struct DirectArchive {
    file: fs::File,
    path: PathBuf,
    /// Offset of each store layer's member header, and its expected size.
    store_slots: Vec<(u64, u64)>,
    /// Where the members after the layers (config, manifest) begin.
    end: u64,
    mtime: u64,
}

impl DirectArchive {
    /// Lays out the archive and writes the base and top layers, whose blobs
    /// already exist, into their slots.
    pub fn create(
        staging: &Staging,
        base: &[Produced],
        store_sizes: &[u64],
        top: &Produced,
        mtime: u64,
    ) -> Result<Self, Error> {
        let path = staging.path().join("output");
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("cannot create {}", path.display())))?;
        let member = |size: u64| nix_layer_image::docker_archive_member_len(size);
        let mut pos = 0;
        let mut archive = DirectArchive { file, path, store_slots: Vec::new(), end: 0, mtime };
        for layer in base {
            archive.copy_blob_at(pos, layer)?;
            pos += member(layer.size);
        }
        for &size in store_sizes {
            archive.store_slots.push((pos, size));
            pos += member(size);
        }
        archive.copy_blob_at(pos, top)?;
        pos += member(top.size);
        archive.end = pos;
        // Sized up front: slots are filled out of order.
        archive.file.set_len(pos).map_err(io_err(format!("cannot size {}", archive.path.display())))?;
        Ok(archive)
    }

    fn copy_blob_at(&self, offset: u64, layer: &Produced) -> Result<(), Error> {
        let blob = layer.blob.as_ref().expect("base and top layers are blobs");
        let mut src =
            fs::File::open(&blob.path).map_err(io_err(format!("cannot read {}", blob.path.display())))?;
        let mut w = PositionedWriter { file: &self.file, pos: offset + self.header_len() };
        io::copy(&mut src, &mut w).map_err(io_err(format!("cannot write {}", self.path.display())))?;
        self.write_header(offset, &layer.diff_id, layer.size)
    }

    fn header_len(&self) -> u64 {
        nix_layer_image::docker_archive_member_len(0)
    }

    fn write_header(&self, offset: u64, diff_id: &Digest, size: u64) -> Result<(), Error> {
        let header = nix_layer_image::docker_archive_layer_header(diff_id, size, self.mtime);
        self.file
            .write_all_at(&header, offset)
            .map_err(io_err(format!("cannot write {}", self.path.display())))
    }

    /// Writes the config, manifest and end of the archive, then moves it into place.
    pub fn finish(
        self,
        layers: &[Produced],
        config_json: &[u8],
        tags: &[String],
        dest: &Path,
    ) -> Result<(), Error> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let tail = nix_layer_image::docker_archive_tail(&diff_ids, config_json, tags, self.mtime, self.end)?;
        self.file
            .write_all_at(&tail, self.end)
            .map_err(io_err(format!("cannot write {}", self.path.display())))?;
        self.file
            .set_len(self.end + tail.len() as u64)
            .map_err(io_err(format!("cannot write {}", self.path.display())))?;
        drop(self.file);
        fs::rename(&self.path, dest).map_err(io_err(format!("cannot move the image to {}", dest.display())))
    }
}

impl LayerSink for DirectArchive {
    fn write(
        &self,
        index: usize,
        paths: &[StorePath],
        produce: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Digest, u64, Option<LayerBlob>, bool), Error> {
        let (offset, expected) = self.store_slots[index];
        let start = offset + self.header_len();
        let mut w = HashingWriter::new(PositionedWriter { file: &self.file, pos: start });
        produce(&mut w).map_err(io_err(format!("cannot write store layer {}", index + 1)))?;
        let (_, diff_id, size) = w.finish();
        if size != expected {
            let first = paths.first().map(|p| p.to_string()).unwrap_or_default();
            return Err(Error::Invalid(format!(
                "store layer {} (from {first}) changed while it was written: expected {expected} bytes, wrote {size}; \
                 is something modifying the store?",
                index + 1
            )));
        }
        self.write_header(offset, &diff_id, size)?;
        Ok((diff_id, size, None, false))
    }
}

/// A `Write` at a moving offset of a shared file (`pwrite`), so threads can
/// fill disjoint regions of one file. (Shared mappings avoid the inode lock
/// that concurrent `pwrite`s take, but measured slower here: page faults on
/// ext4 cost more than the lock.)
struct PositionedWriter<'a> {
    file: &'a fs::File,
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
