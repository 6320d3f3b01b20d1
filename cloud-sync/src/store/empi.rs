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

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hms_domain::empi::{Decisions, Eid, Record, RecordKey};
use rusqlite::{Connection, OptionalExtension, params};

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

/// One connection to `empi.sqlite`.
#[derive(Debug)]
pub struct EmpiDb {
    conn: Connection,
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
        Ok(EmpiDb { conn })
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
        self.conn
            .prepare_cached(
                "INSERT INTO audit(at, actor, action, source, local_id, query, results,
                                   model_version)
                 VALUES (?1, ?2, 'read', '', '', ?3, ?4, ?5)",
            )?
            .execute(params![at, actor, query, results, model_version])?;
        Ok(())
    }

    /// The audited reads, oldest first: (at, actor, query, results).
    pub fn audited_reads(&self) -> anyhow::Result<Vec<(i64, String, String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, actor, query, results FROM audit WHERE action = 'read' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A read-only connection (long reads do not hold up the writer).
    pub fn reader(path: &Path) -> anyhow::Result<EmpiDb> {
        Ok(EmpiDb {
            conn: sqlite::reader(path, BUSY)?,
        })
    }

    /// Starts a transaction.
    pub fn transaction(&mut self) -> anyhow::Result<Transaction<'_>> {
        Ok(Transaction(self.conn.transaction()?))
    }

    /// The stored human decisions, if any were ever taken.
    pub fn decisions(&self) -> anyhow::Result<Option<Decisions>> {
        self.conn
            .query_row("SELECT json FROM decisions WHERE id = 1", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|j| serde_json::from_str(&j))
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
        let mut stmt = self
            .conn
            .prepare("SELECT record, eid FROM records ORDER BY eid, rowid")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let json: String = row.get(0)?;
            f(parse_record(&json)?, eid(row.get(1)?))?;
        }
        Ok(())
    }

    /// Calls `f` with the JSON of every stored record, in restore order,
    /// without parsing it.
    pub fn each_record_json(&self, mut f: impl FnMut(String)) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM records ORDER BY eid, rowid")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(r.get(0)?);
        }
        Ok(())
    }

    /// The highest EID the stored records or the audit name (0 for none).
    pub fn highest_eid(&self) -> anyhow::Result<u64> {
        let top: i64 = self.conn.query_row(
            "SELECT max(coalesce((SELECT max(eid) FROM records), 0),
                        coalesce((SELECT max(before_eid) FROM audit), 0),
                        coalesce((SELECT max(after_eid) FROM audit), 0))",
            [],
            |r| r.get(0),
        )?;
        Ok(top.max(0) as u64)
    }

    /// A stored record and its EID.
    pub fn record(&self, key: &RecordKey) -> anyhow::Result<Option<(Record, Eid)>> {
        let found = self
            .conn
            .query_row(
                "SELECT record, eid FROM records WHERE source = ?1 AND local_id = ?2",
                params![key.source, key.local_id.expose()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        found
            .map(|(json, e)| Ok((parse_record(&json)?, eid(e))))
            .transpose()
    }

    /// Where the EMPI's reading of `hospital`'s log stands (0: from the start).
    pub fn cursor(&self, hospital: &str) -> anyhow::Result<u64> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM cursors WHERE hospital = ?1",
                [hospital],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0)
            .max(0) as u64)
    }

    /// Moves the cursor of `hospital` to `seq`.
    pub fn set_cursor(&self, hospital: &str, seq: u64) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO cursors(hospital, seq) VALUES (?1, ?2)
             ON CONFLICT(hospital) DO UPDATE SET seq = excluded.seq",
            params![hospital, seq as i64],
        )?;
        Ok(())
    }

    /// Review tasks with `status`, oldest first.
    pub fn reviews(&self, status: &str) -> anyhow::Result<Vec<ReviewRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, source, local_id, eid, reason, score, candidates, status, opened_at,
                    closed_at, closed_by, resolution
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

    /// Closes the open review task `id`; false when there is none.
    pub fn close_review(
        &self,
        id: i64,
        at: i64,
        actor: &str,
        resolution: &str,
    ) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "UPDATE reviews SET status = 'closed', closed_at = ?2, closed_by = ?3, resolution = ?4
             WHERE id = ?1 AND status = 'open'",
            params![id, at, actor, resolution],
        )?;
        Ok(n == 1)
    }

    /// The active model, if one is.
    pub fn active_model(&self) -> anyhow::Result<Option<ModelRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM models WHERE active = 1"),
                [],
                model_row,
            )
            .optional()?)
    }

    /// The version of the active model, if one is.
    pub fn active_model_version(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT version FROM models WHERE active = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The stored model `version`.
    pub fn model(&self, version: &str) -> anyhow::Result<Option<ModelRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM models WHERE version = ?1"),
                [version],
                model_row,
            )
            .optional()?)
    }

    /// The number the next stored model gets.
    pub fn next_model_number(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) + 1 FROM models", [], |r| {
                r.get(0)
            })?)
    }

    /// Every stored model, newest first.
    pub fn models(&self) -> anyhow::Result<Vec<ModelRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {MODEL_COLUMNS} FROM models ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map([], model_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stored models (only the active one with `active_only`).
    #[cfg(test)]
    pub(crate) fn count_models(&self, active_only: bool) -> i64 {
        self.conn
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
        self.conn
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
                .conn
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
        sqlite::durability(&self.conn)
    }
}

