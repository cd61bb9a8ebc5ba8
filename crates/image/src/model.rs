//! The image value every output writer consumes: config, layers and manifest made once,
//! together, so they cannot disagree.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType, Platform, PlatformBuilder};
use serde::Serialize;

use crate::config::{image_config_json, ImageConfigInput};
use crate::{BlobInfo, Digest, Error, ImageRef};
use nix_layer_blob::descriptor;

/// The annotation that names an image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (`ctr import`, nerdctl) reads an image's name from.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// A JSON document (config, manifest, index) as the exact bytes that are stored and
/// hashed. Serialised through `serde_json::Value`, whose maps are sorted (the
/// `preserve_order` feature must stay off), so equal documents give equal bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
}

impl Document {
    pub fn new(value: &impl Serialize, media_type: &str) -> Document {
        let value = serde_json::to_value(value).expect("an OCI document serialises");
        Self::from_bytes(serde_json::to_vec(&value).expect("a JSON value serialises"), media_type)
    }

    /// Wraps bytes made elsewhere (kept exactly: their digest is their identity).
    pub fn from_bytes(bytes: Vec<u8>, media_type: &str) -> Document {
        let digest = Digest::of(&bytes);
        Document { bytes, digest, media_type: media_type.to_owned() }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// An OCI descriptor of this document.
    pub fn descriptor(&self) -> Descriptor {
        descriptor(&self.media_type, &self.digest, self.len())
    }
}

/// A built image: its name, its layers (bottom first) as stored, and the config and
/// manifest made from exactly those layers.
#[derive(Clone, Debug)]
pub struct Image {
    reference: ImageRef,
    layers: Vec<BlobInfo>,
    config: Document,
    manifest: Document,
    architecture: String,
    os: String,
    variant: Option<String>,
}

impl Image {
    /// Makes the config (its `rootfs.diff_ids` from `layers`) and the OCI manifest
    /// (`layers`' digests, sizes and media types; `annotations` on the manifest).
    pub fn new(
        reference: ImageRef,
        input: &ImageConfigInput,
        layers: Vec<BlobInfo>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Image, Error> {
        input.validate()?;
        if !input.history.is_empty() && input.history.len() != layers.len() {
            return Err(Error::ConfigLayersMismatch(format!(
                "{} history entries for {} layers",
                input.history.len(),
                layers.len()
            )));
        }
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let config =
            Document::from_bytes(image_config_json(input, &diff_ids), MediaType::ImageConfig.as_ref());
        let platform = (input.architecture.clone(), input.os.clone(), input.variant.clone());
        Ok(Self::with_config(reference, config, layers, annotations, platform))
    }

    /// The image of an existing config (its bytes kept exactly, e.g. from a docker-archive
    /// being pushed) and `layers`, which must be the ones its `rootfs.diff_ids` lists.
    pub fn from_config(
        reference: ImageRef,
        config: Vec<u8>,
        layers: Vec<BlobInfo>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Image, Error> {
        let value: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| Error::BadConfig(format!("the image config is not valid JSON: {e}")))?;
        let listed = crate::diff_ids_of(&value).map_err(Error::BadConfig)?;
        if listed != layers.iter().map(|l| l.diff_id).collect::<Vec<_>>() {
            return Err(Error::ConfigLayersMismatch(format!(
                "the config lists {} diff_ids that are not the {} layers given",
                listed.len(),
                layers.len()
            )));
        }
        let field = |k: &str| value.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
        let platform =
            (field("architecture").unwrap_or_default(), field("os").unwrap_or_default(), field("variant"));
        let config = Document::from_bytes(config, MediaType::ImageConfig.as_ref());
        Ok(Self::with_config(reference, config, layers, annotations, platform))
    }

    fn with_config(
        reference: ImageRef,
        config: Document,
        layers: Vec<BlobInfo>,
        annotations: &BTreeMap<String, String>,
        (architecture, os, variant): (String, String, Option<String>),
    ) -> Image {
        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor())
            .layers(layers.iter().map(|l| descriptor(l.media_type(), &l.digest, l.size)).collect::<Vec<_>>());
        if !annotations.is_empty() {
            manifest = manifest.annotations(annotations.clone().into_iter().collect::<HashMap<_, _>>());
        }
        let manifest = manifest.build().expect("every required manifest field is set");
        Image {
            reference,
            layers,
            manifest: Document::new(&manifest, MediaType::ImageManifest.as_ref()),
            config,
            architecture,
            os,
            variant,
        }
    }

    /// The same image under another name (the name is not part of the config or the
    /// manifest, so their digests stay).
    pub fn renamed(mut self, reference: ImageRef) -> Image {
        self.reference = reference;
        self
    }

    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    pub fn layers(&self) -> &[BlobInfo] {
        &self.layers
    }

    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id).collect()
    }

    pub fn config(&self) -> &Document {
        &self.config
    }

    pub fn manifest(&self) -> &Document {
        &self.manifest
    }

    pub fn platform(&self) -> Platform {
        let mut p = PlatformBuilder::default()
            .architecture(self.architecture.as_str())
            .os(self.os.as_str())
            .build()
            .expect("architecture and os are set");
        p.set_variant(self.variant.clone());
        p
    }

    /// The manifest's descriptor as an index lists it: platform, and the image's full
    /// reference as its name (so two images in one layout never share a name).
    pub fn index_descriptor(&self) -> Descriptor {
        let mut d = self.manifest.descriptor();
        d.set_platform(Some(self.platform()));
        let name = self.reference.to_string();
        d.set_annotations(Some(HashMap::from([
            (REF_NAME_ANNOTATION.to_owned(), name.clone()),
            (CONTAINERD_NAME_ANNOTATION.to_owned(), name),
        ])));
        d
    }
}

