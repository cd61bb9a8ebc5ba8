//! What the image holds and how it is built: users and permissions without
//! fakeroot, determinism, sharing, the layer cap, base images, the Nix DB.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A top layer like mkRuntime/mkDevContainer make: a user, /tmp, /usr/bin/env,
/// /bin/sh and a setuid-root copy of a binary.
fn user_spec(dir: &Path) -> PathBuf {
    let f = fixtures();
    let spec = serde_json::json!({
        "entries": [
            {"path": "/etc/passwd", "type": "text", "text": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"},
            {"path": "/etc/group", "type": "text", "text": "root:x:0:\napp:x:1000:\n"},
            {"path": "/home/app", "type": "dir", "mode": "0755"},
            {"path": "/tmp", "type": "dir", "mode": "1777"},
            {"path": "/bin/sh", "type": "symlink", "target": format!("{}/bin/sh", f.busybox)},
            {"path": "/usr/bin/env", "type": "symlink", "target": format!("{}/bin/env", f.busybox)},
            {"path": "/usr/bin/sudo", "type": "copy", "source": format!("{}/bin/euid", f.euid), "mode": "4755"}
        ],
        "rules": [{"path": "/home/app", "uid": 1000, "gid": 1000}]
    });
    write(dir, "top.json", &spec.to_string())
}

fn build_user_image(dir: &Path, name: &str) -> PathBuf {
    let f = fixtures();
    let out = dir.join("user.tar");
    let config = write(dir, "config.json", r#"{"User": "1000:1000", "Env": ["PATH=/bin:/usr/bin"]}"#);
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.busybox, &f.euid]))
        .args(["--name", name, "--quiet", "--config"])
        .arg(&config)
        .arg("--top-layer")
        .arg(user_spec(dir))
        .arg("-o")
        .arg(&out));
    out
}

#[test]
fn non_root_user_tmp_and_setuid_without_fakeroot() {
    let dir = scratch();
    let archive = build_user_image(dir.path(), "nix-layer-e2e/user:t1");
    let img = engine().load(&archive, "nix-layer-e2e/user:t1");
    let out = img.run(&["/bin/sh", "-c", "id -u; touch /home/app/ok && echo wrote; stat -c %a /tmp; echo hi | /usr/bin/env wc -c; /usr/bin/sudo; stat -c %a /nix /nix/store"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["1000", "wrote", "1777", "3", "euid=0 uid=1000", "755", "755"], "{out}");
}

#[test]
fn same_inputs_same_bytes_whatever_the_thread_count() {
    let f = fixtures();
    let dir = scratch();
    let closure = f.closure(&[&f.app, &f.other, &f.deep, &f.link]);
    let build = |jobs: &str, name: &str| {
        let out = dir.path().join(name);
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(&closure)
            .args([
                "--name",
                "nix-layer-e2e/det",
                "--format",
                "oci-archive",
                "--compression",
                "gzip",
                "--quiet",
            ])
            .args(["--jobs", jobs, "-o"])
            .arg(&out));
        std::fs::read(out).unwrap()
    };
    let a = build("1", "a");
    let b = build("2", "b");
    let c = build("2", "c");
    assert!(a == b, "--jobs 1 and --jobs 2 differ");
    assert!(b == c, "two runs differ");
}

#[test]
fn default_tag_is_a_hash_and_stable() {
    let f = fixtures();
    let dir = scratch();
    let out = dir.path().join("img.tar");
    let build = || {
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.hello]))
            .args(["--name", "nix-layer-e2e/untagged", "--quiet", "-o"])
            .arg(&out));
        let (manifest, _) = archive_manifest(&out);
        manifest[0]["RepoTags"][0].as_str().unwrap().to_owned()
    };
    let t = build();
    let tag = t.strip_prefix("nix-layer-e2e/untagged:").unwrap();
    assert_eq!(tag.len(), 32);
    assert_eq!(build(), t);
}

