//! The image's SBOM (CycloneDX JSON of its exact closure), next to the image: a sidecar
//! file beside an archive, an OCI referrer (subject = the image manifest) in a layout.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use nix_layer_graph::{Graph, PathInfo};
use nix_layer_image::{Document, Image, OciLayout, Timestamp, REF_NAME_ANNOTATION};
use nix_layer_sbom::{referrer, Format, Referrer, Sbom, SbomTime};

use nix_layer_store::StorePath;

use crate::{Error, ImagePlan, ImageRequest};

/// The CycloneDX document of exactly the store paths `image` holds (see [`held_graph`]).
/// A caller without the plan (a push) gets the same one from [`crate::plan_image`]`(req)`:
/// planning is deterministic.
pub fn document(req: &ImageRequest, plan: &ImagePlan, image: &Image) -> Result<Vec<u8>, Error> {
    let r = image.reference();
    let created = Timestamp::from_epoch(req.created.epoch).map_err(Error::Invalid)?;
    let sbom_image = nix_layer_sbom::Image {
        name: r.name.clone(),
        tag: Some(r.tag.clone()),
        created: SbomTime::parse(&created.rfc3339).map_err(|e| Error::Invalid(e.to_string()))?,
        digest: Some(image.manifest().digest().to_string()),
        architecture: Some(req.architecture.clone()),
    };
    let held = held_graph(req, plan)?;
    // Roots the image does not hold (all of them with --no-store-paths) are not its
    // dependencies.
    let roots: Option<Vec<StorePath>> =
        req.roots.as_ref().map(|rs| rs.iter().filter(|r| held.index_of(r).is_some()).cloned().collect());
    let sbom = Sbom::new(&held, roots.as_deref(), sbom_image).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(sbom.to_bytes(Format::CycloneDx))
}

/// The store paths the image holds, as a graph: those of its store layers (none with
/// `--no-store-paths`) and those its base image's layers hold (`nix/store/<name>/…`
/// entries). A path of the build's graph keeps its metadata and its references to other
/// held paths; a base's path the graph does not know is known by its name alone.
pub fn held_graph(req: &ImageRequest, plan: &ImagePlan) -> Result<Graph, Error> {
    let mut held: BTreeSet<StorePath> = plan.store_layers.layers.iter().flatten().cloned().collect();
    if let Some(base) = &plan.base {
        let prefix = format!("{}/", req.store_dir.as_str().trim_start_matches('/'));
        for i in 0..base.layers.len() {
            base.for_each_entry(i, &mut |name, _| {
                let name = name.trim_start_matches("./").trim_start_matches('/');
                let Some(rest) = name.strip_prefix(&prefix) else { return };
                let top = rest.split('/').next().unwrap_or_default();
                if let Ok(p) = req.store_dir.parse(&format!("{}/{top}", req.store_dir.as_str())) {
                    held.insert(p);
                }
            })?;
        }
    }
    let g = &plan.graph;
    let infos = held
        .iter()
        .map(|p| match g.index_of(p) {
            Some(i) => {
                let mut info = g.info(i).clone();
                info.references.retain(|r| held.contains(r));
                info
            }
            None => PathInfo::from_raw_references(p.clone(), Vec::new(), 0),
        })
        .collect();
    Ok(Graph::new(infos)?)
}

/// Where an archive's SBOM goes: `IMAGE.cdx.json` beside it.
pub fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(Format::CycloneDx.file_suffix());
    PathBuf::from(name)
}

/// The SBOM referrer of `image` for its CycloneDX `document`: the same manifest bytes
/// whether it goes into an OCI layout (`build --sbom`) or to a registry (`push --sbom`).
pub fn image_referrer(req: &ImageRequest, document: Vec<u8>, image: &Image) -> Result<Referrer, Error> {
    let created = SbomTime::parse(&Timestamp::from_epoch(req.created.epoch).map_err(Error::Invalid)?.rfc3339)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    referrer(Format::CycloneDx, &document, &image.manifest().descriptor(), &created)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Writes the SBOM beside `output` (an archive file) or into it (an OCI layout).
pub(crate) fn attach(
    req: &ImageRequest,
    plan: &ImagePlan,
    image: &Image,
    output: &Path,
    layout: bool,
) -> Result<(), Error> {
    let doc = document(req, plan, image)?;
    if !layout {
        let dest = sidecar(output);
        let tmp = nix_layer_scratch::ScratchFile::new_in(
            output.parent().unwrap_or(Path::new(".")),
            ".nix-layer-sbom-",
        )
        .map_err(crate::io_err(format!("cannot write {}", dest.display())))?;
        std::fs::write(tmp.path(), &doc)
            .map_err(crate::io_err(format!("cannot write {}", dest.display())))?;
        tmp.set_mode(nix_layer_scratch::final_mode(0o644))
            .map_err(crate::io_err("cannot set the SBOM's mode"))?;
        tmp.persist(&dest)
            .map_err(|e| crate::io_err(format!("cannot write {}", dest.display()))(e.source))?;
        return Ok(());
    }
    let r = image_referrer(req, doc, image)?;
    let layout = OciLayout::open_or_create(output)?;
    for (d, bytes) in &r.blobs {
        layout.add_document(&Document::from_bytes(bytes.clone(), d.media_type().as_ref()))?;
    }
    layout.add_document(&Document::from_bytes(r.bytes.clone(), nix_layer_sbom::OCI_MANIFEST_MEDIA_TYPE))?;
    let mut entry = r.descriptor.clone();
    entry.set_annotations(Some(HashMap::from([(
        REF_NAME_ANNOTATION.to_owned(),
        format!("{}-sbom", image.reference()),
    )])));
    layout.add_index_entry(entry)?;
    Ok(())
}
