//! The blob-info record: what this machine learnt about registry blobs, kept across runs
//! (as skopeo's blob-info cache is). Two kinds of facts:
//!
//! - which repositories of a registry were seen holding a blob: candidates to mount it
//!   from instead of uploading it (a hint: a mount that fails falls back to an upload);
//! - which diff_id a blob unpacks to, proven here by downloading, decompressing and
//!   hashing it: a fact about the blob's bytes (its digest names them), so a blob is proven
//!   once per machine, whatever registry holds it.
//!
//! It also remembers the diff_id of each store layer tar this machine hashed, by layer
//! cache key, so that a push with an empty local layer cache need not read the store
//! again to check the registry's layer index.
//!
//! One JSON file, replaced atomically (a temporary file renamed over it), read without a
//! lock; writers take an exclusive `flock` on a lock file beside it, read the current file
//! again and merge their facts in, so concurrent processes lose nothing. It is bounded: the
//! facts written longest ago go first, and a file larger than [`MAX_FILE_BYTES`] or not
//! readable is ignored (it is a cache; a missing fact costs a proof or an upload).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix_layer_blob::{Compression, Digest};
use serde::{Deserialize, Serialize};

/// Facts of each kind kept (the oldest written go first).
pub const MAX_FACTS: usize = 50_000;
/// Repositories remembered per blob and registry (the latest seen first).
pub const MAX_REPOS_PER_BLOB: usize = 8;
/// A larger file is not read.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
const FORMAT: u32 = 1;

/// What a blob unpacks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proven {
    pub diff_id: Digest,
    /// Length of the unpacked tar.
    pub size: u64,
    pub compression: Compression,
    /// The blob is exactly what this machine's encoder makes of the tar (it compressed
    /// the blob itself, or compressed the unpacked tar again and got the same digest).
    #[serde(default)]
    pub reproduced: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Aged<T> {
    #[serde(flatten)]
    fact: T,
    generation: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Repos {
    repos: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Facts {
    format: u32,
    generation: u64,
    /// blob digest → what it unpacks to.
    proven: BTreeMap<String, Aged<Proven>>,
    /// `registry blob-digest` → repositories that hold it.
    located: BTreeMap<String, Aged<Repos>>,
    /// Layer cache key → the diff_id and length of its tar, hashed here.
    #[serde(default)]
    tars: BTreeMap<String, Aged<Tar>>,
}

/// The diff_id and length of a store layer's tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tar {
    pub diff_id: Digest,
    pub size: u64,
}

/// The record: facts read at open, plus the ones learnt in this process until
/// [`BlobInfoRecord::save`].
pub struct BlobInfoRecord {
    path: Option<PathBuf>,
    known: Facts,
    learnt: Mutex<Learnt>,
}

#[derive(Default)]
struct Learnt {
    proven: BTreeMap<String, Proven>,
    tars: BTreeMap<String, Tar>,
    /// In the order seen: later sightings go in front.
    located: Vec<(String, String)>,
}

fn located_key(registry: &str, blob: &Digest) -> String {
    format!("{registry} {blob}")
}

impl BlobInfoRecord {
    /// The record of this user: `$XDG_CACHE_HOME/nix-layer/blob-info.json`, else
    /// `~/.cache/nix-layer/blob-info.json`; kept in memory only when neither is set.
    pub fn for_user() -> BlobInfoRecord {
        let dir =
            std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".cache"))
            });
        match dir {
            Some(d) => BlobInfoRecord::at(&d.join("nix-layer").join("blob-info.json")),
            None => BlobInfoRecord::in_memory(),
        }
    }

    /// The record kept in `path` (created by the first [`save`](Self::save)).
    pub fn at(path: &Path) -> BlobInfoRecord {
        BlobInfoRecord { path: Some(path.to_owned()), known: read(path), learnt: Mutex::default() }
    }

    /// A record that is never written.
    pub fn in_memory() -> BlobInfoRecord {
        BlobInfoRecord { path: None, known: Facts::default(), learnt: Mutex::default() }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What `blob` was proven to unpack to, on this machine.
    pub fn proven(&self, blob: &Digest) -> Option<Proven> {
        let key = blob.to_string();
        if let Some(p) = self.learnt.lock().expect("record").proven.get(&key) {
            return Some(*p);
        }
        self.known.proven.get(&key).map(|a| a.fact)
    }

    pub fn add_proven(&self, blob: &Digest, fact: Proven) {
        self.learnt.lock().expect("record").proven.insert(blob.to_string(), fact);
    }

    /// The tar of the store layer with cache key `key`, as hashed on this machine. The key
    /// names the layer's store paths with their NAR hashes and the tar settings, so it
    /// fixes the tar (the local layer cache relies on the same).
    pub fn tar(&self, key: &str) -> Option<Tar> {
        if let Some(t) = self.learnt.lock().expect("record").tars.get(key) {
            return Some(*t);
        }
        self.known.tars.get(key).map(|a| a.fact)
    }

    pub fn add_tar(&self, key: &str, tar: Tar) {
        self.learnt.lock().expect("record").tars.insert(key.to_owned(), tar);
    }

    /// Repositories of `registry` seen holding `blob`, the latest seen first.
    pub fn repos_holding(&self, registry: &str, blob: &Digest) -> Vec<String> {
        let key = located_key(registry, blob);
        let mut out: Vec<String> = Vec::new();
        let learnt = self.learnt.lock().expect("record");
        for (k, repo) in learnt.located.iter().rev() {
            if *k == key && !out.contains(repo) {
                out.push(repo.clone());
            }
        }
        for repo in self.known.located.get(&key).into_iter().flat_map(|a| &a.fact.repos) {
            if !out.contains(repo) {
                out.push(repo.clone());
            }
        }
        out.truncate(MAX_REPOS_PER_BLOB);
        out
    }

    /// `repo` of `registry` holds `blob` (a HEAD, an upload or a mount said so).
    pub fn add_location(&self, registry: &str, repo: &str, blob: &Digest) {
        self.learnt.lock().expect("record").located.push((located_key(registry, blob), repo.to_owned()));
    }

    /// Merges what this process learnt into the file, under the lock, and replaces the
    /// file atomically. Nothing to do for an in-memory record or when nothing was learnt.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let learnt = std::mem::take(&mut *self.learnt.lock().expect("record"));
        if learnt.proven.is_empty() && learnt.located.is_empty() && learnt.tars.is_empty() {
            return Ok(());
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        // Read again under the lock: another process may have saved since we opened.
        let mut facts = read(path);
        facts.format = FORMAT;
        facts.generation += 1;
        let generation = facts.generation;
        for (blob, fact) in learnt.proven {
            facts.proven.insert(blob, Aged { fact, generation });
        }
        for (key, fact) in learnt.tars {
            facts.tars.insert(key, Aged { fact, generation });
        }
        for (key, repo) in learnt.located {
            let entry = facts
                .located
                .entry(key)
                .or_insert_with(|| Aged { fact: Repos { repos: Vec::new() }, generation });
            entry.generation = generation;
            entry.fact.repos.retain(|r| *r != repo);
            entry.fact.repos.insert(0, repo);
            entry.fact.repos.truncate(MAX_REPOS_PER_BLOB);
        }
        evict(&mut facts.proven);
        evict(&mut facts.located);
        evict(&mut facts.tars);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec(&facts).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
        // The lock is released when `lock` is dropped.
    }
}

