//! The regional EMPI: one enterprise id (EID) per person across the region's
//! hospitals.
//!
//! Every patient record the hospitals' logs carry (`adt.patient_recorded`,
//! `adt.patients_merged`) is matched with [`hms_domain::empi::Engine`], in
//! log order, from a per-hospital cursor, by a task that the ingest wakes.
//! Records, their EIDs, the cursors and an append-only audit (who, what,
//! score, decision, model version, EID before and after) are kept in
//! `empi.sqlite` under the cloud's data dir; at start the engine is rebuilt
//! from the stored records with their EIDs (no renumbering), and new
//! identities are numbered above every EID the audit ever names (an EID a
//! merge retired is never handed out again). Each new or
//! changed assignment is appended to the [`Downlink`], so it reaches the
//! hospital's appliance.
//!
//! The matching model is trained on the region's own records, stored and
//! versioned beside them, and installed without changing an EID
//! ([`model`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use hms_domain::empi::{
    Change, Decisions, Eid, Engine, Outcome, Params, Record, RecordKey, SearchHit, Separation,
};
use hms_domain::phi::{Address, Mrn};
use hms_domain::{EventBody, HospitalId, PatientRef, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use crate::downlink::Downlink;
use crate::store::HospitalStore;

pub mod model;

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

/// The EID as the appliances and the API show it.
pub fn eid_text(eid: Eid) -> String {
    format!("E{:010}", eid.0)
}

/// The region's EMPI.
pub struct RegionalEmpi {
    engine: Mutex<Engine>,
    db: Mutex<Connection>,
    /// `empi.sqlite` (a model installation reads it on its own connection).
    path: PathBuf,
    /// Held shared by every change to the engine, from the change until its
    /// store commit; held exclusively by a model installation to see the
    /// engine and the store agree.
    gate: RwLock<()>,
    /// While a model is being installed: the records changed meanwhile.
    journal: Mutex<Option<HashSet<RecordKey>>>,
    /// One training or installation at a time.
    installing: Mutex<()>,
    /// The model in force.
    model: Mutex<model::ModelInfo>,
    /// Its version, for those waiting for a new one.
    model_version: tokio::sync::watch::Sender<String>,
    /// Records at which a never-trained EMPI trains itself (0: never).
    auto_train_records: AtomicUsize,
    /// Whether this process tried automatic training already.
    auto_train_tried: AtomicBool,
    /// What trainings start from.
    train_settings: Mutex<model::TrainSettings>,
    downlink: Arc<Downlink>,
    /// Exact key (standardised family name, given name, birth date) → EID,
    /// for degraded mode.
    exact: Mutex<std::collections::HashMap<String, Eid>>,
    /// Matching slower than this switches to exact matching for a while.
    slow_after: Mutex<std::time::Duration>,
    /// Until when matching is degraded to exact keys.
    degraded_until: Mutex<Option<std::time::Instant>>,
}

/// How long a slow match keeps the EMPI on exact matching.
pub const DEGRADED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What a registration decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The record's EID.
    pub eid: Eid,
    /// `auto_link`, `deterministic`, `human_link`, `review`, `new_identity`,
    /// or in degraded mode `exact_match` / `exact_new_identity`.
    pub decision: &'static str,
    /// Best score, bits (none in degraded mode).
    pub score: Option<f64>,
    /// Whether matching was degraded to exact keys (slow matching).
    pub degraded: bool,
}

/// The exact key of a record: standardised family and given names and the
/// full birth date; none when any is missing.
fn exact_key(record: &Record) -> Option<String> {
    let p = hms_domain::empi::prepare(record);
    let f = p.family.as_ref()?;
    let g = p.given.as_ref()?;
    let b = p.birth.filter(|b| b.is_full())?;
    Some(format!(
        "{}|{}|{:04}-{:02}-{:02}",
        f.squashed,
        g.squashed,
        b.year,
        b.month.unwrap_or(0),
        b.day.unwrap_or(0)
    ))
}

