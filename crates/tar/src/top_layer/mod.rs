//! The top ("customisation") layer, built without fakeroot: `contents`
//! merged like nixpkgs' `symlinkJoin`, then a [`TopLayerSpec`] applied on top.

mod spec;

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix_layer_store::{StoreDir, StorePath};

pub use spec::{parse_spec, OwnerRule, SpecEntry, SpecKind, TopLayerSpec};

use crate::fsread::{self, Kind, Meta};
use crate::{component_cmp, EntryKind, Error, Header, TarWriter};

/// Whether the spec's `copy` entries may read files outside the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostFiles {
    /// A `copy` source that resolves outside the store directory is an
    /// [`Error::HostFile`].
    #[default]
    Refuse,
    /// Any readable file or directory may be copied.
    Allow,
}

/// A directory the caller made itself (a Nix database, say), copied to
/// `path` like a `copy` entry owned by root, whatever [`HostFiles`] says:
/// it is the caller's own output, not a host file a spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedTree {
    /// Absolute path in the image, e.g. `/nix/var/nix/db`.
    pub path: String,
    pub source: PathBuf,
}

/// What [`write_top_layer`] builds the layer from.
#[derive(Debug, Clone, Copy)]
pub struct TopLayerInput<'a> {
    /// Store paths (directories) merged into the layer; the first wins where
    /// two provide the same path.
    pub contents: &'a [StorePath],
    pub spec: &'a TopLayerSpec,
    /// Laid down with the spec's entries; a path may not be both.
    pub generated: &'a [GeneratedTree],
    /// Where `copy` sources must resolve to unless `host_files` allows more.
    pub store_dir: &'a StoreDir,
    pub host_files: HostFiles,
    /// Seconds since the epoch, on every entry.
    pub mtime: u64,
}

/// Writes the top layer: every directory of the `contents` paths becomes a
/// real 0755 directory, every file or symlink in them a symlink to its
/// absolute store location; then the spec's entries (and the generated
/// trees) replace or add paths and its rules set owners and modes. Members
/// are relative (`etc/passwd`, `etc/`), sorted component-wise, written with
/// [`TarWriter`]. Copied files are read as
/// [`write_store_layer`](crate::write_store_layer) reads store files: never
/// through a symlink, checked against what was planned.
pub fn write_top_layer<W: Write>(input: &TopLayerInput, out: W) -> Result<W, Error> {
    input.spec.validate()?;
    let generated: Vec<SpecEntry> = input
        .generated
        .iter()
        .map(|g| SpecEntry {
            path: g.path.clone(),
            kind: SpecKind::Copy { source: g.source.clone() },
            mode: None,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
        })
        .collect();
    let mut tree = Tree::new(input.store_dir, input.host_files);
    for path in input.contents {
        tree.merge_contents(path)?;
    }
    // Parents before children, so a directory copy laid down first can have
    // single files replaced below it, whatever order the spec lists them in.
    let spec_entries = input.spec.entries.iter().map(|e| (e, false));
    let mut entries: Vec<(Key, &SpecEntry, bool)> = spec_entries
        .chain(generated.iter().map(|e| (e, true)))
        .map(|(e, trusted)| {
            Ok((Key(spec::check_entry(e).map_err(spec_err(&e.path))?.into_bytes()), e, trusted))
        })
        .collect::<Result<_, Error>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(spec_err(&w[1].1.path)("appears more than once; keep one entry per path".into()));
    }
    for (key, entry, trusted) in entries {
        tree.apply(key, entry, trusted)?;
    }
    for rule in &input.spec.rules {
        tree.apply_rule(rule)?;
    }
    tree.write(input.mtime, out)
}

fn spec_err(path: &str) -> impl FnOnce(String) -> Error + '_ {
    move |problem| Error::SpecEntry { path: path.to_owned(), problem }
}

/// A member name, ordered component-wise so the map iterates in layer order
/// and a subtree is one contiguous range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(Vec<u8>);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        component_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    fn child(&self, name: &[u8]) -> Key {
        let mut k = self.0.clone();
        if !k.is_empty() {
            k.push(b'/');
        }
        k.extend_from_slice(name);
        Key(k)
    }

    fn contains(&self, other: &Key) -> bool {
        other.0.starts_with(&self.0) && (other.0.len() == self.0.len() || other.0[self.0.len()] == b'/')
    }
}

#[derive(Debug)]
enum Content<'a> {
    Dir,
    Symlink(Vec<u8>),
    Text(&'a [u8]),
    File(Box<CopiedFile>),
}

/// A file planned for a copy, to be opened later below the copy's parent
/// directory without following symlinks and checked against `meta`.
#[derive(Debug)]
struct CopiedFile {
    root: Rc<OwnedFd>,
    /// From `root`: the copy source's name, then the path below it.
    rel: PathBuf,
    /// The resolved host path, for messages.
    path: PathBuf,
    meta: Meta,
}

#[derive(Debug)]
struct Node<'a> {
    content: Content<'a>,
    mode: u32,
    uid: u64,
    gid: u64,
    uname: String,
    gname: String,
}