/// Keeps the [`MAX_FACTS`] facts written last.
fn evict<T>(facts: &mut BTreeMap<String, Aged<T>>) {
    if facts.len() <= MAX_FACTS {
        return;
    }
    let mut by_age: Vec<(u64, String)> = facts.iter().map(|(k, a)| (a.generation, k.clone())).collect();
    by_age.sort();
    let drop = facts.len() - MAX_FACTS;
    for (_, k) in by_age.into_iter().take(drop) {
        facts.remove(&k);
    }
}

/// The facts in `path`; none if it is missing, too large, unreadable or of another format.
fn read(path: &Path) -> Facts {
    let Ok(f) = fs::File::open(path) else { return Facts::default() };
    let mut bytes = Vec::new();
    if f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).is_err() || bytes.len() as u64 > MAX_FILE_BYTES {
        return Facts::default();
    }
    match serde_json::from_slice::<Facts>(&bytes) {
        Ok(f) if f.format == FORMAT => f,
        _ => Facts::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(n: u8) -> Proven {
        Proven {
            diff_id: Digest::of(&[n]),
            size: n as u64,
            compression: Compression::Gzip,
            reproduced: false,
        }
    }

    #[test]
    fn facts_survive_a_save_and_concurrent_writers_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/blob-info.json");
        let (a, b) = (BlobInfoRecord::at(&path), BlobInfoRecord::at(&path));
        let blob = Digest::of(b"blob");
        a.add_proven(&blob, fact(1));
        a.add_location("r.example", "org/base", &blob);
        b.add_location("r.example", "org/web", &blob);
        b.add_tar("key", Tar { diff_id: Digest::of(b"tar"), size: 3 });
        std::thread::scope(|s| {
            s.spawn(|| a.save().unwrap());
            s.spawn(|| b.save().unwrap());
        });
        let again = BlobInfoRecord::at(&path);
        assert_eq!(again.proven(&blob), Some(fact(1)));
        assert_eq!(again.tar("key"), Some(Tar { diff_id: Digest::of(b"tar"), size: 3 }));
        let mut repos = again.repos_holding("r.example", &blob);
        repos.sort();
        assert_eq!(repos, ["org/base", "org/web"], "neither writer lost the other's fact");
        assert!(again.repos_holding("other.example", &blob).is_empty(), "per registry");
        assert!(!dir
            .path()
            .join("sub")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with(".tmp") }));
    }

    #[test]
    fn a_damaged_or_oversized_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob-info.json");
        fs::write(&path, b"{not json").unwrap();
        let r = BlobInfoRecord::at(&path);
        assert!(r.repos_holding("r", &Digest::of(b"x")).is_empty());
        r.add_location("r", "a/b", &Digest::of(b"x"));
        r.save().unwrap();
        assert_eq!(BlobInfoRecord::at(&path).repos_holding("r", &Digest::of(b"x")), ["a/b"]);
        let f = fs::File::create(&path).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(BlobInfoRecord::at(&path).repos_holding("r", &Digest::of(b"x")).is_empty());
    }

    #[test]
    fn bounded_by_age() {
        let mut facts = BTreeMap::new();
        for i in 0..MAX_FACTS + 3 {
            facts.insert(format!("{i:08}"), Aged { fact: (), generation: i as u64 });
        }
        evict(&mut facts);
        assert_eq!(facts.len(), MAX_FACTS);
        assert!(!facts.contains_key("00000000") && facts.contains_key(&format!("{:08}", MAX_FACTS + 2)));
    }
}
