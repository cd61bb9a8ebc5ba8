//! Output formats, each written so that it appears whole or not at all (a stream is the
//! exception: its reader sees bytes as they are made, and a failure ends the build
//! non-zero).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix_layer_blob::{Compression, LayerBlob};
use nix_layer_image::{DockerArchiveWriter, Image, OciLayout, SlotArchive};
use nix_layer_scratch::ScratchDir;

use crate::layers::{Layers, Produced};
use crate::{io_err, Error};

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

/// A scratch directory for blobs, on the output's file system when there is one (so
/// finished files are renamed or hard-linked into place, not copied). Dropping it removes
/// everything a failed build wrote; so does a caught signal (SIGINT, SIGTERM, SIGHUP);
/// what a SIGKILL leaves is swept by the next build writing next to it.
pub(crate) struct Staging {
    dir: ScratchDir,
    blobs: PathBuf,
}

/// Name prefix of staging directories.
const STAGING_PREFIX: &str = ".nix-layer-";

impl Staging {
    pub fn new(output: &Output) -> Result<Self, Error> {
        let parent = match output {
            Output::Path(p) => parent_dir(p)?,
            Output::Stdout => std::env::temp_dir(),
        };
        nix_layer_scratch::sweep(&parent, STAGING_PREFIX);
        let dir = ScratchDir::new_in(&parent, STAGING_PREFIX)
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

/// Refuses outputs that cannot be written before any work is done.
pub(crate) fn check(format: OutputFormat, output: &Output) -> Result<(), Error> {
    match (format, output) {
        (OutputFormat::Oci, Output::Stdout) => Err(Error::Invalid(
            "an OCI layout is a directory and cannot go to stdout; give -o DIR or use --format oci-archive".into(),
        )),
        (OutputFormat::Oci, Output::Path(dir)) if dir.exists() && !dir.is_dir() => Err(Error::Invalid(format!(
            "{} is a file; an OCI layout is a directory (give a new or layout directory, or use --format oci-archive)",
            dir.display()
        ))),
        (_, Output::Path(p)) if format != OutputFormat::Oci && p.is_dir() => {
            Err(Error::Invalid(format!("{} is a directory; give a file name", p.display())))
        }
        _ => Ok(()),
    }
}

/// What an output writer returns: the layers in image order.
pub(crate) type Assemble<'a> = dyn Fn(&[&Produced]) -> Result<Image, Error> + 'a;

/// What both docker-archive writers begin with: the base and top layers as uncompressed
/// blobs and, with a layer cache, the store layers too (`None`: the writer produces them).
struct DockerLayers {
    base: Vec<Produced>,
    top: Produced,
    cached: Option<Vec<Produced>>,
}

fn docker_layers(layers: &Layers) -> Result<DockerLayers, Error> {
    let base = layers.base(true)?;
    let top = layers.top(Compression::None)?;
    let cached = match layers.req.cache {
        Some(_) => Some(layers.store_blobs(Compression::None)?),
        None => None,
    };
    Ok(DockerLayers { base, top, cached })
}

/// A docker-archive file, laid out from the layer sizes and filled in place: store layers
/// are written straight into their slots by the worker threads (or copied from the cache),
/// base and top layers copied from their verified blobs.
pub(crate) fn docker_archive_file(
    layers: &Layers,
    staging: &Staging,
    dest: &Path,
    assemble: &Assemble,
) -> Result<Image, Error> {
    let DockerLayers { base, top, cached } = docker_layers(layers)?;
    let store_lengths = match &cached {
        Some(store) => store.iter().map(|l| l.info.size).collect(),
        None => layers.store_lengths()?,
    };
    let sizes: Vec<u64> = base
        .iter()
        .map(|l| l.info.size)
        .chain(store_lengths.iter().copied())
        .chain([top.info.size])
        .collect();
    let tmp = staging.path().join("output");
    let archive = SlotArchive::create(&tmp, &sizes, layers.req.mtime.epoch)?;
    let copy = |slot: usize, l: &Produced| archive.copy_blob(slot, l.blob.as_ref().expect("a blob"));
    for (slot, l) in base.iter().enumerate() {
        copy(slot, l)?;
    }
    let first_store = base.len();
    let store = match cached {
        Some(store) => {
            for (i, l) in store.iter().enumerate() {
                copy(first_store + i, l)?;
            }
            store
        }
        None => layers.store_into_slots(&archive, first_store, &store_lengths)?,
    };
    copy(first_store + store.len(), &top)?;
    let image = assemble(&chain(&base, &store, &top))?;
    archive.finish(&image)?;
    fs::rename(&tmp, dest).map_err(io_err(format!("cannot move the image to {}", dest.display())))?;
    Ok(image)
}

/// A docker-archive as a stream. Store layers are produced in order by the worker
/// threads into bounded buffers while the writer sends them out, and hashed as they go:
/// members are named by position and their sizes follow from `lstat` (as for the file),
/// and the config and `manifest.json` that name the diff_ids come last. So the store is
/// read once, as for `-o FILE`. Without a cache nothing but the base and top layers
/// touches the disk.
///
/// `present(chain)` (`chain`: the diff_ids from the bottom up to a layer) says the engine
/// reading the stream already holds that layer chain; such layers, from the bottom up to
/// the first one it lacks, are listed in the manifest but their bytes are left out. To
/// learn a store layer's diff_id before its bytes would go out, it is hashed first: each
/// held layer once, and the first one not held a second time as it is sent.
pub(crate) fn docker_archive_stream(
    layers: &Layers,
    assemble: &Assemble,
    out: &mut dyn Write,
    present: Option<&crate::Present<'_>>,
) -> Result<Image, Error> {
    let DockerLayers { base, top, cached } = docker_layers(layers)?;
    let mut w = DockerArchiveWriter::new(BufWriter::with_capacity(1 << 20, out), layers.req.mtime.epoch);
    let (mut known, lengths): (Vec<Option<Produced>>, Vec<u64>) = match cached {
        Some(store) => {
            let lengths = store.iter().map(|l| l.info.size).collect();
            (store.into_iter().map(Some).collect(), lengths)
        }
        None => (layers.store_paths().iter().map(|_| None).collect(), layers.store_lengths()?),
    };
    let held = match present {
        Some(present) => held_layers(layers, &base, &mut known, &lengths, &top, present)?,
        None => 0,
    };
    let add = |w: &mut DockerArchiveWriter<_>, i: usize, l: &Produced| match i < held {
        false => w.add_blob(l.blob.as_ref().expect("a blob")),
        true => w.omit_layer(l.info.diff_id),
    };
    for (i, l) in base.iter().enumerate() {
        add(&mut w, i, l)?;
    }
    let first = base.len();
    let store = if known.iter().all(|l| l.as_ref().is_some_and(|l| l.blob.is_some())) {
        let store: Vec<Produced> = known.into_iter().flatten().collect();
        for (i, l) in store.iter().enumerate() {
            add(&mut w, first + i, l)?;
        }
        store
    } else {
        let wanted: Vec<bool> = (0..known.len()).map(|i| first + i >= held).collect();
        layers.stream_store(&wanted, &mut |i, reader| {
            let Some(reader) = reader else {
                let diff_id = known[i].as_ref().expect("a held layer was hashed").info.diff_id;
                return w.omit_layer(diff_id).map_err(Error::from);
            };
            let diff_id = w.add_layer(lengths[i], reader)?;
            if let Some(hashed) = known[i].as_ref().map(|l| l.info.diff_id).filter(|h| *h != diff_id) {
                return Err(Error::Image(nix_layer_image::Error::DigestMismatch {
                    what: format!("store layer {}", i + 1),
                    expected: hashed,
                    actual: diff_id,
                    hint: "it was hashed, then read again to be sent",
                }));
            }
            known[i] = Some(layers.store_unstored(i, diff_id, lengths[i]));
            Ok(())
        })?;
        known.into_iter().map(|l| l.expect("every store layer was described")).collect()
    };
    add(&mut w, first + store.len(), &top)?;
    let image = assemble(&chain(&base, &store, &top))?;
    let mut out = w.finish(&image)?;
    out.flush().map_err(io_err("cannot write the stream"))?;
    Ok(image)
}

/// How many layers, from the bottom, the stream's reader holds already. A store layer
/// without a blob is hashed here (and described in `store`) only when every layer below
/// it is held: past the first layer the reader lacks, every chain is new to it.
fn held_layers(
    layers: &Layers,
    base: &[Produced],
    store: &mut [Option<Produced>],
    lengths: &[u64],
    top: &Produced,
    present: &crate::Present<'_>,
) -> Result<usize, Error> {
    let mut chain = Vec::new();
    for l in base {
        chain.push(l.info.diff_id);
        if !present(&chain) {
            return Ok(chain.len() - 1);
        }
    }
    for (i, known) in store.iter_mut().enumerate() {
        let diff_id = match known {
            Some(l) => l.info.diff_id,
            None => {
                let (diff_id, size) = layers.store_digest(i)?;
                if size != lengths[i] {
                    let e = nix_layer_image::Error::LayerSize {
                        path: format!("store layer {}", i + 1).into(),
                        expected: lengths[i],
                        actual: size,
                    };
                    return Err(layers.changed(i, e.into()));
                }
                known.insert(layers.store_unstored(i, diff_id, size)).info.diff_id
            }
        };
        chain.push(diff_id);
        if !present(&chain) {
            return Ok(chain.len() - 1);
        }
    }
    chain.push(top.info.diff_id);
    Ok(chain.len() - usize::from(!present(&chain)))
}

fn chain<'a>(base: &'a [Produced], store: &'a [Produced], top: &'a Produced) -> Vec<&'a Produced> {
    base.iter().chain(store).chain([top]).collect()
}

