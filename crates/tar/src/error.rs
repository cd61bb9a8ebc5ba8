use std::io;
use std::path::PathBuf;

/// Everything that can stop a layer from being written. Each variant names
/// the offending path and says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot write the tar stream: {source}; check that the destination has room and is still open")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("cannot read the data of `{name}`: {source}")]
    ReadData {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{name}` ended after {got} of {expected} bytes: it changed while being archived; \
         make sure nothing modifies it and build again"
    )]
    ShortRead { name: String, expected: u64, got: u64 },
    #[error(
        "`{name}`: the header declares {expected} bytes but {got} bytes of data were given; \
         pass data whose length matches the header"
    )]
    SizeMismatch { name: String, expected: u64, got: u64 },
    #[error("the tar stream is incomplete after an earlier error; discard it and start a new archive")]
    Poisoned,
    #[error(
        "`{path}` does not exist; realise it first (`nix-store --realise {path}`) \
         or leave it out of the layer"
    )]
    MissingStorePath { path: PathBuf },
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{path}` is a {kind}; Nix store paths cannot hold one; \
         the store is corrupt or this is not a store path"
    )]
    SpecialInStore { path: PathBuf, kind: &'static str },
    #[error(
        "`{path}` is a {kind}; copy sources may hold only files, directories and symlinks; \
         remove it or copy a narrower path"
    )]
    SpecialInCopy { path: PathBuf, kind: &'static str },
    #[error(
        "contents path `{path}` is not a directory; only directories can be merged \
         into the top layer (put a lone file in a directory, e.g. with `writeTextDir`)"
    )]
    ContentsNotDirectory { path: PathBuf },
    #[error("the top-layer spec is invalid: {source}")]
    InvalidSpec {
        #[source]
        source: serde_json::Error,
    },
    #[error("top-layer spec entry `{path}`: {problem}")]
    SpecEntry { path: String, problem: String },
    #[error(
        "top-layer spec entry `{path}` needs `{parent}` to be a directory, but the layer has \
         a {what} there; add {{\"path\": \"{parent}\", \"type\": \"dir\"}} or move the entry"
    )]
    ParentNotDirectory { path: String, parent: String, what: &'static str },
    #[error(
        "copy source `{from}` of top-layer entry `{path}` does not exist; \
         fix the source path (store paths must be realised first)"
    )]
    CopySourceMissing { path: String, from: PathBuf },
    #[error("`{path}` changed while it was read: {what}; is something modifying the store?")]
    Changed { path: PathBuf, what: String },
    #[error(
        "top-layer copy source {source_path}{resolved} is outside the Nix store; \
         pass --allow-host-files to read host files",
        resolved = resolved.as_ref().map(|r| format!(" (resolving to {})", r.display())).unwrap_or_default(),
        source_path = source_path.display()
    )]
    HostFile { source_path: PathBuf, resolved: Option<PathBuf> },
    #[error("{what} {value} is out of range: image ids are 32-bit, at most 4294967295")]
    IdOutOfRange { what: &'static str, value: u64 },
    #[error("{what} {value:?} contains a NUL character; owner names must not")]
    NulInName { what: &'static str, value: String },
    #[error(
        "owner rule for `{path}` matches nothing in the top layer; \
         add an entry for it (e.g. {{\"path\": \"{path}\", \"type\": \"dir\"}}) or drop the rule"
    )]
    RuleMatchesNothing { path: String },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
