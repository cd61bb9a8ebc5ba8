//! The declarative description of the top layer, parsed from JSON.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;

use nix_layer_store::{StoreDir, StorePath};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::Error;

/// What goes into the top layer besides the merged `contents`.
///
/// ```json
/// {"entries": [
///    {"path": "/tmp", "type": "dir", "mode": "1777"},
///    {"path": "/usr/bin/env", "type": "symlink", "target": "/nix/store/…-coreutils/bin/env"},
///    {"path": "/usr/bin/sudo", "type": "copy", "source": "/nix/store/…-sudo/bin/sudo", "mode": "4755"},
///    {"path": "/etc/passwd", "type": "text", "text": "root:x:0:0::/root:/bin/sh\n"}],
///  "rules": [{"path": "/home/app", "uid": 1000, "gid": 1000, "mode": "0700"}]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopLayerSpec {
    #[serde(default)]
    pub entries: Vec<SpecEntry>,
    #[serde(default)]
    pub rules: Vec<OwnerRule>,
}

/// One path in the top layer. It replaces whatever `contents` put at the same
/// path; missing parent directories are created as 0755 root directories.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawEntry")]
pub struct SpecEntry {
    /// Absolute path in the image, e.g. `/etc/passwd`.
    pub path: String,
    pub kind: SpecKind,
    /// Permission bits (setuid, setgid and sticky included). `None`: 0755 for
    /// `dir`, 0644 for `text`, the source's mode for `copy`.
    pub mode: Option<u32>,
    /// Owner of the entry (for `copy`, of everything copied); 0 by default.
    pub uid: u64,
    pub gid: u64,
    /// Written as is; empty unless given.
    pub uname: String,
    pub gname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecKind {
    Dir,
    /// Target written verbatim, relative or absolute.
    Symlink {
        target: String,
    },
    /// A file or directory, in the store unless the layer is written with
    /// [`HostFiles::Allow`](crate::HostFiles::Allow). The source itself is
    /// followed if it is a symlink (where it leads is what must be in the
    /// store); below a copied directory, symlinks are kept as symlinks.
    Copy {
        source: PathBuf,
    },
    Text {
        text: String,
    },
}

/// Sets owner and mode of a path and everything below it, after all entries
/// are placed. Rules apply in order, so where rules overlap the last one that
/// sets a field wins; fields a rule leaves out are not touched. `mode` is not
/// applied to symlinks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct OwnerRule {
    pub path: String,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub mode: Option<u32>,
}

/// Parses and validates a [`TopLayerSpec`] from JSON.
pub fn parse_spec(json: &[u8]) -> Result<TopLayerSpec, Error> {
    let spec: TopLayerSpec = serde_json::from_slice(json).map_err(|source| Error::InvalidSpec { source })?;
    spec.validate()?;
    Ok(spec)
}

impl TopLayerSpec {
    /// Checks what JSON parsing checks per entry (for specs built in code)
    /// and what needs the whole spec: no path may appear twice.
    pub fn validate(&self) -> Result<(), Error> {
        let mut seen = HashSet::new();
        for e in &self.entries {
            let key = check_entry(e).map_err(|problem| Error::SpecEntry { path: e.path.clone(), problem })?;
            if !seen.insert(key) {
                return Err(Error::SpecEntry {
                    path: e.path.clone(),
                    problem: "appears more than once; keep one entry per path".into(),
                });
            }
        }
        for r in &self.rules {
            check_rule(r).map_err(|problem| Error::SpecEntry { path: r.path.clone(), problem })?;
        }
        Ok(())
    }

    /// Store paths the entries point into: absolute symlink targets, copy
    /// sources, and store paths spelled out in text files (a shell named in
    /// `/etc/passwd`, say). Their closures must join the image. Sorted and
    /// without duplicates. Symlinks inside copied host directories are not
    /// looked at (that would need the file system).
    pub fn referenced_paths(&self, store_dir: &StoreDir) -> Vec<StorePath> {
        let mut found = BTreeSet::new();
        for e in &self.entries {
            match &e.kind {
                SpecKind::Dir => {}
                SpecKind::Symlink { target } => found.extend(store_dir.containing(target)),
                SpecKind::Copy { source } => {
                    found.extend(source.to_str().and_then(|s| store_dir.containing(s)));
                }
                SpecKind::Text { text } => found.extend(store_dir.paths_in(text)),
            }
        }
        found.into_iter().collect()
    }
}

