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
//!
//! Human decisions and merges fail with a [`DecisionError`] that says why
//! (an unknown action, a refusal of the engine, the store). [`run`] is the
//! background task; it is handed the pieces it works with and a
//! cancellation token. The EMPI's rows are read and written through
//! [`crate::store::empi`]; this module holds no SQL. It imports
//! [`crate::store`], [`crate::downlink`] and [`crate::enrolment`] (the
//! hospitals to follow), never the cloud's state or its HTTP layer.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use hms_domain::empi::{
    Change, Decisions, Eid, Engine, EngineError, Outcome, Params, Record, RecordKey, SearchHit,
    Separation,
};
use hms_domain::phi::{Address, Mrn};
use hms_domain::{EventBody, HospitalId, PatientRef, Timestamp};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::downlink::Downlink;
use crate::enrolment::Registry;
use crate::store::empi::{AuditRow, EmpiDb, NewReview};
use crate::store::{HospitalStore, OpenStore};

pub mod model;

/// The EID as the appliances and the API show it.
pub fn eid_text(eid: Eid) -> String {
    format!("E{:010}", eid.0)
}

/// The region's EMPI.
pub struct RegionalEmpi {
    engine: Mutex<Engine>,
    db: Mutex<EmpiDb>,
    /// `empi.sqlite` (a model installation reads it on its own
    /// connection); empty when the tables are the region's.
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
    /// The last change of the region's tables this engine holds
    /// ([`RegionalEmpi::follow`]).
    followed: std::sync::atomic::AtomicI64,
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

/// Why a human decision or a merge was not applied. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The action is none of `link`, `unlink`, `never_link`.
    #[error("unknown decision {0:?}: link, unlink or never_link")]
    UnknownAction(String),
    /// The engine refused it (an unknown record or identity, a decision
    /// that contradicts another).
    #[error(transparent)]
    Refused(#[from] EngineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A human decision about two records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Link,
    Unlink,
    NeverLink,
}

impl Decision {
    fn parse(action: &str) -> Result<Decision, DecisionError> {
        match action {
            "link" => Ok(Decision::Link),
            "unlink" => Ok(Decision::Unlink),
            "never_link" => Ok(Decision::NeverLink),
            other => Err(DecisionError::UnknownAction(other.to_owned())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Decision::Link => "link",
            Decision::Unlink => "unlink",
            Decision::NeverLink => "never_link",
        }
    }
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

/// An engine with `params` and `decisions` holding every stored record
/// under its stored EID, numbering new identities above every EID ever
/// handed out. With `keys`, the key of every record filed is pushed there.
fn build(
    db: &EmpiDb,
    params: Params,
    decisions: Decisions,
    mut keys: Option<&mut Vec<RecordKey>>,
) -> anyhow::Result<Engine> {
    let mut engine = Engine::with_decisions(params, decisions);
    db.each_record(|record, eid| {
        engine.restore(&record, eid);
        if let Some(keys) = keys.as_deref_mut() {
            keys.push(RecordKey {
                source: record.source,
                local_id: record.local_id,
            });
        }
        Ok(())
    })?;
    // One more than the highest EID ever handed out: the stored records'
    // and every EID the audit names (an identity retired by a merge or a
    // move keeps its number forever).
    engine.reserve_eids(db.highest_eid()? + 1);
    Ok(engine)
}

impl RegionalEmpi {
    /// Opens `empi.sqlite` in `data_dir` and rebuilds the engine from it:
    /// every record keeps its EID, and new identities are numbered above
    /// every EID ever handed out.
    pub fn open(data_dir: &Path, downlink: Arc<Downlink>) -> anyhow::Result<RegionalEmpi> {
        let db = EmpiDb::open(data_dir)?;
        Self::open_in(db, crate::store::empi::path(data_dir), downlink)
    }

    /// The EMPI whose tables are in `db` (the region's database, with
    /// several instances on PostgreSQL), its engine rebuilt from them as
    /// [`RegionalEmpi::open`] does.
    pub fn open_shared(db: EmpiDb, downlink: Arc<Downlink>) -> anyhow::Result<RegionalEmpi> {
        Self::open_in(db, PathBuf::new(), downlink)
    }

    fn open_in(db: EmpiDb, path: PathBuf, downlink: Arc<Downlink>) -> anyhow::Result<RegionalEmpi> {
        // Before the records are read: what changes after is followed.
        let followed = db.last_change()?;
        let decisions: Decisions = db.decisions()?.unwrap_or_default();
        let (info, params) = model::active(&db)?;
        let engine = build(&db, params, decisions, None)?;
        Ok(RegionalEmpi {
            engine: Mutex::new(engine),
            db: Mutex::new(db),
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
            followed: std::sync::atomic::AtomicI64::new(followed),
        })
    }

    /// Queues a change asked here for the instance running the EMPI
    /// (several instances on PostgreSQL); its id. Blocking.
    pub fn ask(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        operator: &str,
    ) -> anyhow::Result<i64> {
        self.db()
            .ask(method, path, body, operator, Timestamp::now().as_millis())
    }

    /// The answer to a change asked with [`RegionalEmpi::ask`], once the
    /// instance running the EMPI gave it. Blocking.
    pub fn answer_of(&self, id: i64) -> anyhow::Result<Option<crate::store::empi::RelayAnswer>> {
        self.db().answer_of(id)
    }

    /// Changes asked at the other instances, not answered yet. Blocking.
    pub fn pending(&self, limit: i64) -> anyhow::Result<Vec<crate::store::empi::Relayed>> {
        self.db().pending(limit)
    }

    /// Stores the answer to a relayed change. Blocking.
    pub fn answer(&self, id: i64, answer: &crate::store::empi::RelayAnswer) -> anyhow::Result<()> {
        self.db().answer(id, answer, Timestamp::now().as_millis())
    }

    /// Brings the engine in step with the region's tables, as another
    /// instance running the EMPI changed them (several instances on
    /// PostgreSQL): every record changed since the last call is filed
    /// again as stored now (or removed), and a model stored or activated
    /// there is installed. The engine then answers reads as that
    /// instance's does. Returns how many changes were applied. Blocking.
    pub fn follow(&self) -> anyhow::Result<usize> {
        let mut applied = 0;
        loop {
            let after = self.followed.load(std::sync::atomic::Ordering::SeqCst);
            let changes = self.db().changes_since(after, 1_000)?;
            let Some(last) = changes.last().map(|c| c.rev) else {
                break;
            };
            {
                let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                for c in &changes {
                    match &c.now {
                        Some((record, eid)) => engine.restore(record, *eid),
                        None => {
                            engine.remove(&c.key);
                        }
                    }
                }
            }
            applied += changes.len();
            self.followed
                .store(last, std::sync::atomic::Ordering::SeqCst);
            if changes.len() < 1_000 {
                break;
            }
        }
        self.follow_stored_model()
            .map_err(|e| anyhow::anyhow!("installing the region's model: {e}"))?;
        Ok(applied)
    }

    fn db(&self) -> std::sync::MutexGuard<'_, EmpiDb> {
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
        let now = Timestamp::now().as_millis();
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.put_record(record, result.eid)?;
        tx.audit(&AuditRow {
            at: now,
            actor,
            action: "match",
            source: &record.source,
            local_id: record.local_id.expose(),
            before,
            after: Some(result.eid),
            score: result.score,
            decision: Some(result.decision),
            model_version: &version,
        })?;
        if let Some((reason, candidates)) = review {
            tx.open_review(&NewReview {
                source: &record.source,
                local_id: record.local_id.expose(),
                eid: result.eid,
                reason: reason.as_str(),
                score: result.score,
                candidates: &serde_json::to_string(&candidates)?,
                opened_at: now,
            })?;
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
        tx.delete_record(&key)?;
        tx.audit(&AuditRow {
            at: Timestamp::now().as_millis(),
            actor,
            action: "retire",
            source: hospital.as_str(),
            local_id: mrn.expose(),
            before,
            after: None,
            score: None,
            decision: Some("merged_at_source"),
            model_version: "",
        })?;
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
    ) -> Result<Change, DecisionError> {
        let decision = Decision::parse(action)?;
        self.human(
            decision.as_str(),
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
            |e| match decision {
                Decision::Link => e.link(a, b),
                Decision::Unlink => e.separate(a, b, Separation::Unlink),
                Decision::NeverLink => e.separate(a, b, Separation::NeverLink),
            },
        )
    }

    /// Merges two identities (the older survives), like `decide`.
    pub fn merge(&self, survivor: Eid, other: Eid, actor: &str) -> Result<Change, DecisionError> {
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
        apply: impl FnOnce(&mut Engine) -> Result<Change, EngineError>,
    ) -> Result<Change, DecisionError> {
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
        let decisions = serde_json::to_string(engine.decisions()).map_err(anyhow::Error::from)?;
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
        tx.put_decisions(decisions)?;
        for (k, was, now) in changes {
            if was == now {
                continue;
            }
            tx.set_eid(k, *now)?;
            tx.audit(&AuditRow {
                at: Timestamp::now().as_millis(),
                actor,
                action,
                source: &k.source,
                local_id: k.local_id.expose(),
                before: *was,
                after: *now,
                score: None,
                decision: Some("human"),
                model_version: version,
            })?;
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

    /// Why records `a` and `b` score what they do under the model in
    /// force (per field: level and weight); none when either is not held.
    pub fn explain(
        &self,
        a: &RecordKey,
        b: &RecordKey,
    ) -> Option<hms_domain::empi::model::Explanation> {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .explain_pair(a, b)
            .ok()
    }

    /// Review tasks with `status` (`open` or `closed`).
    pub fn reviews(&self, status: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let rows = self.db().reviews(status)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "source": r.source,
                    "local_id": r.local_id,
                    "eid": eid_text(r.eid),
                    "reason": r.reason,
                    "score": r.score,
                    "candidates": serde_json::from_str::<serde_json::Value>(&r.candidates)
                        .unwrap_or_default(),
                    "status": r.status,
                    "opened_at": r.opened_at,
                    "closed_at": r.closed_at,
                    "closed_by": r.closed_by,
                    "resolution": r.resolution,
                })
            })
            .collect())
    }

