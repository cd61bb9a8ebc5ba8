//! An image built straight from its closure and pushed: layers the verified registry
//! layer index vouches for are not compressed here, the rest are produced (through the
//! local layer cache if there is one) and sent if the registry lacks them.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::Result;
use nix_layer_blob::{BlobInfo, Compression};
use nix_layer_pipeline::{ImageRequest, LocalDiffId};
use nix_layer_registry::{descriptor_of, BlobSource, BytesBlob, CachedLayer, Client, ImageUpload, Reference};
use nix_layer_sign::provenance::{self, Builder, FlakeInput, Provenance, StorePathDependency};
use nix_layer_sign::Signer;
use oci_spec::image::Descriptor;

use crate::layer_index::VerifiedIndex;
use crate::record::{BlobInfoRecord, Proven, Tar};
use crate::upload::{Mounts, Verified};
use crate::{save_record, PushOutcome};

/// Entries the registry's layer index keeps (the oldest writes go first).
pub const CACHE_INDEX_ENTRIES: usize = 4096;

/// Where and how a built image goes.
pub struct BuildPush<'a> {
    pub destination: &'a Reference,
    /// More tags for the same manifest.
    pub tags: &'a [&'a str],
    /// The repository of the same registry that keeps the shared layer index (default:
    /// the destination's). Its layers are mounted rather than sent, and the layers this
    /// push sends are mounted into it, so that its index names only blobs it holds.
    pub cache_repo: Option<&'a str>,
    /// How the layers are compressed for the registry.
    pub compression: Compression,
    /// Push the SBOM of what the image holds as a referrer of the manifest (the same
    /// referrer manifest `build --sbom` writes into a layout).
    pub sbom: bool,
    /// Use a registry layer index entry only if its blob is exactly what this machine's
    /// encoder makes of the layer (proving a blob then costs its compression): the
    /// manifest digest is then always the one of a push without the index.
    pub exact_index: bool,
    /// Sign the pushed manifest (and the SBOM referrer) with this signer.
    pub signer: Option<&'a dyn Signer>,
    /// Attach signed SLSA provenance (needs `signer`).
    pub provenance: bool,
    /// Write the provenance's predicate (unsigned, the bytes `provenance` would sign
    /// within its statement) to this file once the push is done, for another signer
    /// (`cosign attest --type slsaprovenance1 --predicate FILE`).
    pub provenance_predicate: Option<&'a Path>,
    /// The flake inputs the image was built from (its `flake.lock`), listed in the
    /// provenance's resolved dependencies.
    pub flake_inputs: &'a [FlakeInput],
}

/// A layer the verified index found in the cache repository: never read here. If the
/// registry lost it between the check and the push, the push fails rather than send
/// something else.
struct Remote(BlobInfo);

impl BlobSource for Remote {
    fn digest(&self) -> nix_layer_blob::Digest {
        self.0.digest
    }
    fn size(&self) -> u64 {
        self.0.size
    }
    fn open(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Err(std::io::Error::other(format!(
            "layer {} was in the registry's layer index but is gone; push again to rebuild it",
            self.0.digest
        )))
    }
}

