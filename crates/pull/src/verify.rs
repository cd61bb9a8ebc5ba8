//! A kept base layout checked against its pin, every time it is used.

use std::io::Read;
use std::path::Path;

use nix_layer_blob::Digest;
use nix_layer_image::{OciLayout, MAX_DOCUMENT_SIZE};
use nix_layer_registry::{platform as platform_of, PlatformExt};
use oci_spec::image::{ImageIndex, Platform};

use crate::{digest_of, io_err, Error, BASE_NAME};

/// Checks a kept layout against the pin: the pin's blob hashes to the pin; the image named
/// [`BASE_NAME`] is the pin itself or, for an index, its entry for `platform`; the manifest,
/// config and every layer match their descriptors; the config is for `platform`.
pub fn verify_kept(dir: &Path, pin: &Digest, platform: &Platform, reference: &str) -> Result<(), Error> {
    let mismatch = |problem: String| Error::PinMismatch { reference: reference.to_owned(), problem };
    let layout = OciLayout::open_read(dir)?;
    let images = layout.images()?;
    let Some((_, base)) = images.iter().find(|(name, _)| name.as_deref() == Some(BASE_NAME)) else {
        return Err(mismatch(format!("the kept layout {} names no `{BASE_NAME}` image", dir.display())));
    };
    let pin_path = layout.blob_path(pin);
    let mut pinned = Vec::new();
    nix_layer_blob::open_no_follow(&pin_path)
        .and_then(|f| f.take(MAX_DOCUMENT_SIZE + 1).read_to_end(&mut pinned))
        .map_err(io_err("cannot read the pinned manifest", &pin_path))?;
    if Digest::of(&pinned) != *pin {
        return Err(mismatch(format!(
            "the kept copy of the pinned manifest {} has other bytes",
            pin_path.display()
        )));
    }
    let expected = if base.digest().to_string() == pin.to_string() {
        *pin
    } else {
        let index = ImageIndex::from_reader(pinned.as_slice())
            .map_err(|_| mismatch("the kept layout names another image than the pin".into()))?;
        let chosen = index
            .manifests()
            .iter()
            .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| mismatch(format!("the pinned index has no image for {}", platform.name())))?;
        digest_of(chosen)?
    };
    if base.digest().to_string() != expected.to_string() {
        return Err(mismatch(format!(
            "the kept layout names {} but the pin selects {expected} for {}",
            base.digest(),
            platform.name()
        )));
    }
    let manifest = layout.read_manifest(base)?;
    let (config, _) = layout.read_config(manifest.config())?;
    let actual = platform_of(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    );
    if !platform.matches(&actual) {
        return Err(Error::PlatformMismatch {
            reference: reference.to_owned(),
            wanted: platform.name(),
            actual: actual.name(),
            hint: format!(
                "build with --arch {}{} or pin the image (or index) for {}",
                actual.architecture(),
                actual.variant().as_ref().map(|v| format!(" --variant {v}")).unwrap_or_default(),
                platform.name()
            ),
        });
    }
    for layer in manifest.layers() {
        layout.verify_blob(layer)?;
    }
    Ok(())
}