#[test]
fn images_sharing_store_paths_share_diff_ids() {
    let f = fixtures();
    let dir = scratch();
    let mut ids = Vec::new();
    for (root, name) in [(&f.app, "nix-layer-e2e/share-a:t"), (&f.other, "nix-layer-e2e/share-b:t")] {
        let out = dir.path().join(name.replace(['/', ':'], "-"));
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[root]))
            .args(["--name", name, "--quiet", "-o"])
            .arg(&out));
        ids.push(engine().load(&out, name).diff_ids());
    }
    // busybox is in both closures: its layer is the first (most popular) in both.
    assert_eq!(ids[0][0], ids[1][0]);
    assert_ne!(ids[0][1], ids[1][1]);
}

#[test]
fn max_layers_two_keeps_every_path() {
    let f = fixtures();
    let dir = scratch();
    let closure = f.closure(&[&f.app, &f.other, &f.deep, &f.link]);
    let out = dir.path().join("two.tar");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(&closure)
        .args(["--name", "nix-layer-e2e/two:t", "--max-layers", "2", "--quiet", "-o"])
        .arg(&out));
    let layers = archive_layer_entries(&out);
    assert_eq!(layers.len(), 2);
    for p in &closure {
        assert!(
            layers[0].iter().any(|e| e == p || e == &format!("{p}/")),
            "{p} missing from the store layer"
        );
    }
    let img = engine().load(&out, "nix-layer-e2e/two:t");
    assert_eq!(img.run(&[&format!("{}/bin/app", f.app)]).trim(), "hello from nix-layer");
    // A store path that is a symlink stays one; hard links and long names survive.
    let check = format!(
        "{bb}/bin/readlink {link}; {bb}/bin/cat {hello}/share/hello/hardlink; {bb}/bin/find {deep} -name 'file-*' | {bb}/bin/wc -l",
        bb = f.busybox,
        link = f.link,
        hello = f.hello,
        deep = f.deep
    );
    let out = img.run(&[&format!("{}/bin/sh", f.busybox), "-c", &check]);
    assert_eq!(out.lines().collect::<Vec<_>>(), [f.hello.as_str(), "data", "1"]);
}

#[test]
fn base_image_layers_come_first_and_env_is_inherited() {
    let f = fixtures();
    let dir = scratch();
    let base = dir.path().join("base.tar");
    let base_config = write(dir.path(), "base.json", r#"{"Env": ["A=base", "B=base"], "Cmd": ["/bin/sh"]}"#);
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.busybox]))
        .args(["--name", "nix-layer-e2e/base:t", "--quiet", "--config"])
        .arg(&base_config)
        .arg("-o")
        .arg(&base));
    let top = dir.path().join("top.tar");
    let config = write(dir.path(), "top.json", r#"{"Env": ["B=top", "C=top"]}"#);
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.other]))
        .args(["--name", "nix-layer-e2e/ontop:t", "--max-layers", "4", "--quiet", "--config"])
        .arg(&config)
        .arg("--from-image")
        .arg(&base)
        .arg("-o")
        .arg(&top));
    let (_, base_cfg) = archive_manifest(&base);
    let (_, cfg) = archive_manifest(&top);
    let ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 4, "max-layers 4 with a 2-layer base: 1 store layer + top");
    assert_eq!(ids[..2], base_cfg["rootfs"]["diff_ids"].as_array().unwrap()[..]);
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["A=base", "B=top", "C=top"]));
    let img = engine().load(&top, "nix-layer-e2e/ontop:t");
    let out = img.run(&[&format!("{}/bin/other", f.other)]);
    assert_eq!(out.trim(), "other");
}

#[test]
fn nix_database_registers_the_whole_closure() {
    let f = fixtures();
    let dir = scratch();
    let closure = f.closure(&[&f.app]);
    let layout = dir.path().join("oci");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(&closure)
        .args(["--name", "nix-layer-e2e/nixdb:t", "--nix-db", "--format", "oci", "--quiet", "-o"])
        .arg(&layout));
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:nix-layer-e2e/nixdb:t", layout.display()))
        .arg(&bundle));
    let root = bundle.join("rootfs");
    // The host's Nix reads the image's database as a chroot store and checks
    // every registered path's contents against its NAR hash.
    let store = format!("local?root={}", root.display());
    let valid =
        stdout(Command::new("nix-store").args(["--store", &store, "--query", "--requisites", &f.app]));
    let mut listed: Vec<&str> = valid.lines().collect();
    listed.sort();
    let mut expected: Vec<&str> = closure.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(listed, expected);
    run(Command::new("nix-store").args(["--store", &store, "--verify", "--check-contents"]));
}

