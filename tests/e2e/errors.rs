//! Bad input fails with a clear message, a non-zero exit, and no output left.

use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::support::*;

/// Runs `nix-layer build … -o OUT` and checks it fails saying `needle`,
/// leaving nothing at OUT or beside it.
fn fails(dir: &Path, args: &[&str], needle: &str) {
    let out_path = dir.join("out.tar");
    let before: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = nix_layer().args(args).arg("-o").arg(&out_path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in:\n{stderr}");
    assert!(!out_path.exists(), "{args:?} left {}", out_path.display());
    let after: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "{args:?} left files behind");
}

fn graph_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

#[test]
fn bad_inputs_fail_cleanly() {
    let f = fixtures();
    let work = scratch();
    let dir = work.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.as_path();
    let inputs = work.path();
    let name = ["--name", "nix-layer-e2e/bad:t"];
    let build = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["build".into()];
        v.extend(name.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let check = |extra: &[&str], needle: &str| {
        let args = build(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(d, &refs, needle);
    };

    // A store path that does not exist.
    check(
        &["--closure", "/nix/store/00000000000000000000000000000000-missing"],
        "00000000000000000000000000000000-missing",
    );
    // A path outside the store.
    check(&["--closure", "/usr/bin/env"], "not inside the Nix store");
    // A set that is not closed.
    check(&["--closure", &f.app], "not a whole closure");
    // Not JSON.
    check(&["--graph", &graph_file(inputs, "bad.json", "{nope")], "bad.json");
    // A cycle.
    let cycle = format!(
        r#"[{{"path":"{A}","narSize":1,"references":["{B}"]}},{{"path":"{B}","narSize":1,"references":["{A}"]}}]"#
    );
    check(&["--graph", &graph_file(inputs, "cycle.json", &cycle)], "cycle");
    // A graph that references a path it does not describe.
    let open = format!(r#"[{{"path":"{A}","narSize":1,"references":["{B}"]}}]"#);
    check(&["--graph", &graph_file(inputs, "open.json", &open)], B);
    // An unknown strategy.
    let closure = f.closure(&[&f.hello]);
    let mut args: Vec<&str> = vec!["--closure"];
    args.extend(closure.iter().map(String::as_str));
    check(&[&args[..], &["--strategy", "random"]].concat(), "random");
    // Too few layers.
    check(&[&args[..], &["--max-layers", "1"]].concat(), "at least 2");
    // An unreadable config.
    check(&[&args[..], &["--config", "/nonexistent/config.json"]].concat(), "/nonexistent/config.json");
    // A name that is not an image reference.
    let bad_name = ["build", "--name", "Not/A:Valid:Name", "--closure"];
    let mut v: Vec<&str> = bad_name.to_vec();
    v.extend(closure.iter().map(String::as_str));
    fails(d, &v, "Not/A:Valid:Name");
    // No output path.
    let o = nix_layer().args(build(&args)).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("-o"));
}

#[test]
fn socket_inside_a_store_path_is_refused() {
    // Nix itself refuses sockets in outputs, so this store is a directory of
    // our own, described by a graph.
    let work = scratch();
    let store = work.path().join("store");
    let p = store.join("cccccccccccccccccccccccccccccccc-with-socket");
    std::fs::create_dir_all(&p).unwrap();
    let _listener = UnixListener::bind(p.join("sock")).unwrap();
    let graph = format!(r#"[{{"path":"{}","narSize":1,"references":[]}}]"#, p.display());
    let g = graph_file(work.path(), "g.json", &graph);
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let store_dir = store.display().to_string();
    fails(&out, &["build", "--name", "x:y", "--store-dir", &store_dir, "--graph", &g], "sock");
}

#[test]
fn failed_oci_build_leaves_no_layout() {
    let work = scratch();
    let out = work.path().join("layout");
    let o = nix_layer()
        .args([
            "build",
            "--name",
            "x:y",
            "--format",
            "oci",
            "--closure",
            "/nix/store/00000000000000000000000000000000-missing",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "staging left behind");
}

#[test]
fn host_files_and_wide_ids_need_care() {
    let work = scratch();
    let store = work.path().join("store");
    let p = store.join("dddddddddddddddddddddddddddddddd-pkg");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("f"), "store file").unwrap();
    std::fs::write(work.path().join("host-secret"), "HOST-SECRET").unwrap();
    let graph = format!(r#"[{{"path":"{}","narSize":1,"references":[]}}]"#, p.display());
    let g = graph_file(work.path(), "g.json", &graph);
    let spec = format!(
        r#"{{"entries": [{{"path": "/secret", "type": "copy", "source": "{}"}}]}}"#,
        work.path().join("host-secret").display()
    );
    let spec = graph_file(work.path(), "top.json", &spec);
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let store_dir = store.display().to_string();
    let base = ["build", "--name", "x:y", "--store-dir", &store_dir, "--graph", &g];
    let with =
        |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    let spec_args = ["--top-layer", spec.as_str()];
    let args: Vec<&str> = base.iter().copied().chain(spec_args).collect();
    fails(&out, &args, "is outside the Nix store; pass --allow-host-files to read host files");
    fails(&out, &with(&["--uid", "4294967296"]), "32-bit");

    let image = out.join("ok.tar");
    let allowed: Vec<&str> = args.iter().copied().chain(["--allow-host-files", "-o"]).collect();
    run(nix_layer().args(allowed).arg(&image));
    let bytes = std::fs::read(&image).unwrap();
    assert!(bytes.windows(11).any(|w| w == b"HOST-SECRET"), "the opted-in host file is in the image");
}
