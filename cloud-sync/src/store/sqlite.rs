//! How the cloud opens its SQLite databases: every writing connection
//! (hospital stores, `registry.sqlite`, `downlink.sqlite`, `empi.sqlite`)
//! comes from [`writer`] or [`memory`], so each one commits with
//! `synchronous=FULL` (and, on a file, in WAL mode): a write the cloud
//! acknowledges is on disk. Readers that must not write come from
//! [`reader`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

/// Whether [`writer`] may create the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create the file when it is missing.
    IfMissing,
    /// The file must exist already.
    Never,
}

/// A writing connection to the database file at `path`: waits up to `busy`
/// for a lock held by another connection, journals in WAL mode and commits
/// with `synchronous=FULL`.
pub fn writer(path: &Path, create: Create, busy: Duration) -> anyhow::Result<Connection> {
    let mut flags = OpenFlags::default();
    if create == Create::Never {
        flags.remove(OpenFlags::SQLITE_OPEN_CREATE);
    }
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    durable(&conn)?;
    Ok(conn)
}

/// A writing connection to a private in-memory database (tests, and parts
/// of the cloud run without a data dir), with the same `synchronous=FULL`.
pub fn memory() -> anyhow::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    durable(&conn)?;
    Ok(conn)
}

/// A read-only connection to the database file at `path` (long reads that
/// must not hold up the writer), waiting up to `busy` for a lock.
pub fn reader(path: &Path, busy: Duration) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(busy)?;
    Ok(conn)
}

/// A one-row table in its own database on a connection from [`writer`]:
/// what one durable commit costs on a disk, the peer the benches measure
/// the cloud's own commits against.
#[derive(Debug)]
pub struct CommitProbe {
    conn: Connection,
}

impl CommitProbe {
    /// Creates the probe's database at `path` (which must not hold one).
    pub fn create(path: &Path) -> anyhow::Result<CommitProbe> {
        let conn = writer(path, Create::IfMissing, Duration::ZERO)?;
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")?;
        Ok(CommitProbe { conn })
    }

    /// Commits one row, `id`, on its own.
    pub fn commit(&self, id: i64) -> anyhow::Result<()> {
        self.conn
            .prepare_cached("INSERT INTO t (id, v) VALUES (?1, 'x')")?
            .execute([id])?;
        Ok(())
    }
}

fn durable(conn: &Connection) -> anyhow::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// `PRAGMA synchronous` (2 is FULL) and `PRAGMA journal_mode` of `conn`:
/// what the durability tests check.
#[cfg(test)]
pub(crate) fn durability(conn: &Connection) -> (i64, String) {
    (
        conn.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap_or(-1),
        conn.pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap_or_default(),
    )
}
