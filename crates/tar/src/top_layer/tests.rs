use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};

use nix_layer_store::StoreDir;

use super::*;

const A: &str = "2jmiqxxd2z4ypk8am71rc6kffqzgma57";
const B: &str = "0jmiqxxd2z4ypk8am71rc6kffqzgma57";

/// One member as read back by the `tar` crate (an independent reader).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    uname: String,
    link: String,
    data: String,
}

fn read(bytes: &[u8]) -> Vec<Member> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = String::new();
            e.read_to_string(&mut data).unwrap();
            Member {
                name: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                kind: h.entry_type().as_byte() as char,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                uname: String::from_utf8(h.username_bytes().unwrap_or_default().to_vec()).unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap())
                    .unwrap_or_default(),
                data,
            }
        })
        .collect()
}

fn find<'m>(members: &'m [Member], name: &str) -> &'m Member {
    members.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no member {name} in {members:#?}"))
}

fn names(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.name.as_str()).collect()
}

struct Fixture {
    tmp: tempfile::TempDir,
    store: StoreDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        let store = StoreDir::new(dir.to_str().unwrap()).unwrap();
        Fixture { tmp, store }
    }

    /// A store path holding `files` (relative path, contents); a content of
    /// `-> target` makes a symlink.
    fn path(&self, hash: &str, name: &str, files: &[(&str, &str)]) -> StorePath {
        let p = self.store.parse(&format!("{}/{hash}-{name}", self.store)).unwrap();
        fs::create_dir(p.as_path()).unwrap();
        for (rel, content) in files {
            let f = p.as_path().join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            match content.strip_prefix("-> ") {
                Some(target) => symlink(target, &f).unwrap(),
                None => fs::write(&f, content).unwrap(),
            }
        }
        p
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
}

static NIX_STORE: std::sync::LazyLock<StoreDir> = std::sync::LazyLock::new(StoreDir::default);

/// Input that may copy host files (the fixtures' sources are in a temp dir).
fn input<'a>(contents: &'a [StorePath], spec: &'a TopLayerSpec, mtime: u64) -> TopLayerInput<'a> {
    TopLayerInput {
        contents,
        spec,
        generated: &[],
        store_dir: &NIX_STORE,
        host_files: HostFiles::Allow,
        mtime,
    }
}

fn build(contents: &[StorePath], spec: &TopLayerSpec) -> Result<Vec<Member>, Error> {
    let out = write_top_layer(&input(contents, spec, 1), Vec::new())?;
    Ok(read(&out))
}

fn spec(json: &str) -> TopLayerSpec {
    parse_spec(json.as_bytes()).unwrap()
}

#[test]
fn contents_merge_into_dirs_and_symlinks_first_wins() {
    let fx = Fixture::new();
    let a =
        fx.path(A, "a", &[("bin/hello", "A"), ("share/doc/a", "a"), ("lib", "-> lib64"), ("lib64/x", "")]);
    let b = fx.path(B, "b", &[("bin/hello", "B"), ("bin/world", "w"), ("share/doc/b", "b"), ("lib/y", "")]);
    let got = build(&[a.clone(), b.clone()], &TopLayerSpec::default()).unwrap();
    assert_eq!(
        names(&got),
        vec![
            "bin/",
            "bin/hello",
            "bin/world",
            "lib",
            "lib64/",
            "lib64/x",
            "share/",
            "share/doc/",
            "share/doc/a",
            "share/doc/b"
        ]
    );
    let bin = find(&got, "bin/");
    assert_eq!((bin.kind, bin.mode, bin.uid, bin.uname.as_str()), ('5', 0o755, 0, ""));
    let hello = find(&got, "bin/hello");
    assert_eq!((hello.kind, hello.link.clone()), ('2', format!("{a}/bin/hello")));
    assert_eq!(find(&got, "bin/world").link, format!("{b}/bin/world"));
    // A symlink in contents becomes a link to the symlink's store location,
    // so `b`'s `lib/` directory loses to `a`'s `lib` link.
    assert_eq!(find(&got, "lib").link, format!("{a}/lib"));
    assert_eq!(find(&got, "lib").mode, 0o777);
}

