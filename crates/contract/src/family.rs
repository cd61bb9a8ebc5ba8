//! Family members from graph files and family catalogues (the catalogue format and its
//! update history are the plan crate's: [`nix_layer_plan::Catalogue`]).

use std::path::PathBuf;

use nix_layer_graph::Graph;
use nix_layer_plan::{Catalogue, Family};
use nix_layer_store::StoreDir;

use crate::error::Result;

/// The family of `members` (graphs given inline) and of `files` (graph files or
/// catalogues, their update histories merged), or `None` when there is none.
pub fn family(
    files: &[PathBuf],
    store_dir: &StoreDir,
    mut members: Vec<(String, Graph)>,
) -> Result<Option<Family>> {
    let catalogue = Catalogue::load(files, store_dir)?;
    members.extend(catalogue.members);
    Ok((!members.is_empty()).then(|| Family::new(members).with_history(catalogue.history)))
}
