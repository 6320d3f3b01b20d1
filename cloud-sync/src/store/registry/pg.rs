//! The registry on PostgreSQL (`backend = "postgres"`): the same tables as
//! `registry.sqlite`, in the region's own database (`region_database`),
//! shared by every instance of the region.
//!
//! One session, owned by a thread of its own ([`Session`]): callers hand it
//! a closure and wait for the answer, from any thread (the `postgres`
//! client blocks and must not run on the async runtime). Before each call
//! the session is checked with a round trip; one the server ended (it
//! restarted) is opened again first, so the first call after a restart
//! answers normally. A call is never run twice.
//!
//! The schema is versioned in `registry_migrations` and migrated forward
//! when the session opens, under a transaction-level advisory lock, so two
//! instances starting together apply each step once; a database newer than
//! this binary knows is refused. Writes that must not interleave with
//! another instance's (a live token's name, an enrolment and its audit)
//! take an advisory lock of their own in their transaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc;

use anyhow::Context;
use hms_domain::{HospitalId, NodeId, RegionId};
use postgres::{Client, Transaction};

use super::super::pg_tls::PgTarget;
use super::{
    AuditEntry, AuditRecord, Enrolled, EnrolmentRow, IngestStatus, NewOperatorToken, Operator,
    OperatorTokenRow, Revoked, Scopes, TokenError, digest, enrolment_audit, enrolment_outcome,
    new_token, valid_token_name,
};

/// Forward-only migrations; index + 1 is the version they bring.
pub const MIGRATIONS: &[&str] = &[
    // 1: the registry as registry.sqlite holds it at its version 3.
    "CREATE TABLE enrolments (
         hospital   TEXT PRIMARY KEY,
         region     TEXT NOT NULL,
         node       TEXT NOT NULL,
         public_key BYTEA NOT NULL
     );
     CREATE TABLE primaries (
         region     TEXT PRIMARY KEY,
         public_key BYTEA NOT NULL
     );
     CREATE TABLE ingest_status (
         hospital       TEXT PRIMARY KEY,
         region         TEXT NOT NULL,
         last_ingest_ms BIGINT NOT NULL
     );
     CREATE TABLE operator_tokens (
         id           BIGSERIAL PRIMARY KEY,
         name         TEXT   NOT NULL,
         token_sha256 BYTEA  NOT NULL UNIQUE,
         created_ms   BIGINT NOT NULL,
         scopes       TEXT,
         expires_ms   BIGINT,
         revoked_ms   BIGINT
     );
     CREATE INDEX operator_tokens_by_name ON operator_tokens(name);
     CREATE TABLE audit (
         id      BIGSERIAL PRIMARY KEY,
         at_ms   BIGINT NOT NULL,
         actor   TEXT   NOT NULL,
         action  TEXT   NOT NULL,
         subject TEXT   NOT NULL,
         detail  TEXT   NOT NULL
     );
     CREATE TABLE fleet_command_ids (
         hospital TEXT   NOT NULL,
         node     TEXT   NOT NULL,
         last_id  BIGINT NOT NULL,
         PRIMARY KEY (hospital, node)
     );",
    // 2: the console's sessions (as registry.sqlite's version 4).
    "CREATE TABLE console_sessions (
         id_sha256    BYTEA  PRIMARY KEY,
         token_sha256 BYTEA  NOT NULL,
         last_ms      BIGINT NOT NULL
     );
     CREATE INDEX console_sessions_by_token ON console_sessions(token_sha256);",
    // 3: region failover (as registry.sqlite's version 5).
    super::takeover::PG_MIGRATION,
    // 4: the bundles hosted for the fleet, shared by the instances.
    super::bundles::PG_MIGRATION,
    // 5: the fleet's rollouts, shared by the instances.
    super::rollouts::PG_MIGRATION,
    // 6: the downlink's EID assignments, shared by the instances.
    super::downlink::PG_MIGRATION,
    // 7: the fleet's commands and results, shared by the instances.
    super::fleet::PG_MIGRATION,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock keys (transaction level) of the registry's critical steps.
pub(super) fn lock_key(what: &str) -> i64 {
    super::super::lease::key(&format!("hms-cloud/registry/{what}"))
}

