//! The regional EMPI's database, `empi.sqlite` under the data dir: the
//! patient records with their EIDs, the per-hospital cursors, the human
//! decisions, the review queue, the append-only audit and the trained
//! models. Matching, numbering and model installation are
//! [`crate::empi`]'s; this module only reads and writes rows.
//!
//! An [`EmpiDb`] is one connection: the EMPI's writer
//! ([`EmpiDb::open`]), the command line's training connection
//! ([`EmpiDb::open_existing`]) or a read-only one for long reads
//! ([`EmpiDb::reader`]). Changes that belong together go through one
//! [`Transaction`].
//!
//! The audit holds reads too (action `read`: the kind of query in `query`,
//! how many results in `results`; no source, local id or value). Columns
//! added after the first schema come from [`MIGRATIONS`], run once each by
//! `PRAGMA user_version` when a writer opens the file.
//!
//! With `backend = "postgres"` the same tables (named `empi_*`) live in the
//! region's database ([`EmpiDb::shared`], migrated by [`PG_MIGRATIONS`]
//! under an advisory lock, versions in `empi_migrations`), so that the
//! instance that takes the region's EMPI over finds every record, cursor,
//! decision, review, audit row and model where the last one left them. Its
//! transactions gather their changes and apply them in one PostgreSQL
//! transaction at commit.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hms_domain::empi::{Decisions, Eid, Record, RecordKey};
use rusqlite::{Connection, OptionalExtension, params};

use super::registry::RegistryDb;
use super::sqlite;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    source   TEXT    NOT NULL,
    local_id TEXT    NOT NULL,
    record   TEXT    NOT NULL,
    eid      INTEGER NOT NULL,
    PRIMARY KEY (source, local_id)
) STRICT;
CREATE TABLE IF NOT EXISTS audit (
    id            INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    actor         TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    local_id      TEXT    NOT NULL,
    before_eid    INTEGER,
    after_eid     INTEGER,
    score         REAL,
    decision      TEXT,
    model_version TEXT    NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS cursors (
    hospital TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS decisions (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS reviews (
    id         INTEGER PRIMARY KEY,
    source     TEXT    NOT NULL,
    local_id   TEXT    NOT NULL,
    eid        INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    score      REAL,
    candidates TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    opened_at  INTEGER NOT NULL,
    closed_at  INTEGER,
    closed_by  TEXT,
    resolution TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS models (
    id         INTEGER PRIMARY KEY,
    version    TEXT    NOT NULL UNIQUE,
    trained_at INTEGER NOT NULL,
    trained_by TEXT    NOT NULL,
    records    INTEGER NOT NULL,
    sampled    INTEGER NOT NULL,
    seed       INTEGER NOT NULL,
    params     TEXT    NOT NULL,
    report     TEXT    NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS models_one_active ON models(active) WHERE active = 1;";

/// Forward-only changes to `SCHEMA`; index + 1 is the `user_version`
/// they bring.
pub const MIGRATIONS: &[&str] = &[
    // 1: audited reads: the kind of query and how many results.
    "ALTER TABLE audit ADD COLUMN query TEXT;
     ALTER TABLE audit ADD COLUMN results INTEGER;",
];

/// Runs the migrations `conn` has not had, in one transaction; refuses a
/// newer file.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let target = MIGRATIONS.len() as i64;
    let version = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
    };
    if version(conn)? == target {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > target {
        anyhow::bail!(
            "empi.sqlite has schema version {found}, newer than this hms-cloud knows ({target})"
        );
    }
    for sql in &MIGRATIONS[found.max(0) as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", target)?;
    tx.commit()?;
    Ok(())
}

/// The EMPI's tables in the region's database; index + 1 is the version
/// they bring (`empi_migrations`).
pub const PG_MIGRATIONS: &[&str] = &[
    // 1: the tables of empi.sqlite at its version 1.
    "CREATE TABLE empi_records (
         source   TEXT   NOT NULL,
         local_id TEXT   NOT NULL,
         record   TEXT   NOT NULL,
         eid      BIGINT NOT NULL,
         ord      BIGSERIAL,
         PRIMARY KEY (source, local_id)
     );
     CREATE INDEX empi_records_restore ON empi_records(eid, ord);
     CREATE TABLE empi_audit (
         id            BIGSERIAL PRIMARY KEY,
         at            BIGINT NOT NULL,
         actor         TEXT   NOT NULL,
         action        TEXT   NOT NULL,
         source        TEXT   NOT NULL,
         local_id      TEXT   NOT NULL,
         before_eid    BIGINT,
         after_eid     BIGINT,
         score         DOUBLE PRECISION,
         decision      TEXT,
         model_version TEXT   NOT NULL,
         query         TEXT,
         results       BIGINT
     );
     CREATE TABLE empi_cursors (
         hospital TEXT PRIMARY KEY,
         seq      BIGINT NOT NULL
     );
     CREATE TABLE empi_decisions (
         id   INTEGER PRIMARY KEY CHECK (id = 1),
         json TEXT NOT NULL
     );
     CREATE TABLE empi_reviews (
         id         BIGSERIAL PRIMARY KEY,
         source     TEXT   NOT NULL,
         local_id   TEXT   NOT NULL,
         eid        BIGINT NOT NULL,
         reason     TEXT   NOT NULL,
         score      DOUBLE PRECISION,
         candidates TEXT   NOT NULL,
         status     TEXT   NOT NULL,
         opened_at  BIGINT NOT NULL,
         closed_at  BIGINT,
         closed_by  TEXT,
         resolution TEXT
     );
     CREATE TABLE empi_models (
         id         BIGSERIAL PRIMARY KEY,
         version    TEXT    NOT NULL UNIQUE,
         trained_at BIGINT  NOT NULL,
         trained_by TEXT    NOT NULL,
         records    BIGINT  NOT NULL,
         sampled    BIGINT  NOT NULL,
         seed       BIGINT  NOT NULL,
         params     TEXT    NOT NULL,
         report     TEXT    NOT NULL,
         active     BOOLEAN NOT NULL DEFAULT false
     );
     CREATE UNIQUE INDEX empi_models_one_active ON empi_models(active) WHERE active;",
    // 2: the records each transaction changed, in order: the instances
    // that do not run the EMPI keep their engine in step by them.
    "CREATE TABLE empi_changes (
         rev      BIGSERIAL PRIMARY KEY,
         source   TEXT NOT NULL,
         local_id TEXT NOT NULL
     );",
    // 3: changes asked at an instance that does not run the EMPI, relayed
    // to the one that does, with their answers.
    "CREATE TABLE empi_requests (
         id           BIGSERIAL PRIMARY KEY,
         method       TEXT   NOT NULL,
         path         TEXT   NOT NULL,
         body         BYTEA  NOT NULL,
         operator     TEXT   NOT NULL,
         asked_ms     BIGINT NOT NULL,
         answered_ms  BIGINT,
         status       INTEGER,
         content_type TEXT,
         answer       BYTEA
     );
     CREATE INDEX empi_requests_pending ON empi_requests(id) WHERE answered_ms IS NULL;",
];

/// Brings the EMPI's tables in the region's database to the last of
/// [`PG_MIGRATIONS`], each step once, whoever else migrates at the same
/// moment (a transaction-level advisory lock); refuses a newer database.
fn pg_migrate(db: &RegistryDb) -> anyhow::Result<()> {
    let lock = super::lease::key("hms-cloud/empi/migrate");
    db.region_call(move |c| {
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS empi_migrations (version INTEGER PRIMARY KEY)",
        )?;
        let found: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM empi_migrations", &[])?
            .get(0);
        let target = i32::try_from(PG_MIGRATIONS.len()).unwrap_or(i32::MAX);
        if found > target {
            anyhow::bail!(
                "the region's EMPI tables have version {found}, newer than this hms-cloud knows \
                 ({target})"
            );
        }
        for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tx.batch_execute(sql)?;
            let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("INSERT INTO empi_migrations(version) VALUES ($1)", &[&v])?;
        }
        tx.commit()?;
        Ok(())
    })
    .context("migrating the region's EMPI tables")
}