#[test]
fn plan_json_matches_nixpkgs_popularity() {
    // The "doc" graph of nixpkgs' closure-graph.py, with names sorting like the letters.
    let dir = scratch();
    let p = |c: char| {
        format!(
            "/nix/store/{}-{c}",
            c.to_ascii_lowercase().to_string().repeat(32).replace(['e', 'o', 'u', 't'], "0")
        )
    };
    let node = |c: char, refs: &[char], size: u64| serde_json::json!({"path": p(c), "narSize": size, "references": refs.iter().map(|&r| p(r)).collect::<Vec<_>>()});
    let graph = serde_json::json!([
        node('A', &['B', 'G'], 10),
        node('B', &['C', 'E'], 20),
        node('C', &['D', 'E'], 30),
        node('D', &['F'], 40),
        node('E', &['F'], 50),
        node('F', &[], 60),
        node('G', &[], 70)
    ]);
    let file = write(dir.path(), "graph.json", &graph.to_string());
    let plan = |strategy: &str, max: &str| -> serde_json::Value {
        serde_json::from_str(&stdout(nix_layer().args(["plan", "--graph"]).arg(&file).args([
            "--strategy",
            strategy,
            "--max-layers",
            max,
            "--json",
        ])))
        .unwrap()
    };
    let names = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().rsplit('-').next().unwrap())
                    .collect()
            })
            .collect()
    };
    assert_eq!(names(plan("popularity", "3")), ["F", "EDCBGA"]);
    assert_eq!(names(plan("auto", "4")), ["F", "G", "ABCDE"]);
    assert_eq!(names(plan("auto", "6")), ["F", "G", "D", "E", "ABC"]);
    assert_eq!(names(plan("popularity", "100")), ["F", "E", "D", "C", "B", "G", "A"]);
}

#[test]
fn layer_cache_rebuilds_only_new_layers() {
    let f = fixtures();
    let dir = scratch();
    let cache = dir.path().join("cache");
    let build = |root: &str, out: &str| -> String {
        let o = run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[root]))
            .args([
                "--name",
                "nix-layer-e2e/cached:t",
                "--format",
                "oci",
                "--compression",
                "zstd",
                "--verbose",
                "--cache",
            ])
            .arg(&cache)
            .arg("-o")
            .arg(dir.path().join(out)));
        String::from_utf8(o.stderr).unwrap()
    };
    assert!(build(&f.app, "one").contains("(0 from cache)"));
    assert!(build(&f.app, "two").contains("(3 from cache)"));
    // `other` shares busybox only.
    assert!(build(&f.other, "three").contains("(1 from cache)"));
    let a = std::fs::read(dir.path().join("one/index.json")).unwrap();
    let b = std::fs::read(dir.path().join("two/index.json")).unwrap();
    assert_eq!(a, b, "a cached rebuild gives the same image");
}

