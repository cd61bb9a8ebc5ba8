//! Pushes an image of file-backed layers to a throw-away local registry, pushes it again,
//! pushes a one-layer change, and pulls it back verified, printing time, bytes and requests.
//!
//! `cargo run --release -p nix-layer-registry --example push_pull [MiB per layer] [layers]`

use std::io::Write;
use std::time::Instant;

use nix_layer_blob::Digest;
use nix_layer_registry::{BlobSource, BytesBlob, FileBlob, ImageUpload, OCI_MANIFEST};
use nix_layer_registry_testkit::{test_client, TestRegistry};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let (mib, count) = (args.next().unwrap_or(32), args.next().unwrap_or(4));
    let Some(reg) = TestRegistry::start_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let layer = |name: &str| {
        let path = dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut x = Digest::of(name.as_bytes()).bytes()[0] as u64 | 1;
        for _ in 0..mib << 17 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write_all(&x.to_le_bytes()).unwrap();
        }
        drop(f);
        let (digest, size) = Digest::of_reader(&mut std::fs::File::open(&path).unwrap()).unwrap();
        FileBlob { path, digest, size }
    };
    let mut layers: Vec<FileBlob> = (0..count).map(|i| layer(&format!("l{i}"))).collect();
    let client = test_client(None);
    let target = reg.reference("bench/app:v1");
    let push = |label: &str, layers: &[FileBlob]| {
        let config = BytesBlob::new(format!(r#"{{"layers":{}}}"#, layers.len()).into_bytes());
        let descs: Vec<String> = layers
            .iter()
            .map(|l| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
                    l.digest, l.size
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
            config.digest,
            config.bytes.len(),
            descs.join(",")
        );
        let blobs: Vec<&dyn BlobSource> = std::iter::once(&config as &dyn BlobSource)
            .chain(layers.iter().map(|l| l as &dyn BlobSource))
            .collect();
        let before = reg.requests().len();
        let t = Instant::now();
        let upload = ImageUpload {
            blobs: &blobs,
            manifest: manifest.as_bytes(),
            media_type: OCI_MANIFEST,
            mount_from: &[],
        };
        let report = client.push_image(&target, &[], &upload).unwrap();
        let elapsed = t.elapsed();
        let requests = reg.requests().len() - before;
        println!(
            "{label}: {:.2} s, {} blobs uploaded, {:.1} MiB sent, {requests} requests",
            elapsed.as_secs_f64(),
            report.uploaded(),
            report.bytes_uploaded() as f64 / (1 << 20) as f64
        );
    };
    println!("{count} layers of {mib} MiB, local registry, plain HTTP");
    push("first push", &layers);
    push("same image again", &layers);
    layers[count - 1] = layer("changed");
    push("one layer changed", &layers);
    let t = Instant::now();
    for l in &layers {
        client
            .fetch_blob_to_path(&target, &l.digest, &dir.path().join(format!("pulled-{}", l.digest.hex())))
            .unwrap();
    }
    println!("pull back, verified: {:.2} s", t.elapsed().as_secs_f64());
}
