//! The top ("customisation") layer, built without fakeroot: `contents`
//! merged like nixpkgs' `symlinkJoin`, then a [`TopLayerSpec`] applied on top.

mod spec;

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_layer_store::StorePath;

pub use spec::{parse_spec, OwnerRule, SpecEntry, SpecKind, TopLayerSpec};

use crate::walk::{sorted_children, special_kind, walk};
use crate::{component_cmp, EntryKind, Error, Header, TarWriter};

/// What [`write_top_layer`] builds the layer from.
#[derive(Debug, Clone, Copy)]
pub struct TopLayerInput<'a> {
    /// Store paths (directories) merged into the layer; the first wins where
    /// two provide the same path.
    pub contents: &'a [StorePath],
    pub spec: &'a TopLayerSpec,
    /// Seconds since the epoch, on every entry.
    pub mtime: u64,
}

/// Writes the top layer: every directory of the `contents` paths becomes a
/// real 0755 directory, every file or symlink in them a symlink to its
/// absolute store location; then the spec's entries replace or add paths and
/// its rules set owners and modes. Members are relative (`etc/passwd`,
/// `etc/`), sorted component-wise, written with [`TarWriter`].
pub fn write_top_layer<W: Write>(input: &TopLayerInput, out: W) -> Result<W, Error> {
    input.spec.validate()?;
    let mut tree = Tree::default();
    for path in input.contents {
        tree.merge_contents(path)?;
    }
    // Parents before children, so a directory copy laid down first can have
    // single files replaced below it, whatever order the spec lists them in.
    let mut entries: Vec<(Key, &SpecEntry)> = input
        .spec
        .entries
        .iter()
        .map(|e| Ok((Key(spec::check_entry(e).map_err(spec_err(&e.path))?.into_bytes()), e)))
        .collect::<Result<_, Error>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, entry) in entries {
        tree.apply(key, entry)?;
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
    File { source: PathBuf, size: u64 },
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

#[derive(Default)]
struct Tree<'a> {
    nodes: BTreeMap<Key, Node<'a>>,
}

impl<'a> Tree<'a> {
    fn merge_contents(&mut self, path: &StorePath) -> Result<(), Error> {
        // Followed: a contents path that is a symlink to a directory merges
        // like the directory (lndir follows its argument too).
        let meta = fs::metadata(path.as_path()).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingStorePath { path: path.to_path_buf() },
            _ => Error::io("inspect", path.as_path())(e),
        })?;
        if !meta.is_dir() {
            return Err(Error::ContentsNotDirectory { path: path.to_path_buf() });
        }
        self.merge_dir(path.as_path(), &Key(Vec::new()))
    }

    fn merge_dir(&mut self, dir: &Path, at: &Key) -> Result<(), Error> {
        for (name, entry) in sorted_children(dir)? {
            let key = at.child(name.as_bytes());
            let path = entry.path();
            let t = entry.file_type().map_err(Error::io("inspect", &path))?;
            if let Some(kind) = special_kind(t) {
                return Err(Error::SpecialInStore { path, kind });
            }
            if t.is_dir() {
                match self.nodes.get(&key) {
                    None => {
                        self.nodes.insert(key.clone(), Node::root_owned(Content::Dir, 0o755));
                    }
                    Some(node) if node.is_dir() => {}
                    // An earlier contents path put a link here: it wins.
                    Some(_) => continue,
                }
                self.merge_dir(&path, &key)?;
            } else if let Entry::Vacant(slot) = self.nodes.entry(key) {
                let target = path.into_os_string().into_vec();
                slot.insert(Node::root_owned(Content::Symlink(target), 0o777));
            }
        }
        Ok(())
    }

    fn apply(&mut self, key: Key, e: &'a SpecEntry) -> Result<(), Error> {
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
                self.copy(&key, source, e)?;
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

    fn copy(&mut self, key: &Key, source: &Path, e: &SpecEntry) -> Result<(), Error> {
        let meta = fs::metadata(source).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => {
                Error::CopySourceMissing { path: e.path.clone(), from: source.to_path_buf() }
            }
            _ => Error::io("inspect", source)(err),
        })?;
        walk(source, meta, &mut |path: &Path, meta: &Metadata| {
            let t = meta.file_type();
            if let Some(kind) = special_kind(t) {
                return Err(Error::SpecialInCopy { path: path.to_path_buf(), kind });
            }
            let is_top = path == source;
            let member = if is_top {
                key.clone()
            } else {
                let rel = path.strip_prefix(source).expect("walk stays below its root");
                key.child(rel.as_os_str().as_bytes())
            };
            let content = if t.is_dir() {
                Content::Dir
            } else if t.is_symlink() {
                let target = fs::read_link(path).map_err(Error::io("read the symlink", path))?;
                Content::Symlink(target.into_os_string().into_vec())
            } else {
                Content::File { source: path.to_path_buf(), size: meta.len() }
            };
            let source_mode = meta.permissions().mode() & 0o7777;
            let mode = if is_top { e.mode.unwrap_or(source_mode) } else { source_mode };
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
                Content::File { size, .. } => EntryKind::Regular { size: *size },
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
                Content::File { source, .. } => {
                    let mut f = File::open(source).map_err(Error::io("open", source))?;
                    // Name the host file, not the member, when it shrank.
                    tar.append(&h, &mut f).map_err(|e| match e {
                        Error::ShortRead { expected, got, .. } => {
                            Error::ShortRead { name: source.display().to_string(), expected, got }
                        }
                        other => other,
                    })?;
                }
                Content::Dir | Content::Symlink(_) => tar.append(&h, &mut io::empty())?,
            }
        }
        tar.finish()
    }
}

#[cfg(test)]
mod tests;