/// The path as a top-layer member name: relative, no empty, `.` or `..`
/// components. One trailing `/` is allowed.
pub(crate) fn layer_key(path: &str) -> Result<String, String> {
    let Some(rel) = path.strip_prefix('/') else {
        return Err("the path must be absolute (start with `/`)".into());
    };
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    if rel.is_empty() {
        return Err("`/` is the image root and cannot be an entry".into());
    }
    if rel.contains('\0') {
        return Err("the path contains a NUL character".into());
    }
    for c in rel.split('/') {
        match c {
            "" => return Err("the path has an empty component (`//`)".into()),
            "." | ".." => return Err("the path must not contain `.` or `..` components".into()),
            _ => {}
        }
    }
    Ok(rel.to_owned())
}

/// Validates one entry; returns its member name.
pub(crate) fn check_entry(e: &SpecEntry) -> Result<String, String> {
    let key = layer_key(&e.path)?;
    if let Some(mode) = e.mode {
        check_mode(mode)?;
    }
    check_owner(Some(e.uid), Some(e.gid), Some(&e.uname), Some(&e.gname))?;
    match &e.kind {
        SpecKind::Symlink { target } if target.is_empty() || target.contains('\0') => {
            Err("a symlink target must be non-empty and free of NUL characters".into())
        }
        SpecKind::Symlink { .. } if e.mode.is_some() => {
            Err("symlinks have no mode of their own; drop `mode`".into())
        }
        SpecKind::Copy { source } if source.as_os_str().is_empty() => {
            Err("`source` must name a file or directory".into())
        }
        _ => Ok(key),
    }
}

fn check_rule(r: &OwnerRule) -> Result<(), String> {
    layer_key(&r.path)?;
    if let Some(mode) = r.mode {
        check_mode(mode)?;
    }
    check_owner(r.uid, r.gid, r.uname.as_deref(), r.gname.as_deref())?;
    let sets_nothing =
        r.uid.is_none() && r.gid.is_none() && r.uname.is_none() && r.gname.is_none() && r.mode.is_none();
    if sets_nothing {
        return Err("the rule sets nothing; give uid, gid, uname, gname or mode".into());
    }
    Ok(())
}