/// Brings the schema to [`VERSION`], each step once, whoever else migrates
/// at the same moment; refuses a newer database.
pub fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key("migrate")])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS registry_migrations (
             version    BIGINT PRIMARY KEY,
             applied_ms BIGINT NOT NULL
         )",
    )?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM registry_migrations",
            &[],
        )?
        .get(0);
    if found > VERSION {
        anyhow::bail!(
            "the registry database has schema version {found}, newer than this hms-cloud knows \
             ({VERSION}); run the newer hms-cloud"
        );
    }
    let now = hms_domain::Timestamp::now().as_millis();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql)
            .with_context(|| format!("registry migration {version}"))?;
        tx.execute(
            "INSERT INTO registry_migrations(version, applied_ms) VALUES ($1, $2)",
            &[&version, &now],
        )?;
        tracing::info!(version, "registry database migrated");
    }
    tx.commit()?;
    Ok(())
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// How long the liveness check before a call may take.
const VALID_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// One session on a thread of its own (see the module doc).
#[derive(Debug)]
pub struct Session {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Session {
    /// Opens the session to `database` on the server of `admin` (creating
    /// the database when missing) and migrates it; an error when the
    /// server cannot be reached or the schema is refused.
    pub fn open(admin: PgTarget, database: &str) -> anyhow::Result<Session> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<anyhow::Result<()>>();
        let database = database.to_owned();
        std::thread::Builder::new()
            .name("registry-pg".into())
            .spawn(move || {
                let connect = || -> anyhow::Result<Client> {
                    super::super::postgres::ensure_database(&admin, &database)?;
                    let mut c = admin
                        .with_dbname(&database)
                        .connect()
                        .with_context(|| format!("connecting to the registry database {database}"))?;
                    migrate(&mut c)?;
                    Ok(c)
                };
                let mut client = match connect() {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        Some(c)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    // A session the server ended (a restart) is found out
                    // here, by a round trip, before the call: a call is
                    // never run twice, so none can take effect twice.
                    if client
                        .as_mut()
                        .is_none_or(|c| c.is_closed() || c.is_valid(VALID_WITHIN).is_err())
                    {
                        client = match connect() {
                            Ok(c) => Some(c),
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "registry database unreachable");
                                None
                            }
                        };
                    }
                    match client.as_mut() {
                        Some(c) => job(c),
                        // The job's answer channel closes: the caller sees
                        // the failure.
                        None => drop(job),
                    }
                }
            })
            .context("starting the registry's thread")?;
        ready.recv().context("the registry's thread ended")??;
        Ok(Session {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on the session and returns its answer.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| anyhow::anyhow!("the registry's thread has stopped"))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the registry database cannot be reached"))?
    }
}

fn audit(tx: &mut Transaction<'_>, e: &AuditEntry<'_>) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO audit(at_ms, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&e.at_ms, &e.actor, &e.action, &e.subject, &e.detail],
    )?;
    Ok(())
}

fn upsert_enrolment(tx: &mut Transaction<'_>, e: &EnrolmentRow) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO enrolments(hospital, region, node, public_key) VALUES ($1, $2, $3, $4)
         ON CONFLICT(hospital) DO UPDATE SET region = excluded.region, node = excluded.node,
            public_key = excluded.public_key",
        &[
            &e.hospital.as_str(),
            &e.region.as_str(),
            &e.node.as_str(),
            &e.public_key,
        ],
    )?;
    Ok(())
}

fn enrolment_row(h: String, r: String, n: String, k: Vec<u8>) -> anyhow::Result<EnrolmentRow> {
    Ok(EnrolmentRow {
        hospital: h.parse().context("stored hospital id")?,
        region: r.parse().context("stored region")?,
        node: n.parse().context("stored node id")?,
        public_key: k,
    })
}