    /// Audits a read of the EMPI by `actor` (`operator:{token}`): which
    /// kind of query (`search`, `record`, `reviews`, `model`) and how many
    /// results, never a value asked for; durable before it returns.
    pub fn audit_read(&self, actor: &str, query: &str, results: usize) -> anyhow::Result<()> {
        let version = self.model().version;
        self.db().audit_read(
            Timestamp::now().as_millis(),
            actor,
            query,
            i64::try_from(results).unwrap_or(i64::MAX),
            &version,
        )
    }

    /// Closes an open review task; false when there is none with that id.
    pub fn close_review(&self, id: i64, actor: &str, resolution: &str) -> anyhow::Result<bool> {
        self.db()
            .close_review(id, Timestamp::now().as_millis(), actor, resolution)
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

    /// Matches the patient records of `hospital`'s log after its cursor.
    /// Returns how many events were read.
    pub fn catch_up(
        &self,
        hospital: &HospitalId,
        store: &mut dyn HospitalStore,
    ) -> anyhow::Result<usize> {
        self.catch_up_until(hospital, store, &|| false)
    }

    /// [`RegionalEmpi::catch_up`], stopping between two reads of the log
    /// (at most 1,000 events apart, the cursor saved after each) once
    /// `stop` says so.
    pub fn catch_up_until(
        &self,
        hospital: &HospitalId,
        store: &mut dyn HospitalStore,
        stop: &dyn Fn() -> bool,
    ) -> anyhow::Result<usize> {
        let mut read = 0;
        loop {
            if stop() {
                return Ok(read);
            }
            let after = self.db().cursor(hospital.as_str())?;
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
            self.db().set_cursor(hospital.as_str(), last)?;
        }
    }
}

/// Keeps the EMPI current: after every ingest (`wake`) and every few
/// seconds, matches the new patient records of each hospital of
/// `hospitals` (stores via `open`), then sees to the model beside it
/// ([`RegionalEmpi::model_upkeep`]). Returns once `shutdown` is cancelled,
/// after the catch-up under way stopped (between two reads of a log) and
/// the model upkeep under way ended.
pub async fn run(
    empi: Arc<RegionalEmpi>,
    hospitals: Arc<Registry>,
    open: OpenStore,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut upkeep: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        let (matcher, hospitals, open, stop) = (
            empi.clone(),
            hospitals.clone(),
            open.clone(),
            shutdown.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            for e in hospitals.hospitals() {
                if stop.is_cancelled() {
                    break;
                }
                let result = open(&e.hospital).and_then(|mut s| {
                    matcher.catch_up_until(&e.hospital, s.as_mut(), &|| stop.is_cancelled())
                });
                if let Err(err) = result {
                    tracing::error!(hospital = %e.hospital, error = %format!("{err:#}"), "EMPI catch-up failed; retried");
                }
            }
        })
        .await;
        if done.is_err() {
            tracing::error!("EMPI task failed; retried");
        }
        if shutdown.is_cancelled() {
            break;
        }
        // Beside the catch-up (training takes seconds to minutes): install a
        // model the command line stored, train when due.
        if upkeep
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
            && !empi.model_busy()
        {
            let empi = empi.clone();
            upkeep = Some(tokio::task::spawn_blocking(move || empi.model_upkeep()));
        }
    }
    if let Some(upkeep) = upkeep
        && upkeep.await.is_err()
    {
        tracing::error!("EMPI model upkeep failed");
    }
}