/// Every layer as a verified blob, in image order, compressed as asked (base layers are
/// kept as they were stored).
pub(crate) fn all_blobs(layers: &Layers, compression: Compression) -> Result<Vec<Produced>, Error> {
    let base = layers.base(compression == Compression::None)?;
    let store = layers.store_blobs(compression)?;
    let top = layers.top(compression)?;
    Ok(base.into_iter().chain(store).chain([top]).collect())
}

fn blobs_of(produced: &[Produced]) -> Vec<LayerBlob> {
    produced.iter().map(|l| l.blob.clone().expect("a blob")).collect()
}

/// An OCI layout directory: a new one appears whole (built in the staging directory, then
/// renamed); an existing one gains the image (blobs first, `index.json` last, atomically).
pub(crate) fn oci_layout(
    layers: &Layers,
    staging: &Staging,
    dir: &Path,
    compression: Compression,
    assemble: &Assemble,
) -> Result<Image, Error> {
    let produced = all_blobs(layers, compression)?;
    let image = assemble(&produced.iter().collect::<Vec<_>>())?;
    let blobs = blobs_of(&produced);
    if dir.exists() {
        OciLayout::open_or_create(dir)?.add_image(&image, &blobs)?;
        return Ok(image);
    }
    let tmp = staging.path().join("layout");
    OciLayout::open_or_create(&tmp)?.add_image(&image, &blobs)?;
    match fs::rename(&tmp, dir) {
        Ok(()) => {}
        // Another build created the layout meanwhile: add to it instead.
        Err(_) if dir.is_dir() => {
            OciLayout::open_or_create(dir)?.add_image(&image, &blobs)?;
        }
        Err(e) => return Err(io_err(format!("cannot move the layout to {}", dir.display()))(e)),
    }
    Ok(image)
}

