//! The cloud's own database, `registry.sqlite` under the data dir: the
//! enrolled appliances (hospital, region, node, public key), operator API
//! tokens (only their SHA-256 is stored), the DR primaries a replica
//! accepts, and each hospital's last ingest.
//!
//! [`RegistryDb`] is the handle the running cloud and the command line
//! share; the rules (residency, key length) are checked by its callers
//! ([`crate::enrolment`], [`crate::dr`]) before anything is written here.
//! No PHI is kept here: hospital ids, region ids, token names and times.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use base64::Engine;
use hms_domain::{HospitalId, NodeId, RegionId};
use ring::rand::SecureRandom;
use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite;

/// The registry database.
#[derive(Debug)]
pub struct RegistryDb {
    conn: Mutex<Connection>,
}

/// One stored enrolment of an appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentRow {
    /// The hospital.
    pub hospital: HospitalId,
    /// Its region.
    pub region: RegionId,
    /// Its appliance.
    pub node: NodeId,
    /// The appliance's Ed25519 public key.
    pub public_key: Vec<u8>,
}

impl RegistryDb {
    /// Opens (creating) `registry.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<RegistryDb> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let conn = sqlite::writer(
            &data_dir.join("registry.sqlite"),
            sqlite::Create::IfMissing,
            std::time::Duration::from_secs(5),
        )?;
        init(&conn)?;
        Ok(RegistryDb {
            conn: Mutex::new(conn),
        })
    }

    /// A registry in memory (tests).
    pub fn in_memory() -> anyhow::Result<RegistryDb> {
        let conn = sqlite::memory()?;
        init(&conn)?;
        Ok(RegistryDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored enrolment.
    pub fn enrolments(&self) -> anyhow::Result<Vec<EnrolmentRow>> {
        let conn = self.conn();
        let rows: Vec<(String, String, String, Vec<u8>)> = conn
            .prepare("SELECT hospital, region, node, public_key FROM enrolments")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(h, r, n, k)| {
                Ok(EnrolmentRow {
                    hospital: h.parse().context("stored hospital id")?,
                    region: r.parse().context("stored region")?,
                    node: n.parse().context("stored node id")?,
                    public_key: k,
                })
            })
            .collect()
    }

    /// Stores (or replaces) the enrolment of a hospital.
    pub fn put_enrolment(&self, e: &EnrolmentRow) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO enrolments(hospital, region, node, public_key) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(hospital) DO UPDATE SET region = excluded.region, node = excluded.node,
                public_key = excluded.public_key",
            params![
                e.hospital.as_str(),
                e.region.as_str(),
                e.node.as_str(),
                e.public_key
            ],
        )?;
        Ok(())
    }

    /// Creates an operator token named `name` and returns it; only its
    /// SHA-256 is stored, so it is shown once. A name already in use is
    /// refused.
    pub fn create_token(&self, name: &str, now_ms: i64) -> anyhow::Result<String> {
        create_token(&self.conn(), name, now_ms)
    }

    /// The name of the operator holding `token`, if it is one of ours.
    pub fn token_name(&self, token: &str) -> anyhow::Result<Option<String>> {
        token_name(&self.conn(), token)
    }

    /// Stores (or re-keys) the DR primary of `region`.
    pub fn put_primary(&self, region: &RegionId, public_key: &[u8]) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO primaries(region, public_key) VALUES (?1, ?2)
             ON CONFLICT(region) DO UPDATE SET public_key = excluded.public_key",
            params![region.as_str(), public_key],
        )?;
        Ok(())
    }

    /// The enrolled primaries: region → public key.
    pub fn primaries(&self) -> anyhow::Result<HashMap<RegionId, Vec<u8>>> {
        primaries(&self.conn())
    }

    /// Records that events of `hospital` were stored at `now_ms`.
    pub fn record_ingest(
        &self,
        hospital: &HospitalId,
        region: &RegionId,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO ingest_status(hospital, region, last_ingest_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(hospital) DO UPDATE SET last_ingest_ms = excluded.last_ingest_ms",
            )?
            .execute(params![hospital.as_str(), region.as_str(), now_ms])?;
        Ok(())
    }

    /// The region recorded for `hospital`, if it has stored events here.
    pub fn hospital_region(&self, hospital: &HospitalId) -> anyhow::Result<Option<RegionId>> {
        let r: Option<String> = self
            .conn()
            .prepare_cached("SELECT region FROM ingest_status WHERE hospital = ?1")?
            .query_row([hospital.as_str()], |r| r.get(0))
            .optional()?;
        r.map(|r| r.parse().context("stored region")).transpose()
    }

    /// Every hospital that has stored events here, with its record.
    pub fn ingest_status(&self) -> anyhow::Result<HashMap<HospitalId, IngestStatus>> {
        let rows: Vec<(String, String, i64)> = self
            .conn()
            .prepare_cached("SELECT hospital, region, last_ingest_ms FROM ingest_status")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(h, r, t)| {
                Ok((
                    h.parse().context("stored hospital id")?,
                    IngestStatus {
                        region: r.parse().context("stored region")?,
                        last_ingest_ms: t,
                    },
                ))
            })
            .collect()
    }

    /// `PRAGMA synchronous` and `journal_mode` of the connection (tests).
    #[cfg(test)]
    pub(crate) fn durability(&self) -> (i64, String) {
        sqlite::durability(&self.conn())
    }
}