/// How long a connection waits for a lock another one holds.
const BUSY: Duration = Duration::from_secs(10);

/// Where the EMPI of the cloud whose data dir is `data_dir` lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("empi.sqlite")
}

fn eid(raw: i64) -> Eid {
    Eid(raw.max(0) as u64)
}

fn eid_sql(eid: Option<Eid>) -> Option<i64> {
    eid.map(|e| e.0 as i64)
}

fn parse_record(json: &str) -> anyhow::Result<Record> {
    serde_json::from_str(json).context("a stored EMPI record does not parse")
}

/// An EMPI change asked at an instance that does not run the EMPI, for the
/// one that does ([`EmpiDb::ask`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Its id.
    pub id: i64,
    /// The HTTP method.
    pub method: String,
    /// The path (with its query).
    pub path: String,
    /// The request body.
    pub body: Vec<u8>,
    /// The operator who asked (authenticated where it was asked).
    pub operator: String,
    /// When, ms since the epoch.
    pub asked_ms: i64,
}

/// The answer to a [`Relayed`] request: status, content type, body.
pub type RelayAnswer = (u16, String, Vec<u8>);

/// A change as read: revision, source, local id, and the record's JSON
/// and EID as stored now (none when removed).
type ChangeRow = (i64, String, String, Option<String>, Option<i64>);

/// A record a transaction changed ([`EmpiDb::changes_since`]).
#[derive(Debug, Clone)]
pub struct Changed {
    /// The change's revision.
    pub rev: i64,
    /// The record.
    pub key: RecordKey,
    /// The record and its EID as stored now; none when removed.
    pub now: Option<(Record, Eid)>,
}

/// One connection to `empi.sqlite`, or the region's database.
#[derive(Debug)]
pub struct EmpiDb {
    inner: Backend,
}

/// Where the EMPI's tables are.
#[derive(Debug)]
enum Backend {
    Sqlite(Connection),
    Shared(Arc<RegistryDb>),
}

/// One row of the `models` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// Row id.
    pub id: i64,
    /// The model's version.
    pub version: String,
    /// When it was trained, ms since the epoch.
    pub trained_at: i64,
    /// Who trained it.
    pub trained_by: String,
    /// Records held when it was trained.
    pub records: i64,
    /// Records sampled.
    pub sampled: i64,
    /// Sampling and EM seed.
    pub seed: i64,
    /// Its parameters (JSON).
    pub params: String,
    /// The EM report (JSON).
    pub report: String,
    /// Whether it is the active one.
    pub active: bool,
}

/// A trained model to store as the active one.
#[derive(Debug, Clone, Copy)]
pub struct NewModel<'a> {
    /// Its version.
    pub version: &'a str,
    /// When it was trained, ms since the epoch.
    pub trained_at: Option<i64>,
    /// Who trained it.
    pub trained_by: Option<&'a str>,
    /// Records held.
    pub records: Option<u64>,
    /// Records sampled.
    pub sampled: Option<u64>,
    /// Sampling and EM seed.
    pub seed: Option<u64>,
    /// Its parameters (JSON).
    pub params: &'a str,
    /// The EM report (JSON).
    pub report: &'a str,
}

