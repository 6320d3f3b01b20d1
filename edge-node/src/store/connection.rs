//! Every SQLite connection the appliance opens, and how.
//!
//! This is the only place that opens SQLite files (`cargo xtask tidy`), so
//! that the durability settings are decided once:
//! - [`open_write`]: the event store's one write connection (WAL,
//!   `synchronous=FULL`, read back and refused otherwise);
//! - [`open_credentials`]: `auth.sqlite` (WAL, `synchronous=FULL`);
//! - [`open_checkpointer`]: WAL checkpoints off the commit path;
//! - [`open_read`], [`open_read_only`]: readers, which never write;
//! - [`open_bulk`]: a store being restored, written without per-commit
//!   fsync because nothing in it is acknowledged before [`finish_bulk`]
//!   has made it durable (and the file is renamed into place only then);
//! - [`open_scratch`]: retention's scratch database, never the truth.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// `PRAGMA synchronous` value of FULL.
pub const SYNCHRONOUS_FULL: i64 = 2;

/// Sets WAL and `synchronous=FULL` and reads both back: a connection that
/// would acknowledge before the disk has its commit is refused.
fn durable(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the store must be in WAL mode but SQLite chose {mode:?} (is the file system local?)"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if sync != SYNCHRONOUS_FULL {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the store must run with synchronous=FULL but SQLite reports {sync}"
        )));
    }
    Ok(())
}

/// The store's write connection: WAL, `synchronous=FULL`, no automatic
/// checkpoints (they run off the commit path, see `Store::checkpoint`).
pub fn open_write(path: &Path, journal_size_limit: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    durable(&conn)?;
    conn.pragma_update(None, "journal_size_limit", journal_size_limit as i64)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// The credentials database (`auth.sqlite`): WAL, `synchronous=FULL`.
pub fn open_credentials(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    durable(&conn)?;
    Ok(conn)
}

/// The checkpointer's connection: it copies committed pages from the WAL
/// into the database file, syncing it (`synchronous=FULL`); it gives up on
/// a busy writer quickly and tries again later.
pub fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(100))?;
    durable(&conn)?;
    Ok(conn)
}

/// A reader of a WAL database (sees committed data only; never writes).
pub fn open_read(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// A read-only look at a database file that no one else writes (a backup).
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// A store being rebuilt from elsewhere (restore): WAL without per-commit
/// fsync. Nothing in it counts until [`finish_bulk`] returns.
pub fn open_bulk(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    Ok(conn)
}

/// Makes a bulk-loaded store durable: `synchronous=FULL`, everything
/// checkpointed into the database file and the WAL emptied.
pub fn finish_bulk(conn: &Connection) -> rusqlite::Result<()> {
    durable(conn)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Retention's scratch database: no journal, no fsync (it is rebuilt from
/// scratch on every round and never read as the truth).
pub fn open_scratch(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(c: &Connection) -> i64 {
        c.pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("pragma")
    }

    #[test]
    fn every_connection_that_holds_acknowledged_data_syncs_each_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_write(&dir.path().join("edge.sqlite"), 1 << 20).expect("store");
        assert_eq!(synchronous(&store), SYNCHRONOUS_FULL);
        let auth = open_credentials(&dir.path().join("auth.sqlite")).expect("auth");
        assert_eq!(synchronous(&auth), SYNCHRONOUS_FULL);
        let checkpointer = open_checkpointer(&dir.path().join("edge.sqlite")).expect("ckpt");
        assert_eq!(synchronous(&checkpointer), SYNCHRONOUS_FULL);
        for c in [&store, &auth, &checkpointer] {
            let mode: String = c
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .expect("pragma");
            assert_eq!(mode, "wal");
        }
        // A bulk load is made durable before it counts.
        let bulk = open_bulk(&dir.path().join("restoring.sqlite")).expect("bulk");
        assert_eq!(synchronous(&bulk), 0);
        finish_bulk(&bulk).expect("finish");
        assert_eq!(synchronous(&bulk), SYNCHRONOUS_FULL);
    }
}
