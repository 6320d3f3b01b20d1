//! The cloud's own database, `registry.sqlite` under the data dir: the
//! enrolled appliances (hospital, region, node, public key), operator API
//! tokens (only their SHA-256 is stored, with their [`Scopes`], expiry and
//! revocation), the DR primaries a replica accepts, each hospital's last
//! ingest, the last fleet command id given to each appliance, and an
//! append-only audit of what operators changed or sent here (tokens
//! created and revoked, appliances enrolled and re-keyed, fleet commands).
//!
//! [`RegistryDb`] is the handle the running cloud and the command line
//! share; the rules (residency, key length) are checked by its callers
//! ([`crate::enrolment`], [`crate::dr`]) before anything is written here.
//! No PHI is kept here: hospital ids, region ids, token names and times.
//!
//! With `backend = "sqlite"` it is this file; with `backend = "postgres"`
//! the same tables live in the region's own database, shared by every
//! instance of the region ([`pg`], [`RegistryDb::open_postgres`]),
//! and each method below does the same there. The SQLite schema is
//! versioned with `PRAGMA user_version` and migrated forward on open
//! ([`MIGRATIONS`]); a file newer than this binary knows is refused. Tokens made before
//! scopes existed have none recorded and keep working with every scope
//! (`admin`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context;
use base64::Engine;
use hms_domain::{HospitalId, NodeId, RegionId};
use ring::rand::SecureRandom;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::sqlite;

pub mod bundles;
pub mod downlink;
pub mod fleet;
pub mod pg;
pub mod rollouts;
pub mod takeover;

/// The registry database.
#[derive(Debug)]
pub struct RegistryDb {
    inner: Inner,
}