/// One row of the append-only audit.
#[derive(Debug, Clone, Copy)]
pub struct AuditRow<'a> {
    /// When, ms since the epoch.
    pub at: i64,
    /// Who (`sync:{hospital}`, `operator:{name}`, `auto`, `cli`, …).
    pub actor: &'a str,
    /// What (`match`, `retire`, `link`, `merge`, `model_trained`, …).
    pub action: &'a str,
    /// The record's source (empty for model events).
    pub source: &'a str,
    /// The record's local id (empty for model events).
    pub local_id: &'a str,
    /// The EID before.
    pub before: Option<Eid>,
    /// The EID after.
    pub after: Option<Eid>,
    /// The best score, bits.
    pub score: Option<f64>,
    /// The decision taken.
    pub decision: Option<&'a str>,
    /// The model version in force.
    pub model_version: &'a str,
}

/// A review task to open.
#[derive(Debug, Clone, Copy)]
pub struct NewReview<'a> {
    /// The record's source.
    pub source: &'a str,
    /// The record's local id.
    pub local_id: &'a str,
    /// The EID it was given.
    pub eid: Eid,
    /// Why it needs a human.
    pub reason: &'a str,
    /// The best score, bits.
    pub score: Option<f64>,
    /// The candidates (JSON).
    pub candidates: &'a str,
    /// When, ms since the epoch.
    pub opened_at: i64,
}

/// One review task.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRow {
    /// Its id.
    pub id: i64,
    /// The record's source.
    pub source: String,
    /// The record's local id.
    pub local_id: String,
    /// The EID it was given.
    pub eid: Eid,
    /// Why it needs a human.
    pub reason: String,
    /// The best score, bits.
    pub score: Option<f64>,
    /// The candidates (JSON).
    pub candidates: String,
    /// `open` or `closed`.
    pub status: String,
    /// When it was opened, ms since the epoch.
    pub opened_at: i64,
    /// When it was closed.
    pub closed_at: Option<i64>,
    /// Who closed it.
    pub closed_by: Option<String>,
    /// How.
    pub resolution: Option<String>,
}

const MODEL_COLUMNS: &str =
    "id, version, trained_at, trained_by, records, sampled, seed, params, report, active";

fn model_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelRow> {
    Ok(ModelRow {
        id: r.get(0)?,
        version: r.get(1)?,
        trained_at: r.get(2)?,
        trained_by: r.get(3)?,
        records: r.get(4)?,
        sampled: r.get(5)?,
        seed: r.get(6)?,
        params: r.get(7)?,
        report: r.get(8)?,
        active: r.get::<_, i64>(9)? == 1,
    })
}

fn pg_model_row(r: &postgres::Row) -> ModelRow {
    ModelRow {
        id: r.get(0),
        version: r.get(1),
        trained_at: r.get(2),
        trained_by: r.get(3),
        records: r.get(4),
        sampled: r.get(5),
        seed: r.get(6),
        params: r.get(7),
        report: r.get(8),
        active: r.get(9),
    }
}

fn pg_review_row(r: &postgres::Row) -> ReviewRow {
    ReviewRow {
        id: r.get(0),
        source: r.get(1),
        local_id: r.get(2),
        eid: eid(r.get(3)),
        reason: r.get(4),
        score: r.get(5),
        candidates: r.get(6),
        status: r.get(7),
        opened_at: r.get(8),
        closed_at: r.get(9),
        closed_by: r.get(10),
        resolution: r.get(11),
    }
}

/// Records read at once from PostgreSQL while restoring (a few in tests,
/// so that restoring crosses chunks).
const RESTORE_CHUNK: i64 = if cfg!(test) { 97 } else { 10_000 };