/// The registry's operations on a [`Session`]; each is what the SQLite
/// registry's method of the same name does.
impl Session {
    pub(super) fn enrolments(&self) -> anyhow::Result<Vec<EnrolmentRow>> {
        self.call(|c| {
            c.query(
                "SELECT hospital, region, node, public_key FROM enrolments",
                &[],
            )?
            .into_iter()
            .map(|r| enrolment_row(r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
        })
    }

    pub(super) fn enrolment(&self, hospital: &HospitalId) -> anyhow::Result<Option<EnrolmentRow>> {
        let h = hospital.as_str().to_owned();
        self.call(move |c| {
            c.query_opt(
                "SELECT hospital, region, node, public_key FROM enrolments WHERE hospital = $1",
                &[&h],
            )?
            .map(|r| enrolment_row(r.get(0), r.get(1), r.get(2), r.get(3)))
            .transpose()
        })
    }

    pub(super) fn put_enrolment(&self, e: &EnrolmentRow) -> anyhow::Result<()> {
        let e = e.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            upsert_enrolment(&mut tx, &e)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn put_enrolment_checked(
        &self,
        e: &EnrolmentRow,
        replace: bool,
        actor: &str,
        now_ms: i64,
    ) -> anyhow::Result<Enrolled> {
        let (e, actor) = (e.clone(), actor.to_owned());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key(&format!("enrolment/{}", e.hospital))],
            )?;
            let stored = tx.query_opt(
                "SELECT region, node, public_key FROM enrolments WHERE hospital = $1",
                &[&e.hospital.as_str()],
            )?;
            let stored = stored.map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Vec<u8>>(2),
                )
            });
            let outcome = enrolment_outcome(stored, &e, replace)?;
            let Some((action, detail)) = enrolment_audit(&outcome, &e) else {
                return Ok(outcome);
            };
            upsert_enrolment(&mut tx, &e)?;
            audit(
                &mut tx,
                &AuditEntry {
                    at_ms: now_ms,
                    actor: &actor,
                    action,
                    subject: e.hospital.as_str(),
                    detail: &detail,
                },
            )?;
            tx.commit()?;
            Ok(outcome)
        })
    }

    pub(super) fn create_operator_token(
        &self,
        t: &NewOperatorToken<'_>,
        now_ms: i64,
    ) -> Result<String, TokenError> {
        if !valid_token_name(t.name) {
            return Err(TokenError::BadName);
        }
        let token = new_token()?;
        let (name, by, scopes, expires_ms) = (
            t.name.to_owned(),
            t.by.to_owned(),
            t.scopes.to_string(),
            t.expires_ms,
        );
        let sha = digest(&token);
        let taken = self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key("tokens")])?;
            let taken: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM operator_tokens WHERE name = $1
                         AND revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $2))",
                    &[&name, &now_ms],
                )?
                .get(0);
            if taken {
                return Ok(Some(name));
            }
            tx.execute(
                "INSERT INTO operator_tokens(name, token_sha256, created_ms, scopes, expires_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&name, &sha, &now_ms, &scopes, &expires_ms],
            )?;
            let expires = expires_ms.map_or_else(
                || "never".to_owned(),
                |e| hms_domain::Timestamp::from_millis(e).to_rfc3339(),
            );
            audit(
                &mut tx,
                &AuditEntry {
                    at_ms: now_ms,
                    actor: &by,
                    action: "token_created",
                    subject: &name,
                    detail: &format!("scopes {scopes}; expires {expires}"),
                },
            )?;
            tx.commit()?;
            Ok(None)
        })?;
        match taken {
            Some(name) => Err(TokenError::Duplicate(name)),
            None => Ok(token),
        }
    }

    pub(super) fn operator(&self, token: &str, now_ms: i64) -> anyhow::Result<Option<Operator>> {
        let sha = digest(token);
        self.call(move |c| {
            c.query_opt(
                "SELECT name, scopes FROM operator_tokens
                 WHERE token_sha256 = $1 AND revoked_ms IS NULL
                   AND (expires_ms IS NULL OR expires_ms > $2)",
                &[&sha, &now_ms],
            )?
            .map(|r| {
                Ok(Operator {
                    name: r.get(0),
                    scopes: Scopes::stored(r.get::<_, Option<&str>>(1))?,
                })
            })
            .transpose()
        })
    }

    pub(super) fn open_console_session(
        &self,
        id_sha256: &[u8],
        token: &str,
        now_ms: i64,
        idle_ms: i64,
        max: usize,
    ) -> anyhow::Result<()> {
        let (id, token_sha) = (id_sha256.to_vec(), digest(token));
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key("console_sessions")],
            )?;
            tx.execute(
                "DELETE FROM console_sessions WHERE last_ms <= $1",
                &[&(now_ms - idle_ms)],
            )?;
            let n: i64 = tx
                .query_one("SELECT count(*) FROM console_sessions", &[])?
                .get(0);
            let over = n + 1 - max;
            if over > 0 {
                tx.execute(
                    "DELETE FROM console_sessions WHERE id_sha256 IN
                        (SELECT id_sha256 FROM console_sessions ORDER BY last_ms LIMIT $1)",
                    &[&over],
                )?;
            }
            tx.execute(
                "INSERT INTO console_sessions(id_sha256, token_sha256, last_ms) VALUES ($1, $2, $3)",
                &[&id, &token_sha, &now_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn console_operator(
        &self,
        id_sha256: &[u8],
        now_ms: i64,
        idle_ms: i64,
        touch_ms: i64,
    ) -> anyhow::Result<Option<Operator>> {
        let id = id_sha256.to_vec();
        self.call(move |c| {
            let Some(row) = c.query_opt(
                "SELECT token_sha256, last_ms FROM console_sessions WHERE id_sha256 = $1",
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let (token_sha, last_ms): (Vec<u8>, i64) = (row.get(0), row.get(1));
            if now_ms - last_ms >= idle_ms {
                c.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", &[&id])?;
                return Ok(None);
            }
            let op = c.query_opt(
                "SELECT name, scopes FROM operator_tokens
                 WHERE token_sha256 = $1 AND revoked_ms IS NULL
                   AND (expires_ms IS NULL OR expires_ms > $2)",
                &[&token_sha, &now_ms],
            )?;
            let Some(op) = op else {
                c.execute(
                    "DELETE FROM console_sessions WHERE token_sha256 = $1",
                    &[&token_sha],
                )?;
                return Ok(None);
            };
            if now_ms - last_ms >= touch_ms {
                c.execute(
                    "UPDATE console_sessions SET last_ms = $2 WHERE id_sha256 = $1",
                    &[&id, &now_ms],
                )?;
            }
            Ok(Some(Operator {
                name: op.get(0),
                scopes: Scopes::stored(op.get::<_, Option<&str>>(1))?,
            }))
        })
    }

    pub(super) fn close_console_session(&self, id_sha256: &[u8]) -> anyhow::Result<()> {
        let id = id_sha256.to_vec();
        self.call(move |c| {
            c.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", &[&id])?;
            Ok(())
        })
    }

    pub(super) fn tokens(&self) -> anyhow::Result<Vec<OperatorTokenRow>> {
        self.call(|c| {
            c.query(
                "SELECT name, scopes, created_ms, expires_ms, revoked_ms FROM operator_tokens
                 ORDER BY created_ms, id",
                &[],
            )?
            .into_iter()
            .map(|r| {
                Ok(OperatorTokenRow {
                    name: r.get(0),
                    scopes: Scopes::stored(r.get::<_, Option<&str>>(1))?,
                    created_ms: r.get(2),
                    expires_ms: r.get(3),
                    revoked_ms: r.get(4),
                })
            })
            .collect()
        })
    }

    pub(super) fn revoke_token(
        &self,
        name: &str,
        now_ms: i64,
        by: &str,
    ) -> anyhow::Result<Revoked> {
        let (name, by) = (name.to_owned(), by.to_owned());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE operator_tokens SET revoked_ms = $2 WHERE name = $1 AND revoked_ms IS NULL",
                &[&name, &now_ms],
            )?;
            if n == 0 {
                let known: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM operator_tokens WHERE name = $1)",
                        &[&name],
                    )?
                    .get(0);
                return Ok(if known {
                    Revoked::Already
                } else {
                    Revoked::Unknown
                });
            }
            audit(
                &mut tx,
                &AuditEntry {
                    at_ms: now_ms,
                    actor: &by,
                    action: "token_revoked",
                    subject: &name,
                    detail: "",
                },
            )?;
            tx.commit()?;
            Ok(Revoked::Revoked(usize::try_from(n).unwrap_or(usize::MAX)))
        })
    }

    pub(super) fn audit(&self, e: &AuditEntry<'_>) -> anyhow::Result<()> {
        let (at_ms, actor, action, subject, detail) = (
            e.at_ms,
            e.actor.to_owned(),
            e.action.to_owned(),
            e.subject.to_owned(),
            e.detail.to_owned(),
        );
        self.call(move |c| {
            let mut tx = c.transaction()?;
            audit(
                &mut tx,
                &AuditEntry {
                    at_ms,
                    actor: &actor,
                    action: &action,
                    subject: &subject,
                    detail: &detail,
                },
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn audit_log(&self) -> anyhow::Result<Vec<AuditRecord>> {
        self.call(|c| {
            Ok(c.query(
                "SELECT at_ms, actor, action, subject, detail FROM audit ORDER BY id",
                &[],
            )?
            .into_iter()
            .map(|r| AuditRecord {
                at_ms: r.get(0),
                actor: r.get(1),
                action: r.get(2),
                subject: r.get(3),
                detail: r.get(4),
            })
            .collect())
        })
    }

    pub(super) fn next_fleet_command_id(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        actor: &str,
        detail: &str,
        now_ms: i64,
    ) -> anyhow::Result<u64> {
        let (h, n, actor, detail) = (
            hospital.as_str().to_owned(),
            node.as_str().to_owned(),
            actor.to_owned(),
            detail.to_owned(),
        );
        self.call(move |c| {
            let mut tx = c.transaction()?;
            // One statement: above the last id and at least the time.
            let id: i64 = tx
                .query_one(
                    "INSERT INTO fleet_command_ids(hospital, node, last_id)
                     VALUES ($1, $2, GREATEST($3::bigint, 1))
                     ON CONFLICT(hospital, node) DO UPDATE
                        SET last_id = GREATEST(fleet_command_ids.last_id + 1, $3::bigint, 1)
                     RETURNING last_id",
                    &[&h, &n, &now_ms],
                )?
                .get(0);
            audit(
                &mut tx,
                &AuditEntry {
                    at_ms: now_ms,
                    actor: &actor,
                    action: "fleet_command",
                    subject: &h,
                    detail: &format!("node {n}; id {id}; {detail}"),
                },
            )?;
            tx.commit()?;
            u64::try_from(id).context("stored fleet command id")
        })
    }

    pub(super) fn put_primary(&self, region: &RegionId, public_key: &[u8]) -> anyhow::Result<()> {
        let (r, k) = (region.as_str().to_owned(), public_key.to_vec());
        self.call(move |c| {
            c.execute(
                "INSERT INTO primaries(region, public_key) VALUES ($1, $2)
                 ON CONFLICT(region) DO UPDATE SET public_key = excluded.public_key",
                &[&r, &k],
            )?;
            Ok(())
        })
    }

    pub(super) fn primaries(&self) -> anyhow::Result<HashMap<RegionId, Vec<u8>>> {
        self.call(|c| {
            c.query("SELECT region, public_key FROM primaries", &[])?
                .into_iter()
                .map(|r| {
                    Ok((
                        r.get::<_, String>(0).parse().context("stored region")?,
                        r.get(1),
                    ))
                })
                .collect()
        })
    }

    pub(super) fn record_ingest(
        &self,
        hospital: &HospitalId,
        region: &RegionId,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let (h, r) = (hospital.as_str().to_owned(), region.as_str().to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO ingest_status(hospital, region, last_ingest_ms) VALUES ($1, $2, $3)
                 ON CONFLICT(hospital) DO UPDATE
                    SET last_ingest_ms = GREATEST(ingest_status.last_ingest_ms, excluded.last_ingest_ms)",
                &[&h, &r, &now_ms],
            )?;
            Ok(())
        })
    }

    pub(super) fn hospital_region(
        &self,
        hospital: &HospitalId,
    ) -> anyhow::Result<Option<RegionId>> {
        let h = hospital.as_str().to_owned();
        self.call(move |c| {
            c.query_opt(
                "SELECT region FROM ingest_status WHERE hospital = $1",
                &[&h],
            )?
            .map(|r| r.get::<_, String>(0).parse().context("stored region"))
            .transpose()
        })
    }

    pub(super) fn ingest_status(&self) -> anyhow::Result<HashMap<HospitalId, IngestStatus>> {
        self.call(|c| {
            c.query(
                "SELECT hospital, region, last_ingest_ms FROM ingest_status",
                &[],
            )?
            .into_iter()
            .map(|r| {
                Ok((
                    r.get::<_, String>(0)
                        .parse()
                        .context("stored hospital id")?,
                    IngestStatus {
                        region: r.get::<_, String>(1).parse().context("stored region")?,
                        last_ingest_ms: r.get(2),
                    },
                ))
            })
            .collect()
        })
    }
}

/// Drops database `name` of the server `admin` (tests).
#[cfg(test)]
pub(crate) fn drop_database(admin: &str, name: &str) -> anyhow::Result<()> {
    let mut c = postgres::Client::connect(admin, postgres::NoTls)?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
    Ok(())
}
