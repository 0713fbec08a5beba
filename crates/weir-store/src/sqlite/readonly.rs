//! Opening a state database for reading only (the CLI's `get` and `cache list`, the UI): nothing
//! in the state directory is created or changed, and a directory the user cannot write works.
//!
//! In WAL mode SQLite wants a `-wal` and a `-shm` file next to the database. A read-only
//! connection creates them when they are missing (and, unable to checkpoint, leaves them
//! behind); where it cannot create them it fails with "attempt to write a readonly database".
//! So a reader opens the database one of two ways:
//!
//! - while both files exist (a writer has the database open, or one was killed), read-only in
//!   WAL mode (`mode=ro`): it sees every commit, including those still in the WAL, and creates
//!   nothing (where it cannot write the `-shm`, SQLite reads the WAL into memory instead);
//! - otherwise every commit is in the database file (a writer's last connection checkpoints
//!   and removes the `-wal` when it closes), and it opens the file `immutable=1`: no locks, no
//!   `-wal`, no `-shm`. (A `-wal` without a `-shm` is a writer opening the database, with
//!   nothing committed in it yet.)
//!
//! An immutable connection does not notice a writer that starts later, so a reader checks its
//! connection before each use ([`ReadConn::is_current`]) and opens another when a `-wal`
//! appeared or the database file changed. (A writer that starts and checkpoints in the middle of
//! one read can make that read fail or see a mix of states; it never changes the state itself.
//! A writer checkpoints only after committing, so a one-shot read hardly ever meets one.)

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Error, Result};

/// A read-only connection and how it was opened.
pub(crate) struct ReadConn {
    conn: Connection,
    stamp: Stamp,
}

/// What a connection's view depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// Opened in WAL mode on this `-wal` file: current while that file is there.
    Wal(Option<FileId>),
    /// Opened immutable on this database file: current while no `-wal` exists and the file is
    /// unchanged.
    Immutable(Option<FileId>),
}