#[test]
fn contents_must_be_existing_directories() {
    let fx = Fixture::new();
    let file = fx.store.parse(&format!("{}/{A}-file", fx.store)).unwrap();
    fs::write(file.as_path(), "x").unwrap();
    let err = build(std::slice::from_ref(&file), &TopLayerSpec::default()).unwrap_err();
    assert!(matches!(err, Error::ContentsNotDirectory { .. }), "{err}");
    assert!(err.to_string().contains(file.as_str()));
    let gone = fx.store.parse(&format!("{}/{B}-gone", fx.store)).unwrap();
    let err = build(std::slice::from_ref(&gone), &TopLayerSpec::default()).unwrap_err();
    assert!(matches!(err, Error::MissingStorePath { .. }) && err.to_string().contains(gone.as_str()));
}

#[test]
fn spec_entries_with_setuid_sticky_and_implicit_parents() {
    let fx = Fixture::new();
    fs::write(fx.host("sudo"), "binary").unwrap();
    fs::set_permissions(fx.host("sudo"), fs::Permissions::from_mode(0o555)).unwrap();
    let s = spec(&format!(
        r#"{{"entries": [
            {{"path": "/tmp", "type": "dir", "mode": "1777"}},
            {{"path": "/usr/bin/sudo", "type": "copy", "source": "{}", "mode": "4755"}},
            {{"path": "/usr/bin/env", "type": "symlink", "target": "/nix/store/x-coreutils/bin/env"}},
            {{"path": "/etc/passwd", "type": "text", "text": "root:x:0:0::/root:/bin/sh\n"}},
            {{"path": "/etc/shadow", "type": "text", "text": "", "mode": "0600", "uid": 5, "gid": 6, "uname": "shadow"}}
        ]}}"#,
        fx.host("sudo").display()
    ));
    let out = write_top_layer(&input(&[], &s, 1234), Vec::new()).unwrap();
    // Raw header bytes: the setuid and sticky bits are in the mode field.
    let tmp_at = out.windows(5).position(|w| w == b"tmp/\0").unwrap();
    assert_eq!(&out[tmp_at + 100..tmp_at + 108], b"0001777\0");
    let sudo_at = out.windows(14).position(|w| w == b"usr/bin/sudo\0\0").unwrap();
    assert_eq!(&out[sudo_at + 100..sudo_at + 108], b"0004755\0");
    assert_eq!(&out[sudo_at + 136..sudo_at + 148], format!("{:011o}\0", 1234).as_bytes());

    let got = read(&out);
    assert_eq!(
        names(&got),
        vec!["etc/", "etc/passwd", "etc/shadow", "tmp/", "usr/", "usr/bin/", "usr/bin/env", "usr/bin/sudo"]
    );
    assert_eq!(find(&got, "usr/").mode, 0o755);
    assert_eq!(find(&got, "usr/bin/sudo").data, "binary");
    assert_eq!(find(&got, "usr/bin/env").link, "/nix/store/x-coreutils/bin/env");
    let passwd = find(&got, "etc/passwd");
    assert_eq!((passwd.mode, passwd.uid, passwd.data.as_str()), (0o644, 0, "root:x:0:0::/root:/bin/sh\n"));
    let shadow = find(&got, "etc/shadow");
    assert_eq!((shadow.mode, shadow.uid, shadow.gid, shadow.uname.as_str()), (0o600, 5, 6, "shadow"));
}

#[test]
fn copy_without_mode_keeps_the_source_mode() {
    let fx = Fixture::new();
    fs::write(fx.host("tool"), "t").unwrap();
    fs::set_permissions(fx.host("tool"), fs::Permissions::from_mode(0o751)).unwrap();
    let s = spec(&format!(
        r#"{{"entries": [{{"path": "/tool", "type": "copy", "source": "{}"}}]}}"#,
        fx.host("tool").display()
    ));
    assert_eq!(find(&build(&[], &s).unwrap(), "tool").mode, 0o751);
}