/// Where the registry lives.
#[derive(Debug)]
enum Inner {
    /// `registry.sqlite`.
    Sqlite(Mutex<Connection>),
    /// The region's database on PostgreSQL.
    Postgres(pg::Session),
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
            inner: Inner::Sqlite(Mutex::new(conn)),
        })
    }

    /// Opens (creating and migrating) the registry in the database
    /// `database` on the server of `admin` (`backend = "postgres"`).
    /// Blocking, but safe on any thread (the session has a thread of its own).
    pub fn open_postgres(
        admin: super::pg_tls::PgTarget,
        database: &str,
    ) -> anyhow::Result<RegistryDb> {
        Ok(RegistryDb {
            inner: Inner::Postgres(pg::Session::open(admin, database)?),
        })
    }

    /// Whether it is shared with other instances (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, Inner::Postgres(_))
    }

    /// A registry in memory (tests).
    pub fn in_memory() -> anyhow::Result<RegistryDb> {
        let conn = sqlite::memory()?;
        init(&conn)?;
        Ok(RegistryDb {
            inner: Inner::Sqlite(Mutex::new(conn)),
        })
    }

    /// The SQLite connection (the methods below look at [`Inner`] first).
    fn conn(&self) -> anyhow::Result<MutexGuard<'_, Connection>> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.lock().unwrap_or_else(|p| p.into_inner())),
            Inner::Postgres(_) => anyhow::bail!("the registry is on PostgreSQL"),
        }
    }

    /// The PostgreSQL session, when the registry lives there.
    fn pg(&self) -> Option<&pg::Session> {
        match &self.inner {
            Inner::Postgres(s) => Some(s),
            Inner::Sqlite(_) => None,
        }
    }

    /// Runs `f` on the region database's session (the tables of the
    /// other stores that live there, such as the EMPI's); an error with
    /// SQLite. Blocking, but safe on any thread.
    pub(in crate::store) fn region_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match self.pg() {
            Some(pg) => pg.call(f),
            None => anyhow::bail!("the registry is not on PostgreSQL"),
        }
    }

    /// The stored enrolment of `hospital`.
    pub fn enrolment(&self, hospital: &HospitalId) -> anyhow::Result<Option<EnrolmentRow>> {
        if let Some(pg) = self.pg() {
            return pg.enrolment(hospital);
        }
        Ok(self
            .enrolments()?
            .into_iter()
            .find(|e| &e.hospital == hospital))
    }

    /// Every stored enrolment.
    pub fn enrolments(&self) -> anyhow::Result<Vec<EnrolmentRow>> {
        if let Some(pg) = self.pg() {
            return pg.enrolments();
        }
        let conn = self.conn()?;
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
        if let Some(pg) = self.pg() {
            return pg.put_enrolment(e);
        }
        put_enrolment(&*self.conn()?, e)
    }

    /// Stores the enrolment of a hospital unless another one (another node
    /// or key) is stored and `replace` is false; a new or replaced
    /// enrolment is audited as `actor`'s, in the same transaction.
    pub fn put_enrolment_checked(
        &self,
        e: &EnrolmentRow,
        replace: bool,
        actor: &str,
        now_ms: i64,
    ) -> anyhow::Result<Enrolled> {
        if let Some(pg) = self.pg() {
            return pg.put_enrolment_checked(e, replace, actor, now_ms);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<(String, String, Vec<u8>)> = tx
            .query_row(
                "SELECT region, node, public_key FROM enrolments WHERE hospital = ?1",
                [e.hospital.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let outcome = enrolment_outcome(stored, e, replace)?;
        let Some((action, detail)) = enrolment_audit(&outcome, e) else {
            return Ok(outcome);
        };
        put_enrolment(&tx, e)?;
        audit(
            &tx,
            &AuditEntry {
                at_ms: now_ms,
                actor,
                action,
                subject: e.hospital.as_str(),
                detail: &detail,
            },
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Creates an operator token named `name` with every scope (`admin`),
    /// not expiring, and returns it; only its SHA-256 is stored, so it is
    /// shown once. The name of a live token is refused.
    pub fn create_token(&self, name: &str, now_ms: i64) -> anyhow::Result<String> {
        self.create_operator_token(
            &NewOperatorToken {
                name,
                scopes: Scopes::ADMIN,
                expires_ms: None,
                by: "system",
            },
            now_ms,
        )
        .map_err(anyhow::Error::from)
    }

    /// Creates an operator token and returns it (only its SHA-256 is
    /// stored, so it is shown once), audited as `t.by`'s. The name of a
    /// live token (neither revoked nor expired) is refused.
    pub fn create_operator_token(
        &self,
        t: &NewOperatorToken<'_>,
        now_ms: i64,
    ) -> Result<String, TokenError> {
        if let Some(pg) = self.pg() {
            return pg.create_operator_token(t, now_ms);
        }
        create_token(&mut *self.conn()?, t, now_ms)
    }

    /// The live operator token `token` (neither revoked nor expired at
    /// `now_ms`), if it is one of ours.
    pub fn operator(&self, token: &str, now_ms: i64) -> anyhow::Result<Option<Operator>> {
        if let Some(pg) = self.pg() {
            return pg.operator(token, now_ms);
        }
        operator(&*self.conn()?, token, now_ms)
    }

    /// The name of the operator holding `token`, if it is a live one of ours.
    pub fn token_name(&self, token: &str) -> anyhow::Result<Option<String>> {
        let now = hms_domain::Timestamp::now().as_millis();
        Ok(self.operator(token, now)?.map(|o| o.name))
    }

    /// Every operator token, oldest first (never the token).
    pub fn tokens(&self) -> anyhow::Result<Vec<OperatorTokenRow>> {
        if let Some(pg) = self.pg() {
            return pg.tokens();
        }
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT name, scopes, created_ms, expires_ms, revoked_ms FROM operator_tokens
             ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let scopes: Option<String> = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                scopes,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, scopes, created_ms, expires_ms, revoked_ms) = row?;
            Ok(OperatorTokenRow {
                name,
                scopes: Scopes::stored(scopes.as_deref())?,
                created_ms,
                expires_ms,
                revoked_ms,
            })
        })
        .collect()
    }

    /// Revokes the live operator token named `name`, audited as `by`'s;
    /// it is refused from the next request on.
    pub fn revoke_token(&self, name: &str, now_ms: i64, by: &str) -> anyhow::Result<Revoked> {
        if let Some(pg) = self.pg() {
            return pg.revoke_token(name, now_ms, by);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE operator_tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
            params![name, now_ms],
        )?;
        if n == 0 {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM operator_tokens WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            return Ok(if known {
                Revoked::Already
            } else {
                Revoked::Unknown
            });
        }
        audit(
            &tx,
            &AuditEntry {
                at_ms: now_ms,
                actor: by,
                action: "token_revoked",
                subject: name,
                detail: "",
            },
        )?;
        tx.commit()?;
        Ok(Revoked::Revoked(n))
    }

    /// Appends to the audit.
    pub fn audit(&self, e: &AuditEntry<'_>) -> anyhow::Result<()> {
        if let Some(pg) = self.pg() {
            return pg.audit(e);
        }
        audit(&*self.conn()?, e)
    }

    /// The audit, oldest first.
    pub fn audit_log(&self) -> anyhow::Result<Vec<AuditRecord>> {
        if let Some(pg) = self.pg() {
            return pg.audit_log();
        }
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT at_ms, actor, action, subject, detail FROM audit ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditRecord {
                at_ms: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                subject: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of a new fleet command for `node` of `hospital`: above the
    /// last one given to that node (kept here, so above it after a restart
    /// too) and at least `now_ms` (so above any id given before this file
    /// existed, with a sane clock). Taken in one transaction with its audit
    /// entry (`fleet_command`, subject the hospital, `detail` after the
    /// node and id): a command is audited before it is sent.
    pub fn next_fleet_command_id(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        actor: &str,
        detail: &str,
        now_ms: i64,
    ) -> anyhow::Result<u64> {
        if let Some(pg) = self.pg() {
            return pg.next_fleet_command_id(hospital, node, actor, detail, now_ms);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<i64> = tx
            .prepare_cached(
                "SELECT last_id FROM fleet_command_ids WHERE hospital = ?1 AND node = ?2",
            )?
            .query_row(params![hospital.as_str(), node.as_str()], |r| r.get(0))
            .optional()?;
        let id = last
            .map_or(now_ms, |l| l.saturating_add(1).max(now_ms))
            .max(1);
        tx.prepare_cached(
            "INSERT INTO fleet_command_ids(hospital, node, last_id) VALUES (?1, ?2, ?3)
             ON CONFLICT(hospital, node) DO UPDATE SET last_id = excluded.last_id",
        )?
        .execute(params![hospital.as_str(), node.as_str(), id])?;
        audit(
            &tx,
            &AuditEntry {
                at_ms: now_ms,
                actor,
                action: "fleet_command",
                subject: hospital.as_str(),
                detail: &format!("node {node}; id {id}; {detail}"),
            },
        )?;
        tx.commit()?;
        u64::try_from(id).context("stored fleet command id")
    }

    /// Stores (or re-keys) the DR primary of `region`.
    pub fn put_primary(&self, region: &RegionId, public_key: &[u8]) -> anyhow::Result<()> {
        if let Some(pg) = self.pg() {
            return pg.put_primary(region, public_key);
        }
        self.conn()?.execute(
            "INSERT INTO primaries(region, public_key) VALUES (?1, ?2)
             ON CONFLICT(region) DO UPDATE SET public_key = excluded.public_key",
            params![region.as_str(), public_key],
        )?;
        Ok(())
    }

    /// The enrolled primaries: region → public key.
    pub fn primaries(&self) -> anyhow::Result<HashMap<RegionId, Vec<u8>>> {
        if let Some(pg) = self.pg() {
            return pg.primaries();
        }
        primaries(&*self.conn()?)
    }

    /// Records that events of `hospital` were stored at `now_ms`.
    pub fn record_ingest(
        &self,
        hospital: &HospitalId,
        region: &RegionId,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        if let Some(pg) = self.pg() {
            return pg.record_ingest(hospital, region, now_ms);
        }
        self.conn()?
            .prepare_cached(
                "INSERT INTO ingest_status(hospital, region, last_ingest_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(hospital) DO UPDATE SET last_ingest_ms = excluded.last_ingest_ms",
            )?
            .execute(params![hospital.as_str(), region.as_str(), now_ms])?;
        Ok(())
    }

    /// The region recorded for `hospital`, if it has stored events here.
    pub fn hospital_region(&self, hospital: &HospitalId) -> anyhow::Result<Option<RegionId>> {
        if let Some(pg) = self.pg() {
            return pg.hospital_region(hospital);
        }
        let r: Option<String> = self
            .conn()?
            .prepare_cached("SELECT region FROM ingest_status WHERE hospital = ?1")?
            .query_row([hospital.as_str()], |r| r.get(0))
            .optional()?;
        r.map(|r| r.parse().context("stored region")).transpose()
    }

    /// Every hospital that has stored events here, with its record.
    pub fn ingest_status(&self) -> anyhow::Result<HashMap<HospitalId, IngestStatus>> {
        if let Some(pg) = self.pg() {
            return pg.ingest_status();
        }
        let rows: Vec<(String, String, i64)> = self
            .conn()?
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

    /// Opens a console session: `id_sha256` (of the cookie's value) for
    /// the operator token `token`, used at `now_ms`. Sessions idle for
    /// `idle_ms` are dropped first, and the least recently used beyond
    /// `max`.
    pub fn open_console_session(
        &self,
        id_sha256: &[u8],
        token: &str,
        now_ms: i64,
        idle_ms: i64,
        max: usize,
    ) -> anyhow::Result<()> {
        if let Some(pg) = self.pg() {
            return pg.open_console_session(id_sha256, token, now_ms, idle_ms, max);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM console_sessions WHERE last_ms <= ?1",
            [now_ms - idle_ms],
        )?;
        let n: i64 = tx.query_row("SELECT count(*) FROM console_sessions", [], |r| r.get(0))?;
        let over = n + 1 - i64::try_from(max).unwrap_or(i64::MAX);
        if over > 0 {
            tx.execute(
                "DELETE FROM console_sessions WHERE id_sha256 IN
                    (SELECT id_sha256 FROM console_sessions ORDER BY last_ms LIMIT ?1)",
                [over],
            )?;
        }
        tx.execute(
            "INSERT INTO console_sessions(id_sha256, token_sha256, last_ms) VALUES (?1, ?2, ?3)",
            params![id_sha256, digest(token), now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The live operator behind console session `id_sha256` at `now_ms`:
    /// none when there is no such session, it was idle `idle_ms`, or its
    /// token is revoked or expired (then every session of that token ends).
    /// Its last use is written when older than `touch_ms`.
    pub fn console_operator(
        &self,
        id_sha256: &[u8],
        now_ms: i64,
        idle_ms: i64,
        touch_ms: i64,
    ) -> anyhow::Result<Option<Operator>> {
        if let Some(pg) = self.pg() {
            return pg.console_operator(id_sha256, now_ms, idle_ms, touch_ms);
        }
        let conn = self.conn()?;
        let found: Option<(Vec<u8>, i64)> = conn
            .query_row(
                "SELECT token_sha256, last_ms FROM console_sessions WHERE id_sha256 = ?1",
                [id_sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((token_sha, last_ms)) = found else {
            return Ok(None);
        };
        if now_ms - last_ms >= idle_ms {
            conn.execute(
                "DELETE FROM console_sessions WHERE id_sha256 = ?1",
                [id_sha256],
            )?;
            return Ok(None);
        }
        let Some(op) = operator_by_digest(&conn, &token_sha, now_ms)? else {
            conn.execute(
                "DELETE FROM console_sessions WHERE token_sha256 = ?1",
                [&token_sha],
            )?;
            return Ok(None);
        };
        if now_ms - last_ms >= touch_ms {
            conn.execute(
                "UPDATE console_sessions SET last_ms = ?2 WHERE id_sha256 = ?1",
                params![id_sha256, now_ms],
            )?;
        }
        Ok(Some(op))
    }

    /// Ends console session `id_sha256`.
    pub fn close_console_session(&self, id_sha256: &[u8]) -> anyhow::Result<()> {
        if let Some(pg) = self.pg() {
            return pg.close_console_session(id_sha256);
        }
        self.conn()?.execute(
            "DELETE FROM console_sessions WHERE id_sha256 = ?1",
            [id_sha256],
        )?;
        Ok(())
    }

    /// `PRAGMA synchronous` and `journal_mode` of the connection (tests).
    #[cfg(test)]
    pub(crate) fn durability(&self) -> (i64, String) {
        match self.conn() {
            Ok(c) => sqlite::durability(&c),
            Err(_) => (-1, "postgres".into()),
        }
    }
}

/// Forward-only migrations; index + 1 is the `user_version` they bring.
/// A file from before versioning (version 0) holds the tables of the first
/// already, which it creates only where missing.
pub const MIGRATIONS: &[&str] = &[
    // 1: enrolments, operator tokens (name and hash), primaries, ingest.
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
    // 2: operator tokens with scopes (NULL: made before scopes, all of
    // them), expiry and revocation; a revoked name may be given again. The
    // audit of operators' changes.
    "CREATE TABLE operator_tokens (
         id           INTEGER PRIMARY KEY,
         name         TEXT    NOT NULL,
         token_sha256 BLOB    NOT NULL UNIQUE,
         created_ms   INTEGER NOT NULL,
         scopes       TEXT,
         expires_ms   INTEGER,
         revoked_ms   INTEGER
     ) STRICT;
     INSERT INTO operator_tokens(name, token_sha256, created_ms)
         SELECT name, token_sha256, created_ms FROM api_tokens ORDER BY created_ms, name;
     DROP TABLE api_tokens;
     CREATE INDEX operator_tokens_by_name ON operator_tokens(name);
     CREATE TABLE audit (
         id      INTEGER PRIMARY KEY AUTOINCREMENT,
         at_ms   INTEGER NOT NULL,
         actor   TEXT    NOT NULL,
         action  TEXT    NOT NULL,
         subject TEXT    NOT NULL,
         detail  TEXT    NOT NULL
     ) STRICT;",
    // 3: the last fleet command id given to each appliance (ids must keep
    // increasing per node across restarts: the appliance refuses the rest).
    "CREATE TABLE fleet_command_ids (
         hospital TEXT    NOT NULL,
         node     TEXT    NOT NULL,
         last_id  INTEGER NOT NULL,
         PRIMARY KEY (hospital, node)
     ) STRICT;",
    // 4: the console's sessions (the SHA-256 of the cookie's value and of
    // the operator token it was opened with; never either in clear).
    "CREATE TABLE console_sessions (
         id_sha256    BLOB    PRIMARY KEY,
         token_sha256 BLOB    NOT NULL,
         last_ms      INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX console_sessions_by_token ON console_sessions(token_sha256);",
    // 5: region failover: what a replica may take over, what a primary is
    // fenced from ([`takeover`]).
    takeover::SQLITE_MIGRATION,
];

/// The schema version this binary writes.
pub const REGISTRY_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`REGISTRY_VERSION`] (each step once, in one
/// transaction); refuses a newer file.
fn init(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
    };
    if version(conn)? == REGISTRY_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| -> anyhow::Result<()> {
        let found = version(conn)?;
        if found > REGISTRY_VERSION {
            anyhow::bail!(
                "registry.sqlite has schema version {found}, newer than this hms-cloud knows \
                 ({REGISTRY_VERSION}); run the newer hms-cloud"
            );
        }
        for sql in &MIGRATIONS[found.max(0) as usize..] {
            conn.execute_batch(sql)?;
        }
        conn.pragma_update(None, "user_version", REGISTRY_VERSION)?;
        Ok(())
    })();
    match done {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.context("migrating registry.sqlite"));
        }
    }
    Ok(())
}

/// What storing `e` does given the stored (region, node, key) of its
/// hospital: the same backend-independent rule for SQLite and PostgreSQL.
pub(super) fn enrolment_outcome(
    stored: Option<(String, String, Vec<u8>)>,
    e: &EnrolmentRow,
    replace: bool,
) -> anyhow::Result<Enrolled> {
    Ok(match stored {
        None => Enrolled::New,
        Some((region, node, key))
            if region == e.region.as_str() && node == e.node.as_str() && key == e.public_key =>
        {
            Enrolled::Unchanged
        }
        Some((_, node, _)) if !replace => Enrolled::Refused {
            node: node.parse().context("stored node id")?,
        },
        Some((_, node, _)) => Enrolled::Replaced {
            previous: node.parse().context("stored node id")?,
        },
    })
}

/// The audit action and detail of an enrolment that writes; none when
/// `outcome` writes nothing (unchanged, refused).
pub(super) fn enrolment_audit(
    outcome: &Enrolled,
    e: &EnrolmentRow,
) -> Option<(&'static str, String)> {
    match outcome {
        Enrolled::New => Some(("enrolment_created", format!("node {}", e.node))),
        Enrolled::Replaced { previous } => Some((
            "enrolment_replaced",
            format!("node {} (was {previous}), new key", e.node),
        )),
        Enrolled::Unchanged | Enrolled::Refused { .. } => None,
    }
}

fn put_enrolment(conn: &Connection, e: &EnrolmentRow) -> anyhow::Result<()> {
    conn.execute(
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

/// What an operator token may do. `Admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read hospitals, census, ADT volumes, replication, health details.
    Read,
    /// The regional EMPI: records, searches, decisions, merges, reviews, model.
    Empi,
    /// The fleet console and its API (appliance status, commands, rollouts).
    Fleet,
    /// Enrol appliances (and re-key them, with `replace`).
    Enrol,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Empi,
        Scope::Fleet,
        Scope::Enrol,
        Scope::Admin,
    ];

    /// Its name (`read`, `empi`, `fleet`, `enrol`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Empi => "empi",
            Scope::Fleet => "fleet",
            Scope::Enrol => "enrol",
            Scope::Admin => "admin",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The scopes of an operator token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub const ADMIN: Scopes = Scopes(1 << (Scope::Admin as u8));

    /// Parses names (`read`, `empi`…), each once or more; none is an error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut out = Scopes::default();
        for n in names {
            let n = n.trim();
            let s = Scope::parse(n).ok_or_else(|| {
                format!("unknown scope {n:?}; use read, empi, fleet, enrol or admin")
            })?;
            out.0 |= s.bit();
        }
        if out.0 == 0 {
            return Err("give at least one scope: read, empi, fleet, enrol or admin".into());
        }
        Ok(out)
    }

    /// As stored: `None` (a token from before scopes) is `admin`.
    pub(super) fn stored(text: Option<&str>) -> rusqlite::Result<Scopes> {
        match text {
            None => Ok(Scopes::ADMIN),
            Some(t) => Scopes::parse(t.split(',')).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            }),
        }
    }

    /// Whether these scopes allow `scope` (`admin` allows all).
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (Scope::Admin.bit() | scope.bit()) != 0
    }

    /// The scopes, in order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// The live operator behind a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The token's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
}

