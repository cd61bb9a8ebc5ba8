//! The registry as a shared layer cache: a small artifact, tagged [`CACHE_TAG`] in a
//! repository, maps a layer's cache key to the blob the registry already holds for it. A
//! machine with an empty local cache reads it before pushing and skips compressing the
//! layers whose blobs are there; every push merges what it learnt back in.
//!
//! Anyone who can push to the repository can write this index, so its entries are hints:
//! reading it is bounded ([`MAX_INDEX_BYTES`], enforced while the body arrives), and a
//! caller checks an entry against the layer it built before using it (nix-layer-push proves
//! that the blob unpacks to the local tar's diff_id).

use std::collections::BTreeMap;

use nix_layer_blob::Digest;
use serde::{Deserialize, Serialize};

use crate::client::BytesBlob;
use crate::manifest::{artifact_manifest, blob_digest, descriptor_of, OCI_MANIFEST};
use crate::{BlobSource, Client, Error, ImageUpload, Reference};

/// The tag the index is kept under.
pub const CACHE_TAG: &str = "nix-layer-cache";
/// The index manifest's `artifactType`.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.nix-layer.layer-cache.v1";
/// The media type of the JSON blob holding the map.
const CACHE_BLOB_TYPE: &str = "application/vnd.nix-layer.layer-cache.v1+json";
/// Larger index blobs are not read (about 50 000 entries); the cap holds while reading.
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

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

    /// Every entry, by cache key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CachedLayer)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.layer))
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

/// A sink that refuses to grow past `cap` bytes: an endless or oversized body fails as it
/// arrives, before it is held in memory.
struct Capped {
    bytes: Vec<u8>,
    cap: u64,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.cap {
            return Err(std::io::Error::other(format!("more than the {} bytes announced", self.cap)));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Client {
    /// Reads the cache index of `repo`; an absent index is an empty one. Anything else that
    /// is not a readable index (another artifact under the tag, a blob that is not JSON,
    /// deleted, larger than announced or than [`MAX_INDEX_BYTES`]) is an error, for the
    /// caller to skip with a warning.
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
        if manifest.is_index() {
            return Err(bad("an image index, not the layer cache artifact".into()));
        }
        let (_, layers) = manifest.blobs().map_err(|e| bad(e.to_string()))?;
        let blob = layers
            .iter()
            .find(|d| d.media_type().as_ref() == CACHE_BLOB_TYPE)
            .ok_or_else(|| bad(format!("no {CACHE_BLOB_TYPE} blob")))?;
        if blob.size() > MAX_INDEX_BYTES {
            return Err(bad(format!("{} bytes is more than the {MAX_INDEX_BYTES} allowed", blob.size())));
        }
        let digest = blob_digest(blob.digest()).map_err(|e| bad(e.to_string()))?;
        let mut sink = Capped { bytes: Vec::with_capacity(blob.size() as usize), cap: blob.size() };
        self.fetch_blob(repo, &digest, &mut sink).map_err(|e| bad(e.to_string()))?;
        LayerCacheIndex::from_bytes(&sink.bytes).map_err(|e| bad(format!("not a layer cache index: {e}")))
    }

    /// Merges `new` into `repo`'s cache index (keeping at most `max_entries`) and pushes it.
    /// An index that cannot be read is replaced. Concurrent writers may lose each other's
    /// entries: the index is a cache, and the next push adds them again.
    pub fn write_layer_cache(
        &self,
        repo: &Reference,
        new: &BTreeMap<String, CachedLayer>,
        max_entries: usize,
    ) -> Result<LayerCacheIndex, Error> {
        let mut index = self.read_layer_cache(repo).unwrap_or_default();
        index.merge(new, max_entries);
        self.put_layer_cache(repo, &index)?;
        Ok(index)
    }

    /// Pushes `index` as `repo`'s cache index, replacing what is there.
    pub fn put_layer_cache(&self, repo: &Reference, index: &LayerCacheIndex) -> Result<(), Error> {
        let payload = BytesBlob::new(index.to_bytes());
        let config = BytesBlob::new(crate::manifest::EMPTY_JSON.to_vec());
        let layer = descriptor_of(CACHE_BLOB_TYPE, &payload.bytes);
        let manifest = artifact_manifest(CACHE_ARTIFACT_TYPE, &[layer], None, &BTreeMap::new());
        let blobs: [&dyn BlobSource; 2] = [&config, &payload];
        let target = repo.with_tag(CACHE_TAG)?;
        let upload =
            ImageUpload { blobs: &blobs, manifest: &manifest, media_type: OCI_MANIFEST, mount_from: &[] };
        self.push_image(&target, &[], &upload)?;
        Ok(())
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
