//! Prints how well each layering strategy shares layers on the benchmark
//! corpus: `cargo run -p nix-layer-plan --example sharing -- /var/tmp/corpus`.
//!
//! - family E: unique closure bytes / stored layer bytes for the images
//!   {runtime, devcontainer, xl} (v1), 1.0 is perfect;
//! - pull: bytes pulled to go from devcontainer to xl, over the bytes of
//!   the paths xl adds;
//! - update: bytes re-sent for xl's OpenSSL update (v1 → v2), over the
//!   bytes of the paths that changed; zlib: the same for the synthetic zlib
//!   change (v2z), which no strategy was tuned on.
//!
//! `shared+family` plans each image knowing the family's closures
//! ([`nix_layer_plan::Family`]): the v1 images with the three v1 graphs, and
//! each updated xl with the three graphs of its own variant (after a nixpkgs
//! update every set updates together). `shared+family (v1 fam)` plans the
//! updated xl with the stale v1 family instead.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nix_layer_graph::{Graph, StoreDir};
use nix_layer_plan::sharing::{added_path_bytes, family_report, plan_layers, pull_bytes, ImageLayers};
use nix_layer_plan::{plan, plan_with_family, store_layer_budget, Family, Plan, Strategy};

fn load(dir: &Path, name: &str) -> Graph {
    let file = dir.join(format!("{name}.closure-graph.json"));
    Graph::from_json_file(&file, &StoreDir::default(), "graph").unwrap_or_else(|e| panic!("{e}"))
}

/// Plans the k-th image of `names`.
type Planner<'a> = Box<dyn Fn(usize, &Graph) -> Plan + 'a>;

fn largest_layer(p: &Plan, g: &Graph) -> u64 {
    plan_layers("", p, g).layers.iter().map(|l| l.bytes).max().unwrap_or(0)
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/var/tmp/corpus".into()));
    let names = ["runtime-v1", "devcontainer-v1", "xl-v1", "xl-v2", "xl-v2z"];
    let graphs: Vec<Graph> = names.iter().map(|n| load(&dir, n)).collect();
    let size_of = |p: &str| -> u64 {
        graphs
            .iter()
            .find_map(|g| g.index_of(&StoreDir::default().parse(p).ok()?).map(|i| g.info(i).nar_size))
            .unwrap_or(0)
    };
    println!(
        "| max-layers | strategy | family E | pull dev→xl | xl update | xl zlib | layers r/d/x | largest xl layer | plan time (all 5) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let family_of = |variant: &str| {
        Family::new(
            ["runtime", "devcontainer", "xl"]
                .iter()
                .map(|p| (p.to_string(), load(&dir, &format!("{p}-{variant}"))))
                .collect(),
        )
    };
    let (v1, v2, v2z) = (family_of("v1"), family_of("v2"), family_of("v2z"));
    for max_layers in [100, 50] {
        let budget = store_layer_budget(max_layers, 1).expect("budget");
        let mut rows: Vec<(String, Planner)> = Vec::new();
        for strategy in Strategy::ALL {
            rows.push((
                strategy.to_string(),
                Box::new(move |_, g: &Graph| plan(g, strategy, budget).expect("plan")),
            ));
        }
        let fams = [&v1, &v1, &v1, &v2, &v2z];
        rows.push((
            "shared+family".into(),
            Box::new(move |k, g: &Graph| {
                plan_with_family(g, Strategy::Shared, budget, fams[k]).expect("plan")
            }),
        ));
        let v1 = &v1;
        rows.push((
            "shared+family (v1 fam)".into(),
            Box::new(move |_, g: &Graph| plan_with_family(g, Strategy::Shared, budget, v1).expect("plan")),
        ));
        for (name, planner) in &rows {
            let start = Instant::now();
            let plans: Vec<Plan> = graphs.iter().enumerate().map(|(k, g)| planner(k, g)).collect();
            let elapsed = start.elapsed();
            let images: Vec<ImageLayers> =
                plans.iter().zip(&graphs).zip(names).map(|((p, g), n)| plan_layers(n, p, g)).collect();
            let family = family_report(&images[..3], &size_of);
            let ratio = |have: usize, want: usize| {
                pull_bytes(&images[have], &images[want]) as f64
                    / added_path_bytes(&images[have], &images[want], &size_of) as f64
            };
            let (pull, update, zlib) = (ratio(1, 2), ratio(2, 3), ratio(2, 4));
            println!(
                "| {max_layers} (budget {budget}) | {name} | {:.3} | {pull:.2}× | {update:.2}× | {zlib:.2}× | {}/{}/{} | {:.0} MiB | {:.1} ms |",
                family.efficiency,
                plans[0].layers.len(),
                plans[1].layers.len(),
                plans[2].layers.len(),
                largest_layer(&plans[2], &graphs[2]) as f64 / (1 << 20) as f64,
                elapsed.as_secs_f64() * 1e3,
            );
        }
    }
}