/// Ids beyond 32 bits would be wrapped by whoever reads the image; NULs
/// would cut names short.
fn check_owner(
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<&str>,
    gname: Option<&str>,
) -> Result<(), String> {
    let ids = [("uid", uid), ("gid", gid)];
    for (what, value) in ids.into_iter().filter_map(|(w, v)| Some((w, v?))) {
        crate::store_layer::check_id(what, value).map_err(|e| e.to_string())?;
    }
    let names = [("uname", uname), ("gname", gname)];
    for (what, value) in names.into_iter().filter_map(|(w, v)| Some((w, v?))) {
        crate::store_layer::check_name(what, value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn check_mode(mode: u32) -> Result<(), String> {
    if mode > 0o7777 {
        return Err(format!("mode {mode:o} has bits beyond 7777 (only permission bits are allowed)"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    target: Option<String>,
    source: Option<PathBuf>,
    text: Option<String>,
    mode: Option<OctalMode>,
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<String>,
    gname: Option<String>,
}

impl TryFrom<RawEntry> for SpecEntry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Self, String> {
        let path = raw.path;
        let fail = |problem: String| format!("entry `{path}`: {problem}");
        let only = |field: &str, allowed_for: &str| {
            fail(format!("`{field}` belongs only to entries of type `{allowed_for}`"))
        };
        let need = |field: &str| fail(format!("type `{}` needs `{field}`", raw.kind));
        let kind = match raw.kind.as_str() {
            "dir" | "symlink" | "copy" | "text" => {
                if raw.target.is_some() && raw.kind != "symlink" {
                    return Err(only("target", "symlink"));
                }
                if raw.source.is_some() && raw.kind != "copy" {
                    return Err(only("source", "copy"));
                }
                if raw.text.is_some() && raw.kind != "text" {
                    return Err(only("text", "text"));
                }
                match raw.kind.as_str() {
                    "dir" => SpecKind::Dir,
                    "symlink" => SpecKind::Symlink { target: raw.target.ok_or_else(|| need("target"))? },
                    "copy" => SpecKind::Copy { source: raw.source.ok_or_else(|| need("source"))? },
                    _ => SpecKind::Text { text: raw.text.ok_or_else(|| need("text"))? },
                }
            }
            other => return Err(fail(format!("unknown type `{other}`; use dir, symlink, copy or text"))),
        };
        let entry = SpecEntry {
            path: path.clone(),
            kind,
            mode: raw.mode.map(|m| m.0),
            uid: raw.uid.unwrap_or(0),
            gid: raw.gid.unwrap_or(0),
            uname: raw.uname.unwrap_or_default(),
            gname: raw.gname.unwrap_or_default(),
        };
        check_entry(&entry).map_err(fail)?;
        Ok(entry)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<String>,
    gname: Option<String>,
    mode: Option<OctalMode>,
}

impl TryFrom<RawRule> for OwnerRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let rule = OwnerRule {
            path: raw.path,
            uid: raw.uid,
            gid: raw.gid,
            uname: raw.uname,
            gname: raw.gname,
            mode: raw.mode.map(|m| m.0),
        };
        check_rule(&rule).map_err(|problem| format!("rule `{}`: {problem}", rule.path))?;
        Ok(rule)
    }
}

/// A mode written as an octal string. Numbers are refused: JSON numbers are
/// decimal, so `755` would silently mean 0o1363.
struct OctalMode(u32);

impl<'de> Deserialize<'de> for OctalMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OctalVisitor;

        impl Visitor<'_> for OctalVisitor {
            type Value = OctalMode;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal mode string such as \"0755\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<OctalMode, E> {
                let digits_ok =
                    !s.is_empty() && s.len() <= 6 && s.bytes().all(|c| (b'0'..=b'7').contains(&c));
                match u32::from_str_radix(s, 8) {
                    Ok(v) if digits_ok && v <= 0o7777 => Ok(OctalMode(v)),
                    _ => Err(E::custom(format!(
                        "mode \"{s}\" is not an octal mode such as \"0755\", \"1777\" or \"4755\""
                    ))),
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OctalMode, E> {
                Err(E::custom(format!(
                    "mode must be an octal string such as \"0755\", not the number {v} \
                     (JSON numbers are decimal); write \"{v}\" if you meant octal"
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OctalMode, E> {
                Err(E::custom(format!("mode must be an octal string such as \"0755\", not the number {v}")))
            }
        }

        d.deserialize_any(OctalVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse_spec(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_kind() {
        let spec = parse_spec(
            br#"{"entries": [
                {"path": "/tmp", "type": "dir", "mode": "1777"},
                {"path": "/usr/bin/env", "type": "symlink", "target": "/nix/store/x/bin/env"},
                {"path": "/usr/bin/sudo", "type": "copy", "source": "/bin/sudo", "mode": "4755", "uid": 0},
                {"path": "/etc/passwd", "type": "text", "text": "root\n", "mode": "0644", "uname": "root"}],
              "rules": [{"path": "/home/app", "uid": 1000, "gid": 1000, "mode": "0700"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.entries.len(), 4);
        assert_eq!(spec.entries[0].kind, SpecKind::Dir);
        assert_eq!(spec.entries[0].mode, Some(0o1777));
        assert_eq!(spec.entries[2].mode, Some(0o4755));
        assert_eq!(spec.entries[2].kind, SpecKind::Copy { source: "/bin/sudo".into() });
        assert_eq!(spec.entries[3].uname, "root");
        assert_eq!(spec.entries[3].gname, "");
        assert_eq!(spec.rules[0].uid, Some(1000));
        assert_eq!(spec.rules[0].mode, Some(0o700));
        assert_eq!(spec.rules[0].uname, None);
        assert_eq!(parse_spec(b"{}").unwrap(), TopLayerSpec::default());
    }

    #[test]
    fn modes_must_be_octal_strings() {
        let e = err(r#"{"entries": [{"path": "/tmp", "type": "dir", "mode": 1777}]}"#);
        assert!(e.contains("not the number 1777"), "{e}");
        for bad in ["\"0789\"", "\"\"", "\"17777\"", "\"0x1ff\"", "\"-755\"", "\"rwx\""] {
            let e = err(&format!(r#"{{"entries": [{{"path": "/t", "type": "dir", "mode": {bad}}}]}}"#));
            assert!(e.contains("is not an octal mode"), "{bad}: {e}");
        }
        let e = err(r#"{"rules": [{"path": "/a", "mode": 700}]}"#);
        assert!(e.contains("not the number 700"), "{e}");
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        for (path, want) in [
            ("tmp", "must be absolute"),
            ("/a/../b", "`..`"),
            ("/a/./b", "`..`"),
            ("/a//b", "empty component"),
            ("/", "image root"),
        ] {
            let e = err(&format!(r#"{{"entries": [{{"path": "{path}", "type": "dir"}}]}}"#));
            assert!(e.contains(want) && e.contains(path), "{path}: {e}");
        }
        let e = err(r#"{"rules": [{"path": "home", "uid": 1}]}"#);
        assert!(e.contains("must be absolute"), "{e}");
        assert_eq!(layer_key("/tmp/").unwrap(), "tmp");
    }

    #[test]
    fn rejects_unknown_fields_types_and_misplaced_fields() {
        assert!(err(r#"{"entries": [], "extra": 1}"#).contains("unknown field"));
        assert!(err(r#"{"entries": [{"path": "/a", "type": "dir", "owner": 1}]}"#).contains("unknown field"));
        assert!(err(r#"{"entries": [{"path": "/a", "type": "fifo"}]}"#).contains("unknown type `fifo`"));
        let e = err(r#"{"entries": [{"path": "/a", "type": "dir", "target": "/b"}]}"#);
        assert!(e.contains("`target` belongs only to entries of type `symlink`"), "{e}");
        let e = err(r#"{"entries": [{"path": "/a", "type": "symlink"}]}"#);
        assert!(e.contains("needs `target`"), "{e}");
        let e = err(r#"{"entries": [{"path": "/a", "type": "symlink", "target": "b", "mode": "0777"}]}"#);
        assert!(e.contains("no mode of their own"), "{e}");
        let e = err(r#"{"rules": [{"path": "/a"}]}"#);
        assert!(e.contains("sets nothing"), "{e}");
    }

    #[test]
    fn ids_beyond_32_bits_and_nul_names_are_refused() {
        let ok = parse_spec(
            br#"{"entries": [{"path": "/a", "type": "dir", "uid": 4294967295, "gid": 4294967295}]}"#,
        );
        assert_eq!(ok.unwrap().entries[0].uid, u64::from(u32::MAX));
        for json in [
            r#"{"entries": [{"path": "/a", "type": "dir", "uid": 4294967296}]}"#,
            r#"{"entries": [{"path": "/a", "type": "dir", "gid": 18446744073709551615}]}"#,
            r#"{"rules": [{"path": "/a", "uid": 4294967296}]}"#,
        ] {
            let e = err(json);
            assert!(
                e.contains("out of range") && e.contains("4294967295") && e.contains("`/a`"),
                "{json}: {e}"
            );
        }
        assert!(err(r#"{"entries": [{"path": "/a", "type": "dir", "uid": -1}]}"#).contains("invalid value"));
        let e = err(r#"{"entries": [{"path": "/a", "type": "dir", "uname": "ro\u0000ot"}]}"#);
        assert!(e.contains("NUL"), "{e}");
        let e = err(r#"{"rules": [{"path": "/a", "gname": "\u0000"}]}"#);
        assert!(e.contains("NUL"), "{e}");
    }

    #[test]
    fn duplicate_paths_are_rejected() {
        let e = err(r#"{"entries": [{"path": "/etc/x", "type": "text", "text": ""},
                            {"path": "/etc/x/", "type": "dir"}]}"#);
        assert!(e.contains("/etc/x") && e.contains("more than once"), "{e}");
    }

    #[test]
    fn validate_catches_specs_built_in_code() {
        let spec = TopLayerSpec {
            entries: vec![SpecEntry {
                path: "/x".into(),
                kind: SpecKind::Dir,
                mode: Some(0o100755),
                uid: 0,
                gid: 0,
                uname: String::new(),
                gname: String::new(),
            }],
            rules: vec![],
        };
        assert!(spec.validate().unwrap_err().to_string().contains("beyond 7777"));
    }

    #[test]
    fn referenced_paths_come_from_targets_sources_and_text() {
        let h = "2jmiqxxd2z4ypk8am71rc6kffqzgma57";
        let g = "0jmiqxxd2z4ypk8am71rc6kffqzgma57";
        let json = format!(
            r#"{{"entries": [
                {{"path": "/usr/bin/env", "type": "symlink", "target": "/nix/store/{h}-coreutils-9.1/bin/env"}},
                {{"path": "/rel", "type": "symlink", "target": "../nix/store/{g}-x"}},
                {{"path": "/sudo", "type": "copy", "source": "/nix/store/{g}-sudo-1.9/bin/sudo"}},
                {{"path": "/host", "type": "copy", "source": "/etc/hosts"}},
                {{"path": "/etc/passwd", "type": "text", "text": "root:x:0:0::/root:/nix/store/{g}-bash-5.2/bin/bash\nx /nix/store/bogus\n"}}]}}"#
        );
        let spec = parse_spec(json.as_bytes()).unwrap();
        let got: Vec<String> =
            spec.referenced_paths(&StoreDir::default()).iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(
            got,
            vec![
                format!("/nix/store/{g}-bash-5.2"),
                format!("/nix/store/{g}-sudo-1.9"),
                format!("/nix/store/{h}-coreutils-9.1"),
            ]
        );
    }
}