impl<'a> Node<'a> {
    fn root_owned(content: Content<'a>, mode: u32) -> Self {
        Node { content, mode, uid: 0, gid: 0, uname: String::new(), gname: String::new() }
    }

    fn owned_by(content: Content<'a>, mode: u32, e: &SpecEntry) -> Self {
        Node { content, mode, uid: e.uid, gid: e.gid, uname: e.uname.clone(), gname: e.gname.clone() }
    }

    fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir)
    }
}

struct Tree<'a> {
    nodes: BTreeMap<Key, Node<'a>>,
    /// The store directory with symlinks resolved; `None` if it does not
    /// exist (then nothing is in it).
    store: Option<PathBuf>,
    host_files: HostFiles,
}

impl<'a> Tree<'a> {
    fn new(store_dir: &StoreDir, host_files: HostFiles) -> Self {
        let store = fs::canonicalize(store_dir.as_str()).ok();
        Tree { nodes: BTreeMap::new(), store, host_files }
    }

    fn merge_contents(&mut self, path: &StorePath) -> Result<(), Error> {
        // Followed: a contents path that is a symlink to a directory merges
        // like the directory (lndir follows its argument too).
        let missing = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingStorePath { path: path.to_path_buf() },
            _ => Error::io("inspect", path.as_path())(e),
        };
        let meta = fs::metadata(path.as_path()).map_err(missing)?;
        if !meta.is_dir() {
            return Err(Error::ContentsNotDirectory { path: path.to_path_buf() });
        }
        let dir = fs::File::open(path.as_path()).map_err(missing)?;
        self.merge_dir(dir.as_fd(), path.as_path(), &Key(Vec::new()))
    }

    /// Only names and types are read here (no file data): files and
    /// symlinks become symlinks to their store location.
    fn merge_dir(&mut self, dir: BorrowedFd<'_>, dir_path: &Path, at: &Key) -> Result<(), Error> {
        for name in fsread::sorted_names(dir, dir_path)? {
            let key = at.child(name.as_bytes());
            let path = dir_path.join(&name);
            let meta = fsread::lstat_at(dir, &name).map_err(Error::io("inspect", &path))?;
            match meta.kind {
                Kind::Special(kind) => return Err(Error::SpecialInStore { path, kind }),
                Kind::Dir => {
                    match self.nodes.get(&key) {
                        None => {
                            self.nodes.insert(key.clone(), Node::root_owned(Content::Dir, 0o755));
                        }
                        Some(node) if node.is_dir() => {}
                        // An earlier contents path put a link here: it wins.
                        Some(_) => continue,
                    }
                    let sub = fsread::open_dir_at(dir, &name, &path, &meta)?;
                    self.merge_dir(sub.as_fd(), &path, &key)?;
                }
                Kind::File | Kind::Symlink => {
                    if let Entry::Vacant(slot) = self.nodes.entry(key) {
                        let target = path.into_os_string().into_encoded_bytes();
                        slot.insert(Node::root_owned(Content::Symlink(target), 0o777));
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, key: Key, e: &'a SpecEntry, trusted: bool) -> Result<(), Error> {
        self.ensure_parents(&key, e)?;
        match &e.kind {
            SpecKind::Dir => {
                let mode = e.mode.unwrap_or(0o755);
                match self.nodes.get_mut(&key) {
                    // Re-owning a merged directory keeps what is inside it.
                    Some(node) if node.is_dir() => *node = Node::owned_by(Content::Dir, mode, e),
                    _ => {
                        self.nodes.insert(key, Node::owned_by(Content::Dir, mode, e));
                    }
                }
            }
            SpecKind::Symlink { target } => {
                self.remove_subtree(&key);
                let link = Content::Symlink(target.as_bytes().to_vec());
                self.nodes.insert(key, Node::owned_by(link, 0o777, e));
            }
            SpecKind::Text { text } => {
                self.remove_subtree(&key);
                let node = Node::owned_by(Content::Text(text.as_bytes()), e.mode.unwrap_or(0o644), e);
                self.nodes.insert(key, node);
            }
            SpecKind::Copy { source } => {
                self.remove_subtree(&key);
                self.copy(&key, source, e, trusted)?;
            }
        }
        Ok(())
    }

    /// Creates missing parents as 0755 root directories; refuses to put
    /// anything below a file or symlink.
    fn ensure_parents(&mut self, key: &Key, e: &SpecEntry) -> Result<(), Error> {
        let slashes = key.0.iter().enumerate().filter(|&(_, &c)| c == b'/').map(|(i, _)| i);
        for end in slashes.collect::<Vec<_>>() {
            let parent = Key(key.0[..end].to_vec());
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent, Node::root_owned(Content::Dir, 0o755));
                }
                Some(node) if node.is_dir() => {}
                Some(node) => {
                    return Err(Error::ParentNotDirectory {
                        path: e.path.clone(),
                        parent: format!("/{}", String::from_utf8_lossy(&parent.0)),
                        what: if let Content::Symlink(_) = node.content { "symlink" } else { "file" },
                    })
                }
            }
        }
        Ok(())
    }

    fn remove_subtree(&mut self, root: &Key) {
        let doomed: Vec<Key> =
            self.nodes.range(root..).map(|(k, _)| k).take_while(|k| root.contains(k)).cloned().collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Plans a copy of `source` (followed if it is a symlink; below it,
    /// symlinks are kept). The source is resolved once, checked against the
    /// host-file policy unless `trusted`, and walked from there without
    /// following symlinks, so what is read later is what was checked.
    fn copy(&mut self, key: &Key, source: &Path, e: &SpecEntry, trusted: bool) -> Result<(), Error> {
        let resolved = fs::canonicalize(source).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => {
                Error::CopySourceMissing { path: e.path.clone(), from: source.to_path_buf() }
            }
            _ => Error::io("resolve", source)(err),
        })?;
        let in_store = self.store.as_ref().is_some_and(|store| resolved.starts_with(store));
        if !trusted && self.host_files == HostFiles::Refuse && !in_store {
            let shown = (resolved != source).then(|| resolved.clone());
            return Err(Error::HostFile { source_path: source.to_path_buf(), resolved: shown });
        }
        let (parent, name) = fsread::open_parent_nofollow(&resolved)?;
        let meta = fsread::lstat_at(parent.as_fd(), &name).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => fsread::changed(&resolved, "it was removed"),
            _ => Error::io("inspect", &resolved)(err),
        })?;
        let root = Rc::new(parent);
        fsread::walk(root.as_fd(), &name, &resolved, meta, &mut |entry| {
            let rel = entry.path.strip_prefix(&resolved).expect("walk stays below its root");
            let is_top = rel.as_os_str().is_empty();
            let member = if is_top { key.clone() } else { key.child(rel.as_os_str().as_bytes()) };
            let content = match entry.meta.kind {
                Kind::Special(kind) => {
                    return Err(Error::SpecialInCopy { path: entry.path.to_path_buf(), kind })
                }
                Kind::Dir => Content::Dir,
                Kind::Symlink => Content::Symlink(entry.read_link()?),
                Kind::File => Content::File(Box::new(CopiedFile {
                    root: Rc::clone(&root),
                    rel: if is_top { PathBuf::from(&name) } else { Path::new(&name).join(rel) },
                    path: entry.path.to_path_buf(),
                    meta: entry.meta,
                })),
            };
            let mode = if is_top { e.mode.unwrap_or(entry.meta.mode) } else { entry.meta.mode };
            self.nodes.insert(member, Node::owned_by(content, mode, e));
            Ok(())
        })
    }

    fn apply_rule(&mut self, rule: &OwnerRule) -> Result<(), Error> {
        let root = Key(spec::layer_key(&rule.path).map_err(spec_err(&rule.path))?.into_bytes());
        let mut matched = false;
        for (_, node) in self.nodes.range_mut(&root..).take_while(|(k, _)| root.contains(k)) {
            matched = true;
            node.uid = rule.uid.unwrap_or(node.uid);
            node.gid = rule.gid.unwrap_or(node.gid);
            if let Some(uname) = &rule.uname {
                node.uname.clone_from(uname);
            }
            if let Some(gname) = &rule.gname {
                node.gname.clone_from(gname);
            }
            if let (Some(mode), false) = (rule.mode, matches!(node.content, Content::Symlink(_))) {
                node.mode = mode;
            }
        }
        if !matched {
            return Err(Error::RuleMatchesNothing { path: rule.path.clone() });
        }
        Ok(())
    }

    fn write<W: Write>(&self, mtime: u64, out: W) -> Result<W, Error> {
        let mut tar = TarWriter::new(out);
        for (key, node) in &self.nodes {
            let kind = match &node.content {
                Content::Dir => EntryKind::Directory,
                Content::Symlink(target) => EntryKind::Symlink { target: target.clone() },
                Content::Text(text) => EntryKind::Regular { size: text.len() as u64 },
                Content::File(f) => EntryKind::Regular { size: f.meta.size },
            };
            let h = Header {
                name: key.0.clone(),
                kind,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                uname: node.uname.clone(),
                gname: node.gname.clone(),
                mtime,
            };
            match &node.content {
                Content::Text(text) => tar.append_bytes(&h, text)?,
                Content::File(copied) => {
                    let c = &**copied;
                    let mut f = fsread::open_file_below(c.root.as_fd(), &c.rel, &c.path, &c.meta)?;
                    // Name the host file, not the member, when it shrank.
                    tar.append(&h, &mut f).map_err(|e| match e {
                        Error::ShortRead { expected, got, .. } => {
                            Error::ShortRead { name: c.path.display().to_string(), expected, got }
                        }
                        other => other,
                    })?;
                    f.finish()?;
                }
                Content::Dir | Content::Symlink(_) => tar.append(&h, &mut io::empty())?,
            }
        }
        tar.finish()
    }
}

#[cfg(test)]
mod tests;