/// The EMPI as a cloud's handlers find it: none configured here, waiting
/// for the region's EMPI lease with an engine kept in step with the one
/// running at another instance (several instances on PostgreSQL), or
/// running here.
#[derive(Debug, Default)]
pub struct Slot {
    state: RwLock<SlotState>,
}

/// Where a [`Slot`] stands.
#[derive(Debug, Default, Clone)]
pub enum SlotState {
    /// No EMPI on this cloud (`empi = false`, a replica).
    #[default]
    Off,
    /// Another instance of the region runs it, and this one has no engine
    /// in step yet (opening it).
    Standby,
    /// Another instance of the region runs it; this one follows it
    /// ([`RegionalEmpi::follow`]) and answers reads, and takes over when
    /// that one stops.
    Following(Arc<RegionalEmpi>),
    /// It runs here.
    On(Arc<RegionalEmpi>),
}

impl Slot {
    /// A slot holding `empi`.
    pub fn on(empi: Arc<RegionalEmpi>) -> Slot {
        Slot {
            state: RwLock::new(SlotState::On(empi)),
        }
    }

    /// A slot waiting for the EMPI to run elsewhere (tests).
    #[cfg(test)]
    pub(crate) fn standing_by() -> Slot {
        Slot {
            state: RwLock::new(SlotState::Standby),
        }
    }