/// Builds the image `req` describes (its layers compressed for a registry) and pushes it.
pub fn push_build(
    client: &Client,
    record: &BlobInfoRecord,
    req: &ImageRequest,
    how: &BuildPush,
) -> Result<PushOutcome> {
    anyhow::ensure!(how.signer.is_some() || !how.provenance, "provenance is attached signed: it needs a key");
    anyhow::ensure!(
        how.provenance || how.provenance_predicate.is_some() || how.flake_inputs.is_empty(),
        "flake inputs are listed in the provenance: it needs provenance or its predicate"
    );
    let destination = how.destination;
    let cache_repo = match how.cache_repo {
        Some(repo) => destination.with_repository(repo)?,
        None => destination.clone(),
    };
    let separate_cache = cache_repo.repository != destination.repository;
    let index = VerifiedIndex::read(client, cache_repo.clone(), record, how.exact_index, how.compression);
    let remote = |key: &str, local: &LocalDiffId| index.lookup(key, local);
    let (built, _) =
        nix_layer_pipeline::build_for_registry(req, how.compression, &nix_layer_pipeline::Silent, &remote)?;
    let image = &built.image;
    let verified: Vec<Verified> = built.blobs.iter().flatten().map(Verified).collect();
    let remote_layers: Vec<Remote> = image
        .layers()
        .iter()
        .zip(&built.blobs)
        .filter(|(_, b)| b.is_none())
        .map(|(info, _)| Remote(info.clone()))
        .collect();
    let config = BytesBlob::new(image.config().bytes().to_vec());
    let mut sources: Vec<&dyn BlobSource> = vec![&config];
    sources.extend(verified.iter().map(|v| v as &dyn BlobSource));
    sources.extend(remote_layers.iter().map(|r| r as &dyn BlobSource));
    let upload = ImageUpload {
        blobs: &sources,
        manifest: image.manifest().bytes(),
        media_type: image.manifest().media_type(),
        mount_from: &[],
    };
    let confirmed = std::mem::take(&mut *index.confirmed.lock().expect("confirmed"));
    let (mounts, present) = if separate_cache {
        (Mounts { record, also: vec![cache_repo.repository.clone()] }, HashSet::new())
    } else {
        (Mounts { record, also: Vec::new() }, confirmed)
    };
    let report = mounts.push_image(client, destination, how.tags, &upload, &present)?;
    for (key, info) in &built.store_keys {
        record.add_tar(key, Tar { diff_id: info.diff_id, size: info.uncompressed_size });
    }
    // A blob compressed here is proven by construction: the index may name it later.
    for blob in built.blobs.iter().flatten() {
        let fact = Proven {
            diff_id: blob.diff_id,
            size: blob.uncompressed_size,
            compression: blob.compression,
            reproduced: true,
        };
        record.add_proven(&blob.digest, fact);
    }
    let mut warnings = std::mem::take(&mut *index.warnings.lock().expect("warnings"));
    let new: BTreeMap<String, CachedLayer> = built
        .store_keys
        .iter()
        .map(|(key, info)| {
            let layer = CachedLayer {
                digest: info.digest,
                diff_id: info.diff_id,
                size: info.size,
                media_type: info.media_type().into(),
            };
            (key.clone(), layer)
        })
        .collect();
    // The cache repository must hold every blob its index names: the store layers sent to
    // the destination are mounted into it (no bytes move).
    let mut cache_holds = true;
    if separate_cache {
        let store: HashSet<_> = new.values().map(|l| l.digest).collect();
        let layers: Vec<&dyn BlobSource> =
            verified.iter().filter(|v| store.contains(&v.digest())).map(|v| v as &dyn BlobSource).collect();
        let into_cache = Mounts { record, also: vec![destination.repository.clone()] };
        if let Err(e) = into_cache.push_blobs(client, &cache_repo, &layers, &HashSet::new()) {
            warnings.push(format!(
                "the registry's layer index is not updated: its layers could not be mounted into {}: {e:#}",
                cache_repo.repository
            ));
            cache_holds = false;
        }
    }
    let unchanged = new.iter().all(|(k, l)| index.index.get(k) == Some(l));
    if cache_holds && !unchanged {
        let mut merged = index.index.clone();
        merged.merge(&new, CACHE_INDEX_ENTRIES);
        if let Err(e) = client.put_layer_cache(&cache_repo, &merged) {
            warnings.push(format!(
                "the image is pushed, but the registry's layer index could not be updated: {e}"
            ));
        }
    }
    let sbom = if how.sbom { Some(push_sbom(client, destination, req, image)?) } else { None };
    let provenance = (how.provenance || how.provenance_predicate.is_some())
        .then(|| provenance_of(req, how, &report.manifest_digest))
        .transpose()?;
    if let Some(signer) = how.signer {
        let referrers: Vec<Descriptor> = sbom.into_iter().collect();
        crate::sign_pushed(client, destination, &report.manifest_digest, &referrers, signer)?;
        if let (true, Some(p)) = (how.provenance, &provenance) {
            let statement = provenance::statement(p);
            let subject = descriptor_of(image.manifest().media_type(), image.manifest().bytes());
            let at = destination.with_digest(report.manifest_digest);
            nix_layer_sign::attach_attestation(client, &at, &subject, &statement, signer)?;
        }
    }
    if let (Some(path), Some(p)) = (how.provenance_predicate, &provenance) {
        write_atomically(path, &provenance::predicate(p)).map_err(|e| {
            anyhow::anyhow!(
                "pushed {destination}@{}, but cannot write its provenance predicate to {}: {e}",
                report.manifest_digest,
                path.display()
            )
        })?;
    }
    save_record(record, &mut warnings);
    let stats = *index.stats.lock().expect("stats");
    Ok(PushOutcome { report, not_built: remote_layers.len(), index: stats, warnings })
}

