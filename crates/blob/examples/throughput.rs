//! Measures `write_blob` throughput for each compression on a sample of real files.
//!
//! ```text
//! cargo run --release -p nix-layer-blob --example throughput [-- DIR [MB]]
//! ```
//!
//! The input is the first MB megabytes (default 200) of regular files under DIR (default
//! `/usr`), read into memory first so only hashing, compression and writing are timed.
//! Binaries and text in about Nix-store proportions compress roughly like real layers.

use std::path::Path;
use std::time::Instant;

use nix_layer_blob::{write_blob, Compression};

fn collect(dir: &Path, limit: usize, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= limit {
            return;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect(&e.path(), limit, out);
        } else if ft.is_file() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                let n = bytes.len().min(limit - out.len());
                out.extend_from_slice(&bytes[..n]);
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/usr".into());
    let mb: usize = args.next().map_or(200, |s| s.parse().expect("MB must be a number"));
    let mut input = Vec::with_capacity(mb << 20);
    collect(Path::new(&dir), mb << 20, &mut input);
    println!("input: {:.1} MiB from {dir}", input.len() as f64 / (1 << 20) as f64);

    let out = tempfile::tempdir().expect("temporary directory");
    for c in Compression::ALL {
        let start = Instant::now();
        let blob = write_blob(out.path(), c, |w| {
            // 1 MiB pieces, like a tar writer's buffer.
            for chunk in input.chunks(1 << 20) {
                w.write_all(chunk)?;
            }
            Ok(())
        })
        .expect("write_blob");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{c:>5}: {:7.1} MiB/s of input, {:6.2} s, stored {:6.1} MiB ({:.1}% of input)",
            input.len() as f64 / (1 << 20) as f64 / secs,
            secs,
            blob.size as f64 / (1 << 20) as f64,
            100.0 * blob.size as f64 / input.len() as f64
        );
    }
}