    /// The EMPI, when it runs here (for changes).
    pub fn get(&self) -> Option<Arc<RegionalEmpi>> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            SlotState::On(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// An engine to read from: the EMPI running here, or the one kept in
    /// step with it at another instance.
    pub fn reader(&self) -> Option<Arc<RegionalEmpi>> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            SlotState::On(e) | SlotState::Following(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> SlotState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, to: SlotState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

/// How often an instance that does not run the EMPI brings its engine in
/// step with the region's tables.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the region's EMPI on this instance while it holds the region's
/// EMPI lease (`held`; several instances on PostgreSQL). Until then it
/// opens the EMPI from the region's database with `open` and follows the
/// instance running it every [`FOLLOW_EVERY`] (reads are answered here
/// meanwhile). On taking the lease it catches up, puts the EMPI in `slot`
/// as running and runs [`run`], which goes on from the stored cursors; on
/// losing it, or at `shutdown`, it stops it (a lost lease opens the engine
/// afresh: what it held may not have been stored).
pub async fn run_elected(
    slot: Arc<Slot>,
    open: impl Fn() -> anyhow::Result<RegionalEmpi> + Send + Sync + 'static,
    mut held: tokio::sync::watch::Receiver<bool>,
    hospitals: Arc<Registry>,
    stores: OpenStore,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(open);
    slot.set(SlotState::Standby);
    let mut engine: Option<Arc<RegionalEmpi>> = None;
    let retry = std::time::Duration::from_secs(2);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let Some(empi) = engine.clone() else {
            let o = open.clone();
            match tokio::task::spawn_blocking(move || o()).await {
                Ok(Ok(e)) => {
                    let e = Arc::new(e);
                    engine = Some(e.clone());
                    slot.set(SlotState::Following(e));
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot open the region's EMPI; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(retry) => {}
                    }
                }
                Err(_) => {}
            }
            continue;
        };
        let follow = |e: Arc<RegionalEmpi>| async move {
            match tokio::task::spawn_blocking(move || e.follow()).await {
                Ok(Ok(_)) => true,
                Ok(Err(err)) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot follow the region's EMPI; opening it again");
                    false
                }
                Err(_) => false,
            }
        };
        let holding = *held.borrow();
        if !holding {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ok = async { held.wait_for(|h| *h).await.is_ok() } => if !ok { break },
                _ = tokio::time::sleep(FOLLOW_EVERY) => {
                    if !follow(empi).await {
                        engine = None;
                    }
                    continue;
                }
            }
        }
        // This instance holds the lease: catch up, then run it.
        if !follow(empi.clone()).await {
            engine = None;
            continue;
        }
        tracing::info!("the region's EMPI runs on this instance (it holds the EMPI lease)");
        slot.set(SlotState::On(empi.clone()));
        let stop = shutdown.child_token();
        let task = tokio::spawn(run(
            empi,
            hospitals.clone(),
            stores.clone(),
            wake.clone(),
            stop.clone(),
        ));
        let go_on = tokio::select! {
            _ = shutdown.cancelled() => false,
            r = held.wait_for(|h| !*h) => r.is_ok(),
        };
        slot.set(SlotState::Standby);
        stop.cancel();
        let _ = task.await;
        engine = None;
        if !go_on {
            break;
        }
        tracing::warn!("the EMPI lease was lost; another instance of the region runs the EMPI");
    }
    slot.set(SlotState::Standby);
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

    /// The region's EMPI on PostgreSQL, as one instance leaves it and the
    /// next opens it (a takeover): every EID, the human decisions, the
    /// reviews, the audited reads, the trained model and the numbering go
    /// on; the records are restored in chunks.
    #[test]
    fn the_regions_empi_on_postgres_goes_on_at_the_next_instance() {
        use crate::empi::model::TrainSettings;
        use crate::testkit::seed_empi_into;
        let Some(region) = crate::testkit::RegionDb::fresh("empi") else {
            return;
        };
        let tables = || EmpiDb::shared(region.open()).expect("tables");
        let keys = seed_empi_into(&mut tables(), 700);
        let downlink = Arc::new(Downlink::in_memory().expect("downlink"));
        let first = RegionalEmpi::open_shared(tables(), downlink.clone()).expect("first");
        let eids: Vec<Option<Eid>> = keys
            .iter()
            .map(|k| first.eid_of(&k.source, k.local_id.expose()))
            .collect();
        assert!(eids.iter().all(Option::is_some));
        let fresh = first
            .register(&person("h9", "N-1", "Clara", "Barton", "1921-12-25"), "t")
            .expect("register");
        assert_eq!(fresh.decision, "new_identity");
        first
            .decide(&keys[0], &keys[keys.len() - 1], "never_link", "operator:t")
            .expect("never link");
        first.audit_read("operator:t", "search", 3).expect("audit");
        let settings = TrainSettings {
            sample: keys.len(),
            ..TrainSettings::default()
        };
        let trained = first.train(&settings, "operator:t").expect("trained");
        assert!(trained.trained, "{trained:?}");
        let reviews = first.reviews("open").expect("reviews").len();
        drop(first);

        // The next instance takes over from the region's database.
        let next = RegionalEmpi::open_shared(tables(), downlink).expect("next");
        let again: Vec<Option<Eid>> = keys
            .iter()
            .map(|k| next.eid_of(&k.source, k.local_id.expose()))
            .collect();
        assert_eq!(again, eids, "every EID kept");
        assert_eq!(next.eid_of("h9", "N-1"), Some(fresh.eid));
        assert_eq!(
            next.model().version,
            trained.version,
            "the trained model in force"
        );
        assert_eq!(next.reviews("open").expect("reviews").len(), reviews);
        let decisions = next.engine.lock().expect("engine").decisions().clone();
        assert_eq!(decisions, {
            let db = tables();
            db.decisions().expect("read").expect("stored")
        });
        let later = next
            .register(&person("h9", "N-2", "Mary", "Mahoney", "1945-05-07"), "t")
            .expect("register");
        assert!(later.eid.0 > fresh.eid.0, "numbering goes on");
        assert_eq!(
            tables().audited_reads().expect("reads").len(),
            1,
            "the audited read kept"
        );
        drop(next);
    }

    /// An instance that does not run the EMPI keeps its engine in step with
    /// the one that does (several instances on PostgreSQL): registrations,
    /// a retirement, a human split and a trained model all read the same
    /// at both after [`RegionalEmpi::follow`], and searches rank alike.
    #[test]
    fn a_following_instance_reads_what_the_running_one_changed() {
        use crate::empi::model::TrainSettings;
        use crate::testkit::seed_empi_into;
        let Some(region) = crate::testkit::RegionDb::fresh("empi-follow") else {
            return;
        };
        let tables = || EmpiDb::shared(region.open()).expect("tables");
        let keys = seed_empi_into(&mut tables(), 700);
        let downlink = Arc::new(Downlink::in_memory().expect("downlink"));
        let running = RegionalEmpi::open_shared(tables(), downlink.clone()).expect("running");
        let following = RegionalEmpi::open_shared(tables(), downlink).expect("following");
        let same = |k: &RecordKey| {
            assert_eq!(
                following.eid_of(&k.source, k.local_id.expose()),
                running.eid_of(&k.source, k.local_id.expose()),
                "{}",
                k.source
            );
        };
        let a = running
            .register(
                &person("h9", "F-1", "Florence", "Nightingale", "1980-05-12"),
                "t",
            )
            .expect("a");
        let b = running
            .register(
                &person("h8", "F-2", "Florence", "Nightingal", "1980-05-12"),
                "t",
            )
            .expect("b");
        assert_eq!(a.eid, b.eid, "one person");
        assert_eq!(following.eid_of("h9", "F-1"), None, "not followed yet");
        assert!(following.follow().expect("follow") >= 2);
        assert_eq!(following.eid_of("h9", "F-1"), Some(a.eid));
        assert_eq!(following.eid_of("h8", "F-2"), Some(a.eid));
        // A human split and a retirement.
        let (ka, kb) = (
            RecordKey {
                source: "h9".into(),
                local_id: Mrn::new("F-1"),
            },
            RecordKey {
                source: "h8".into(),
                local_id: Mrn::new("F-2"),
            },
        );
        running
            .decide(&ka, &kb, "unlink", "operator:t")
            .expect("unlink");
        running
            .retire(&HospitalId::new("h9").expect("id"), &Mrn::new("F-1"), "t")
            .expect("retire");
        following.follow().expect("follow");
        same(&ka);
        same(&kb);
        assert_eq!(following.eid_of("h9", "F-1"), None);
        // Searches rank alike.
        let q = person("q", "Q-1", "Florence", "Nightingale", "1980-05-12");
        let top = |e: &RegionalEmpi| {
            e.search(&q, 3)
                .into_iter()
                .map(|h| h.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(top(&following), top(&running));
        // A model trained where the EMPI runs is in force here too.
        let settings = TrainSettings {
            sample: keys.len(),
            ..TrainSettings::default()
        };
        let trained = running.train(&settings, "operator:t").expect("trained");
        following.follow().expect("follow");
        assert_eq!(following.model().version, trained.version);
        for k in keys.iter().step_by(50) {
            same(k);
        }
        drop((running, following));
    }
}
