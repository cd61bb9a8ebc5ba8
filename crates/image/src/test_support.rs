//! Helpers shared by this crate's unit tests.

use std::collections::BTreeMap;

use crate::{ConfigSpec, Image, ImageConfigInput, ImageRef, LayerBlob};

/// An image named `reference` (`name:tag`) made of `layers`, for `arch`, with `env`.
pub(crate) fn image(reference: &str, layers: &[&LayerBlob], arch: &str, env: &[&str]) -> Image {
    let (name, tag) = reference.rsplit_once(':').expect("name:tag");
    let input = ImageConfigInput {
        created: "1970-01-01T00:00:01Z".into(),
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
        config: ConfigSpec {
            Env: (!env.is_empty()).then(|| env.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        },
        history: vec![],
    };
    let infos = layers.iter().map(|l| l.info().clone()).collect();
    Image::new(ImageRef::new(name, tag).unwrap(), &input, infos, &BTreeMap::new()).unwrap()
}