/// The cache key names the codec and level: another level misses, the same level hits.
#[test]
fn layer_cache_misses_on_another_compression_level() {
    let f = fixtures();
    let dir = scratch();
    let cache = dir.path().join("cache");
    let build = |compression: &str, out: &str| -> String {
        let o = run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", "nix-layer-e2e/levels:t", "--format", "oci", "--compression", compression])
            .args(["--verbose", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(dir.path().join(out)));
        String::from_utf8(o.stderr).unwrap()
    };
    assert!(build("gzip", "a").contains("(0 from cache)"));
    assert!(build("gzip:9", "b").contains("(0 from cache)"), "gzip:9 was served gzip:5 blobs");
    assert!(build("gzip:9", "c").contains("(3 from cache)"));
    assert!(build("gzip:5", "d").contains("(3 from cache)"), "gzip:5 is the default gzip");
    assert!(build("zstd:9", "e").contains("(0 from cache)"));
    let index = |out: &str| std::fs::read(dir.path().join(out).join("index.json")).unwrap();
    assert_eq!(index("b"), index("c"));
    assert_eq!(index("a"), index("d"));
    assert_ne!(index("a"), index("b"), "level 9 made the same bytes as level 5");
}

/// An invalid level is a clear error before anything is written.
#[test]
fn invalid_compression_levels_are_refused() {
    let f = fixtures();
    let dir = scratch();
    for (bad, says) in [
        ("gzip:13", "1 to 12"),
        ("zstd:0", "1 to 19"),
        ("gzip:fast", "whole number"),
        ("lz4:1", "unknown compression"),
    ] {
        let out = dir.path().join("out");
        let o = nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[&f.app]))
            .args(["--name", "x:t", "--format", "oci", "--compression", bad, "-o"])
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{bad}: {err}");
        assert!(!out.exists(), "{bad}: output written");
    }
}

/// `nix path-info --json -r` output for a root: a graph file Nix itself wrote.
fn path_info_graph(dir: &Path, root: &str, name: &str) -> PathBuf {
    let json = stdout(Command::new("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
        "-r",
        root,
    ]));
    write(dir, name, &json)
}

#[test]
fn family_planning_gives_identical_layers_across_images() {
    let f = fixtures();
    let dir = scratch();
    let app = path_info_graph(dir.path(), &f.app, "app.json");
    let other = path_info_graph(dir.path(), &f.other, "other.json");
    let report: serde_json::Value = serde_json::from_str(&stdout(
        nix_layer()
            .args(["sharing", "--plan", "--strategy", "shared", "--max-layers", "5", "--json", "--family"])
            .arg(&app)
            .arg(&other)
            .arg("--")
            .arg(&app)
            .arg(&other),
    ))
    .unwrap();
    // Planned against the family, the two images store every shared path once.
    assert_eq!(report["efficiency"], 1.0, "{report}");
    // Real builds with the family: busybox's layer is the same blob in both.
    let mut first_layers = Vec::new();
    for (root, name) in [(&f.app, "fam-app"), (&f.other, "fam-other")] {
        let out = dir.path().join(name);
        run(nix_layer()
            .arg("build")
            .arg("--closure")
            .args(f.closure(&[root]))
            .args(["--name", &format!("nix-layer-e2e/{name}:t"), "--strategy", "shared", "--max-layers", "5"])
            .arg("--family")
            .arg(&app)
            .arg(&other)
            .arg("-o")
            .arg(&out));
        let (_, config) = archive_manifest(&out);
        first_layers.push(config["rootfs"]["diff_ids"][0].clone());
        assert!(config["rootfs"]["diff_ids"].as_array().unwrap().len() <= 5);
    }
    assert_eq!(first_layers[0], first_layers[1]);

    // The same family as one catalogue file gives the same plan.
    let read =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let catalogue =
        serde_json::json!({"nixLayerFamily": {"app.json": read(&app), "other.json": read(&other)}});
    let cat = write(dir.path(), "catalogue.json", &catalogue.to_string());
    let plan = |family: &[&Path]| {
        stdout(
            nix_layer()
                .arg("plan")
                .arg("--closure")
                .args(f.closure(&[&f.app]))
                .args(["--strategy", "shared", "--max-layers", "5", "--json", "--family"])
                .args(family),
        )
    };
    assert_eq!(plan(&[&cat]), plan(&[&app, &other]));
}

