use std::path::PathBuf;

/// Why settings could not become a build request, or a `nix-build` could
/// not run. Messages name the argument, attribute or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what} is not valid JSON: {source}")]
    Json { what: String, source: serde_json::Error },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the Nix library sent contract version {got}, but this nix-layer speaks version {known}: \
         use the nix/ library and the nix-layer binary of the same release \
         (the flake's `lib` and `packages.nix-layer` always match)"
    )]
    Version { got: String, known: u64 },
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },
    #[error(transparent)]
    Store(#[from] nix_layer_store::Error),
    #[error(transparent)]
    Graph(#[from] nix_layer_graph::Error),
    #[error(transparent)]
    Plan(#[from] nix_layer_plan::Error),
    #[error(transparent)]
    Catalogue(#[from] nix_layer_plan::CatalogueError),
    #[error(transparent)]
    Tar(#[from] nix_layer_tar::Error),
    #[error(transparent)]
    Image(#[from] nix_layer_image::Error),
    #[error(transparent)]
    Blob(#[from] nix_layer_blob::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}

/// Adds what was being done to an error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context { context: what(), source: Box::new(e.into()) })
    }
}

pub(crate) fn json_err(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
    let what = what.into();
    move |source| Error::Json { what, source }
}
