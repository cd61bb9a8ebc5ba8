//! The image's SBOM (CycloneDX JSON of its exact closure), next to the image: a sidecar
//! file beside an archive, an OCI referrer (subject = the image manifest) in a layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix_layer_image::{Document, Image, OciLayout, Timestamp, REF_NAME_ANNOTATION};
use nix_layer_sbom::{referrer, Descriptor, Format, Sbom, SbomTime};

use crate::{Error, ImagePlan, ImageRequest};

/// The CycloneDX document of what `image` holds (its graph, its roots).
pub fn document(req: &ImageRequest, graph: &nix_layer_graph::Graph, image: &Image) -> Result<Vec<u8>, Error> {
    let r = image.reference();
    let created = Timestamp::from_epoch(req.created.epoch).map_err(Error::Invalid)?;
    let sbom_image = nix_layer_sbom::Image {
        name: r.name.clone(),
        tag: Some(r.tag.clone()),
        created: SbomTime::parse(&created.rfc3339).map_err(|e| Error::Invalid(e.to_string()))?,
        digest: Some(image.manifest().digest().to_string()),
        architecture: Some(req.architecture.clone()),
    };
    let sbom =
        Sbom::new(graph, req.roots.as_deref(), sbom_image).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(sbom.to_bytes(Format::CycloneDx))
}

/// Where an archive's SBOM goes: `IMAGE.cdx.json` beside it.
pub fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(Format::CycloneDx.file_suffix());
    PathBuf::from(name)
}

/// Writes the SBOM beside `output` (an archive file) or into it (an OCI layout).
pub(crate) fn attach(
    req: &ImageRequest,
    plan: &ImagePlan,
    image: &Image,
    output: &Path,
    layout: bool,
) -> Result<(), Error> {
    let doc = document(req, &plan.graph, image)?;
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
    let m = image.manifest();
    let subject =
        Descriptor { media_type: m.media_type().to_owned(), digest: m.digest().to_string(), size: m.len() };
    let created = SbomTime::parse(&Timestamp::from_epoch(req.created.epoch).map_err(Error::Invalid)?.rfc3339)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let r =
        referrer(Format::CycloneDx, &doc, &subject, &created).map_err(|e| Error::Invalid(e.to_string()))?;
    let layout = OciLayout::open_or_create(output)?;
    for (d, bytes) in &r.blobs {
        layout.add_document(&Document::from_bytes(bytes.clone(), &d.media_type))?;
    }
    let manifest = Document::from_bytes(r.manifest.clone(), &r.descriptor.media_type);
    layout.add_document(&manifest)?;
    let mut entry = manifest.descriptor();
    entry.set_artifact_type(Some(oci_spec::image::MediaType::from(r.artifact_type)));
    entry.set_annotations(Some(HashMap::from([(
        REF_NAME_ANNOTATION.to_owned(),
        format!("{}-sbom", image.reference()),
    )])));
    layout.add_index_entry(entry)?;
    Ok(())
}
