//! Prints how well each layering strategy shares layers on the benchmark
//! corpus (`benches/corpus/build.py`):
//! `cargo run --release -p nix-layer-plan --example sharing -- /var/tmp/nix-layer-corpus`.
//!
//! Every figure is a ratio to the ideal (one layer per path):
//! - E: unique closure bytes / stored layer bytes for the images
//!   {runtime, devcontainer, xl} (v1), 1.0 is perfect;
//! - pull: bytes pulled to go from devcontainer to xl, over the bytes of
//!   the paths xl adds;
//! - an update column per variant: bytes re-sent for xl's update (v1 →
//!   variant), over the bytes of the paths that changed. v2 is OpenSSL, v2z
//!   zlib; v2c (curl) and v2x (xz, in no prior) were never tuned on.
//!
//! `shared+family` plans each image knowing the family's closures
//! ([`nix_layer_plan::Family`]): the v1 images with the three v1 graphs, and
//! each updated xl with the three graphs of its own variant (after a nixpkgs
//! update every set updates together).

use std::path::{Path, PathBuf};

use nix_layer_graph::{Graph, StoreDir};
use nix_layer_plan::sharing::{added_path_bytes, family_report, plan_layers, pull_bytes, ImageLayers};
use nix_layer_plan::{plan, plan_with_family, store_layer_budget, Family, Plan, Strategy};

const PROFILES: [&str; 3] = ["runtime", "devcontainer", "xl"];
const UPDATES: [&str; 4] = ["v2", "v2z", "v2c", "v2x"];

fn load(dir: &Path, name: &str) -> Graph {
    let file = dir.join(format!("{name}.closure-graph.json"));
    Graph::from_json_file(&file, &StoreDir::default(), "graph").unwrap_or_else(|e| panic!("{e}"))
}

fn family_of(dir: &Path, variant: &str) -> Family {
    Family::new(PROFILES.iter().map(|p| (p.to_string(), load(dir, &format!("{p}-{variant}")))).collect())
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/var/tmp/nix-layer-corpus".into()));
    // The three v1 images, then xl after each update.
    let mut names: Vec<String> = PROFILES.iter().map(|p| format!("{p}-v1")).collect();
    names.extend(UPDATES.iter().map(|v| format!("xl-{v}")));
    let graphs: Vec<Graph> = names.iter().map(|n| load(&dir, n)).collect();
    let mut families = vec![family_of(&dir, "v1"); 3];
    families.extend(UPDATES.iter().map(|v| family_of(&dir, v)));
    let size_of = |p: &str| -> u64 {
        graphs
            .iter()
            .find_map(|g| g.index_of(&StoreDir::default().parse(p).ok()?).map(|i| g.info(i).nar_size))
            .unwrap_or(0)
    };
    println!("| max_layers | strategy | E | pull | openssl | zlib | curl | xz |");
    println!("|---|---|---|---|---|---|---|---|");
    for max_layers in [100, 50, 25, 15] {
        let budget = store_layer_budget(max_layers, 0).expect("budget");
        for name in ["popularity", "auto", "shared", "shared+family"] {
            let plans: Vec<Plan> = graphs
                .iter()
                .zip(&families)
                .map(|(g, f)| match name {
                    "shared+family" => plan_with_family(g, Strategy::Shared, budget, f),
                    s => plan(g, s.parse().expect("strategy"), budget),
                })
                .collect::<Result<_, _>>()
                .expect("plan");
            let images: Vec<ImageLayers> =
                plans.iter().zip(&graphs).zip(&names).map(|((p, g), n)| plan_layers(n, p, g)).collect();
            let e = family_report(&images[..3], &size_of).efficiency;
            let ratio = |have: usize, want: usize| {
                pull_bytes(&images[have], &images[want]) as f64
                    / added_path_bytes(&images[have], &images[want], &size_of) as f64
            };
            let updates: Vec<String> = (3..images.len()).map(|k| format!("{:.2}", ratio(2, k))).collect();
            println!("| {max_layers} | {name} | {e:.3} | {:.2} | {} |", ratio(1, 2), updates.join(" | "));
        }
    }
}