#[test]
fn silent_when_stderr_is_not_a_terminal() {
    let f = fixtures();
    let dir = scratch();
    let out = run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.hello]))
        .args(["--name", "nix-layer-e2e/silent:t", "-o"])
        .arg(dir.path().join("x.tar")));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn concurrent_builds_share_a_cache_and_corrupt_entries_are_rebuilt() {
    let f = fixtures();
    let dir = scratch();
    let cache = dir.path().join("cache");
    let closure = f.closure(&[&f.app, &f.other]);
    let build = |out: &str| {
        let mut c = nix_layer();
        c.arg("build")
            .arg("--closure")
            .args(&closure)
            .args(["--name", "nix-layer-e2e/conc:t", "--format", "oci", "--compression", "gzip", "--verbose"])
            .arg("--cache")
            .arg(&cache)
            .arg("-o")
            .arg(dir.path().join(out));
        c
    };
    // Two builds at once on an empty cache.
    let children: Vec<_> =
        ["a", "b"].iter().map(|o| build(o).stderr(std::process::Stdio::null()).spawn().unwrap()).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let index = |o: &str| std::fs::read(dir.path().join(o).join("index.json")).unwrap();
    assert_eq!(index("a"), index("b"));
    let verified = stdout(nix_layer().arg("cache-verify").arg(&cache));
    assert!(verified.contains("(0 removed)"), "{verified}");
    // Corrupt every cached blob: truncate one, overwrite the others in place.
    let blobs: Vec<PathBuf> =
        std::fs::read_dir(cache.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!blobs.is_empty());
    for (i, b) in blobs.iter().enumerate() {
        let mut perms = std::fs::metadata(b).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(b, perms).unwrap();
        let len = std::fs::metadata(b).unwrap().len();
        let garbage = if i == 0 { vec![0u8; (len / 2) as usize] } else { vec![0x5a; len as usize] };
        std::fs::write(b, garbage).unwrap();
    }
    // cache-verify re-hashes and drops the damaged blobs.
    let copy = dir.path().join("cache-copy");
    run(Command::new("cp").arg("-a").arg(&cache).arg(&copy));
    let verified = stdout(nix_layer().arg("cache-verify").arg(&copy));
    assert!(
        verified.contains(&format!("checked {} blobs ({} removed)", blobs.len(), blobs.len())),
        "{verified}"
    );
    let out = run(&mut build("c"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(0 from cache)"), "corrupt entries must not be served: {stderr}");
    assert_eq!(index("c"), index("a"));
    // The rebuilt image is intact: umoci checks every blob against its digest.
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:nix-layer-e2e/conc:t", dir.path().join("c").display()))
        .arg(dir.path().join("bundle")));
}

#[test]
fn roots_restrict_the_image_to_their_closure() {
    let f = fixtures();
    let closure = f.closure(&[&f.app, &f.other]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(
        nix_layer().arg("plan").arg("--closure").args(&closure).args(["--root", &f.other, "--json"]),
    ))
    .unwrap();
    let mut paths: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l.as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    paths.sort();
    let mut want = vec![f.busybox.as_str(), f.other.as_str()];
    want.sort();
    assert_eq!(paths, want);
}

#[test]
fn sharing_report_reads_real_images() {
    let f = fixtures();
    let dir = scratch();
    let a = dir.path().join("a.tar");
    let b = dir.path().join("b");
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.hello]))
        .args(["--name", "x/a:t", "-o"])
        .arg(&a));
    run(nix_layer()
        .arg("build")
        .arg("--closure")
        .args(f.closure(&[&f.app]))
        .args(["--name", "x/b:t", "--format", "oci", "-o"])
        .arg(&b));
    let report: serde_json::Value =
        serde_json::from_str(&stdout(nix_layer().args(["sharing", "--json"]).arg(&a).arg(&b))).unwrap();
    // One layer per path: busybox's and hello's layers (and the empty top
    // layer) are stored once. E is below 1 only by tar headers and padding.
    let (total, stored) =
        (report["totalImageBytes"].as_u64().unwrap(), report["storedBytes"].as_u64().unwrap());
    assert!(stored * 3 < total * 2, "{report}");
    assert!(report["efficiency"].as_f64().unwrap() > 0.95, "{report}");
    // b pulls app's layer only: one 10240-byte tar record (app holds a symlink).
    assert_eq!(report["pulls"][0]["pullBytes"], 10240, "{report}");
}