#[test]
fn spec_entries_replace_merged_ones() {
    let fx = Fixture::new();
    let a = fx.path(A, "a", &[("etc/passwd", "from contents"), ("etc/ssl/cert", "c"), ("var/x", "")]);
    let s = spec(
        r#"{"entries": [
            {"path": "/etc/passwd", "type": "text", "text": "mine\n"},
            {"path": "/etc/ssl", "type": "symlink", "target": "/elsewhere"},
            {"path": "/etc", "type": "dir", "mode": "0711"}
        ]}"#,
    );
    let got = build(&[a], &s).unwrap();
    assert_eq!(names(&got), vec!["etc/", "etc/passwd", "etc/ssl", "var/", "var/x"]);
    assert_eq!(find(&got, "etc/").mode, 0o711);
    assert_eq!(find(&got, "etc/passwd").data, "mine\n");
    assert_eq!(find(&got, "etc/ssl").link, "/elsewhere");
}

#[test]
fn entries_below_a_file_or_symlink_are_rejected() {
    let fx = Fixture::new();
    // Both orders: spec entries are applied parents first.
    for json in [
        r#"{"entries": [{"path": "/a", "type": "text", "text": ""}, {"path": "/a/b", "type": "text", "text": ""}]}"#,
        r#"{"entries": [{"path": "/a/b", "type": "dir"}, {"path": "/a", "type": "symlink", "target": "x"}]}"#,
    ] {
        let err = build(&[], &spec(json)).unwrap_err();
        assert!(matches!(err, Error::ParentNotDirectory { .. }), "{err}");
        assert!(err.to_string().contains("`/a/b` needs `/a` to be a directory"), "{err}");
    }
    // A file merged from contents is a symlink in the layer.
    let a = fx.path(A, "a", &[("etc/os-release", "x")]);
    let s = spec(r#"{"entries": [{"path": "/etc/os-release/x", "type": "text", "text": ""}]}"#);
    let err = build(&[a], &s).unwrap_err();
    assert!(err.to_string().contains("a symlink there"), "{err}");
}

#[test]
fn copies_directories_recursively_keeping_symlinks() {
    let fx = Fixture::new();
    let src = fx.host("app");
    fs::create_dir_all(src.join("conf/empty")).unwrap();
    fs::write(src.join("conf/app.toml"), "old").unwrap();
    fs::write(src.join("run"), "#!/bin/sh").unwrap();
    fs::set_permissions(src.join("run"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("conf/app.toml", src.join("link")).unwrap();
    symlink(&src, fx.host("app-link")).unwrap();
    // The later-listed copy is still laid down before the file below it.
    let s = spec(&format!(
        r#"{{"entries": [
            {{"path": "/srv/app/conf/app.toml", "type": "text", "text": "new"}},
            {{"path": "/srv/app", "type": "copy", "source": "{}", "mode": "0700", "uid": 1000}}
        ]}}"#,
        fx.host("app-link").display()
    ));
    let got = build(&[], &s).unwrap();
    assert_eq!(
        names(&got),
        vec![
            "srv/",
            "srv/app/",
            "srv/app/conf/",
            "srv/app/conf/app.toml",
            "srv/app/conf/empty/",
            "srv/app/link",
            "srv/app/run"
        ]
    );
    assert_eq!((find(&got, "srv/").uid, find(&got, "srv/app/").uid), (0, 1000));
    assert_eq!(find(&got, "srv/app/").mode, 0o700);
    assert_eq!((find(&got, "srv/app/run").mode, find(&got, "srv/app/run").uid), (0o750, 1000));
    assert_eq!(find(&got, "srv/app/link").link, "conf/app.toml");
    let toml = find(&got, "srv/app/conf/app.toml");
    assert_eq!((toml.data.as_str(), toml.uid), ("new", 0));
}

