//! Reading a closure straight from the local Nix database, through one
//! `nix-store --dump-db` process (one process for the whole closure: Nix's
//! start-up and database open dominate per-path queries).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Error, Graph, NarHash, PathInfo, StoreDir, StorePath};

impl Graph {
    /// Queries `paths` (a whole closure, e.g. `$(nix-store -qR ROOT)`) with
    /// `nix_store --dump-db P1 P2 …`. Fails with `nix-store`'s stderr if it
    /// fails (a path that is not valid, say), and with
    /// [`Error::NotAClosure`] if a path references one not in `paths`.
    pub fn query_nix_store(paths: &[StorePath], nix_store: &Path) -> Result<Graph, Error> {
        let mut wanted: Vec<&StorePath> = Vec::with_capacity(paths.len());
        let mut seen = HashSet::with_capacity(paths.len());
        for p in paths {
            if seen.insert(p) {
                wanted.push(p);
            }
        }
        // Without arguments `--dump-db` dumps the whole database.
        if wanted.is_empty() {
            return Graph::new(Vec::new());
        }
        let run = || {
            Command::new(nix_store)
                .arg("--dump-db")
                .args(wanted.iter().map(|p| p.as_str()))
                .stdin(Stdio::null())
                .output()
        };
        // ETXTBSY: a program just written is still open for writing in a child another
        // thread forked (until that child execs). It passes in moments; retry briefly.
        let mut output = run();
        for _ in 0..50 {
            match &output {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    output = run();
                }
                _ => break,
            }
        }
        let output = output.map_err(|source| Error::Spawn { program: nix_store.to_owned(), source })?;
        if !output.status.success() {
            return Err(Error::NixStore {
                program: nix_store.to_owned(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let text =
            std::str::from_utf8(&output.stdout).map_err(|_| Error::DumpDb("it is not UTF-8".into()))?;
        // Paths print with the store directory of the given paths.
        let first = wanted[0].as_str();
        let store_dir = StoreDir::new(&first[..first.len() - wanted[0].base_name().len() - 1])?;
        let infos = parse_dump_db(text, &store_dir)?;

        let got: HashSet<&StorePath> = infos.iter().map(|i| &i.path).collect();
        if let Some(p) = wanted.iter().find(|p| !got.contains(*p)) {
            return Err(Error::DumpDb(format!("{p} was asked for but not printed")));
        }
        for info in &infos {
            if let Some(r) = info.references.iter().find(|r| !seen.contains(r)) {
                return Err(Error::NotAClosure { path: info.path.to_string(), reference: r.to_string() });
            }
        }
        Graph::new(infos)
    }
}

/// Parses the registration format: per path its line, the base-16 NAR hash,
/// the NAR size, the deriver (empty if unknown), the reference count, then
/// one line per reference.
fn parse_dump_db(text: &str, store_dir: &StoreDir) -> Result<Vec<PathInfo>, Error> {
    let mut lines = text.lines();
    let mut infos = Vec::new();
    while let Some(line) = lines.next() {
        let path = store_dir.parse(line)?;
        let mut next = |what: &str| {
            lines.next().ok_or_else(|| Error::DumpDb(format!("it ends before the {what} of {path}")))
        };
        let hash = next("NAR hash")?;
        let nar_hash = NarHash::parse(hash).map_err(|e| Error::DumpDb(format!("{path}: {e}")))?;
        let size = next("NAR size")?;
        let nar_size = size.parse().map_err(|_| Error::DumpDb(format!("{path}: bad NAR size `{size}`")))?;
        let deriver = next("deriver")?;
        let deriver = (!deriver.is_empty()).then(|| deriver.to_owned());
        let count = next("reference count")?;
        let count: usize =
            count.parse().map_err(|_| Error::DumpDb(format!("{path}: bad reference count `{count}`")))?;
        let mut references = Vec::with_capacity(count);
        for _ in 0..count {
            references.push(store_dir.parse(next("references")?)?);
        }
        let mut info = PathInfo::from_raw_references(path, references, nar_size);
        info.nar_hash = Some(nar_hash);
        info.deriver = deriver;
        infos.push(info);
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;
    use crate::tests::{fake_path, sp};

    const HEX: &str = "10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6";

    /// A stand-in `nix-store` that prints `stdout`, `stderr` and exits with `code`.
    fn fake_nix_store(dir: &Path, stdout: &str, stderr: &str, code: i32) -> PathBuf {
        std::fs::write(dir.join("out"), stdout).unwrap();
        std::fs::write(dir.join("err"), stderr).unwrap();
        let script = dir.join("nix-store");
        let body = format!(
            "#!/bin/sh\necho \"$@\" > '{d}/args'\ncat '{d}/out'\ncat '{d}/err' >&2\nexit {code}\n",
            d = dir.display()
        );
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn record(path: &str, deriver: &str, refs: &[String]) -> String {
        let mut s = format!("{path}\n{HEX}\n120\n{deriver}\n{}\n", refs.len());
        for r in refs {
            s.push_str(r);
            s.push('\n');
        }
        s
    }

    #[test]
    fn parses_dump_db_output() {
        let dir = tempfile::tempdir().unwrap();
        let (app, lib) = (fake_path("app"), fake_path("lib"));
        let drv = fake_path("app.drv");
        let out = record(&app, &drv, &[app.clone(), lib.clone()]) + &record(&lib, "", &[]);
        let nix_store = fake_nix_store(dir.path(), &out, "", 0);
        let g = Graph::query_nix_store(&[sp("app"), sp("lib"), sp("app")], &nix_store).unwrap();
        assert_eq!(g.len(), 2);
        let a = g.info(0);
        assert_eq!(a.path, sp("app"));
        assert!(a.self_reference);
        assert_eq!(a.references, vec![sp("lib")]);
        assert_eq!(a.nar_size, 120);
        assert_eq!(a.nar_hash, Some(NarHash::parse(HEX).unwrap()));
        assert_eq!(a.deriver.as_deref(), Some(drv.as_str()));
        assert_eq!(g.info(1).deriver, None);
        // One process, each path once.
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert_eq!(args.trim(), format!("--dump-db {app} {lib}"));
    }

    #[test]
    fn missing_reference_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (app, lib) = (fake_path("app"), fake_path("lib"));
        let nix_store = fake_nix_store(dir.path(), &record(&app, "", std::slice::from_ref(&lib)), "", 0);
        let e = Graph::query_nix_store(&[sp("app")], &nix_store).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::NotAClosure { .. }), "{msg}");
        assert!(msg.contains(&lib) && msg.contains(&app), "{msg}");
        assert!(msg.contains("$(nix-store -qR ROOT)"), "{msg}");
    }

    #[test]
    fn failure_reports_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let app = fake_path("app");
        let nix_store = fake_nix_store(dir.path(), "", &format!("error: path '{app}' is not valid\n"), 1);
        let e = Graph::query_nix_store(&[sp("app")], &nix_store).unwrap_err();
        assert!(matches!(e, Error::NixStore { .. }));
        assert!(e.to_string().contains("is not valid"), "{e}");
    }

    #[test]
    fn truncated_or_odd_output() {
        let dir = tempfile::tempdir().unwrap();
        let app = fake_path("app");
        for (out, want) in [
            (format!("{app}\n{HEX}\n"), "ends before the NAR size"),
            (format!("{app}\n{HEX}\n1\n"), "ends before the deriver"),
            (format!("{app}\n{HEX}\nbig\n\n0\n"), "bad NAR size"),
            (format!("{app}\nnothex\n1\n\n0\n"), "is not a NAR hash"),
            (format!("{app}\n{HEX}\n1\n\nmany\n"), "bad reference count"),
            (format!("{app}\n{HEX}\n1\n\n2\n{app}\n"), "ends before the references"),
            (record(&fake_path("other"), "", &[]), "was asked for but not printed"),
        ] {
            let nix_store = fake_nix_store(dir.path(), &out, "", 0);
            let e = Graph::query_nix_store(&[sp("app")], &nix_store).unwrap_err();
            assert!(e.to_string().contains(want), "{out:?}: {e}");
        }
    }

    #[test]
    fn missing_program() {
        let e = Graph::query_nix_store(&[sp("app")], Path::new("/nonexistent/nix-store")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/nix-store"), "{e}");
        // No paths: nothing to ask, and no process.
        assert!(Graph::query_nix_store(&[], Path::new("/nonexistent/nix-store")).unwrap().is_empty());
    }

    fn have_nix_store() -> bool {
        Command::new("nix-store").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
    }

    #[test]
    fn real_nix_store() {
        if !have_nix_store() {
            eprintln!("note: `nix-store` is not on PATH; skipping the real --dump-db test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nix-layer-graph-test.txt");
        let content = format!("nix-layer-graph test {}\n", std::process::id());
        std::fs::write(&file, &content).unwrap();
        let out = Command::new("nix-store").arg("--add").arg(&file).output().unwrap();
        if !out.status.success() {
            eprintln!("note: `nix-store --add` failed, skipping: {}", String::from_utf8_lossy(&out.stderr));
            return;
        }
        let added = String::from_utf8(out.stdout).unwrap();
        let path = StoreDir::default().parse(added.trim()).unwrap();
        let g = Graph::query_nix_store(std::slice::from_ref(&path), Path::new("nix-store")).unwrap();
        assert_eq!(g.len(), 1);
        let info = g.info(0);
        assert_eq!(info.path, path);
        assert!(info.references.is_empty() && !info.self_reference);
        // A flat file's NAR: 13 fixed 8-byte-padded strings plus the padded contents.
        assert_eq!(info.nar_size, 112 + (content.len() as u64).div_ceil(8) * 8);
        assert!(info.nar_hash.is_some());

        let gone = StoreDir::default().parse(&fake_path("nix-layer-graph-not-there")).unwrap();
        let e = Graph::query_nix_store(&[gone], Path::new("nix-store")).unwrap_err();
        assert!(matches!(e, Error::NixStore { .. }), "{e}");
        assert!(e.to_string().contains("is not valid"), "{e}");
    }

    /// The real corpus closure through the real database, against its
    /// exportReferencesGraph JSON, when this machine has both.
    #[test]
    #[ignore = "needs /var/tmp/corpus registered in the local Nix store"]
    fn corpus_matches_export_references_graph() {
        let file = Path::new("/var/tmp/corpus/runtime-v1.closure-graph.json");
        let json = Graph::from_json_file(file, &StoreDir::default(), "graph").unwrap();
        let paths: Vec<StorePath> = json.infos().iter().map(|i| i.path.clone()).collect();
        let db = Graph::query_nix_store(&paths, Path::new("nix-store")).unwrap();
        assert_eq!(db.len(), json.len());
        for info in json.infos() {
            let other = db.info(db.index_of(&info.path).unwrap());
            assert_eq!(other.references, info.references, "{}", info.path);
            assert_eq!(other.nar_size, info.nar_size, "{}", info.path);
            assert_eq!(other.nar_hash, info.nar_hash, "{}", info.path);
            assert!(other.deriver.as_deref().is_some_and(|d| d.ends_with(".drv")));
        }
        // Leaving out a dependency is caught, with the fix in the message.
        let root = json.info(json.roots()[0]).path.clone();
        let e = Graph::query_nix_store(&[root], Path::new("nix-store")).unwrap_err();
        assert!(matches!(e, Error::NotAClosure { .. }), "{e}");
    }
}