impl EmpiDb {
    /// The EMPI's writer: opens (creating) `empi.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<EmpiDb> {
        std::fs::create_dir_all(data_dir)?;
        Self::writer(&path(data_dir), sqlite::Create::IfMissing)
    }

    /// A writer on an `empi.sqlite` that must exist (the command line's
    /// training beside a running cloud).
    pub fn open_existing(path: &Path) -> anyhow::Result<EmpiDb> {
        Self::writer(path, sqlite::Create::Never)
    }

    fn writer(path: &Path, create: sqlite::Create) -> anyhow::Result<EmpiDb> {
        let mut conn = sqlite::writer(path, create, BUSY)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&mut conn).context("migrating empi.sqlite")?;
        Ok(EmpiDb {
            inner: Backend::Sqlite(conn),
        })
    }

    /// The EMPI's tables in the region's database, whose shared registry
    /// is `db` (created and migrated when missing).
    pub fn shared(db: Arc<RegistryDb>) -> anyhow::Result<EmpiDb> {
        pg_migrate(&db)?;
        Ok(EmpiDb {
            inner: Backend::Shared(db),
        })
    }

    /// Another handle on the same EMPI for long reads: a read-only
    /// connection to `path`, or the region's database again.
    pub fn reader_like(&self, path: &Path) -> anyhow::Result<EmpiDb> {
        match &self.inner {
            Backend::Shared(db) => Ok(EmpiDb {
                inner: Backend::Shared(db.clone()),
            }),
            Backend::Sqlite(_) => Self::reader(path),
        }
    }

    /// Whether the tables are the region's (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, Backend::Shared(_))
    }

    /// The SQLite connection (tests).
    #[cfg(test)]
    fn sqlite(&self) -> &Connection {
        match &self.inner {
            Backend::Sqlite(c) => c,
            Backend::Shared(_) => panic!("a test of the SQLite EMPI on PostgreSQL"),
        }
    }

    /// Appends an audited read (see the module doc), durably.
    pub fn audit_read(
        &self,
        at: i64,
        actor: &str,
        query: &str,
        results: i64,
        model_version: &str,
    ) -> anyhow::Result<()> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                conn.prepare_cached(
                    "INSERT INTO audit(at, actor, action, source, local_id, query, results,
                                       model_version)
                     VALUES (?1, ?2, 'read', '', '', ?3, ?4, ?5)",
                )?
                .execute(params![at, actor, query, results, model_version])?;
                Ok(())
            }
            Backend::Shared(db) => {
                let (a, q, v) = (actor.to_owned(), query.to_owned(), model_version.to_owned());
                db.region_call(move |c| {
                    c.execute(
                        "INSERT INTO empi_audit(at, actor, action, source, local_id, query,
                                                results, model_version)
                         VALUES ($1, $2, 'read', '', '', $3, $4, $5)",
                        &[&at, &a, &q, &results, &v],
                    )?;
                    Ok(())
                })
            }
        }
    }

    /// The audited reads, oldest first: (at, actor, query, results).
    pub fn audited_reads(&self) -> anyhow::Result<Vec<(i64, String, String, i64)>> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare(
                    "SELECT at, actor, query, results FROM audit WHERE action = 'read' ORDER BY id",
                )?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Backend::Shared(db) => db.region_call(|c| {
                Ok(c.query(
                    "SELECT at, actor, query, results FROM empi_audit WHERE action = 'read'
                     ORDER BY id",
                    &[],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect())
            }),
        }
    }

    /// A read-only connection (long reads do not hold up the writer).
    pub fn reader(path: &Path) -> anyhow::Result<EmpiDb> {
        Ok(EmpiDb {
            inner: Backend::Sqlite(sqlite::reader(path, BUSY)?),
        })
    }

    /// Starts a transaction.
    pub fn transaction(&mut self) -> anyhow::Result<Transaction<'_>> {
        Ok(Transaction(match &mut self.inner {
            Backend::Sqlite(conn) => Tx::Sqlite(conn.transaction()?),
            Backend::Shared(db) => Tx::Shared {
                db: db.clone(),
                ops: RefCell::new(vec![]),
            },
        }))
    }

    /// The stored human decisions, if any were ever taken.
    pub fn decisions(&self) -> anyhow::Result<Option<Decisions>> {
        let json: Option<String> = match &self.inner {
            Backend::Sqlite(conn) => conn
                .query_row("SELECT json FROM decisions WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?,
            Backend::Shared(db) => db.region_call(|c| {
                Ok(
                    c.query_opt("SELECT json FROM empi_decisions WHERE id = 1", &[])?
                        .map(|r| r.get(0)),
                )
            })?,
        };
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .context("the stored EMPI decisions do not parse")
    }

    /// Calls `f` with every stored record and its EID, in restore order
    /// (by EID, then as stored), streamed: the records are not all held at
    /// once.
    pub fn each_record(
        &self,
        mut f: impl FnMut(Record, Eid) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.each_row(|json, e| f(parse_record(&json)?, e))
    }

    /// Every stored record's JSON and EID, in restore order, a chunk at a
    /// time from PostgreSQL.
    fn each_row(&self, mut f: impl FnMut(String, Eid) -> anyhow::Result<()>) -> anyhow::Result<()> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare("SELECT record, eid FROM records ORDER BY eid, rowid")?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    f(row.get(0)?, eid(row.get(1)?))?;
                }
                Ok(())
            }
            Backend::Shared(db) => {
                let mut after = (-1i64, -1i64);
                loop {
                    let rows: Vec<(String, i64, i64)> = db.region_call(move |c| {
                        Ok(c.query(
                            "SELECT record, eid, ord FROM empi_records
                             WHERE (eid, ord) > ($1, $2) ORDER BY eid, ord LIMIT $3",
                            &[&after.0, &after.1, &RESTORE_CHUNK],
                        )?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect())
                    })?;
                    let Some(last) = rows.last().map(|(_, e, o)| (*e, *o)) else {
                        return Ok(());
                    };
                    let full = rows.len() as i64 == RESTORE_CHUNK;
                    for (json, e, _) in rows {
                        f(json, eid(e))?;
                    }
                    if !full {
                        return Ok(());
                    }
                    after = last;
                }
            }
        }
    }

    /// Calls `f` with the JSON of every stored record, in restore order,
    /// without parsing it.
    pub fn each_record_json(&self, mut f: impl FnMut(String)) -> anyhow::Result<()> {
        self.each_row(|json, _| {
            f(json);
            Ok(())
        })
    }

    /// The highest EID the stored records or the audit name (0 for none).
    pub fn highest_eid(&self) -> anyhow::Result<u64> {
        let top: i64 = match &self.inner {
            Backend::Sqlite(conn) => conn.query_row(
                "SELECT max(coalesce((SELECT max(eid) FROM records), 0),
                            coalesce((SELECT max(before_eid) FROM audit), 0),
                            coalesce((SELECT max(after_eid) FROM audit), 0))",
                [],
                |r| r.get(0),
            )?,
            Backend::Shared(db) => db.region_call(|c| {
                Ok(c.query_one(
                    "SELECT greatest(coalesce((SELECT max(eid) FROM empi_records), 0),
                                     coalesce((SELECT max(before_eid) FROM empi_audit), 0),
                                     coalesce((SELECT max(after_eid) FROM empi_audit), 0))",
                    &[],
                )?
                .get(0))
            })?,
        };
        Ok(top.max(0) as u64)
    }

    /// A stored record and its EID.
    pub fn record(&self, key: &RecordKey) -> anyhow::Result<Option<(Record, Eid)>> {
        let found: Option<(String, i64)> = match &self.inner {
            Backend::Sqlite(conn) => conn
                .query_row(
                    "SELECT record, eid FROM records WHERE source = ?1 AND local_id = ?2",
                    params![key.source, key.local_id.expose()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?,
            Backend::Shared(db) => {
                let (s, l) = (key.source.clone(), key.local_id.expose().to_owned());
                db.region_call(move |c| {
                    Ok(c.query_opt(
                        "SELECT record, eid FROM empi_records WHERE source = $1 AND local_id = $2",
                        &[&s, &l],
                    )?
                    .map(|r| (r.get(0), r.get(1))))
                })?
            }
        };
        found
            .map(|(json, e)| Ok((parse_record(&json)?, eid(e))))
            .transpose()
    }

    /// Where the EMPI's reading of `hospital`'s log stands (0: from the start).
    pub fn cursor(&self, hospital: &str) -> anyhow::Result<u64> {
        let seq: Option<i64> = match &self.inner {
            Backend::Sqlite(conn) => conn
                .query_row(
                    "SELECT seq FROM cursors WHERE hospital = ?1",
                    [hospital],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?,
            Backend::Shared(db) => {
                let h = hospital.to_owned();
                db.region_call(move |c| {
                    Ok(
                        c.query_opt("SELECT seq FROM empi_cursors WHERE hospital = $1", &[&h])?
                            .map(|r| r.get(0)),
                    )
                })?
            }
        };
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Moves the cursor of `hospital` to `seq`.
    pub fn set_cursor(&self, hospital: &str, seq: u64) -> anyhow::Result<()> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                conn.execute(
                    "INSERT INTO cursors(hospital, seq) VALUES (?1, ?2)
                     ON CONFLICT(hospital) DO UPDATE SET seq = excluded.seq",
                    params![hospital, seq as i64],
                )?;
                Ok(())
            }
            Backend::Shared(db) => {
                let (h, seq) = (hospital.to_owned(), seq as i64);
                db.region_call(move |c| {
                    c.execute(
                        "INSERT INTO empi_cursors(hospital, seq) VALUES ($1, $2)
                         ON CONFLICT(hospital) DO UPDATE SET seq = excluded.seq",
                        &[&h, &seq],
                    )?;
                    Ok(())
                })
            }
        }
    }

    /// Review tasks with `status`, oldest first.
    pub fn reviews(&self, status: &str) -> anyhow::Result<Vec<ReviewRow>> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare(
                    "SELECT id, source, local_id, eid, reason, score, candidates, status,
                            opened_at, closed_at, closed_by, resolution
                     FROM reviews WHERE status = ?1 ORDER BY id",
                )?;
                let rows = stmt.query_map([status], |r| {
                    Ok(ReviewRow {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        local_id: r.get(2)?,
                        eid: eid(r.get(3)?),
                        reason: r.get(4)?,
                        score: r.get(5)?,
                        candidates: r.get(6)?,
                        status: r.get(7)?,
                        opened_at: r.get(8)?,
                        closed_at: r.get(9)?,
                        closed_by: r.get(10)?,
                        resolution: r.get(11)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Backend::Shared(db) => {
                let st = status.to_owned();
                db.region_call(move |c| {
                    Ok(c.query(
                        "SELECT id, source, local_id, eid, reason, score, candidates, status,
                                opened_at, closed_at, closed_by, resolution
                         FROM empi_reviews WHERE status = $1 ORDER BY id",
                        &[&st],
                    )?
                    .iter()
                    .map(pg_review_row)
                    .collect())
                })
            }
        }
    }

    /// Closes the open review task `id`; false when there is none.
    pub fn close_review(
        &self,
        id: i64,
        at: i64,
        actor: &str,
        resolution: &str,
    ) -> anyhow::Result<bool> {
        let n = match &self.inner {
            Backend::Sqlite(conn) => conn.execute(
                "UPDATE reviews SET status = 'closed', closed_at = ?2, closed_by = ?3,
                        resolution = ?4
                 WHERE id = ?1 AND status = 'open'",
                params![id, at, actor, resolution],
            )? as u64,
            Backend::Shared(db) => {
                let (a, r) = (actor.to_owned(), resolution.to_owned());
                db.region_call(move |c| {
                    Ok(c.execute(
                        "UPDATE empi_reviews SET status = 'closed', closed_at = $2, closed_by = $3,
                                resolution = $4
                         WHERE id = $1 AND status = 'open'",
                        &[&id, &at, &a, &r],
                    )?)
                })?
            }
        };
        Ok(n == 1)
    }

    /// The records changed after revision `after` (PostgreSQL; none on
    /// SQLite, where one instance holds the EMPI), oldest first, at most
    /// `limit`: (revision, record key, the record and its EID as stored
    /// now, none when it is stored no more).
    pub fn changes_since(&self, after: i64, limit: i64) -> anyhow::Result<Vec<Changed>> {
        let rows: Vec<ChangeRow> = match &self.inner {
            Backend::Sqlite(_) => vec![],
            Backend::Shared(db) => db.region_call(move |c| {
                Ok(c.query(
                    "SELECT c.rev, c.source, c.local_id, r.record, r.eid
                     FROM empi_changes c
                     LEFT JOIN empi_records r ON r.source = c.source AND r.local_id = c.local_id
                     WHERE c.rev > $1 ORDER BY c.rev LIMIT $2",
                    &[&after, &limit],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect())
            })?,
        };
        rows.into_iter()
            .map(|(rev, source, local_id, json, e)| {
                let now = match (json, e) {
                    (Some(j), Some(e)) => Some((parse_record(&j)?, eid(e))),
                    _ => None,
                };
                Ok(Changed {
                    rev,
                    key: RecordKey {
                        source,
                        local_id: hms_domain::phi::Mrn::new(local_id),
                    },
                    now,
                })
            })
            .collect()
    }

    fn relay_db(&self) -> anyhow::Result<&Arc<RegistryDb>> {
        match &self.inner {
            Backend::Shared(db) => Ok(db),
            Backend::Sqlite(_) => anyhow::bail!("one instance holds the EMPI: nothing is relayed"),
        }
    }

    /// Queues a change asked by `operator` for the instance running the
    /// EMPI (PostgreSQL); its id.
    pub fn ask(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<i64> {
        let (m, p, b, o) = (
            method.to_owned(),
            path.to_owned(),
            body.to_vec(),
            operator.to_owned(),
        );
        self.relay_db()?.region_call(move |c| {
            Ok(c.query_one(
                "INSERT INTO empi_requests(method, path, body, operator, asked_ms)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&m, &p, &b, &o, &now_ms],
            )?
            .get(0))
        })
    }

    /// Changes not answered yet, oldest first, at most `limit`.
    pub fn pending(&self, limit: i64) -> anyhow::Result<Vec<Relayed>> {
        self.relay_db()?.region_call(move |c| {
            Ok(c.query(
                "SELECT id, method, path, body, operator, asked_ms FROM empi_requests
                 WHERE answered_ms IS NULL ORDER BY id LIMIT $1",
                &[&limit],
            )?
            .iter()
            .map(|r| Relayed {
                id: r.get(0),
                method: r.get(1),
                path: r.get(2),
                body: r.get(3),
                operator: r.get(4),
                asked_ms: r.get(5),
            })
            .collect())
        })
    }

    /// Stores the answer to request `id` (once).
    pub fn answer(&self, id: i64, answer: &RelayAnswer, now_ms: i64) -> anyhow::Result<()> {
        let (status, ct, body) = (i32::from(answer.0), answer.1.clone(), answer.2.clone());
        self.relay_db()?.region_call(move |c| {
            c.execute(
                "UPDATE empi_requests SET answered_ms = $2, status = $3, content_type = $4,
                        answer = $5
                 WHERE id = $1 AND answered_ms IS NULL",
                &[&id, &now_ms, &status, &ct, &body],
            )?;
            Ok(())
        })
    }

    /// The answer to request `id`, once there is one.
    pub fn answer_of(&self, id: i64) -> anyhow::Result<Option<RelayAnswer>> {
        self.relay_db()?.region_call(move |c| {
            Ok(c.query_opt(
                "SELECT status, content_type, answer FROM empi_requests
                 WHERE id = $1 AND answered_ms IS NOT NULL",
                &[&id],
            )?
            .map(|r| {
                (
                    u16::try_from(r.get::<_, i32>(0)).unwrap_or(500),
                    r.get(1),
                    r.get(2),
                )
            }))
        })
    }

    /// The last revision of [`EmpiDb::changes_since`] (0: none).
    pub fn last_change(&self) -> anyhow::Result<i64> {
        match &self.inner {
            Backend::Sqlite(_) => Ok(0),
            Backend::Shared(db) => db.region_call(|c| {
                Ok(
                    c.query_one("SELECT coalesce(max(rev), 0) FROM empi_changes", &[])?
                        .get(0),
                )
            }),
        }
    }

    /// Model rows matching `filter` (SQL after `WHERE`, with `?1`/`$1`
    /// standing for `arg`), in `order`.
    fn models_where(
        &self,
        filter: &str,
        arg: Option<&str>,
        order: &str,
    ) -> anyhow::Result<Vec<ModelRow>> {
        match &self.inner {
            Backend::Sqlite(conn) => {
                let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE {filter} {order}");
                let mut stmt = conn.prepare(&sql)?;
                let rows = match arg {
                    Some(a) => stmt.query_map([a], model_row)?.collect::<Result<_, _>>()?,
                    None => stmt.query_map([], model_row)?.collect::<Result<_, _>>()?,
                };
                Ok(rows)
            }
            Backend::Shared(db) => {
                let sql = format!(
                    "SELECT {MODEL_COLUMNS} FROM empi_models WHERE {} {order}",
                    filter.replace("?1", "$1").replace("active = 1", "active")
                );
                let arg = arg.map(str::to_owned);
                db.region_call(move |c| {
                    let rows = match &arg {
                        Some(a) => c.query(&sql, &[a])?,
                        None => c.query(&sql, &[])?,
                    };
                    Ok(rows.iter().map(pg_model_row).collect())
                })
            }
        }
    }

    /// The active model, if one is.
    pub fn active_model(&self) -> anyhow::Result<Option<ModelRow>> {
        Ok(self
            .models_where("active = 1", None, "")?
            .into_iter()
            .next())
    }

    /// The version of the active model, if one is.
    pub fn active_model_version(&self) -> anyhow::Result<Option<String>> {
        Ok(self.active_model()?.map(|m| m.version))
    }

    /// The stored model `version`.
    pub fn model(&self, version: &str) -> anyhow::Result<Option<ModelRow>> {
        Ok(self
            .models_where("version = ?1", Some(version), "")?
            .into_iter()
            .next())
    }

    /// The number the next stored model gets.
    pub fn next_model_number(&self) -> anyhow::Result<i64> {
        match &self.inner {
            Backend::Sqlite(conn) => Ok(conn.query_row(
                "SELECT coalesce(max(id), 0) + 1 FROM models",
                [],
                |r| r.get(0),
            )?),
            Backend::Shared(db) => db.region_call(|c| {
                Ok(
                    c.query_one("SELECT coalesce(max(id), 0) + 1 FROM empi_models", &[])?
                        .get(0),
                )
            }),
        }
    }

    /// Every stored model, newest first.
    pub fn models(&self) -> anyhow::Result<Vec<ModelRow>> {
        self.models_where("true", None, "ORDER BY id DESC")
    }

    /// Stored models (only the active one with `active_only`).
    #[cfg(test)]
    pub(crate) fn count_models(&self, active_only: bool) -> i64 {
        self.sqlite()
            .query_row(
                "SELECT count(*) FROM models WHERE active = 1 OR ?1 = 0",
                [active_only],
                |r| r.get(0),
            )
            .unwrap_or(-1)
    }

    /// Audited reads that name a record, an EID or a decision (tests:
    /// there must be none).
    #[cfg(test)]
    pub(crate) fn reads_naming_records(&self) -> i64 {
        self.sqlite()
            .query_row(
                "SELECT count(*) FROM audit WHERE action = 'read'
                 AND (source != '' OR local_id != '' OR before_eid IS NOT NULL
                      OR after_eid IS NOT NULL OR decision IS NOT NULL OR score IS NOT NULL)",
                [],
                |r| r.get(0),
            )
            .unwrap_or(-1)
    }

    /// Audit rows with one of `actions` (and `version`, when given).
    #[cfg(test)]
    pub(crate) fn count_audit(&self, version: Option<&str>, actions: &[&str]) -> i64 {
        let mut n = 0;
        for action in actions {
            n += self
                .sqlite()
                .query_row(
                    "SELECT count(*) FROM audit WHERE action = ?1
                     AND (?2 IS NULL OR model_version = ?2)",
                    params![action, version],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(-1);
        }
        n
    }

    /// `PRAGMA synchronous` and `journal_mode` of the connection (tests).
    #[cfg(test)]
    pub(crate) fn durability(&self) -> (i64, String) {
        sqlite::durability(self.sqlite())
    }
}

/// Changes to the EMPI's tables that commit together (or not at all, when
/// dropped uncommitted).
#[derive(Debug)]
pub struct Transaction<'a>(Tx<'a>);

/// A transaction of either backend: on PostgreSQL, the changes gathered
/// until commit.
#[derive(Debug)]
enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Shared {
        db: Arc<RegistryDb>,
        ops: RefCell<Vec<Op>>,
    },
}

/// One change gathered for PostgreSQL: its SQL and arguments.
#[derive(Debug)]
struct Op {
    sql: &'static str,
    args: Vec<Arg>,
}

/// An argument of an [`Op`].
#[derive(Debug)]
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptReal(Option<f64>),
}

impl Arg {
    fn sql(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Arg::Text(v) => v,
            Arg::OptText(v) => v,
            Arg::Int(v) => v,
            Arg::OptInt(v) => v,
            Arg::OptReal(v) => v,
        }
    }
}

impl Transaction<'_> {
    /// Gathers `sql` with `args` (PostgreSQL); false on SQLite.
    fn gather(&self, sql: &'static str, args: Vec<Arg>) -> bool {
        match &self.0 {
            Tx::Shared { ops, .. } => {
                ops.borrow_mut().push(Op { sql, args });
                true
            }
            Tx::Sqlite(_) => false,
        }
    }

    fn sqlite(&self) -> &rusqlite::Transaction<'_> {
        match &self.0 {
            Tx::Sqlite(tx) => tx,
            // `gather` took every change of the shared backend first.
            Tx::Shared { .. } => unreachable!("a PostgreSQL transaction has no SQLite handle"),
        }
    }

    /// Notes (PostgreSQL) that the record `source`/`local_id` changed.
    fn changed(&self, source: &str, local_id: &str) {
        self.gather(
            "INSERT INTO empi_changes(source, local_id) VALUES ($1, $2)",
            vec![Arg::Text(source.to_owned()), Arg::Text(local_id.to_owned())],
        );
    }

    /// Stores `record` under `eid` (replacing what was stored of it).
    pub fn put_record(&self, record: &Record, eid: Eid) -> anyhow::Result<()> {
        let json = serde_json::to_string(record)?;
        self.changed(&record.source, record.local_id.expose());
        if self.gather(
            "INSERT INTO empi_records(source, local_id, record, eid) VALUES ($1, $2, $3, $4)
             ON CONFLICT(source, local_id) DO UPDATE SET record = excluded.record,
                eid = excluded.eid",
            vec![
                Arg::Text(record.source.clone()),
                Arg::Text(record.local_id.expose().to_owned()),
                Arg::Text(json.clone()),
                Arg::Int(eid.0 as i64),
            ],
        ) {
            return Ok(());
        }
        self.sqlite()
            .prepare_cached(
                "INSERT INTO records(source, local_id, record, eid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(source, local_id) DO UPDATE SET record = excluded.record,
                    eid = excluded.eid",
            )?
            .execute(params![
                record.source,
                record.local_id.expose(),
                json,
                eid.0 as i64
            ])?;
        Ok(())
    }

    /// Removes a record.
    pub fn delete_record(&self, key: &RecordKey) -> anyhow::Result<()> {
        self.changed(&key.source, key.local_id.expose());
        if self.gather(
            "DELETE FROM empi_records WHERE source = $1 AND local_id = $2",
            vec![
                Arg::Text(key.source.clone()),
                Arg::Text(key.local_id.expose().to_owned()),
            ],
        ) {
            return Ok(());
        }
        self.sqlite().execute(
            "DELETE FROM records WHERE source = ?1 AND local_id = ?2",
            params![key.source, key.local_id.expose()],
        )?;
        Ok(())
    }

    /// Files a stored record under another EID.
    pub fn set_eid(&self, key: &RecordKey, eid: Option<Eid>) -> anyhow::Result<()> {
        self.changed(&key.source, key.local_id.expose());
        if self.gather(
            "UPDATE empi_records SET eid = $3 WHERE source = $1 AND local_id = $2",
            vec![
                Arg::Text(key.source.clone()),
                Arg::Text(key.local_id.expose().to_owned()),
                Arg::OptInt(eid_sql(eid)),
            ],
        ) {
            return Ok(());
        }
        self.sqlite().execute(
            "UPDATE records SET eid = ?3 WHERE source = ?1 AND local_id = ?2",
            params![key.source, key.local_id.expose(), eid_sql(eid)],
        )?;
        Ok(())
    }

    /// Replaces the stored human decisions (JSON of [`Decisions`]).
    pub fn put_decisions(&self, json: &str) -> anyhow::Result<()> {
        if self.gather(
            "INSERT INTO empi_decisions(id, json) VALUES (1, $1)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            vec![Arg::Text(json.to_owned())],
        ) {
            return Ok(());
        }
        self.sqlite().execute(
            "INSERT INTO decisions(id, json) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            [json],
        )?;
        Ok(())
    }

    /// Appends to the audit.
    pub fn audit(&self, a: &AuditRow<'_>) -> anyhow::Result<()> {
        if self.gather(
            "INSERT INTO empi_audit(at, actor, action, source, local_id, before_eid, after_eid,
                                    score, decision, model_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            vec![
                Arg::Int(a.at),
                Arg::Text(a.actor.to_owned()),
                Arg::Text(a.action.to_owned()),
                Arg::Text(a.source.to_owned()),
                Arg::Text(a.local_id.to_owned()),
                Arg::OptInt(eid_sql(a.before)),
                Arg::OptInt(eid_sql(a.after)),
                Arg::OptReal(a.score),
                Arg::OptText(a.decision.map(str::to_owned)),
                Arg::Text(a.model_version.to_owned()),
            ],
        ) {
            return Ok(());
        }
        self.sqlite()
            .prepare_cached(
                "INSERT INTO audit(at, actor, action, source, local_id, before_eid, after_eid,
                                   score, decision, model_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                a.at,
                a.actor,
                a.action,
                a.source,
                a.local_id,
                eid_sql(a.before),
                eid_sql(a.after),
                a.score,
                a.decision,
                a.model_version
            ])?;
        Ok(())
    }

    /// Opens a review task.
    pub fn open_review(&self, r: &NewReview<'_>) -> anyhow::Result<()> {
        if self.gather(
            "INSERT INTO empi_reviews(source, local_id, eid, reason, score, candidates, status,
                                      opened_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
            vec![
                Arg::Text(r.source.to_owned()),
                Arg::Text(r.local_id.to_owned()),
                Arg::Int(r.eid.0 as i64),
                Arg::Text(r.reason.to_owned()),
                Arg::OptReal(r.score),
                Arg::Text(r.candidates.to_owned()),
                Arg::Int(r.opened_at),
            ],
        ) {
            return Ok(());
        }
        self.sqlite().execute(
            "INSERT INTO reviews(source, local_id, eid, reason, score, candidates, status, opened_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)",
            params![
                r.source,
                r.local_id,
                r.eid.0 as i64,
                r.reason,
                r.score,
                r.candidates,
                r.opened_at
            ],
        )?;
        Ok(())
    }

    /// No stored model is active any more (the hand-set one is in force).
    pub fn deactivate_models(&self) -> anyhow::Result<()> {
        if self.gather("UPDATE empi_models SET active = false WHERE active", vec![]) {
            return Ok(());
        }
        self.sqlite()
            .execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
        Ok(())
    }

    /// Makes the stored model `id` the active one.
    pub fn activate_model(&self, id: i64) -> anyhow::Result<()> {
        self.deactivate_models()?;
        if self.gather(
            "UPDATE empi_models SET active = true WHERE id = $1",
            vec![Arg::Int(id)],
        ) {
            return Ok(());
        }
        self.sqlite()
            .execute("UPDATE models SET active = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Stores a trained model as the active one.
    pub fn insert_active_model(&self, m: &NewModel<'_>) -> anyhow::Result<()> {
        self.deactivate_models()?;
        let n = |v: Option<u64>| v.map(|n| n as i64);
        if self.gather(
            "INSERT INTO empi_models(version, trained_at, trained_by, records, sampled, seed,
                                     params, report, active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true)",
            vec![
                Arg::Text(m.version.to_owned()),
                Arg::OptInt(m.trained_at),
                Arg::OptText(m.trained_by.map(str::to_owned)),
                Arg::OptInt(n(m.records)),
                Arg::OptInt(n(m.sampled)),
                Arg::OptInt(n(m.seed)),
                Arg::Text(m.params.to_owned()),
                Arg::Text(m.report.to_owned()),
            ],
        ) {
            return Ok(());
        }
        self.sqlite().execute(
            "INSERT INTO models(version, trained_at, trained_by, records, sampled, seed, params,
                                report, active)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
            params![
                m.version,
                m.trained_at,
                m.trained_by,
                n(m.records),
                n(m.sampled),
                n(m.seed),
                m.params,
                m.report,
            ],
        )?;
        Ok(())
    }

    /// Commits.
    pub fn commit(self) -> anyhow::Result<()> {
        match self.0 {
            Tx::Sqlite(tx) => {
                tx.commit()?;
                Ok(())
            }
            Tx::Shared { db, ops } => {
                let ops = ops.into_inner();
                if ops.is_empty() {
                    return Ok(());
                }
                db.region_call(move |c| {
                    let mut tx = c.transaction()?;
                    for op in &ops {
                        let args: Vec<&(dyn postgres::types::ToSql + Sync)> =
                            op.args.iter().map(Arg::sql).collect();
                        tx.execute(op.sql, &args)?;
                    }
                    tx.commit()?;
                    Ok(())
                })
            }
        }
    }
}