/// The SLSA provenance of the image pushed as `digest`: the image arguments, every store
/// path the image holds with its NAR hash, the flake's locked inputs, the builder from the
/// environment.
fn provenance_of(req: &ImageRequest, how: &BuildPush, digest: &nix_layer_blob::Digest) -> Result<Provenance> {
    use serde_json::json;
    let plan = nix_layer_pipeline::plan_image(req)?;
    let held = nix_layer_pipeline::sbom::held_graph(req, &plan)?;
    let store_paths = held
        .infos()
        .iter()
        .map(|i| StorePathDependency {
            path: i.path.to_string(),
            nar_sha256: i.nar_hash.map(|h| h.to_base16().trim_start_matches("sha256:").to_owned()),
        })
        .collect();
    let d = how.destination;
    let parameters = [
        ("name", json!(req.name)),
        ("tag", json!(req.tag)),
        ("strategy", json!(req.strategy.to_string())),
        ("maxLayers", json!(req.max_layers)),
        ("compression", json!(how.compression.identity())),
        ("architecture", json!(req.architecture)),
        ("variant", json!(req.variant)),
        ("roots", json!(req.roots.as_ref().map(|r| r.iter().map(|p| p.to_string()).collect::<Vec<_>>()))),
        ("contents", json!(req.contents.iter().map(|p| p.to_string()).collect::<Vec<_>>())),
        ("created", json!(req.created.epoch)),
        ("nixDb", json!(req.nix_db)),
        ("includeStorePaths", json!(req.include_store_paths)),
        ("destination", json!(format!("{}/{}", d.registry, d.repository))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok(Provenance {
        name: format!("{}/{}", d.registry, d.repository),
        digest: *digest,
        parameters,
        store_paths,
        flake_inputs: how.flake_inputs.to_vec(),
        builder: Builder::from_env(|k| std::env::var(k).ok()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory: `path` holds
/// all of them or is left as it was.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".provenance-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Readable like any file written here (temporary files are 0600); nothing secret.
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The SBOM of what the image holds, as a referrer of its manifest: the manifest bytes
/// `build --sbom` writes into a layout, pushed as they are. Its descriptor.
fn push_sbom(
    client: &Client,
    destination: &Reference,
    req: &ImageRequest,
    image: &nix_layer_image::Image,
) -> Result<Descriptor> {
    use nix_layer_pipeline::sbom;
    let plan = nix_layer_pipeline::plan_image(req)?;
    let r = sbom::image_referrer(req, sbom::document(req, &plan, image)?, image)?;
    let blobs: Vec<BytesBlob> = r.blobs.iter().map(|(_, bytes)| BytesBlob::new(bytes.clone())).collect();
    let sources: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
    client.push_blobs(destination, &sources, &[])?;
    let artifact_type = nix_layer_sbom::Format::CycloneDx.media_type();
    let annotations: BTreeMap<String, String> =
        r.manifest.annotations().clone().unwrap_or_default().into_iter().collect();
    let pushed = client.push_referrer_manifest(
        destination,
        &image.manifest().digest(),
        &r.bytes,
        artifact_type,
        &annotations,
    )?;
    Ok(pushed.manifest)
}

#[cfg(test)]
mod tests {
    use super::write_atomically;

    #[test]
    fn the_predicate_file_is_replaced_whole_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provenance.json");
        std::fs::write(&path, b"an older, longer predicate").unwrap();
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["provenance.json"]);
        // A directory that does not exist: an error, no file.
        assert!(write_atomically(&dir.path().join("missing/provenance.json"), b"{}").is_err());
    }
}