/// An operator token to create.
#[derive(Debug, Clone, Copy)]
pub struct NewOperatorToken<'a> {
    /// Its name (1-64 of letters, digits, `.`, `_`, `-`).
    pub name: &'a str,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it expires, ms since the epoch.
    pub expires_ms: Option<i64>,
    /// Who creates it (`cli:LOGIN`), for the audit.
    pub by: &'a str,
}

/// Why an operator token was not created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name is not 1-64 of letters, digits, `.`, `_`, `-`.
    #[error("a token name is 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadName,
    /// A live token (neither revoked nor expired) has the name.
    #[error(
        "a token named {0:?} exists already; choose another name, or revoke it first \
         (`hms-cloud token revoke {0}`)"
    )]
    Duplicate(String),
    /// The registry failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// One operator token as `hms-cloud token list` shows it (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTokenRow {
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
    /// When it expires.
    pub expires_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked this many tokens of the name.
    Revoked(usize),
    /// The token was revoked before.
    Already,
    /// No token has that name.
    Unknown,
}

/// What storing an enrolment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// The hospital was not enrolled before.
    New,
    /// The same enrolment was stored already: nothing changed.
    Unchanged,
    /// Another node or key was stored and `replace` was given.
    Replaced {
        /// The node enrolled before.
        previous: NodeId,
    },
    /// Another node or key is stored and `replace` was not given: nothing
    /// changed.
    Refused {
        /// The node enrolled.
        node: NodeId,
    },
}