/// A multi-platform index of `manifests` (one per platform, each with its platform; their
/// annotations are dropped): two images of one platform are refused, as a client could
/// not choose between them.
pub fn platform_index(manifests: Vec<Descriptor>, kind: crate::IndexKind) -> Result<Document, Error> {
    let mut seen = Vec::new();
    let mut entries = Vec::new();
    for mut d in manifests {
        let p = d.platform().clone().ok_or_else(|| {
            Error::BadConfig(format!("image {} has no platform, so it cannot join an index", d.digest()))
        })?;
        let key = (p.os().to_string(), p.architecture().to_string(), p.variant().clone());
        if seen.contains(&key) {
            return Err(Error::BadConfig(format!("two images for {}/{} in one index", key.0, key.1)));
        }
        seen.push(key);
        d.set_annotations(None);
        entries.push(d);
    }
    if entries.is_empty() {
        return Err(Error::BadConfig("an index needs at least one image".into()));
    }
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(kind.media_type()))
        .manifests(entries)
        .build()
        .expect("every required index field is set");
    Ok(Document::new(&index, kind.media_type()))
}

/// The descriptor of a manifest as an index lists it: with the platform of its config.
pub fn platform_descriptor(manifest: &Document, config: &[u8]) -> Result<Descriptor, Error> {
    let v: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| Error::BadConfig(format!("the image config is not valid JSON: {e}")))?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    let (Some(arch), Some(os)) = (field("architecture"), field("os")) else {
        return Err(Error::BadConfig("the image config names no architecture and os".into()));
    };
    let mut p = PlatformBuilder::default().architecture(arch.as_str()).os(os.as_str()).build().expect("set");
    p.set_variant(field("variant"));
    let mut d = manifest.descriptor();
    d.set_platform(Some(p));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, ConfigSpec, HistoryEntry};

    fn layer(data: &[u8], compression: Compression) -> BlobInfo {
        BlobInfo {
            diff_id: Digest::of(data),
            uncompressed_size: data.len() as u64,
            digest: Digest::of(&[data, b"z"].concat()),
            size: data.len() as u64 + 1,
            compression,
        }
    }

    fn input(layers: usize) -> ImageConfigInput {
        ImageConfigInput {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
            config: ConfigSpec { Cmd: Some(vec!["/bin/sh".into()]), ..Default::default() },
            history: (0..layers)
                .map(|i| HistoryEntry {
                    created: "1970-01-01T00:00:01Z".into(),
                    comment: format!("layer {i}"),
                    created_by: None,
                })
                .collect(),
        }
    }

    #[test]
    fn config_and_manifest_describe_the_same_layers() {
        let layers = vec![layer(b"a", Compression::Gzip), layer(b"b", Compression::Zstd)];
        let ann = BTreeMap::from([("org.opencontainers.image.revision".to_owned(), "abc".to_owned())]);
        let image = Image::new(ImageRef::new("app", "1").unwrap(), &input(2), layers.clone(), &ann).unwrap();
        let config: serde_json::Value = serde_json::from_slice(image.config().bytes()).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][1], layers[1].diff_id.to_string());
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(image.manifest().bytes()).unwrap();
        assert_eq!(manifest.config().digest().to_string(), image.config().digest().to_string());
        assert_eq!(manifest.layers()[0].digest().to_string(), layers[0].digest.to_string());
        assert_eq!(
            manifest.layers()[1].media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(manifest.annotations().as_ref().unwrap()["org.opencontainers.image.revision"], "abc");
        let d = image.index_descriptor();
        assert_eq!(d.annotations().as_ref().unwrap()[REF_NAME_ANNOTATION], "app:1");
        assert_eq!(d.platform().as_ref().unwrap().variant().as_deref(), Some("v8"));
        // Canonical: sorted keys, so the same image gives the same bytes.
        let again = Image::new(ImageRef::new("app", "1").unwrap(), &input(2), layers, &ann).unwrap();
        assert_eq!(again.manifest().bytes(), image.manifest().bytes());
        let text = String::from_utf8(image.manifest().bytes().to_vec()).unwrap();
        assert!(text.starts_with(r#"{"annotations":"#), "{text}");
    }

    #[test]
    fn history_must_match_layers() {
        let e = Image::new(
            ImageRef::new("app", "1").unwrap(),
            &input(3),
            vec![layer(b"a", Compression::None)],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::ConfigLayersMismatch(_)), "{e}");
    }

    #[test]
    fn an_existing_config_is_kept_byte_for_byte() {
        let layers = vec![layer(b"a", Compression::Gzip)];
        let built =
            Image::new(ImageRef::new("app", "1").unwrap(), &input(1), layers.clone(), &BTreeMap::new())
                .unwrap();
        let again = Image::from_config(
            ImageRef::new("registry.example/app", "1").unwrap(),
            built.config().bytes().to_vec(),
            layers,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(again.config().digest(), built.config().digest());
        assert_eq!(again.manifest().bytes(), built.manifest().bytes());
        assert_eq!(again.platform().architecture().to_string(), "arm64");
        let e = Image::from_config(
            ImageRef::new("x", "1").unwrap(),
            built.config().bytes().to_vec(),
            vec![layer(b"other", Compression::Gzip)],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::ConfigLayersMismatch(_)), "{e}");
    }
}