#[test]
fn copy_source_problems_are_named() {
    let fx = Fixture::new();
    let missing = fx.host("nope");
    let s = spec(&format!(
        r#"{{"entries": [{{"path": "/x", "type": "copy", "source": "{}"}}]}}"#,
        missing.display()
    ));
    let err = build(&[], &s).unwrap_err();
    assert!(matches!(err, Error::CopySourceMissing { .. }), "{err}");
    assert!(err.to_string().contains(missing.to_str().unwrap()) && err.to_string().contains("`/x`"));

    let dir = fx.host("withsock");
    fs::create_dir(&dir).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
    let s =
        spec(&format!(r#"{{"entries": [{{"path": "/x", "type": "copy", "source": "{}"}}]}}"#, dir.display()));
    let err = build(&[], &s).unwrap_err();
    assert!(matches!(err, Error::SpecialInCopy { kind: "socket", .. }), "{err}");
    assert!(err.to_string().contains(dir.join("s").to_str().unwrap()));
}

#[test]
fn rules_set_owners_below_a_path_last_wins() {
    let s = spec(
        r#"{"entries": [
            {"path": "/home/app/.profile", "type": "text", "text": "x"},
            {"path": "/home/app/bin", "type": "symlink", "target": "/usr/bin"},
            {"path": "/home/other", "type": "dir"}
        ],
        "rules": [
            {"path": "/home/app", "uid": 1000, "gid": 100, "mode": "0700", "uname": "app"},
            {"path": "/home/app/.profile", "mode": "0640"},
            {"path": "/home", "gname": "users"}
        ]}"#,
    );
    let got = build(&[], &s).unwrap();
    let home = find(&got, "home/");
    assert_eq!((home.uid, home.mode), (0, 0o755));
    let app = find(&got, "home/app/");
    assert_eq!((app.uid, app.gid, app.mode, app.uname.as_str()), (1000, 100, 0o700, "app"));
    let profile = find(&got, "home/app/.profile");
    assert_eq!((profile.uid, profile.mode), (1000, 0o640));
    let link = find(&got, "home/app/bin");
    assert_eq!((link.uid, link.mode), (1000, 0o777));
    assert_eq!(find(&got, "home/other/").uid, 0);
    let out = write_top_layer(&input(&[], &s, 1), Vec::new()).unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    for e in archive.entries().unwrap() {
        assert_eq!(e.unwrap().header().groupname_bytes(), Some(&b"users"[..]));
    }

    let lonely = spec(r#"{"rules": [{"path": "/home/app", "uid": 1}]}"#);
    let err = build(&[], &lonely).unwrap_err();
    assert!(matches!(err, Error::RuleMatchesNothing { .. }) && err.to_string().contains("/home/app"));
}

#[test]
fn specs_built_in_code_are_validated() {
    let entry = |path: &str| SpecEntry {
        path: path.into(),
        kind: SpecKind::Dir,
        mode: None,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
    };
    let dup = TopLayerSpec { entries: vec![entry("/a"), entry("/a")], rules: vec![] };
    assert!(build(&[], &dup).unwrap_err().to_string().contains("more than once"));
    let rel = TopLayerSpec { entries: vec![entry("a/../b")], rules: vec![] };
    assert!(build(&[], &rel).unwrap_err().to_string().contains("must be absolute"));
}

#[test]
fn empty_top_layer_is_an_empty_archive() {
    let out = write_top_layer(&input(&[], &TopLayerSpec::default(), 1), Vec::new());
    assert_eq!(out.unwrap(), vec![0; 10240]);
}

fn copy_spec(source: &Path) -> TopLayerSpec {
    spec(&format!(r#"{{"entries": [{{"path": "/x", "type": "copy", "source": "{}"}}]}}"#, source.display()))
}

fn refusing<'a>(
    store: &'a StoreDir,
    spec: &'a TopLayerSpec,
    generated: &'a [GeneratedTree],
) -> TopLayerInput<'a> {
    TopLayerInput {
        contents: &[],
        spec,
        generated,
        store_dir: store,
        host_files: HostFiles::Refuse,
        mtime: 1,
    }
}

#[test]
fn host_files_are_refused_unless_allowed() {
    let fx = Fixture::new();
    fs::write(fx.host("shadow"), "SECRET").unwrap();
    let s = copy_spec(&fx.host("shadow"));
    let err = write_top_layer(&refusing(&fx.store, &s, &[]), Vec::new()).unwrap_err();
    let want = format!(
        "top-layer copy source {} is outside the Nix store; pass --allow-host-files to read host files",
        fx.host("shadow").display()
    );
    assert_eq!(err.to_string(), want);
    assert_eq!(find(&build(&[], &s).unwrap(), "x").data, "SECRET");

    // A store file is fine; a symlink in the store leading out is not.
    let p = fx.path(A, "sudo", &[("bin/sudo", "binary")]);
    symlink(fx.host("shadow"), p.as_path().join("bin/out")).unwrap();
    let s = copy_spec(&p.as_path().join("bin/sudo"));
    let got = read(&write_top_layer(&refusing(&fx.store, &s, &[]), Vec::new()).unwrap());
    assert_eq!(find(&got, "x").data, "binary");
    let s = copy_spec(&p.as_path().join("bin/out"));
    let err = write_top_layer(&refusing(&fx.store, &s, &[]), Vec::new()).unwrap_err().to_string();
    assert!(err.contains("resolving to") && err.contains("outside the Nix store"), "{err}");
    // A symlink outside leading into the store reads only the store.
    symlink(p.as_path().join("bin"), fx.host("bin-link")).unwrap();
    let s = copy_spec(&fx.host("bin-link"));
    let got = read(&write_top_layer(&refusing(&fx.store, &s, &[]), Vec::new()).unwrap());
    assert_eq!(find(&got, "x/sudo").data, "binary");
    assert_eq!(find(&got, "x/out").link, fx.host("shadow").to_str().unwrap());
}

#[test]
fn generated_trees_need_no_opt_in_and_do_not_collide() {
    let fx = Fixture::new();
    let db = fx.host("db");
    fs::create_dir(&db).unwrap();
    fs::write(db.join("db.sqlite"), "sqlite").unwrap();
    let generated = [GeneratedTree { path: "/nix/var/nix/db".into(), source: db.clone() }];
    let empty = TopLayerSpec::default();
    let got = read(&write_top_layer(&refusing(&fx.store, &empty, &generated), Vec::new()).unwrap());
    let file = find(&got, "nix/var/nix/db/db.sqlite");
    assert_eq!((file.data.as_str(), file.uid), ("sqlite", 0));
    let clash = spec(r#"{"entries": [{"path": "/nix/var/nix/db", "type": "dir"}]}"#);
    let err = write_top_layer(&refusing(&fx.store, &clash, &generated), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

#[test]
fn copied_file_swapped_for_a_symlink_is_never_followed() {
    let fx = Fixture::new();
    fs::write(fx.host("secret"), "TOP-SECRET").unwrap();
    let src = fx.host("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("conf"), "plain text").unwrap();
    let s = copy_spec(&src);
    let (victim, secret) = (src.canonicalize().unwrap().join("conf"), fx.host("secret"));
    let swapped = victim.clone();
    crate::store_layer::tests::swap_before_open(victim.clone(), move || {
        fs::remove_file(&swapped).unwrap();
        symlink(&secret, &swapped).unwrap();
    });
    let mut out = Vec::new();
    let err = write_top_layer(&input(&[], &s, 1), &mut out).unwrap_err();
    crate::fsread::BEFORE_OPEN.with(|h| h.borrow_mut().take());
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    assert!(err.to_string().contains(victim.to_str().unwrap()), "{err}");
    assert!(!out.windows(10).any(|w| w == b"TOP-SECRET"));
}
