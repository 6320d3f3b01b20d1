//! `auth.sqlite`: the hashes of the appliance's bearer tokens.
//!
//! Credentials are not clinical events and live beside the event store, not
//! in it (ADR 0003): `hms-edge token create` must work while the appliance
//! runs, so every writer opens its own durable connection (SQLite
//! serialises them) and lookups use one read connection opened on first use.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

use super::connection;

/// File name of the credential store inside the data dir.
pub const AUTH_FILE: &str = "auth.sqlite";

/// The credential store of one data dir.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    reader: Mutex<Option<Connection>>,
}

fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let conn = connection::open_credentials(path)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS tokens (
             id         INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             role       TEXT    NOT NULL,
             hash       BLOB    NOT NULL UNIQUE,
             created_at INTEGER NOT NULL
         ) STRICT;",
    )?;
    Ok(conn)
}

impl Credentials {
    /// Opens (creating) the credential store of `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Credentials> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let path = data_dir.join(AUTH_FILE);
        open_writer(&path)?;
        Ok(Credentials {
            path,
            reader: Mutex::new(None),
        })
    }

    /// Stores a token's hash, durably, before returning.
    pub fn insert(
        &self,
        name: &str,
        role: &str,
        hash: &[u8; 32],
        created_ms: i64,
    ) -> anyhow::Result<()> {
        open_writer(&self.path)?
            .execute(
                "INSERT INTO tokens(name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role, &hash[..], created_ms],
            )
            .context("storing the token")?;
        Ok(())
    }

    /// The name and role stored for a token's hash.
    pub fn lookup(&self, hash: &[u8; 32]) -> anyhow::Result<Option<(String, String)>> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(connection::open_read(&self.path)?);
        }
        let conn = reader.as_ref().context("token reader unavailable")?;
        Ok(conn
            .prepare_cached("SELECT name, role FROM tokens WHERE hash = ?1")?
            .query_row([&hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Every stored hash (what an audit of the file would see).
    pub fn stored_hashes(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let conn = connection::open_read(&self.path)?;
        let mut stmt = conn.prepare("SELECT hash FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
