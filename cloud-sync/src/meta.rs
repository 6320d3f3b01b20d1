//! The cloud's own bookkeeping, kept in `registry.sqlite` beside the
//! enrolments: operator API tokens (only their SHA-256 is stored), the DR
//! primaries a replica accepts, and each hospital's last ingest.
//!
//! No PHI is kept here: hospital ids, region ids, token names and times.

use std::collections::HashMap;

use anyhow::Context;
use base64::Engine;
use hms_domain::{HospitalId, RegionId};
use ring::rand::SecureRandom;
use rusqlite::{Connection, OptionalExtension, params};

use crate::enrolment::Rejection;

/// Creates the tables (idempotent).
pub fn init(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS api_tokens (
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

/// Creates an operator token named `name` and returns it; only its SHA-256
/// is stored, so it is shown once. A name already in use is refused.
pub fn create_token(conn: &Connection, name: &str, now_ms: i64) -> anyhow::Result<String> {
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

/// The name of the operator holding `token`, if it is one of ours.
pub fn token_name(conn: &Connection, token: &str) -> anyhow::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM api_tokens WHERE token_sha256 = ?1")?
        .query_row([digest(token)], |r| r.get(0))
        .optional()?)
}

/// Enrols (or re-keys) the DR primary of `region` on a replica; a region
/// outside `allowed` is refused (residency).
pub fn enroll_primary(
    conn: &Connection,
    allowed: &[RegionId],
    region: &RegionId,
    public_key: &[u8],
) -> anyhow::Result<()> {
    if !allowed.contains(region) {
        return Err(Rejection::RegionNotAllowed {
            region: region.clone(),
        }
        .into());
    }
    if public_key.len() != 32 {
        return Err(Rejection::BadKey.into());
    }
    conn.execute(
        "INSERT INTO primaries(region, public_key) VALUES (?1, ?2)
         ON CONFLICT(region) DO UPDATE SET public_key = excluded.public_key",
        params![region.as_str(), public_key],
    )?;
    Ok(())
}

/// The enrolled primaries: region → public key.
pub fn primaries(conn: &Connection) -> anyhow::Result<HashMap<RegionId, Vec<u8>>> {
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

/// Records that events of `hospital` were stored at `now_ms`.
pub fn record_ingest(
    conn: &Connection,
    hospital: &HospitalId,
    region: &RegionId,
    now_ms: i64,
) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO ingest_status(hospital, region, last_ingest_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(hospital) DO UPDATE SET last_ingest_ms = excluded.last_ingest_ms",
    )?
    .execute(params![hospital.as_str(), region.as_str(), now_ms])?;
    Ok(())
}

/// The region recorded for `hospital`, if it has stored events here.
pub fn hospital_region(
    conn: &Connection,
    hospital: &HospitalId,
) -> anyhow::Result<Option<RegionId>> {
    let r: Option<String> = conn
        .prepare_cached("SELECT region FROM ingest_status WHERE hospital = ?1")?
        .query_row([hospital.as_str()], |r| r.get(0))
        .optional()?;
    r.map(|r| r.parse().context("stored region")).transpose()
}

/// Every hospital that has stored events here, with its record.
pub fn ingest_status(conn: &Connection) -> anyhow::Result<HashMap<HospitalId, IngestStatus>> {
    let rows: Vec<(String, String, i64)> = conn
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

    #[test]
    fn primaries_only_of_allowed_regions() {
        let conn = Connection::open_in_memory().expect("db");
        init(&conn).expect("init");
        let allowed: Vec<RegionId> = vec!["eu-west".parse().expect("id")];
        let eu: RegionId = "eu-west".parse().expect("id");
        let us: RegionId = "us-east".parse().expect("id");
        enroll_primary(&conn, &allowed, &eu, &[7; 32]).expect("allowed");
        let e = enroll_primary(&conn, &allowed, &us, &[7; 32]).expect_err("residency");
        assert!(e.to_string().contains("us-east"), "{e}");
        assert!(enroll_primary(&conn, &allowed, &eu, &[7; 31]).is_err());
        let p = primaries(&conn).expect("read");
        assert_eq!(p.len(), 1);
        assert_eq!(p[&eu], vec![7; 32]);
    }
}
