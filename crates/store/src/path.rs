use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{nixbase32, Error};

/// The directory holding the store, `/nix/store` unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir("/nix/store".to_owned())
    }
}

impl StoreDir {
    pub fn new(dir: &str) -> Result<Self, Error> {
        if !dir.starts_with('/') || (dir.len() > 1 && dir.ends_with('/')) || dir.contains("//") {
            return Err(Error::BadStoreDir(dir.to_owned()));
        }
        Ok(StoreDir(dir.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses `s` as a store path in this store. Anything below a store path
    /// (`/nix/store/<hash>-x/bin/sh`) is rejected: only whole paths count.
    pub fn parse(&self, s: &str) -> Result<StorePath, Error> {
        let rest = s
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| Error::OutsideStore { path: s.to_owned(), store_dir: self.0.clone() })?;
        let bad = |reason| Error::BadStorePath { path: s.to_owned(), reason };
        if rest.contains('/') {
            return Err(bad("it points inside a store path; give the store path itself"));
        }
        if rest.len() < 34 || rest.as_bytes()[32] != b'-' {
            return Err(bad("expected <32-character hash>-<name>"));
        }
        if !rest.as_bytes()[..32].iter().all(|&c| nixbase32::is_valid_char(c)) {
            return Err(bad("the hash part is not Nix base-32"));
        }
        let name = &rest[33..];
        if name.len() > 211 {
            return Err(bad("the name is longer than 211 characters"));
        }
        if name.starts_with('.') {
            return Err(bad("the name starts with a dot"));
        }
        if !name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c)) {
            return Err(bad("the name has a character Nix does not allow"));
        }
        Ok(StorePath { full: s.to_owned(), base_start: self.0.len() + 1 })
    }

    /// Store paths mentioned anywhere in free text (config values like
    /// `/nix/store/…-bash/bin/bash`, `/etc/passwd` lines): the store
    /// directory, `/`, then the longest run of characters a name may hold.
    pub fn paths_in(&self, text: &str) -> BTreeSet<StorePath> {
        let prefix = format!("{}/", self.0);
        let allowed = |c: &u8| c.is_ascii_alphanumeric() || b"+-._?=".contains(c);
        text.match_indices(prefix.as_str())
            .filter_map(|(start, _)| {
                let len = text.as_bytes()[start + prefix.len()..].iter().take_while(|c| allowed(c)).count();
                self.parse(&text[start..start + prefix.len() + len]).ok()
            })
            .collect()
    }

    /// Like [`StoreDir::parse`], but accepts a path below a store path and
    /// returns the store path that holds it (for config strings, symlink targets).
    pub fn containing(&self, s: &str) -> Option<StorePath> {
        let rest = s.strip_prefix(self.0.as_str())?.strip_prefix('/')?;
        let top = rest.split('/').next()?;
        self.parse(&format!("{}/{}", self.0, top)).ok()
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated store path such as `/nix/store/<hash>-hello-2.12`.
///
/// Ordering is plain byte order of the full path, the order Nix itself
/// lists closures in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    full: String,
    base_start: usize,
}

impl StorePath {
    /// The full absolute path.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.full)
    }

    /// `<hash>-<name>`, the last component.
    pub fn base_name(&self) -> &str {
        &self.full[self.base_start..]
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..32]
    }

    /// The name after the hash, e.g. `hello-2.12`.
    pub fn name(&self) -> &str {
        &self.base_name()[33..]
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(&self.full)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.full)
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-hello-2.12";

    #[test]
    fn parses_a_store_path() {
        let p = StoreDir::default().parse(P).unwrap();
        assert_eq!(p.name(), "hello-2.12");
        assert_eq!(p.hash_part(), "2jmiqxxd2z4ypk8am71rc6kffqzgma57");
        assert_eq!(p.base_name(), "2jmiqxxd2z4ypk8am71rc6kffqzgma57-hello-2.12");
        assert_eq!(p.as_str(), P);
    }

    #[test]
    fn rejects_bad_paths() {
        let d = StoreDir::default();
        for bad in [
            "/usr/bin/env",
            "/nix/store",
            "/nix/store/",
            "/nix/store/short-x",
            "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma5e-x", // 'e' is not nix32
            "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57_x",
            "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-.x",
            "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-a b",
            "/nix/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-x/bin",
            "/nix/storefoo/2jmiqxxd2z4ypk8am71rc6kffqzgma57-x",
        ] {
            assert!(d.parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn error_names_the_path() {
        let e = StoreDir::default().parse("/usr/bin/env").unwrap_err();
        assert!(e.to_string().contains("/usr/bin/env"));
        assert!(e.to_string().contains("/nix/store"));
    }

    #[test]
    fn other_store_dirs() {
        let d = StoreDir::new("/tmp/store").unwrap();
        assert!(d.parse("/tmp/store/2jmiqxxd2z4ypk8am71rc6kffqzgma57-x").is_ok());
        assert!(d.parse(P).is_err());
        assert!(StoreDir::new("relative").is_err());
        assert!(StoreDir::new("/trailing/").is_err());
    }

    #[test]
    fn paths_in_finds_store_paths_in_text() {
        let text = format!(r#"{{"Cmd":["{P}/bin/hello","-c"],"Env":["A=/nix/store/bogus"]}} {P}"#);
        let found: Vec<String> =
            StoreDir::default().paths_in(&text).into_iter().map(|p| p.to_string()).collect();
        assert_eq!(found, [P]);
    }

    #[test]
    fn containing_finds_the_store_path() {
        let d = StoreDir::default();
        assert_eq!(d.containing(&format!("{P}/bin/hello")).unwrap().as_str(), P);
        assert!(d.containing("/etc/passwd").is_none());
    }
}