/// Identity and version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Some(FileId {
            dev,
            ino,
            len: m.len(),
            modified: m.modified().ok(),
        })
    }

    /// The same file (whatever its content now).
    fn same_file(&self, other: &FileId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `path` as an SQLite `file:` URI with `query` (percent-encoded, so that `?`, `#` and `%` in a
/// path mean themselves).
fn uri(path: &Path, query: &str) -> String {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().replace('\\', "/").into_bytes();
    let mut out = String::from(if bytes.first() == Some(&b'/') {
        "file://" // an empty authority, then the absolute path
    } else {
        "file:"
    });
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/._~-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('?');
    out.push_str(query);
    out
}

fn open_uri(path: &Path, query: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        uri(path, query),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", 1)?;
    Ok(conn)
}

impl ReadConn {
    /// Opens `db` for reading (see the module documentation).
    pub(crate) fn open(db: &Path) -> rusqlite::Result<ReadConn> {
        let wal = FileId::of(&sidecar(db, "-wal"));
        if wal.is_some() && sidecar(db, "-shm").exists() {
            return Ok(ReadConn {
                conn: open_uri(db, "mode=ro")?,
                stamp: Stamp::Wal(wal),
            });
        }
        // No writer has the database open (or one is opening it and has committed nothing
        // yet: its `-shm` comes right after its `-wal`).
        // Taken before opening: a change after this is seen by the next `is_current`.
        let file = FileId::of(db);
        let conn = open_uri(db, "immutable=1")?;
        Ok(ReadConn {
            conn,
            stamp: Stamp::Immutable(file),
        })
    }

    /// Whether the connection still sees the current state (else open another).
    pub(crate) fn is_current(&self, db: &Path) -> bool {
        match &self.stamp {
            Stamp::Wal(wal) => match (wal, FileId::of(&sidecar(db, "-wal"))) {
                (Some(then), Some(now)) => then.same_file(&now),
                _ => false,
            },
            Stamp::Immutable(file) => !sidecar(db, "-wal").exists() && *file == FileId::of(db),
        }
    }

    /// The connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, mutably (for transactions, which fail: it is read-only).
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The database file of an existing state directory, refusing what cannot be read: a
/// `state_dir` that is a file ([`Error::NotADirectory`]), no database ([`Error::NoState`]), or
/// an empty one ([`empty_database`]).
pub(crate) fn existing_db(state_dir: &Path) -> Result<PathBuf> {
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(Error::NotADirectory(state_dir.display().to_string()));
    }
    let path = super::SqliteStore::db_path(state_dir);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == 0 => Err(empty_database(&path)),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NoState(state_dir.display().to_string()))
        }
        Err(e) => Err(Error::Corrupt(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The refusal of a 0-byte database file. Weir never leaves one (it creates the database under
/// another name and links it into place once the schema is in), so the file was truncated or
/// replaced: starting a new state on it would hide that the old one is gone.
pub(crate) fn empty_database(path: &Path) -> Error {
    Error::Corrupt(format!(
        "state database {} is empty (0 bytes): it was probably truncated, and the runs it held are lost; \
         weir does not start a new state over it. Move it away (or restore it from a backup) and try again",
        path.display()
    ))
}

/// Refuses a database of an older schema for reading (its columns differ; reading never
/// upgrades it).
pub(crate) fn require_current(version: i64, path: &Path) -> Result<()> {
    if version < super::SCHEMA_VERSION {
        return Err(Error::Corrupt(format!(
            "{} has schema version {version} (this weir reads {}): open it once with a command that writes (e.g. `run` or `resume`) to upgrade it",
            path.display(),
            super::SCHEMA_VERSION
        )));
    }
    Ok(())
}

/// The schema version of a database opened for reading: refuses a database without weir's
/// schema and one newer than this build.
pub(crate) fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    let e = super::sql_err(path);
    let has_meta: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(&e)?;
    let found: Option<i64> = if has_meta == 0 {
        None
    } else {
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(&e)?
    };
    match found {
        None => Err(Error::Corrupt(format!(
            "{} is not a weir state database (it has no weir schema)",
            path.display()
        ))),
        Some(v) if v > super::SCHEMA_VERSION => Err(Error::NewerSchema {
            path: path.display().to_string(),
            found: v,
            supported: super::SCHEMA_VERSION,
        }),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewRun, Payload, RunFilter, SqliteStore, Store, StoreOptions};

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn create(store: &SqliteStore, name: &str) {
        futures::executor::block_on(store.create_run(NewRun {
            name: name.into(),
            task: "env.t".into(),
            inputs: Payload::Inline(vec![0x90]),
            context: serde_json::json!({}),
            owner: "test".into(),
            queue: None,
        }))
        .unwrap();
    }

    fn names(store: &SqliteStore) -> Vec<String> {
        let filter = RunFilter::default();
        let mut names: Vec<String> = futures::executor::block_on(store.list_runs(&filter))
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_database_has_small_pages_and_its_wal_is_made_when_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        let wal = std::fs::metadata(dir.path().join("state.db-wal")).unwrap();
        assert!(
            wal.len() > 32,
            "the WAL holds a frame once the store is open"
        );
        create(&store, "a");
        store.close().unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(SqliteStore::db_path(dir.path())).unwrap();
        let size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, 1024);
        let again = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(names(&again), ["a"]);
    }

    #[test]
    fn a_reader_creates_nothing_and_follows_writers_that_start_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        create(&writer, "a");
        writer.close().unwrap();
        drop(writer);
        assert_eq!(
            files(dir.path()),
            ["state.db"],
            "a closed writer leaves its file alone"
        );

        // No writer: the file alone, opened immutable; nothing created.
        let reader = SqliteStore::open_read_only(dir.path()).unwrap();
        assert_eq!(names(&reader), ["a"]);
        assert_eq!(files(dir.path()), ["state.db"]);

        // A writer starts after the reader opened: its commits are seen (the reader opens
        // again in WAL mode once the writer's -wal is there).
        let writer = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        create(&writer, "b");
        assert_eq!(names(&reader), ["a", "b"]);
        create(&writer, "c");
        assert_eq!(names(&reader), ["a", "b", "c"]);
        writer.close().unwrap();
        drop(writer);
        assert_eq!(names(&reader), ["a", "b", "c"]);
        drop(reader);

        // The database file changed under an immutable reader (a writer came and went between
        // two reads): it opens again rather than read from a stale cache.
        for f in files(dir.path()) {
            if f != "state.db" {
                std::fs::remove_file(dir.path().join(f)).unwrap(); // no writer is left
            }
        }
        let reader = SqliteStore::open_read_only(dir.path()).unwrap();
        assert_eq!(names(&reader), ["a", "b", "c"]);
        let writer = SqliteStore::open(dir.path(), StoreOptions::default()).unwrap();
        create(&writer, "d");
        writer.close().unwrap();
        drop(writer);
        for f in files(dir.path()) {
            if f != "state.db" {
                std::fs::remove_file(dir.path().join(f)).unwrap();
            }
        }
        assert_eq!(names(&reader), ["a", "b", "c", "d"]);
    }

    #[test]
    fn empty_files_and_foreign_databases_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::db_path(dir.path());
        std::fs::write(&db, b"").unwrap();
        for err in [
            SqliteStore::open_read_only(dir.path()).unwrap_err(),
            SqliteStore::open(dir.path(), StoreOptions::default()).unwrap_err(),
        ] {
            assert!(err.to_string().contains("is empty (0 bytes)"), "{err}");
        }
        assert_eq!(files(dir.path()), ["state.db"]);
        std::fs::remove_file(&db).unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE other(x); INSERT INTO other VALUES(1);")
            .unwrap();
        drop(conn);
        let err = SqliteStore::open_read_only(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("not a weir state database"),
            "{err}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            SqliteStore::open_read_only(&file),
            Err(Error::NotADirectory(_))
        ));
        assert!(matches!(
            SqliteStore::open(&file, StoreOptions::default()),
            Err(Error::NotADirectory(_))
        ));
    }

    #[test]
    fn uris_encode_what_sqlite_would_read_as_syntax() {
        assert_eq!(
            uri(Path::new("/tmp/a b/state.db"), "immutable=1"),
            "file:///tmp/a%20b/state.db?immutable=1"
        );
        assert_eq!(
            uri(Path::new("rel/x?y#z%.db"), "mode=ro"),
            "file:rel/x%3Fy%23z%25.db?mode=ro"
        );
    }
}
