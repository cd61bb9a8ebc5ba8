//! The registry as a shared layer cache: a small artifact, tagged [`CACHE_TAG`] in a
//! repository, maps a layer's cache key to the blob the registry already holds for it. A
//! machine with an empty local cache reads it before pushing and skips producing the
//! layers whose blobs are there; every push merges what it learnt back in.
//!
//! Entries are hints, never trusted content: a push still HEADs each blob (and uploads it if
//! the registry lost it), and a pull still verifies each blob's digest.

use std::collections::BTreeMap;

use nix_layer_blob::Digest;
use serde::{Deserialize, Serialize};

use crate::client::BytesBlob;
use crate::manifest::{artifact_manifest, Descriptor, OCI_MANIFEST};
use crate::{BlobSource, Client, Error, ImageUpload, Reference};

/// The tag the index is kept under.
pub const CACHE_TAG: &str = "nix-layer-cache";
/// The index manifest's `artifactType`.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.nix-layer.layer-cache.v1";
/// The media type of the JSON blob holding the map.
const CACHE_BLOB_TYPE: &str = "application/vnd.nix-layer.layer-cache.v1+json";
/// Larger index blobs are not read (about 50 000 entries).
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// What the registry holds for one cache key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    layer: CachedLayer,
    /// The write that last stored this entry: the oldest are dropped first.
    generation: u64,
}

/// The cache index: deterministic JSON (keys sorted), bounded by eviction of the entries
/// least recently written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCacheIndex {
    generation: u64,
    entries: BTreeMap<String, Entry>,
}

impl LayerCacheIndex {
    pub fn get(&self, key: &str) -> Option<&CachedLayer> {
        self.entries.get(key).map(|e| &e.layer)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds or refreshes `new` entries as one write, then keeps at most `max_entries`,
    /// dropping those written longest ago.
    pub fn merge(&mut self, new: &BTreeMap<String, CachedLayer>, max_entries: usize) {
        self.generation += 1;
        for (k, layer) in new {
            self.entries.insert(k.clone(), Entry { layer: layer.clone(), generation: self.generation });
        }
        if self.entries.len() > max_entries {
            let mut by_age: Vec<(u64, String)> =
                self.entries.iter().map(|(k, e)| (e.generation, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(self.entries.len() - max_entries) {
                self.entries.remove(&k);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising the cache index cannot fail")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Client {
    /// Reads the cache index of `repo`; an absent index is an empty one.
    pub fn read_layer_cache(&self, repo: &Reference) -> Result<LayerCacheIndex, Error> {
        let at = repo.with_tag(CACHE_TAG)?;
        let manifest = match self.get_manifest(&at) {
            Ok(m) => m,
            Err(Error::NotFound { .. }) => return Ok(LayerCacheIndex::default()),
            Err(e) => return Err(e),
        };
        let bad = |reason: String| Error::Protocol {
            registry: repo.registry.clone(),
            what: format!("the layer cache index {at}"),
            reason,
        };
        let (_, layers) = manifest.blobs().map_err(|e| bad(e.to_string()))?;
        let blob = layers
            .iter()
            .find(|d| d.media_type == CACHE_BLOB_TYPE)
            .ok_or_else(|| bad(format!("no {CACHE_BLOB_TYPE} blob")))?;
        if blob.size > MAX_INDEX_BYTES {
            return Err(bad(format!("{} bytes is more than the {MAX_INDEX_BYTES} allowed", blob.size)));
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        self.fetch_blob(repo, &blob.digest, &mut bytes)?;
        LayerCacheIndex::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
    }

    /// Merges `new` into `repo`'s cache index (keeping at most `max_entries`) and pushes it.
    /// A missing or unreadable index is replaced. Concurrent writers may lose each other's
    /// entries: the index is a cache, and the next push adds them again.
    pub fn write_layer_cache(
        &self,
        repo: &Reference,
        new: &BTreeMap<String, CachedLayer>,
        max_entries: usize,
    ) -> Result<LayerCacheIndex, Error> {
        let mut index = match self.read_layer_cache(repo) {
            Ok(i) => i,
            Err(Error::Protocol { .. } | Error::DigestMismatch { .. }) => LayerCacheIndex::default(),
            Err(e) => return Err(e),
        };
        index.merge(new, max_entries);
        let payload = BytesBlob::new(index.to_bytes());
        let config = BytesBlob::new(crate::manifest::EMPTY_JSON.to_vec());
        let layer = Descriptor::of(CACHE_BLOB_TYPE, &payload.bytes);
        let manifest = artifact_manifest(CACHE_ARTIFACT_TYPE, &[layer], None, &BTreeMap::new());
        let blobs: [&dyn BlobSource; 2] = [&config, &payload];
        let target = repo.with_tag(CACHE_TAG)?;
        let upload =
            ImageUpload { blobs: &blobs, manifest: &manifest, media_type: OCI_MANIFEST, mount_from: &[] };
        self.push_image(&target, &[], &upload)?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> CachedLayer {
        CachedLayer {
            digest: Digest::of(&[n]),
            diff_id: Digest::of(&[n, n]),
            size: n as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn map(keys: &[(&str, u8)]) -> BTreeMap<String, CachedLayer> {
        keys.iter().map(|(k, n)| (k.to_string(), layer(*n))).collect()
    }

    #[test]
    fn merge_refreshes_and_evicts_the_oldest() {
        let mut i = LayerCacheIndex::default();
        i.merge(&map(&[("a", 1), ("b", 2)]), 3);
        i.merge(&map(&[("c", 3)]), 3);
        i.merge(&map(&[("a", 4), ("d", 5)]), 3);
        // b (first write) is the oldest; a was refreshed.
        assert_eq!(i.len(), 3);
        assert!(i.get("b").is_none());
        assert_eq!(i.get("a"), Some(&layer(4)));
        assert!(i.get("c").is_some() && i.get("d").is_some());
        let again = LayerCacheIndex::from_bytes(&i.to_bytes()).unwrap();
        assert_eq!(again, i);
        assert_eq!(again.to_bytes(), i.to_bytes(), "deterministic bytes");
    }
}