/// Creates the tables (idempotent).
fn init(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS enrolments (
             hospital   TEXT PRIMARY KEY,
             region     TEXT NOT NULL,
             node       TEXT NOT NULL,
             public_key BLOB NOT NULL
         ) STRICT;
         CREATE TABLE IF NOT EXISTS api_tokens (
             name         TEXT PRIMARY KEY,
             token_sha256 BLOB NOT NULL UNIQUE,
             created_ms   INTEGER NOT NULL
         ) STRICT;
         CREATE TABLE IF NOT EXISTS primaries (
             region     TEXT PRIMARY KEY,
             public_key BLOB NOT NULL
         ) STRICT;
         CREATE TABLE IF NOT EXISTS ingest_status (
             hospital       TEXT PRIMARY KEY,
             region         TEXT NOT NULL,
             last_ingest_ms INTEGER NOT NULL
         ) STRICT;",
    )?;
    Ok(())
}

/// Prefix of operator API tokens (helps secret scanners and humans).
pub const TOKEN_PREFIX: &str = "hmsc_";

fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn create_token(conn: &Connection, name: &str, now_ms: i64) -> anyhow::Result<String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        anyhow::bail!("a token name is 1-64 characters of letters, digits, '.', '_' or '-'");
    }
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the token"))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let n = conn.execute(
        "INSERT INTO api_tokens(name, token_sha256, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO NOTHING",
        params![name, digest(&token), now_ms],
    )?;
    if n == 0 {
        anyhow::bail!("a token named {name:?} exists already");
    }
    Ok(token)
}

fn token_name(conn: &Connection, token: &str) -> anyhow::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM api_tokens WHERE token_sha256 = ?1")?
        .query_row([digest(token)], |r| r.get(0))
        .optional()?)
}

fn primaries(conn: &Connection) -> anyhow::Result<HashMap<RegionId, Vec<u8>>> {
    let rows: Vec<(String, Vec<u8>)> = conn
        .prepare("SELECT region, public_key FROM primaries")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(r, k)| Ok((r.parse().context("stored region")?, k)))
        .collect()
}

/// One hospital's ingest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The hospital's region.
    pub region: RegionId,
    /// When events were last stored, ms since the epoch.
    pub last_ingest_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_names_are_unique() {
        let conn = Connection::open_in_memory().expect("db");
        init(&conn).expect("init");
        let t = create_token(&conn, "ops-1", 5).expect("token");
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40, "{t}");
        assert_eq!(
            token_name(&conn, &t).expect("lookup").as_deref(),
            Some("ops-1")
        );
        assert_eq!(token_name(&conn, "hmsc_guess").expect("lookup"), None);
        let stored: Vec<u8> = conn
            .query_row("SELECT token_sha256 FROM api_tokens", [], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, digest(&t), "only the SHA-256 of the token is kept");
        let e = create_token(&conn, "ops-1", 6).expect_err("duplicate");
        assert!(e.to_string().contains("exists"), "{e}");
        assert!(create_token(&conn, "bad name", 6).is_err());
    }
}