/// Changes to `empi.sqlite` that commit together (or not at all, when
/// dropped uncommitted).
#[derive(Debug)]
pub struct Transaction<'a>(rusqlite::Transaction<'a>);

impl Transaction<'_> {
    /// Stores `record` under `eid` (replacing what was stored of it).
    pub fn put_record(&self, record: &Record, eid: Eid) -> anyhow::Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO records(source, local_id, record, eid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(source, local_id) DO UPDATE SET record = excluded.record,
                    eid = excluded.eid",
            )?
            .execute(params![
                record.source,
                record.local_id.expose(),
                serde_json::to_string(record)?,
                eid.0 as i64
            ])?;
        Ok(())
    }

    /// Removes a record.
    pub fn delete_record(&self, key: &RecordKey) -> anyhow::Result<()> {
        self.0.execute(
            "DELETE FROM records WHERE source = ?1 AND local_id = ?2",
            params![key.source, key.local_id.expose()],
        )?;
        Ok(())
    }

    /// Files a stored record under another EID.
    pub fn set_eid(&self, key: &RecordKey, eid: Option<Eid>) -> anyhow::Result<()> {
        self.0.execute(
            "UPDATE records SET eid = ?3 WHERE source = ?1 AND local_id = ?2",
            params![key.source, key.local_id.expose(), eid_sql(eid)],
        )?;
        Ok(())
    }

    /// Replaces the stored human decisions (JSON of [`Decisions`]).
    pub fn put_decisions(&self, json: &str) -> anyhow::Result<()> {
        self.0.execute(
            "INSERT INTO decisions(id, json) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            [json],
        )?;
        Ok(())
    }

    /// Appends to the audit.
    pub fn audit(&self, a: &AuditRow<'_>) -> anyhow::Result<()> {
        self.0
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
        self.0.execute(
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
        self.0
            .execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
        Ok(())
    }

    /// Makes the stored model `id` the active one.
    pub fn activate_model(&self, id: i64) -> anyhow::Result<()> {
        self.deactivate_models()?;
        self.0
            .execute("UPDATE models SET active = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Stores a trained model as the active one.
    pub fn insert_active_model(&self, m: &NewModel<'_>) -> anyhow::Result<()> {
        self.deactivate_models()?;
        self.0.execute(
            "INSERT INTO models(version, trained_at, trained_by, records, sampled, seed, params,
                                report, active)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
            params![
                m.version,
                m.trained_at,
                m.trained_by,
                m.records.map(|n| n as i64),
                m.sampled.map(|n| n as i64),
                m.seed.map(|s| s as i64),
                m.params,
                m.report,
            ],
        )?;
        Ok(())
    }

    /// Commits.
    pub fn commit(self) -> anyhow::Result<()> {
        self.0.commit()?;
        Ok(())
    }
}
