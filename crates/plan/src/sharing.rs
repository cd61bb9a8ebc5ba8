//! How well a set of images shares layers, for plans (a layer is identified
//! by its ordered path list, which fixes its bytes) and for real images (a
//! layer is identified by its digest): the numbers the layering strategies
//! are tuned on.

use std::collections::HashSet;

use nix_layer_graph::Graph;

use crate::Plan;

/// One layer of an image: its identity, its size and the store paths in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub id: String,
    pub bytes: u64,
    pub paths: Vec<String>,
}

/// The store layers of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    pub name: String,
    pub layers: Vec<LayerRef>,
}

/// What a registry (or a host) holding a family of images stores.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyReport {
    /// Sum of every image's layers, as if nothing were shared.
    pub total_image_bytes: u64,
    /// Bytes of the distinct store paths of all images: the least any
    /// layering could store.
    pub unique_closure_bytes: u64,
    /// Bytes of the distinct layers: what is actually stored.
    pub stored_bytes: u64,
    /// `unique_closure_bytes / stored_bytes`; 1.0 is perfect sharing.
    pub efficiency: f64,
}

/// Sums a family; `path_bytes` gives the size of a store path (its NAR size
/// for plans, its share of the tar for real layers).
pub fn family_report(images: &[ImageLayers], path_bytes: &dyn Fn(&str) -> u64) -> FamilyReport {
    let mut total_image_bytes = 0u64;
    let mut stored_bytes = 0u64;
    let mut unique_closure_bytes = 0u64;
    let mut layers_seen: HashSet<&str> = HashSet::new();
    let mut paths_seen: HashSet<&str> = HashSet::new();
    for layer in images.iter().flat_map(|i| &i.layers) {
        total_image_bytes = total_image_bytes.saturating_add(layer.bytes);
        if layers_seen.insert(&layer.id) {
            stored_bytes = stored_bytes.saturating_add(layer.bytes);
        }
        for p in &layer.paths {
            if paths_seen.insert(p) {
                unique_closure_bytes = unique_closure_bytes.saturating_add(path_bytes(p));
            }
        }
    }
    let efficiency = if stored_bytes == 0 { 1.0 } else { unique_closure_bytes as f64 / stored_bytes as f64 };
    FamilyReport { total_image_bytes, unique_closure_bytes, stored_bytes, efficiency }
}

/// Bytes a host holding `have` downloads to get `want`: the layers of
/// `want` (each distinct id once) that `have` does not hold.
pub fn pull_bytes(have: &ImageLayers, want: &ImageLayers) -> u64 {
    let held: HashSet<&str> = have.layers.iter().map(|l| l.id.as_str()).collect();
    let mut fetched: HashSet<&str> = HashSet::new();
    want.layers
        .iter()
        .filter(|l| !held.contains(l.id.as_str()) && fetched.insert(&l.id))
        .fold(0u64, |acc, l| acc.saturating_add(l.bytes))
}

/// Bytes of the store paths of `want` that `have` lacks: what any layering
/// must at least transfer, the yardstick for [`pull_bytes`].
pub fn added_path_bytes(have: &ImageLayers, want: &ImageLayers, path_bytes: &dyn Fn(&str) -> u64) -> u64 {
    let held: HashSet<&str> = have.layers.iter().flat_map(|l| &l.paths).map(String::as_str).collect();
    let mut counted: HashSet<&str> = HashSet::new();
    want.layers
        .iter()
        .flat_map(|l| &l.paths)
        .filter(|p| !held.contains(p.as_str()) && counted.insert(p))
        .fold(0u64, |acc, p| acc.saturating_add(path_bytes(p)))
}

/// The layers of a plan, each identified by its ordered path list (joined
/// with newlines) and weighing the NAR sizes of its paths.
pub fn plan_layers(name: &str, plan: &Plan, graph: &Graph) -> ImageLayers {
    let layers = plan
        .layers
        .iter()
        .map(|layer| {
            let paths: Vec<String> = layer.iter().map(|p| p.to_string()).collect();
            let bytes = layer
                .iter()
                .map(|p| graph.index_of(p).map_or(0, |i| graph.info(i).nar_size))
                .fold(0u64, u64::saturating_add);
            LayerRef { id: paths.join("\n"), bytes, paths }
        })
        .collect();
    ImageLayers { name: name.to_owned(), layers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{graph, sp};

    fn layer(id: &str, paths: &[&str]) -> LayerRef {
        LayerRef {
            id: id.into(),
            bytes: paths.iter().map(|p| size(p)).sum(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn size(p: &str) -> u64 {
        match p {
            "a" => 100,
            "b" => 10,
            "c" => 1,
            "d" => 1000,
            _ => 0,
        }
    }

    fn image(name: &str, layers: Vec<LayerRef>) -> ImageLayers {
        ImageLayers { name: name.into(), layers }
    }

    #[test]
    fn family_of_two() {
        // Both hold layer L1 (a); the first has b+c together, the second b
        // alone plus d. Stored: L1 100 + L2 11 + L3 10 + L4 1000 = 1121;
        // unique paths a b c d = 1111.
        let x = image("x", vec![layer("L1", &["a"]), layer("L2", &["b", "c"])]);
        let y = image("y", vec![layer("L1", &["a"]), layer("L3", &["b"]), layer("L4", &["d"])]);
        let r = family_report(&[x.clone(), y.clone()], &size);
        assert_eq!(r.total_image_bytes, 111 + 1110);
        assert_eq!(r.unique_closure_bytes, 1111);
        assert_eq!(r.stored_bytes, 1121);
        assert!((r.efficiency - 1111.0 / 1121.0).abs() < 1e-12);

        assert_eq!(pull_bytes(&x, &y), 1010);
        assert_eq!(added_path_bytes(&x, &y, &size), 1000);
        assert_eq!(pull_bytes(&y, &x), 11);
        assert_eq!(added_path_bytes(&y, &x, &size), 1);
        assert_eq!(pull_bytes(&x, &x), 0);
    }

    #[test]
    fn empty_family_is_perfect() {
        let r = family_report(&[], &size);
        assert_eq!(r.stored_bytes, 0);
        assert_eq!(r.efficiency, 1.0);
    }

    #[test]
    fn repeated_layers_count_once() {
        let x = image("x", vec![]);
        let y = image("y", vec![layer("L", &["a"]), layer("L", &["a"])]);
        assert_eq!(pull_bytes(&x, &y), 100);
        assert_eq!(added_path_bytes(&x, &y, &size), 100);
        assert_eq!(family_report(&[y], &size).stored_bytes, 100);
    }

    #[test]
    fn plans_as_layers() {
        let g = graph(&[("x", &["y"], 5), ("y", &[], 7)]);
        let plan = Plan { layers: vec![vec![sp("y")], vec![sp("x")]] };
        let img = plan_layers("img", &plan, &g);
        assert_eq!(img.name, "img");
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.layers[0].bytes, 7);
        assert_eq!(img.layers[0].id, sp("y").as_str());
        assert_eq!(img.layers[1].paths, [sp("x").to_string()]);
        let both = Plan { layers: vec![vec![sp("y"), sp("x")]] };
        let one = plan_layers("one", &both, &g);
        assert_eq!(one.layers[0].id, format!("{}\n{}", sp("y"), sp("x")));
        assert_eq!(one.layers[0].bytes, 12);
        // Same paths, other order: another layer.
        let swapped = plan_layers("s", &Plan { layers: vec![vec![sp("x"), sp("y")]] }, &g);
        assert_eq!(pull_bytes(&one, &swapped), 12);
    }
}