impl std::fmt::Debug for RegionalEmpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalEmpi").finish_non_exhaustive()
    }
}

/// A matching record built from a patient of a hospital's log.
pub fn record_of(
    hospital: &HospitalId,
    patient: &PatientRef,
    address: Option<&Address>,
    phone: Option<&hms_domain::phi::Phone>,
    identifiers: &[hms_domain::phi::Identifier],
) -> Record {
    Record::from_patient(hospital.as_str(), patient, address, phone, identifiers)
}

/// Sets up a connection to `empi.sqlite` and its tables.
fn init(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Calls `f` with every stored record and its EID, in the order they are
/// restored (streamed: the records are not all held at once).
fn each_record(
    conn: &Connection,
    mut f: impl FnMut(Record, Eid) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare("SELECT record, eid FROM records ORDER BY eid, rowid")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let json: String = row.get(0)?;
        let eid: i64 = row.get(1)?;
        let record: Record =
            serde_json::from_str(&json).context("a stored EMPI record does not parse")?;
        f(record, Eid(eid.max(0) as u64))?;
    }
    Ok(())
}

/// One more than the highest EID ever handed out: the stored records' and
/// every EID the audit names (an identity retired by a merge or a move
/// keeps its number forever).
fn eid_high_water(conn: &Connection) -> anyhow::Result<u64> {
    let top: i64 = conn.query_row(
        "SELECT max(coalesce((SELECT max(eid) FROM records), 0),
                    coalesce((SELECT max(before_eid) FROM audit), 0),
                    coalesce((SELECT max(after_eid) FROM audit), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(top.max(0) as u64 + 1)
}

/// An engine with `params` and `decisions` holding every stored record
/// under its stored EID, numbering new identities above every EID ever
/// handed out. With `keys`, the key of every record filed is pushed there.
fn build(
    conn: &Connection,
    params: Params,
    decisions: Decisions,
    mut keys: Option<&mut Vec<RecordKey>>,
) -> anyhow::Result<Engine> {
    let mut engine = Engine::with_decisions(params, decisions);
    each_record(conn, |record, eid| {
        engine.restore(&record, eid);
        if let Some(keys) = keys.as_deref_mut() {
            keys.push(RecordKey {
                source: record.source,
                local_id: record.local_id,
            });
        }
        Ok(())
    })?;
    engine.reserve_eids(eid_high_water(conn)?);
    Ok(engine)
}

impl RegionalEmpi {
    /// Opens `empi.sqlite` in `data_dir` and rebuilds the engine from it:
    /// every record keeps its EID, and new identities are numbered above
    /// every EID ever handed out.
    pub fn open(data_dir: &Path, downlink: Arc<Downlink>) -> anyhow::Result<RegionalEmpi> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("empi.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        init(&conn)?;
        let decisions: Decisions = conn
            .query_row("SELECT json FROM decisions WHERE id = 1", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .context("the stored EMPI decisions do not parse")?
            .unwrap_or_default();
        let (info, params) = model::active(&conn)?;
        let engine = build(&conn, params, decisions, None)?;
        Ok(RegionalEmpi {
            engine: Mutex::new(engine),
            db: Mutex::new(conn),
            path,
            gate: RwLock::new(()),
            journal: Mutex::new(None),
            installing: Mutex::new(()),
            model_version: tokio::sync::watch::Sender::new(info.version.clone()),
            model: Mutex::new(info),
            auto_train_records: AtomicUsize::new(model::DEFAULT_AUTO_TRAIN_RECORDS),
            auto_train_tried: AtomicBool::new(false),
            train_settings: Mutex::new(model::TrainSettings::default()),
            downlink,
            exact: Mutex::new(std::collections::HashMap::new()),
            slow_after: Mutex::new(std::time::Duration::from_secs(1)),
            degraded_until: Mutex::new(None),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shared hold on the gate, for a change to the engine and its store.
    fn changing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes records a change touched, for a model installation under way.
    fn touched<'a>(&self, keys: impl IntoIterator<Item = &'a RecordKey>) {
        if let Some(set) = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            set.extend(keys.into_iter().cloned());
        }
    }

    /// Matches (or creates) `record`, stores it and its EID, audits the
    /// decision, and sends a new or changed EID down to its hospital.
    pub fn register(&self, record: &Record, actor: &str) -> anyhow::Result<Registered> {
        let key = RecordKey {
            source: record.source.clone(),
            local_id: record.local_id.clone(),
        };
        let degraded = self
            .degraded_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| std::time::Instant::now() < t);
        let exact = exact_key(record);
        let _changing = self.changing();
        self.touched([&key]);
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let before = engine.eid_of(&key);
        let version = engine.params().version.clone();
        let (result, review) = if degraded {
            // Exact keys only: a known key joins its identity, else a new one.
            let found = exact.as_ref().and_then(|k| {
                self.exact
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(k)
                    .copied()
            });
            let (eid, decision) = match found {
                Some(e) => (e, "exact_match"),
                None => (Eid(engine.next_eid()), "exact_new_identity"),
            };
            engine.restore(record, eid);
            (
                Registered {
                    eid,
                    decision,
                    score: None,
                    degraded: true,
                },
                None,
            )
        } else {
            let started = std::time::Instant::now();
            let m = engine.match_or_create(record);
            let took = started.elapsed();
            let slow_after = *self.slow_after.lock().unwrap_or_else(|p| p.into_inner());
            if took > slow_after {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    "EMPI matching is slow; exact matching for the next minute"
                );
                *self
                    .degraded_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some(std::time::Instant::now() + DEGRADED_FOR);
            }
            let review = match m.decision {
                Outcome::Review(reason) => Some((reason, m.candidates.clone())),
                _ => None,
            };
            (
                Registered {
                    eid: m.eid,
                    decision: m.decision.as_str(),
                    score: m.score,
                    degraded: false,
                },
                review,
            )
        };
        drop(engine);
        if let Some(k) = exact {
            self.exact
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, result.eid);
        }
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO records(source, local_id, record, eid) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(source, local_id) DO UPDATE SET record = excluded.record, eid = excluded.eid",
            params![
                record.source,
                record.local_id.expose(),
                serde_json::to_string(record)?,
                result.eid.0 as i64
            ],
        )?;
        tx.execute(
            "INSERT INTO audit(at, actor, action, source, local_id, before_eid, after_eid, score,
                               decision, model_version)
             VALUES (?1, ?2, 'match', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                Timestamp::now().as_millis(),
                actor,
                record.source,
                record.local_id.expose(),
                before.map(|e| e.0 as i64),
                result.eid.0 as i64,
                result.score,
                result.decision,
                version,
            ],
        )?;
        if let Some((reason, candidates)) = review {
            tx.execute(
                "INSERT INTO reviews(source, local_id, eid, reason, score, candidates, status, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)",
                params![
                    record.source,
                    record.local_id.expose(),
                    result.eid.0 as i64,
                    format!("{reason:?}").to_lowercase(),
                    result.score,
                    serde_json::to_string(&candidates)?,
                    Timestamp::now().as_millis(),
                ],
            )?;
        }
        tx.commit()?;
        drop(db);
        if before != Some(result.eid)
            && let Ok(hospital) = HospitalId::new(record.source.clone())
        {
            self.downlink
                .assign(&hospital, &record.local_id, &eid_text(result.eid))?;
        }
        Ok(result)
    }

    /// Removes a record merged away at its hospital (A40), audited.
    pub fn retire(&self, hospital: &HospitalId, mrn: &Mrn, actor: &str) -> anyhow::Result<()> {
        let key = RecordKey {
            source: hospital.to_string(),
            local_id: mrn.clone(),
        };
        let _changing = self.changing();
        self.touched([&key]);
        let before = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "DELETE FROM records WHERE source = ?1 AND local_id = ?2",
            params![hospital.as_str(), mrn.expose()],
        )?;
        tx.execute(
            "INSERT INTO audit(at, actor, action, source, local_id, before_eid, after_eid, score,
                               decision, model_version)
             VALUES (?1, ?2, 'retire', ?3, ?4, ?5, NULL, NULL, 'merged_at_source', '')",
            params![
                Timestamp::now().as_millis(),
                actor,
                hospital.as_str(),
                mrn.expose(),
                before.map(|e| e.0 as i64)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the latency above which matching degrades to exact keys.
    pub fn set_slow_after(&self, limit: std::time::Duration) {
        *self.slow_after.lock().unwrap_or_else(|p| p.into_inner()) = limit;
    }

    /// Whether matching is degraded to exact keys now.
    pub fn degraded(&self) -> bool {
        self.degraded_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// Ranked records resembling `query`, with per-field explanations.
    pub fn search(&self, query: &Record, limit: usize) -> Vec<SearchHit> {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .search(query, limit)
    }

    /// Applies a human decision (`link`, `unlink`, `never_link`) about two
    /// records: sticky (the engine never overrides it), persisted, audited,
    /// and every record whose EID changed is sent down to its hospital.
    pub fn decide(
        &self,
        a: &RecordKey,
        b: &RecordKey,
        action: &str,
        actor: &str,
    ) -> anyhow::Result<Change> {
        if !matches!(action, "link" | "unlink" | "never_link") {
            anyhow::bail!("unknown decision {action:?}: link, unlink or never_link");
        }
        self.human(
            action,
            actor,
            |e| {
                let mut keys = vec![];
                for k in [a, b] {
                    if let Some(eid) = e.eid_of(k) {
                        keys.extend(e.members(eid));
                    }
                }
                keys
            },
            |e| match action {
                "link" => e.link(a, b),
                "unlink" => e.separate(a, b, Separation::Unlink),
                _ => e.separate(a, b, Separation::NeverLink),
            },
        )
    }

    /// Merges two identities (the older survives), like `decide`.
    pub fn merge(&self, survivor: Eid, other: Eid, actor: &str) -> anyhow::Result<Change> {
        self.human(
            "merge",
            actor,
            |e| {
                e.members(survivor)
                    .into_iter()
                    .chain(e.members(other))
                    .collect()
            },
            |e| e.merge(survivor, other),
        )
    }

    /// Runs a human decision on the engine: the EIDs of the records `affected`
    /// names are read before and after `apply`, and every change is recorded.
    fn human(
        &self,
        action: &str,
        actor: &str,
        affected: impl FnOnce(&Engine) -> Vec<RecordKey>,
        apply: impl FnOnce(&mut Engine) -> Result<Change, hms_domain::empi::EngineError>,
    ) -> anyhow::Result<Change> {
        let _changing = self.changing();
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let affected = affected(&engine);
        self.touched(&affected);
        let before: Vec<(RecordKey, Option<Eid>)> = affected
            .into_iter()
            .map(|k| {
                let e = engine.eid_of(&k);
                (k, e)
            })
            .collect();
        let change = apply(&mut engine)?;
        let after: Vec<(RecordKey, Option<Eid>, Option<Eid>)> = before
            .into_iter()
            .map(|(k, was)| {
                let now = engine.eid_of(&k);
                (k, was, now)
            })
            .collect();
        let decisions = serde_json::to_string(engine.decisions())?;
        let version = engine.params().version.clone();
        drop(engine);
        self.record_changes(&after, action, actor, &version, &decisions)?;
        Ok(change)
    }

    /// Persists the decisions and each record's new EID, audits, and sends
    /// every changed EID down.
    fn record_changes(
        &self,
        changes: &[(RecordKey, Option<Eid>, Option<Eid>)],
        action: &str,
        actor: &str,
        version: &str,
        decisions: &str,
    ) -> anyhow::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO decisions(id, json) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            [decisions],
        )?;
        for (k, was, now) in changes {
            if was == now {
                continue;
            }
            tx.execute(
                "UPDATE records SET eid = ?3 WHERE source = ?1 AND local_id = ?2",
                params![k.source, k.local_id.expose(), now.map(|e| e.0 as i64)],
            )?;
            tx.execute(
                "INSERT INTO audit(at, actor, action, source, local_id, before_eid, after_eid,
                                   score, decision, model_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 'human', ?8)",
                params![
                    Timestamp::now().as_millis(),
                    actor,
                    action,
                    k.source,
                    k.local_id.expose(),
                    was.map(|e| e.0 as i64),
                    now.map(|e| e.0 as i64),
                    version
                ],
            )?;
        }
        tx.commit()?;
        drop(db);
        for (k, was, now) in changes {
            if let (Some(now), true) = (now, was != now)
                && let Ok(h) = HospitalId::new(k.source.clone())
            {
                self.downlink.assign(&h, &k.local_id, &eid_text(*now))?;
            }
        }
        Ok(())
    }

    /// Review tasks with `status` (`open` or `closed`).
    pub fn reviews(&self, status: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, source, local_id, eid, reason, score, candidates, status, opened_at,
                    closed_at, closed_by, resolution
             FROM reviews WHERE status = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([status], |r| {
            let candidates: String = r.get(6)?;
            Ok(serde_json::json!({
                "id": r.get::<_, i64>(0)?,
                "source": r.get::<_, String>(1)?,
                "local_id": r.get::<_, String>(2)?,
                "eid": eid_text(Eid(r.get::<_, i64>(3)?.max(0) as u64)),
                "reason": r.get::<_, String>(4)?,
                "score": r.get::<_, Option<f64>>(5)?,
                "candidates": serde_json::from_str::<serde_json::Value>(&candidates).unwrap_or_default(),
                "status": r.get::<_, String>(7)?,
                "opened_at": r.get::<_, i64>(8)?,
                "closed_at": r.get::<_, Option<i64>>(9)?,
                "closed_by": r.get::<_, Option<String>>(10)?,
                "resolution": r.get::<_, Option<String>>(11)?,
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Closes an open review task; false when there is none with that id.
    pub fn close_review(&self, id: i64, actor: &str, resolution: &str) -> anyhow::Result<bool> {
        let n = self.db().execute(
            "UPDATE reviews SET status = 'closed', closed_at = ?2, closed_by = ?3, resolution = ?4
             WHERE id = ?1 AND status = 'open'",
            params![id, Timestamp::now().as_millis(), actor, resolution],
        )?;
        Ok(n == 1)
    }

    /// The EID of a hospital's patient.
    pub fn eid_of(&self, source: &str, local_id: &str) -> Option<Eid> {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .eid_of(&RecordKey {
                source: source.to_owned(),
                local_id: Mrn::new(local_id),
            })
    }

    fn cursor(&self, hospital: &HospitalId) -> anyhow::Result<u64> {
        Ok(self
            .db()
            .query_row(
                "SELECT seq FROM cursors WHERE hospital = ?1",
                [hospital.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0)
            .max(0) as u64)
    }

    fn set_cursor(&self, hospital: &HospitalId, seq: u64) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO cursors(hospital, seq) VALUES (?1, ?2)
             ON CONFLICT(hospital) DO UPDATE SET seq = excluded.seq",
            params![hospital.as_str(), seq as i64],
        )?;
        Ok(())
    }

    /// Matches the patient records of `hospital`'s log after its cursor.
    /// Returns how many events were read.
    pub fn catch_up(
        &self,
        hospital: &HospitalId,
        store: &mut dyn HospitalStore,
    ) -> anyhow::Result<usize> {
        let mut read = 0;
        loop {
            let after = self.cursor(hospital)?;
            let events = store.events(after + 1, 1_000)?;
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(read);
            };
            let actor = format!("sync:{hospital}");
            for env in &events {
                let Ok(body) = env.decode_body() else {
                    continue;
                };
                match body {
                    EventBody::PatientRecorded {
                        patient,
                        identifiers,
                        address,
                        phone,
                        ..
                    } => {
                        let r = record_of(
                            hospital,
                            &patient,
                            address.as_ref(),
                            phone.as_ref(),
                            &identifiers,
                        );
                        self.register(&r, &actor)?;
                    }
                    EventBody::PatientsMerged { from, into } => {
                        self.retire(hospital, &from, &actor)?;
                        if self.eid_of(hospital.as_str(), into.mrn.expose()).is_none() {
                            let r = record_of(hospital, &into, None, None, &[]);
                            self.register(&r, &actor)?;
                        }
                    }
                    _ => {}
                }
            }
            read += events.len();
            self.set_cursor(hospital, last)?;
        }
    }
}

/// Keeps the EMPI current: after every ingest (and every few seconds),
/// matches each enrolled hospital's new patient records, then sees to the
/// model beside it ([`RegionalEmpi::model_upkeep`]). Runs until the process
/// ends.
pub async fn run(state: crate::service::CloudState) {
    let Some(empi) = state.empi.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = state.empi_wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        let (st, matcher) = (state.clone(), empi.clone());
        let done = tokio::task::spawn_blocking(move || {
            for e in st.registry.hospitals() {
                let result = (st.open)(&e.hospital).and_then(|mut s| matcher.catch_up(&e.hospital, s.as_mut()));
                if let Err(err) = result {
                    tracing::error!(hospital = %e.hospital, error = %format!("{err:#}"), "EMPI catch-up failed; retried");
                }
            }
        })
        .await;
        if done.is_err() {
            tracing::error!("EMPI task failed; retried");
        }
        // Beside the catch-up (training takes seconds to minutes): install a
        // model the command line stored, train when due.
        if !empi.model_busy() {
            let empi = empi.clone();
            tokio::task::spawn_blocking(move || empi.model_upkeep());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hms_domain::empi::Record;
    use hms_domain::phi::{BirthDate, PersonName};

    use super::*;

    fn person(source: &str, id: &str, given: &str, family: &str, dob: &str) -> Record {
        let mut r = Record::new(source, id);
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        r
    }

    #[test]
    fn an_eid_retired_before_a_restart_is_never_handed_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let downlink = Arc::new(Downlink::in_memory().expect("downlink"));
        let empi = RegionalEmpi::open(dir.path(), downlink.clone()).expect("open");
        let a = empi
            .register(&person("h1", "A-1", "Mary", "Seacole", "1965-01-23"), "t")
            .expect("a");
        let b = empi
            .register(&person("h1", "A-2", "Edith", "Cavell", "1971-12-04"), "t")
            .expect("b");
        assert_eq!((a.eid, b.eid), (Eid(1), Eid(2)));
        // A merge retires the newer identity, the highest number so far.
        empi.merge(a.eid, b.eid, "t").expect("merge");
        assert_eq!(empi.eid_of("h1", "A-2"), Some(Eid(1)));
        drop(empi);
        let empi = RegionalEmpi::open(dir.path(), downlink).expect("reopen");
        let c = empi
            .register(&person("h2", "B-1", "Clara", "Barton", "1921-12-25"), "t")
            .expect("c");
        assert_eq!(c.decision, "new_identity");
        assert_eq!(
            c.eid,
            Eid(3),
            "E2 was handed out before and is never reused"
        );
        assert_eq!(empi.eid_of("h1", "A-1"), Some(Eid(1)));
        assert_eq!(empi.eid_of("h1", "A-2"), Some(Eid(1)));
    }
}
