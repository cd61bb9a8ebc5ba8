//! Writes a Nix store database registering an image's store paths, so that
//! Nix inside the image knows them (`nix-store --verify`, no re-ingest).
//!
//! The database is the one every Nix 2.x reads: SQLite with schema version 10
//! (`ValidPaths`, `Refs`, `DerivationOutputs`). Newer Nix migrates it upward
//! on first open. Unlike dockerTools' `includeNixDB`, this registers the whole
//! closure, not only `contents`, and needs no Nix binary at build time.
//! It does not touch the store; it only writes the database files.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use nix_layer_store::{NarHash, StorePath};

/// What Nix needs to know about one valid path.
pub struct Registration<'a> {
    pub path: &'a StorePath,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    /// References, including the path itself when it refers to itself.
    pub references: Vec<&'a StorePath>,
    pub deriver: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the Nix database in {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error("SQLite error while writing the Nix database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{referrer} references {reference}, which is not registered in the database")]
    Dangling { referrer: String, reference: String },
}

/// Nix's schema 10, as Nix 2.x creates it.
const SCHEMA: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// Creates `dir` (the future `/nix/var/nix/db`) holding `db.sqlite` and
/// `schema`. Paths are registered in byte order of their names with the
/// given registration time, so the same input gives the same bytes.
pub fn write_db(dir: &Path, registrations: &[Registration], registration_time: i64) -> Result<(), Error> {
    let io = |source| Error::Io { dir: dir.display().to_string(), source };
    fs::create_dir_all(dir).map_err(io)?;
    fs::write(dir.join("schema"), "10").map_err(io)?;
    let db_path = dir.join("db.sqlite");
    if db_path.exists() {
        fs::remove_file(&db_path).map_err(io)?;
    }

    let mut regs: Vec<&Registration> = registrations.iter().collect();
    regs.sort_by(|a, b| a.path.cmp(b.path));

    let mut conn = rusqlite::Connection::open(&db_path)?;
    // A plain rollback journal leaves no -wal/-shm files behind; Nix switches
    // to WAL itself when it opens the database.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    let mut ids: HashMap<&str, i64> = HashMap::with_capacity(regs.len());
    {
        let mut insert = tx.prepare(
            "insert into ValidPaths (path, hash, registrationTime, deriver, narSize) values (?1, ?2, ?3, ?4, ?5)",
        )?;
        for r in &regs {
            insert.execute(rusqlite::params![
                r.path.as_str(),
                r.nar_hash.to_base16(),
                registration_time,
                r.deriver.filter(|d| !d.is_empty()),
                r.nar_size as i64,
            ])?;
            ids.insert(r.path.as_str(), tx.last_insert_rowid());
        }
        let mut add_ref = tx.prepare("insert or replace into Refs (referrer, reference) values (?1, ?2)")?;
        for r in &regs {
            let referrer = ids[r.path.as_str()];
            let mut refs: Vec<&StorePath> = r.references.clone();
            refs.sort();
            refs.dedup();
            for reference in refs {
                let id = *ids.get(reference.as_str()).ok_or_else(|| Error::Dangling {
                    referrer: r.path.to_string(),
                    reference: reference.to_string(),
                })?;
                add_ref.execute([referrer, id])?;
            }
        }
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix_layer_store::StoreDir;

    fn path(s: &str) -> StorePath {
        StoreDir::default().parse(&format!("/nix/store/{s}")).unwrap()
    }

    #[test]
    fn registers_paths_and_references_deterministically() {
        let a = path("00000000000000000000000000000000-a");
        let b = path("11111111111111111111111111111111-b");
        let h = NarHash::from_bytes([7; 32]);
        let regs = vec![
            Registration { path: &b, nar_hash: h, nar_size: 20, references: vec![&a, &b], deriver: None },
            Registration { path: &a, nar_hash: h, nar_size: 10, references: vec![], deriver: Some("") },
        ];
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        write_db(t1.path(), &regs, 1).unwrap();
        write_db(t2.path(), &regs, 1).unwrap();
        let bytes = |d: &Path| fs::read(d.join("db.sqlite")).unwrap();
        assert_eq!(bytes(t1.path()), bytes(t2.path()));
        assert_eq!(fs::read_to_string(t1.path().join("schema")).unwrap(), "10");
        assert!(!t1.path().join("db.sqlite-wal").exists());

        let conn = rusqlite::Connection::open(t1.path().join("db.sqlite")).unwrap();
        let rows: Vec<(String, String, i64)> = conn
            .prepare("select path, hash, narSize from ValidPaths order by id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, a.as_str());
        assert_eq!(rows[0].1, format!("sha256:{}", "07".repeat(32)));
        assert_eq!(rows[1].2, 20);
        let refs: i64 = conn.query_row("select count(*) from Refs", [], |r| r.get(0)).unwrap();
        assert_eq!(refs, 2, "b -> a and b -> b");
    }

    #[test]
    fn dangling_reference_is_an_error() {
        let a = path("00000000000000000000000000000000-a");
        let b = path("11111111111111111111111111111111-b");
        let regs = vec![Registration {
            path: &a,
            nar_hash: NarHash::from_bytes([0; 32]),
            nar_size: 1,
            references: vec![&b],
            deriver: None,
        }];
        let t = tempfile::tempdir().unwrap();
        let err = write_db(t.path(), &regs, 1).unwrap_err();
        assert!(err.to_string().contains(b.as_str()), "{err}");
    }
}