/// One audit entry to append.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who (`operator:{token name}`, `cli:{login}`).
    pub actor: &'a str,
    /// What (`token_created`, `token_revoked`, `enrolment_created`,
    /// `enrolment_replaced`, `fleet_command`).
    pub action: &'a str,
    /// Which token or hospital.
    pub subject: &'a str,
    /// Ids and settings only, never a secret or PHI.
    pub detail: &'a str,
}

/// One stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which token or hospital.
    pub subject: String,
    /// Ids and settings.
    pub detail: String,
}

fn audit(conn: &Connection, e: &AuditEntry<'_>) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit(at_ms, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![e.at_ms, e.actor, e.action, e.subject, e.detail])?;
    Ok(())
}

/// Prefix of operator API tokens (helps secret scanners and humans).
pub const TOKEN_PREFIX: &str = "hmsc_";

pub(super) fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Whether `name` may name an operator token: 1-64 of letters, digits,
/// `.`, `_`, `-`.
pub(super) fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A new random operator token (32 random bytes after [`TOKEN_PREFIX`]).
pub(super) fn new_token() -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the token"))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

fn create_token(
    conn: &mut Connection,
    t: &NewOperatorToken<'_>,
    now_ms: i64,
) -> Result<String, TokenError> {
    let name = t.name;
    if !valid_token_name(name) {
        return Err(TokenError::BadName);
    }
    let token = new_token()?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(anyhow::Error::from)?;
    let taken: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM operator_tokens WHERE name = ?1 AND revoked_ms IS NULL
                            AND (expires_ms IS NULL OR expires_ms > ?2))",
            params![name, now_ms],
            |r| r.get(0),
        )
        .map_err(anyhow::Error::from)?;
    if taken {
        return Err(TokenError::Duplicate(name.to_owned()));
    }
    let scopes = t.scopes.to_string();
    tx.execute(
        "INSERT INTO operator_tokens(name, token_sha256, created_ms, scopes, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, digest(&token), now_ms, scopes, t.expires_ms],
    )
    .map_err(anyhow::Error::from)?;
    let expires = t.expires_ms.map_or_else(
        || "never".to_owned(),
        |e| hms_domain::Timestamp::from_millis(e).to_rfc3339(),
    );
    audit(
        &tx,
        &AuditEntry {
            at_ms: now_ms,
            actor: t.by,
            action: "token_created",
            subject: name,
            detail: &format!("scopes {scopes}; expires {expires}"),
        },
    )?;
    tx.commit().map_err(anyhow::Error::from)?;
    Ok(token)
}

