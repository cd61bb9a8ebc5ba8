//! Reading the registry's layer index is bounded while the bytes arrive: a real registry
//! behind a fault-injecting proxy that sends an endless index body, or a manifest that
//! announces an oversized index. Either is skipped with a warning, quickly, in bounded
//! memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix_layer_blob::Digest;
use nix_layer_registry::{CachedLayer, Reference, CACHE_TAG, MAX_INDEX_BYTES};
use nix_layer_registry_testkit::{test_client, TestRegistry};

/// What the proxy does to the index.
#[derive(Clone, Copy)]
enum Fault {
    /// The index blob's body never ends (up to 1 GiB, then the proxy gives up).
    EndlessBlob,
    /// The index manifest announces a blob of 1 GiB.
    HugeManifest,
}

/// A proxy on 127.0.0.1 in front of `upstream` that applies `fault` to requests for the
/// index (`blob`, the index blob's digest) and forwards the rest, one connection at a
/// time (`Connection: close`). Serves at most 64 connections, then stops. Counts the
/// index blob requests it saw.
fn proxy(upstream: u16, blob: Digest, fault: Fault) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let blob_requests = Arc::new(AtomicUsize::new(0));
    let seen = blob_requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut client) = conn else { break };
            let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut head = Vec::new();
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                if line.to_ascii_lowercase().starts_with("connection:") {
                    continue;
                }
                if line == "\r\n" {
                    head.push("Connection: close\r\n".to_owned());
                    head.push(line);
                    break;
                }
                head.push(line);
            }
            let request_line = head.first().cloned().unwrap_or_default();
            if request_line.starts_with("GET ") && request_line.contains(&blob.to_string()) {
                seen.fetch_add(1, Ordering::SeqCst);
                if let Fault::EndlessBlob = fault {
                    let _ = client.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
                    let chunk = vec![b' '; 1 << 16];
                    for _ in 0..(1 << 14) {
                        if client.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    continue;
                }
            }
            if let Fault::HugeManifest = fault {
                if request_line.starts_with("GET ")
                    && request_line.contains(&format!("/manifests/{CACHE_TAG}"))
                {
                    let manifest = serde_json::json!({
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "artifactType": "application/vnd.nix-layer.layer-cache.v1",
                        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
                        "layers": [{"mediaType": "application/vnd.nix-layer.layer-cache.v1+json", "digest": blob.to_string(), "size": 1u64 << 30}],
                    })
                    .to_string();
                    let _ = write!(
                        client,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}",
                        manifest.len()
                    );
                    continue;
                }
            }
            let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            let _ = up.write_all(head.concat().as_bytes());
            let mut body = vec![0u8; content_length];
            if reader.read_exact(&mut body).is_ok() {
                let _ = up.write_all(&body);
            }
            let _ = up.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = std::io::copy(&mut up, &mut client);
        }
    });
    (port, blob_requests)
}

/// A registry holding a small, valid index in `e2e/idx`; returns it with the index
/// blob's digest.
fn registry_with_index() -> (TestRegistry, Digest) {
    let r = TestRegistry::start_or_skip()
        .expect("docker-registry is not installed; scripts/setup.sh installs it");
    let client = r.client(None);
    let repo = r.reference("e2e/idx");
    let entry = CachedLayer {
        digest: Digest::of(b"layer"),
        diff_id: Digest::of(b"tar"),
        size: 5,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    client.write_layer_cache(&repo, &BTreeMap::from([("k".to_owned(), entry)]), 10).unwrap();
    assert_eq!(client.read_layer_cache(&repo).unwrap().len(), 1);
    let manifest = client.get_manifest(&repo.with_tag(CACHE_TAG).unwrap()).unwrap();
    let (_, layers) = manifest.blobs().unwrap();
    (r, nix_layer_registry::blob_digest(layers[0].digest()).unwrap())
}

#[test]
fn an_endless_index_body_is_cut_at_its_announced_size_and_skipped() {
    let (r, blob) = registry_with_index();
    let (port, blob_requests) = proxy(r.port(), blob, Fault::EndlessBlob);
    let via_proxy = Reference::parse(&format!("127.0.0.1:{port}/e2e/idx")).unwrap();
    let client = test_client(None);
    let started = Instant::now();
    let e = client.read_layer_cache(&via_proxy).unwrap_err().to_string();
    assert!(e.contains("more than the") && e.contains("bytes announced"), "{e}");
    assert!(blob_requests.load(Ordering::SeqCst) >= 1, "the fault was injected");
    assert!(started.elapsed() < Duration::from_secs(60), "cut as it arrives, not after 1 GiB");
    // A push skips it with a warning and goes on with an empty index.
    let (index, warning) = nix_layer_push::layer_index::read_or_skip(&client, &via_proxy);
    assert!(index.is_empty());
    assert!(warning.unwrap().contains("is skipped"));
}

#[test]
fn an_oversized_index_is_not_even_downloaded() {
    let (r, blob) = registry_with_index();
    let (port, blob_requests) = proxy(r.port(), blob, Fault::HugeManifest);
    let via_proxy = Reference::parse(&format!("127.0.0.1:{port}/e2e/idx")).unwrap();
    let e = test_client(None).read_layer_cache(&via_proxy).unwrap_err().to_string();
    assert!(e.contains(&format!("more than the {MAX_INDEX_BYTES} allowed")), "{e}");
    assert_eq!(blob_requests.load(Ordering::SeqCst), 0);
}
