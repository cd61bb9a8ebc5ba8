//! Package name, version and output from a store path's name, the way Nix
//! itself splits them (`builtins.parseDrvName`), plus the two conventions
//! nixpkgs layers on top: non-default outputs are appended as `-<output>`,
//! and fetched sources, patches and single files are not packages.

/// What a store path holds, as far as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A package output (`openssl-3.0.13-bin`): gets a purl, and a CPE when
    /// it has a version.
    Package,
    /// A fetched source, a patch, an archive or another single file
    /// (`source`, `foo-1.0.tar.gz`, `fix.patch`, `hook.sh`). Its name is not a
    /// package identity, so it gets neither purl nor CPE: a scanner would
    /// only report false matches for it.
    File,
}

/// The parts of a store path name (the part after `<hash>-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreName<'a> {
    /// The package name (`python3.12-pip`), or the whole name for a [`Kind::File`].
    pub name: &'a str,
    /// The version, empty when the name has none (always empty for a file).
    pub version: &'a str,
    /// The non-default output (`bin`, `dev`, `lib`, …); `None` for `out`.
    pub output: Option<&'a str>,
    pub kind: Kind,
}

/// Outputs nixpkgs appends to a store name. Only recognised at the end of a
/// version (`gcc-13.2.0-lib`): without a version (`bash-interactive`) a
/// trailing word is part of the name.
const OUTPUTS: &[&str] = &[
    "bin", "dev", "lib", "man", "doc", "devdoc", "info", "static", "debug", "dist", "libgcc", "getent",
    "modules", "py", "python", "terminfo",
];

/// Endings of sources, patches and archives.
const FILE_SUFFIXES: &[&str] = &[
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar.zst",
    ".tar.lz",
    ".tar.lzma",
    ".zip",
    ".gz",
    ".bz2",
    ".xz",
    ".zst",
    ".patch",
    ".diff",
    ".jar",
    ".whl",
    ".gem",
    ".crate",
    ".deb",
    ".rpm",
];

/// Splits a store name; see [`StoreName`].
pub fn parse_store_name(full: &str) -> StoreName<'_> {
    let file = StoreName { name: full, version: "", output: None, kind: Kind::File };
    if full == "source"
        || full.ends_with("-source")
        || full.ends_with("-src")
        || FILE_SUFFIXES.iter().any(|s| full.ends_with(s))
    {
        return file;
    }
    let (name, mut version) = parse_drv_name(full);
    let mut output = None;
    if let Some((v, o)) = version.rsplit_once('-') {
        if OUTPUTS.contains(&o) {
            version = v;
            output = Some(o);
        }
    }
    if version.is_empty() && has_extension(name) {
        return file;
    }
    StoreName { name, version, output, kind: Kind::Package }
}

/// `builtins.parseDrvName`: the name runs up to the first `-` that is
/// followed by something other than an ASCII letter; the rest is the version.
pub fn parse_drv_name(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    match (0..b.len()).find(|&i| b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic())) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `builder.sh`, `config.json`: a lower-case extension after the last dot
/// (`python3.12` is a package: its "extension" is a number).
fn has_extension(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && !ext.is_empty() && ext.bytes().all(|c| c.is_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg<'a>(name: &'a str, version: &'a str, output: Option<&'a str>) -> StoreName<'a> {
        StoreName { name, version, output, kind: Kind::Package }
    }

    #[test]
    fn parse_drv_name_matches_nix() {
        // Values checked with `nix-instantiate --eval -E 'builtins.parseDrvName "…"'`.
        for (full, name, version) in [
            ("hello-2.12.1", "hello", "2.12.1"),
            ("bash-interactive-5.2p32", "bash-interactive", "5.2p32"),
            ("python3.12-pip-24.0", "python3.12-pip", "24.0"),
            ("glibc-2.39-52", "glibc", "2.39-52"),
            ("foo-unstable-2024-01-01", "foo-unstable", "2024-01-01"),
            ("source", "source", ""),
            ("x-", "x-", ""),
            ("a-_b", "a", "_b"),
        ] {
            assert_eq!(parse_drv_name(full), (name, version), "{full}");
        }
    }

    #[test]
    fn realistic_names() {
        for (full, want) in [
            ("openssl-3.0.13", pkg("openssl", "3.0.13", None)),
            ("openssl-3.0.13-bin", pkg("openssl", "3.0.13", Some("bin"))),
            ("glibc-2.39-52", pkg("glibc", "2.39-52", None)),
            ("glibc-2.39-52-getent", pkg("glibc", "2.39-52", Some("getent"))),
            ("python3-3.12.4", pkg("python3", "3.12.4", None)),
            ("python3.12-pip-24.0", pkg("python3.12-pip", "24.0", None)),
            ("python3.12-pip-24.0-dist", pkg("python3.12-pip", "24.0", Some("dist"))),
            ("nodejs-22.3.0", pkg("nodejs", "22.3.0", None)),
            ("gcc-13.2.0-lib", pkg("gcc", "13.2.0", Some("lib"))),
            ("gcc-13.2.0-libgcc", pkg("gcc", "13.2.0", Some("libgcc"))),
            ("hello-2.12.1", pkg("hello", "2.12.1", None)),
            ("bash-interactive-5.2p32", pkg("bash-interactive", "5.2p32", None)),
            ("libxml2-2.12.7-dev", pkg("libxml2", "2.12.7", Some("dev"))),
            ("util-linux-minimal-2.39.4-lib", pkg("util-linux-minimal", "2.39.4", Some("lib"))),
            ("openssh-client-9.2p1-2+deb12u6", pkg("openssh-client", "9.2p1-2+deb12u6", None)),
            ("gtk+3-3.24.41", pkg("gtk+3", "3.24.41", None)),
            // No version: a trailing word stays in the name.
            ("bash-interactive", pkg("bash-interactive", "", None)),
            ("ca-bundle-dev", pkg("ca-bundle-dev", "", None)),
            ("python3.12", pkg("python3.12", "", None)),
            ("etc-passwd", pkg("etc-passwd", "", None)),
        ] {
            assert_eq!(parse_store_name(full), want, "{full}");
        }
    }

    #[test]
    fn sources_patches_and_files_are_not_packages() {
        for full in [
            "source",
            "linux-6.6.30-source",
            "hello-src",
            "hello-2.12.1.tar.gz",
            "openssl-3.0.13.tar.xz",
            "CVE-2024-2511.patch",
            "0001-fix-build.diff",
            "builder.sh",
            "config.json",
            "commons-io-2.11.jar",
        ] {
            let n = parse_store_name(full);
            assert_eq!(n, StoreName { name: full, version: "", output: None, kind: Kind::File }, "{full}");
        }
    }
}