fn operator(conn: &Connection, token: &str, now_ms: i64) -> anyhow::Result<Option<Operator>> {
    operator_by_digest(conn, &digest(token), now_ms)
}

fn operator_by_digest(
    conn: &Connection,
    token_sha256: &[u8],
    now_ms: i64,
) -> anyhow::Result<Option<Operator>> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT name, scopes FROM operator_tokens
             WHERE token_sha256 = ?1 AND revoked_ms IS NULL
               AND (expires_ms IS NULL OR expires_ms > ?2)",
        )?
        .query_row(params![token_sha256, now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(name, scopes)| {
        Ok(Operator {
            name,
            scopes: Scopes::stored(scopes.as_deref())?,
        })
    })
    .transpose()
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

    fn new(name: &str) -> NewOperatorToken<'_> {
        NewOperatorToken {
            name,
            scopes: Scopes::parse(["read"]).expect("scopes"),
            expires_ms: None,
            by: "cli:test",
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_names_are_unique() {
        let db = RegistryDb::in_memory().expect("db");
        let t = db.create_operator_token(&new("ops-1"), 5).expect("token");
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40, "{t}");
        assert_eq!(db.token_name(&t).expect("lookup").as_deref(), Some("ops-1"));
        assert_eq!(db.token_name("hmsc_guess").expect("lookup"), None);
        let stored: Vec<u8> = db
            .conn()
            .expect("sqlite")
            .query_row("SELECT token_sha256 FROM operator_tokens", [], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, digest(&t), "only the SHA-256 of the token is kept");
        let e = db
            .create_operator_token(&new("ops-1"), 6)
            .expect_err("duplicate");
        assert!(matches!(e, TokenError::Duplicate(_)), "{e}");
        assert!(matches!(
            db.create_operator_token(&new("bad name"), 6),
            Err(TokenError::BadName)
        ));
        // Revoked: refused at once; the name may be given again.
        assert_eq!(
            db.revoke_token("ops-1", 7, "cli:test").expect("revoke"),
            Revoked::Revoked(1)
        );
        assert_eq!(
            db.revoke_token("ops-1", 7, "cli:test").expect("revoke"),
            Revoked::Already
        );
        assert_eq!(
            db.revoke_token("nobody", 7, "cli:test").expect("revoke"),
            Revoked::Unknown
        );
        assert_eq!(db.token_name(&t).expect("lookup"), None);
        db.create_operator_token(&new("ops-1"), 8).expect("again");
        let actions: Vec<String> = db
            .audit_log()
            .expect("audit")
            .into_iter()
            .map(|a| format!("{} {} {} {}", a.actor, a.action, a.subject, a.detail))
            .collect();
        assert_eq!(
            actions,
            [
                "cli:test token_created ops-1 scopes read; expires never",
                "cli:test token_revoked ops-1 ",
                "cli:test token_created ops-1 scopes read; expires never",
            ]
        );
    }

    #[test]
    fn scopes_parse_and_admin_allows_all() {
        let s = Scopes::parse(["read", "empi", "read"]).expect("scopes");
        assert_eq!(s.to_string(), "read,empi");
        assert!(s.allows(Scope::Read) && s.allows(Scope::Empi));
        assert!(!s.allows(Scope::Enrol) && !s.allows(Scope::Fleet) && !s.allows(Scope::Admin));
        for scope in Scope::ALL {
            assert!(Scopes::ADMIN.allows(scope), "{scope:?}");
        }
        assert!(
            Scopes::parse(["reed"])
                .expect_err("unknown")
                .contains("unknown scope")
        );
        assert!(Scopes::parse([]).is_err());
        assert_eq!(Scopes::stored(None).expect("legacy"), Scopes::ADMIN);
    }

    #[test]
    fn an_expired_token_is_refused_and_its_name_free_again() {
        let db = RegistryDb::in_memory().expect("db");
        let t = db
            .create_operator_token(
                &NewOperatorToken {
                    expires_ms: Some(100),
                    ..new("temp")
                },
                10,
            )
            .expect("token");
        assert!(db.operator(&t, 99).expect("lookup").is_some());
        assert!(db.operator(&t, 100).expect("lookup").is_none());
        db.create_operator_token(&new("temp"), 100)
            .expect("name free");
    }

    #[test]
    fn a_registry_from_before_scopes_is_migrated_and_its_tokens_become_admin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.sqlite");
        let legacy_token = "hmsc_legacy-token-of-an-operator";
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("v1 tables");
            conn.execute(
                "INSERT INTO api_tokens(name, token_sha256, created_ms) VALUES ('ops', ?1, 5)",
                [digest(legacy_token)],
            )
            .expect("legacy token");
            conn.execute(
                "INSERT INTO enrolments VALUES ('h1', 'eu-west', 'edge-1', x'00')",
                [],
            )
            .expect("enrolment");
        }
        let db = RegistryDb::open(dir.path()).expect("migrates");
        let op = db
            .operator(legacy_token, 6)
            .expect("lookup")
            .expect("still valid");
        assert_eq!((op.name.as_str(), op.scopes), ("ops", Scopes::ADMIN));
        assert_eq!(db.enrolments().expect("enrolments").len(), 1);
        let rows = db.tokens().expect("tokens");
        assert_eq!((rows[0].created_ms, rows[0].expires_ms), (5, None));
        drop(db);
        // Opened again: nothing to do; a newer file is refused.
        RegistryDb::open(dir.path()).expect("again");
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", REGISTRY_VERSION + 1)
            .expect("bump");
        let e = format!("{:#}", RegistryDb::open(dir.path()).expect_err("newer"));
        assert!(e.contains("newer than this hms-cloud knows"), "{e}");
    }

    #[test]
    fn fleet_command_ids_increase_per_node_across_reopening_and_are_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, n1, n2) = (
            "h1".parse::<HospitalId>().expect("id"),
            "edge-1".parse::<NodeId>().expect("id"),
            "edge-2".parse::<NodeId>().expect("id"),
        );
        let db = RegistryDb::open(dir.path()).expect("open");
        let next = |db: &RegistryDb, n: &NodeId, now: i64| {
            db.next_fleet_command_id(&h, n, "operator:ops", "command ping", now)
                .expect("id")
        };
        // At least the time, then one above the last even when the clock
        // stands still or goes back.
        assert_eq!(next(&db, &n1, 1_000), 1_000);
        assert_eq!(next(&db, &n1, 1_000), 1_001);
        assert_eq!(next(&db, &n1, 500), 1_002);
        assert_eq!(next(&db, &n2, 700), 700, "per node");
        drop(db);
        let db = RegistryDb::open(dir.path()).expect("reopen");
        assert_eq!(next(&db, &n1, 900), 1_003, "kept across a restart");
        assert_eq!(next(&db, &n1, 5_000), 5_000);
        let audit: Vec<String> = db
            .audit_log()
            .expect("audit")
            .into_iter()
            .map(|a| format!("{} {} {} {}", a.actor, a.action, a.subject, a.detail))
            .collect();
        assert_eq!(audit.len(), 6);
        assert_eq!(
            audit[0],
            "operator:ops fleet_command h1 node edge-1; id 1000; command ping"
        );
    }
}