/// An OCI layout in one tar, to a file (renamed into place) or to stdout. The layout is
/// assembled in the staging directory first.
pub(crate) fn oci_archive(
    layers: &Layers,
    staging: &Staging,
    output: &crate::Output,
    compression: Compression,
    assemble: &Assemble,
) -> Result<Image, Error> {
    let produced = all_blobs(layers, compression)?;
    let image = assemble(&produced.iter().collect::<Vec<_>>())?;
    let tmp = staging.path().join("layout");
    OciLayout::open_or_create(&tmp)?.add_image(&image, &blobs_of(&produced))?;
    match output {
        Output::Stdout => {
            let stdout = io::stdout();
            let w = BufWriter::with_capacity(1 << 20, stdout.lock());
            let mut w = nix_layer_image::write_oci_archive(&tmp, w)?;
            w.flush().map_err(io_err("cannot write to stdout"))?;
        }
        Output::Path(dest) => {
            let file_path = staging.path().join("output");
            let file = fs::File::create(&file_path)
                .map_err(io_err(format!("cannot create {}", file_path.display())))?;
            let mut w = nix_layer_image::write_oci_archive(&tmp, BufWriter::with_capacity(1 << 20, file))?;
            w.flush().map_err(io_err(format!("cannot write {}", file_path.display())))?;
            drop(w);
            fs::rename(&file_path, dest)
                .map_err(io_err(format!("cannot move the image to {}", dest.display())))?;
        }
    }
    Ok(image)
}
