//! The regional EMPI's matching model: trained on the region's own records,
//! stored and versioned in `empi.sqlite`, and installed without changing a
//! single EID.
//!
//! Training samples up to [`DEFAULT_SAMPLE`] records (seeded, so the same
//! records and seed give the same model), estimates `u` from random pairs
//! and `m` by EM ([`hms_domain::empi::train`], started from the hand-set
//! values), and keeps every setting of the model in force (thresholds,
//! trusted authorities, caps): only the probabilities are learned. A model
//! that is not a proper set of probabilities is refused.
//!
//! Every model is a row of the `models` table (version `em-N-YYYYMMDDTHHMMSSZ`,
//! when and by whom, how many records were held and sampled, the seed, the
//! parameters and the EM report as JSON); at most one is active, and the
//! EMPI starts with it (with the hand-set `Params::default()` while none
//! was ever trained).
//!
//! Installing a model builds a second engine from the stored records with
//! their stored EIDs (`Engine::restore`: nothing is re-matched) beside the
//! one in force, which keeps matching meanwhile; records changed during the
//! build are noted and re-read; then, with changes paused for a moment, the
//! new engine is checked to put every record under the same EID as the old
//! one, the model is recorded as active and audited, and the engines are
//! swapped. Human decisions are carried over; one that comes in during the
//! build makes it start again. Later decisions are audited with the new
//! version.
//!
//! The models are read and stored through [`crate::store::empi`]; this
//! module holds no SQL.

use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Context;
use hms_domain::Timestamp;
use hms_domain::empi::model::SplitMix64;
use hms_domain::empi::{
    Decisions, Eid, Engine, Params, Prepared, Record, RecordKey, TrainConfig, TrainReport, prepare,
    train_sourced,
};
use serde::Serialize;
use serde_json::json;

use super::{AuditRow, EmpiDb, RegionalEmpi, build};
use crate::store::empi::{ModelRow, NewModel, Transaction};

/// Fewest records a model is trained on.
pub const MIN_TRAIN_RECORDS: usize = 1_000;
/// Records sampled for training unless asked otherwise.
pub const DEFAULT_SAMPLE: usize = 50_000;
/// Most records one training may sample.
pub const MAX_SAMPLE: usize = 1_000_000;
/// Records at which an EMPI that was never trained trains itself, unless
/// configured otherwise (`empi_auto_train_records`).
pub const DEFAULT_AUTO_TRAIN_RECORDS: usize = 5_000;
/// Builds of the new engine tried off the lock before one is made with
/// changes paused (each human decision during a build starts it again).
const BUILD_ATTEMPTS: usize = 3;

/// How a model is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Most records sampled (all of them when fewer are held).
    pub sample: usize,
    /// EM settings; its seed also draws the sample.
    pub config: TrainConfig,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            sample: DEFAULT_SAMPLE,
            config: TrainConfig::default(),
        }
    }
}

/// The model in force, as operators see it. No PHI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The version every audit row records.
    pub version: String,
    /// False for the hand-set defaults.
    pub trained: bool,
    /// When it was trained (ms since the epoch).
    pub trained_at: Option<i64>,
    /// Who trained it (`operator:NAME`, `cli`, `auto`).
    pub trained_by: Option<String>,
    /// Records the EMPI held then.
    pub records: Option<u64>,
    /// Records sampled for training.
    pub sampled: Option<u64>,
    /// Sampling and EM seed.
    pub seed: Option<u64>,
    /// What EM did.
    pub report: Option<TrainReport>,
}

impl ModelInfo {
    /// The hand-set defaults.
    fn defaults() -> Self {
        ModelInfo {
            version: Params::default().version,
            trained: false,
            trained_at: None,
            trained_by: None,
            records: None,
            sampled: None,
            seed: None,
            report: None,
        }
    }
}

/// Why a model was not trained or installed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Another training or installation is under way.
    #[error("a model is being trained or installed; try again when it is done")]
    Busy,
    /// Too few records to learn from.
    #[error("too few records to train on: the EMPI holds {held}, training needs at least {needed}")]
    TooFewRecords {
        /// Records held.
        held: usize,
        /// Records needed.
        needed: usize,
    },
    /// Training ran but gave no usable model; nothing was stored.
    #[error("training gave no usable model ({0}); the model in force stays")]
    Unusable(String),
    /// No stored model has that version.
    #[error("no stored model {0:?}")]
    UnknownVersion(String),
    /// The store failed, or the new index disagreed with the one in force.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What operators see of a stored model.
fn info_of(row: &ModelRow) -> ModelInfo {
    ModelInfo {
        version: row.version.clone(),
        trained: true,
        trained_at: Some(row.trained_at),
        trained_by: Some(row.trained_by.clone()),
        records: Some(row.records.max(0) as u64),
        sampled: Some(row.sampled.max(0) as u64),
        seed: Some(row.seed as u64),
        report: serde_json::from_str(&row.report).ok(),
    }
}

fn parse_params(version: &str, json: &str) -> anyhow::Result<Params> {
    serde_json::from_str(json)
        .with_context(|| format!("the stored EMPI model {version} does not parse"))
}

/// The active model of `empi.sqlite`, or the hand-set defaults when none
/// is.
pub(super) fn active(db: &EmpiDb) -> anyhow::Result<(ModelInfo, Params)> {
    match db.active_model()? {
        Some(row) => {
            let params = parse_params(&row.version, &row.params)?;
            Ok((info_of(&row), params))
        }
        None => Ok((ModelInfo::defaults(), Params::default())),
    }
}

/// The version the next trained model gets.
fn next_version(db: &EmpiDb, at: Timestamp) -> anyhow::Result<String> {
    let n = db.next_model_number()?;
    let stamp: String = at.to_rfc3339()[..19]
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    Ok(format!("em-{n}-{stamp}Z"))
}

/// Up to `k` of the stored records, drawn uniformly with `seed`
/// (reservoir sampling over the records in restore order), and how many
/// records there are.
fn sample(db: &EmpiDb, k: usize, seed: u64) -> anyhow::Result<(Vec<Record>, usize)> {
    let mut rng = SplitMix64::new(seed);
    let mut chosen: Vec<String> = Vec::with_capacity(k.min(1 << 20));
    let mut n = 0usize;
    db.each_record_json(|json| {
        if chosen.len() < k {
            chosen.push(json);
        } else {
            let j = rng.below(n + 1);
            if j < k {
                chosen[j] = json;
            }
        }
        n += 1;
    })?;
    let records = chosen
        .iter()
        .map(|j| serde_json::from_str(j).context("a stored EMPI record does not parse"))
        .collect::<anyhow::Result<Vec<Record>>>()?;
    Ok((records, n))
}

/// Checks that every field's `m` and `u` are probabilities summing to one
/// (within 0.001: a field the data never shows keeps its hand-set values),
/// level for level like the hand-set model, and that EM had pairs to learn
/// from.
fn check(params: &Params, report: &TrainReport) -> Result<(), ModelError> {
    if report.em_pairs == 0 {
        return Err(ModelError::Unusable(
            "no two sampled records share a blocking key, so EM had no pairs to learn from".into(),
        ));
    }
    let reference = Params::default();
    if params.fields.len() != reference.fields.len() {
        return Err(ModelError::Unusable("fields are missing".into()));
    }
    for (f, r) in params.fields.iter().zip(&reference.fields) {
        for (name, p) in [("m", &f.m), ("u", &f.u)] {
            let sum: f64 = p.iter().sum();
            if f.field != r.field
                || p.len() != r.m.len()
                || p.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1.0)
                || (sum - 1.0).abs() > 1e-3
            {
                return Err(ModelError::Unusable(format!(
                    "{name} of {} is not a set of probabilities",
                    f.field.as_str()
                )));
            }
        }
    }
    if !(params.lambda.is_finite() && params.lambda > 0.0 && params.lambda < 1.0) {
        return Err(ModelError::Unusable(format!(
            "the match share {} is not a probability",
            params.lambda
        )));
    }
    Ok(())
}

/// What a training produced, before it is stored.
struct Trained {
    params: Params,
    report: TrainReport,
    info: ModelInfo,
}

/// Trains a model on a sample of the records of `conn`. The probabilities
/// are learned, starting from the hand-set values; every other setting
/// (thresholds above all: they are pre-declared) is `current`'s.
fn train_from(
    db: &EmpiDb,
    current: &Params,
    settings: &TrainSettings,
    actor: &str,
) -> Result<Trained, ModelError> {
    let (records, held) = sample(db, settings.sample, settings.config.seed)?;
    if held < MIN_TRAIN_RECORDS || records.len() < MIN_TRAIN_RECORDS {
        return Err(ModelError::TooFewRecords {
            held,
            needed: MIN_TRAIN_RECORDS,
        });
    }
    let prepared: Vec<Prepared> = records.iter().map(prepare).collect();
    let mut numbers: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let sources: Vec<u32> = records
        .iter()
        .map(|r| {
            let next = numbers.len() as u32;
            *numbers.entry(r.source.as_str()).or_insert(next)
        })
        .collect();
    drop(numbers);
    drop(records);
    let hand_set = Params::default();
    let start = Params {
        fields: hand_set.fields,
        lambda: hand_set.lambda,
        ..current.clone()
    };
    let started = std::time::Instant::now();
    let (learned, report) = train_sourced(&prepared, &sources, &start, &settings.config);
    let now = Timestamp::now();
    let params = Params {
        version: next_version(db, now)?,
        fields: learned.fields,
        lambda: learned.lambda,
        ..current.clone()
    };
    check(&params, &report)?;
    tracing::info!(
        version = %params.version,
        records = held,
        sampled = prepared.len(),
        iterations = report.iterations,
        converged = report.converged,
        took_ms = started.elapsed().as_millis() as u64,
        "EMPI model trained"
    );
    let info = ModelInfo {
        version: params.version.clone(),
        trained: true,
        trained_at: Some(now.as_millis()),
        trained_by: Some(actor.to_owned()),
        records: Some(held as u64),
        sampled: Some(prepared.len() as u64),
        seed: Some(settings.config.seed),
        report: Some(report.clone()),
    };
    Ok(Trained {
        params,
        report,
        info,
    })
}

/// Stores a trained model as the active one.
fn store(tx: &Transaction<'_>, t: &Trained) -> anyhow::Result<()> {
    tx.insert_active_model(&NewModel {
        version: &t.info.version,
        trained_at: t.info.trained_at,
        trained_by: t.info.trained_by.as_deref(),
        records: t.info.records,
        sampled: t.info.sampled,
        seed: t.info.seed,
        params: &serde_json::to_string(&t.params)?,
        report: &serde_json::to_string(&t.report)?,
    })
}

/// Appends a model event (`model_trained`, `model_installed`) to the audit.
fn audit(tx: &Transaction<'_>, action: &str, actor: &str, version: &str) -> anyhow::Result<()> {
    tx.audit(&AuditRow {
        at: Timestamp::now().as_millis(),
        actor,
        action,
        source: "",
        local_id: "",
        before: None,
        after: None,
        score: None,
        decision: None,
        model_version: version,
    })
}

/// Trains a model on the records of the EMPI in `data_dir` and stores it
/// as the active one, without an engine (`hms-cloud empi train`). A cloud
/// running on that data dir installs it within seconds
/// ([`RegionalEmpi::follow_stored_model`]); otherwise it is in force from
/// the next start.
pub fn train_stored(
    data_dir: &Path,
    settings: &TrainSettings,
    actor: &str,
) -> Result<ModelInfo, ModelError> {
    let path = crate::store::empi::path(data_dir);
    if !path.exists() {
        return Err(ModelError::Store(anyhow::anyhow!(
            "no regional EMPI in {}: empi.sqlite is missing",
            data_dir.display()
        )));
    }
    train_stored_in(EmpiDb::open_existing(&path)?, settings, actor)
}

/// [`train_stored`] on the EMPI of `db` (the region's database, with
/// several instances on PostgreSQL: the instance running the EMPI installs
/// it within seconds).
pub fn train_stored_in(
    mut db: EmpiDb,
    settings: &TrainSettings,
    actor: &str,
) -> Result<ModelInfo, ModelError> {
    let (_, current) = active(&db)?;
    let trained = train_from(&db, &current, settings, actor)?;
    let tx = db.transaction()?;
    store(&tx, &trained)?;
    audit(&tx, "model_trained", actor, &trained.info.version)?;
    tx.commit()?;
    Ok(trained.info)
}

/// The stored models, newest first (no parameters).
fn history(db: &EmpiDb) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(db
        .models()?
        .into_iter()
        .map(|m| {
            json!({
                "version": m.version,
                "trained_at": Timestamp::from_millis(m.trained_at).to_rfc3339(),
                "trained_by": m.trained_by,
                "records": m.records,
                "sampled": m.sampled,
                "active": m.active,
            })
        })
        .collect())
}

/// Per field and level: `m`, `u` and the weight in bits.
fn fields_json(params: &Params) -> serde_json::Value {
    params
        .fields
        .iter()
        .map(|f| {
            let levels: Vec<_> =
                f.m.iter()
                    .zip(&f.u)
                    .enumerate()
                    .map(|(l, (m, u))| {
                        json!({
                            "level": f.field.level_name(l as u8),
                            "m": m,
                            "u": u,
                            "weight": (m.max(1e-9) / u.max(1e-12)).log2(),
                        })
                    })
                    .collect();
            json!({ "field": f.field.as_str(), "levels": levels })
        })
        .collect()
}

/// A build of a new engine under way: records changed from here on are
/// noted in the journal, which ends with it.
struct Build<'a> {
    empi: &'a RegionalEmpi,
    /// The human decisions in force when it began.
    decisions: Decisions,
}

impl Drop for Build<'_> {
    fn drop(&mut self) {
        *self.empi.journal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl RegionalEmpi {
    /// The model in force.
    pub fn model(&self) -> ModelInfo {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The version of the model in force, changing with each installation.
    pub fn watch_model(&self) -> tokio::sync::watch::Receiver<String> {
        self.model_version.subscribe()
    }

    /// The settings trainings start from (a request may change the sample
    /// and the seed).
    pub fn train_settings(&self) -> TrainSettings {
        self.train_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the settings trainings start from.
    pub fn set_train_settings(&self, settings: TrainSettings) {
        *self
            .train_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Sets how many records make an EMPI that was never trained train
    /// itself (0: never).
    pub fn set_auto_train_records(&self, records: usize) {
        self.auto_train_records.store(records, Ordering::SeqCst);
    }

    /// The model in force with its thresholds, per-field probabilities and
    /// weights, whether a training is under way, and the stored models.
    pub fn describe_model(&self) -> anyhow::Result<serde_json::Value> {
        let (info, params) = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            (self.model(), engine.params().clone())
        };
        let history = history(&self.db())?;
        Ok(json!({
            "version": info.version,
            "trained": info.trained,
            "trained_at": info.trained_at.map(|t| Timestamp::from_millis(t).to_rfc3339()),
            "trained_by": info.trained_by,
            "records": info.records,
            "sampled": info.sampled,
            "seed": info.seed,
            "em": info.report,
            "thresholds": params.thresholds,
            "fields": fields_json(&params),
            "training": self.model_busy(),
            "auto_train_records": self.auto_train_records.load(Ordering::SeqCst),
            "min_train_records": MIN_TRAIN_RECORDS,
            "models": history,
        }))
    }

    fn one_at_a_time(&self) -> Result<std::sync::MutexGuard<'_, ()>, ModelError> {
        match self.installing.try_lock() {
            Ok(g) => Ok(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(ModelError::Busy),
        }
    }

    /// A read-only connection of its own (long reads do not hold up
    /// registrations).
    fn reader(&self) -> anyhow::Result<EmpiDb> {
        self.db().reader_like(&self.path)
    }

    /// Trains a model on a sample of the EMPI's records and installs it.
    /// Registrations go on meanwhile; every EID stays as it is.
    pub fn train(&self, settings: &TrainSettings, actor: &str) -> Result<ModelInfo, ModelError> {
        let _one = self.one_at_a_time()?;
        let held = self.engine.lock().unwrap_or_else(|p| p.into_inner()).len();
        if held < MIN_TRAIN_RECORDS {
            return Err(ModelError::TooFewRecords {
                held,
                needed: MIN_TRAIN_RECORDS,
            });
        }
        let build = self.begin();
        let current = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .params()
            .clone();
        let trained = train_from(&self.reader()?, &current, settings, actor)?;
        self.install(&trained.params, Some(build), actor, &|tx| {
            store(tx, &trained)?;
            audit(tx, "model_trained", actor, &trained.info.version)?;
            Ok(trained.info.clone())
        })
    }

    /// Installs a stored model again (e.g. back to the one before), or the
    /// hand-set defaults by their version; every EID stays as it is.
    pub fn activate(&self, version: &str, actor: &str) -> Result<ModelInfo, ModelError> {
        let _one = self.one_at_a_time()?;
        let in_force = self.model();
        if version == in_force.version {
            return Ok(in_force);
        }
        if version == ModelInfo::defaults().version {
            return self.install(&Params::default(), None, actor, &|tx| {
                tx.deactivate_models()?;
                Ok(ModelInfo::defaults())
            });
        }
        let found = self.db().model(version)?;
        let Some(row) = found else {
            return Err(ModelError::UnknownVersion(version.to_owned()));
        };
        let params = parse_params(version, &row.params)?;
        let info = info_of(&row);
        self.install(&params, None, actor, &|tx| {
            tx.activate_model(row.id)?;
            Ok(info.clone())
        })
    }

    /// Installs the model `empi.sqlite` names active when it is not the one
    /// in force (one `hms-cloud empi train` stored). Whether it did.
    pub fn follow_stored_model(&self) -> Result<bool, ModelError> {
        let Ok(_one) = self.one_at_a_time() else {
            return Ok(false);
        };
        let stored: Option<String> = self.db().active_model_version()?;
        let in_force = self.model().version;
        if stored.as_deref().unwrap_or(&ModelInfo::defaults().version) == in_force {
            return Ok(false);
        }
        let (info, params) = active(&self.db())?;
        self.install(&params, None, "store", &|_| Ok(info.clone()))?;
        Ok(true)
    }

    /// Trains once, in this process, when the EMPI still runs on the
    /// hand-set model and holds at least the configured number of records;
    /// none when it is not due.
    pub fn maybe_auto_train(&self) -> Option<Result<ModelInfo, ModelError>> {
        let at = self.auto_train_records.load(Ordering::SeqCst);
        if at == 0 || self.model().trained {
            return None;
        }
        if self.engine.lock().unwrap_or_else(|p| p.into_inner()).len() < at {
            return None;
        }
        if self.auto_train_tried.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(self.train(&self.train_settings(), "auto"))
    }

    /// Whether a training or installation is under way.
    pub fn model_busy(&self) -> bool {
        matches!(
            self.installing.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    /// Model upkeep between catch-ups: installs a model stored by the
    /// command line, trains automatically when due. Logs, never fails.
    pub fn model_upkeep(&self) {
        match self.follow_stored_model() {
            Ok(true) => {
                tracing::info!(version = %self.model().version, "EMPI model installed from the store")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "EMPI model from the store not installed")
            }
        }
        match self.maybe_auto_train() {
            Some(Ok(info)) => {
                tracing::info!(version = %info.version, records = info.records, "EMPI model trained automatically and installed")
            }
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "automatic EMPI training failed; train on request (POST /api/v1/empi/model/train)")
            }
            None => {}
        }
    }

    /// Starts noting changed records (after every change under way has
    /// reached the store).
    fn begin(&self) -> Build<'_> {
        let _all = self.gate.write().unwrap_or_else(|p| p.into_inner());
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::collections::HashSet::new());
        let decisions = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decisions()
            .clone();
        Build {
            empi: self,
            decisions,
        }
    }

    /// Builds an engine with `params` beside the one in force and swaps it
    /// in, once it files every record under the same EID; `persist` records
    /// the change in the store (in the transaction that also audits it).
    fn install(
        &self,
        params: &Params,
        mut begun: Option<Build<'_>>,
        actor: &str,
        persist: &dyn Fn(&Transaction<'_>) -> anyhow::Result<ModelInfo>,
    ) -> Result<ModelInfo, ModelError> {
        let mut attempt = 1;
        loop {
            let noting = begun.take().unwrap_or_else(|| self.begin());
            let staged = self.stage(params, noting)?;
            let last = attempt == BUILD_ATTEMPTS;
            if let Some(done) = self.swap_in(params, staged, last, actor, persist)? {
                tracing::info!(
                    version = %params.version,
                    rebuilt_while_changes_waited = done.rebuilt,
                    "EMPI model installed"
                );
                return Ok(done.info);
            }
            tracing::info!(
                "a human EMPI decision came in while a model was installed; building again"
            );
            attempt += 1;
        }
    }

    /// Builds the new engine from the stored records, off every lock.
    fn stage<'a>(&self, params: &Params, noting: Build<'a>) -> anyhow::Result<Staged<'a>> {
        let mut keys = vec![];
        let fresh = build(
            &self.reader()?,
            params.clone(),
            noting.decisions.clone(),
            Some(&mut keys),
        )?;
        Ok(Staged {
            noting,
            fresh,
            keys,
        })
    }

    /// With changes paused: brings the staged engine up to date with the
    /// records changed since it began, checks that it files every record
    /// under the EID in force, stores the change and swaps the engines.
    /// None when a human decision came in meanwhile and this is not the
    /// `last` try (then build again); on the last, the engine is rebuilt
    /// from the store while changes wait.
    fn swap_in(
        &self,
        params: &Params,
        staged: Staged<'_>,
        last: bool,
        actor: &str,
        persist: &dyn Fn(&Transaction<'_>) -> anyhow::Result<ModelInfo>,
    ) -> Result<Option<Swapped>, ModelError> {
        let Staged {
            noting,
            mut fresh,
            mut keys,
        } = staged;
        let _all = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let touched = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let mut db = self.db();
        let decided = *engine.decisions() != noting.decisions;
        if decided && !last {
            return Ok(None);
        }
        let agrees = !decided && {
            for key in &touched {
                match stored(&db, key)? {
                    Some((record, eid)) => fresh.restore(&record, eid),
                    None => {
                        fresh.remove(key);
                    }
                }
            }
            fresh.reserve_eids(engine.next_eid());
            same_identities(&engine, &fresh, keys.iter().chain(&touched))
        };
        if !agrees && !decided {
            tracing::error!(
                "the new EMPI index disagreed with the one in force; rebuilding it from the store"
            );
        }
        if !agrees {
            keys.clear();
            fresh = build(
                &db,
                params.clone(),
                engine.decisions().clone(),
                Some(&mut keys),
            )?;
            fresh.reserve_eids(engine.next_eid());
            if !same_identities(&engine, &fresh, keys.iter()) {
                return Err(ModelError::Store(anyhow::anyhow!(
                    "the EMPI's stored records do not give the EIDs in force; nothing installed"
                )));
            }
        }
        let tx = db.transaction()?;
        let info = persist(&tx)?;
        audit(&tx, "model_installed", actor, &params.version)?;
        tx.commit()?;
        drop(db);
        let old = std::mem::replace(&mut *engine, fresh);
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = info.clone();
        self.model_version.send_replace(info.version.clone());
        drop(engine);
        drop(_all);
        drop(noting);
        drop(old);
        Ok(Some(Swapped {
            info,
            rebuilt: !agrees,
        }))
    }
}

/// A new engine built beside the one in force, not yet in force.
struct Staged<'a> {
    noting: Build<'a>,
    fresh: Engine,
    /// Every record it was built with.
    keys: Vec<RecordKey>,
}

/// What an installation put in force.
#[derive(Debug)]
struct Swapped {
    info: ModelInfo,
    /// Whether the engine had to be rebuilt while changes waited.
    rebuilt: bool,
}

/// A stored record and its EID.
fn stored(db: &EmpiDb, key: &RecordKey) -> anyhow::Result<Option<(Record, Eid)>> {
    db.record(key)
}

/// Whether `new` files exactly the records of `old` under the same EIDs,
/// given `keys`, which cover every record `new` holds.
fn same_identities<'a>(
    old: &Engine,
    new: &Engine,
    keys: impl Iterator<Item = &'a RecordKey>,
) -> bool {
    old.len() == new.len()
        && old.identities() == new.identities()
        && new.next_eid() >= old.next_eid()
        && keys.into_iter().all(|k| old.eid_of(k) == new.eid_of(k))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hms_domain::empi::{Change, Thresholds};
    use hms_domain::phi::PersonName;
    use hms_domain::{HospitalId, empi::Eid};

    use super::*;
    use crate::downlink::Downlink;
    use crate::testkit::{quick_training as quick, seed_empi};

    fn open(dir: &Path) -> RegionalEmpi {
        let downlink = Arc::new(Downlink::in_memory().expect("downlink"));
        let empi = RegionalEmpi::open(dir, downlink).expect("open");
        empi.set_train_settings(quick());
        empi
    }

    fn eids(empi: &RegionalEmpi, keys: &[RecordKey]) -> Vec<Option<Eid>> {
        keys.iter()
            .map(|k| empi.eid_of(&k.source, k.local_id.expose()))
            .collect()
    }

    fn params_in_force(empi: &RegionalEmpi) -> Params {
        empi.engine.lock().expect("engine").params().clone()
    }

    fn record(empi: &RegionalEmpi, key: &RecordKey) -> Record {
        stored(&empi.db(), key).expect("read").expect("stored").0
    }

    /// What the tests count in `empi.sqlite`.
    enum Count<'a> {
        /// Stored models.
        Models,
        /// The active model (0 or 1).
        ActiveModels,
        /// Audit rows of a model version with one of some actions.
        Audit(&'a str, &'a [&'a str]),
    }

    fn count(empi: &RegionalEmpi, what: Count<'_>) -> i64 {
        let db = empi.db();
        match what {
            Count::Models => db.count_models(false),
            Count::ActiveModels => db.count_models(true),
            Count::Audit(version, actions) => db.count_audit(Some(version), actions),
        }
    }

    /// Two records the engine put under one identity.
    fn linked_pair(empi: &RegionalEmpi, keys: &[RecordKey]) -> (RecordKey, RecordKey) {
        let e = eids(empi, keys);
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                if e[i] == e[j] {
                    return (keys[i].clone(), keys[j].clone());
                }
            }
        }
        panic!("no linked pair");
    }

    #[test]
    fn training_installs_a_new_model_keeping_every_eid_and_human_decision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        assert!(keys.len() > MIN_TRAIN_RECORDS, "{}", keys.len());
        let empi = open(dir.path());
        assert_eq!(empi.model(), ModelInfo::defaults());
        // Human decisions first: a linked pair split, two others kept apart.
        let (a, b) = linked_pair(&empi, &keys);
        let split = empi.decide(&a, &b, "unlink", "operator:t").expect("unlink");
        assert!(matches!(split, Change::Split { .. }), "{split:?}");
        let (c, d) = (keys[0].clone(), keys[keys.len() - 1].clone());
        empi.decide(&c, &d, "never_link", "operator:t")
            .expect("never link");
        let before = eids(&empi, &keys);
        let (decisions, next) = {
            let e = empi.engine.lock().expect("engine");
            (e.decisions().clone(), e.next_eid())
        };

        let info = empi.train(&quick(), "operator:t").expect("trained");
        assert!(info.version.starts_with("em-1-"), "{}", info.version);
        assert!(info.trained);
        assert_eq!(info.trained_by.as_deref(), Some("operator:t"));
        assert_eq!(info.records, Some(keys.len() as u64));
        assert_eq!(info.sampled, Some(keys.len() as u64));
        let report = info.report.clone().expect("report");
        assert!(
            report.em_pairs > 1_000 && report.iterations > 1,
            "{report:?}"
        );
        assert_eq!(empi.model(), info);
        assert_eq!(*empi.watch_model().borrow(), info.version);
        // The model in force is the trained one, with the declared thresholds.
        let trained = params_in_force(&empi);
        assert_eq!(trained.version, info.version);
        assert_eq!(trained.thresholds, Thresholds::default());
        assert_ne!(
            trained.fields,
            Params::default().fields,
            "probabilities learned"
        );
        // Not one EID changed, the decisions are the same, and new
        // identities go on from the same number.
        assert_eq!(eids(&empi, &keys), before);
        {
            let e = empi.engine.lock().expect("engine");
            assert_eq!(*e.decisions(), decisions);
            assert_eq!(e.next_eid(), next);
        }
        // The unlink holds under the new model: the record registered again
        // stays away from its former identity.
        let again = empi
            .register(&record(&empi, &b), "sync:t")
            .expect("register");
        assert_ne!(Some(again.eid), empi.eid_of(&a.source, a.local_id.expose()));
        // Audited: training, installation, and the new match under the new version.
        assert_eq!(
            count(
                &empi,
                Count::Audit(
                    &info.version,
                    &["model_trained", "model_installed", "match"]
                )
            ),
            3
        );

        // A restart keeps the model.
        drop(empi);
        let empi = open(dir.path());
        assert_eq!(empi.model(), info);
        assert_eq!(params_in_force(&empi), trained);
        assert_eq!(eids(&empi, &keys)[..], before[..]);
    }

    #[test]
    fn training_learns_only_the_probabilities_and_keeps_every_setting_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        let current = Params {
            version: "site-1".into(),
            thresholds: Thresholds {
                link: 12.0,
                review: 5.0,
                margin: 2.5,
            },
            trusted_authorities: vec!["NATIONAL".into()],
            block_cap: 1_500,
            tf_min_records: 800,
            tf_floor: 1e-4,
            household_cap: 14.0,
            source_unique: true,
            household_rules: true,
            ..Params::default()
        };
        let t =
            train_from(&empi.reader().expect("reader"), &current, &quick(), "t").expect("trained");
        assert!(
            t.params.version.starts_with("em-1-"),
            "{}",
            t.params.version
        );
        let learned = Params {
            version: current.version.clone(),
            fields: current.fields.clone(),
            lambda: current.lambda,
            ..t.params.clone()
        };
        assert_eq!(learned, current, "only fields and lambda change");
        assert_ne!(t.params.fields, current.fields);
        assert_eq!(t.params.lambda, t.report.lambda);
    }

    #[test]
    fn a_model_that_is_not_a_set_of_probabilities_is_refused() {
        let report = TrainReport {
            u_pairs: 10,
            em_pairs: 10,
            patterns: 3,
            iterations: 5,
            converged: true,
            lambda: 0.1,
            regularised: vec![],
        };
        assert!(check(&Params::default(), &report).is_ok());
        let unusable = |params: &Params, report: &TrainReport| {
            matches!(check(params, report), Err(ModelError::Unusable(_)))
        };
        let no_pairs = TrainReport {
            em_pairs: 0,
            ..report.clone()
        };
        assert!(unusable(&Params::default(), &no_pairs));
        let mut nan = Params::default();
        nan.fields[2].m[0] = f64::NAN;
        assert!(unusable(&nan, &report));
        let mut unnormalised = Params::default();
        unnormalised.fields[0].u[0] += 0.1;
        assert!(unusable(&unnormalised, &report));
        let mut short = Params::default();
        short.fields[5].m.pop();
        assert!(unusable(&short, &report));
        let lambda = Params {
            lambda: 1.0,
            ..Params::default()
        };
        assert!(unusable(&lambda, &report));
    }

    #[test]
    fn too_few_records_are_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 6);
        let empi = open(dir.path());
        match empi.train(&quick(), "operator:t") {
            Err(ModelError::TooFewRecords { held, needed }) => {
                assert_eq!((held, needed), (keys.len(), MIN_TRAIN_RECORDS));
            }
            other => panic!("expected too few records: {other:?}"),
        }
        assert!(matches!(
            train_stored(dir.path(), &quick(), "cli"),
            Err(ModelError::TooFewRecords { .. })
        ));
        assert_eq!(count(&empi, Count::Models), 0);
        assert_eq!(empi.model(), ModelInfo::defaults());
        // A data dir without an EMPI is said so, and gets none.
        let empty = tempfile::tempdir().expect("tempdir");
        let e = train_stored(empty.path(), &quick(), "cli").expect_err("no EMPI");
        assert!(e.to_string().contains("empi.sqlite is missing"), "{e}");
        assert!(!empty.path().join("empi.sqlite").exists());
    }

    #[test]
    fn records_changed_while_the_new_engine_is_built_are_carried_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        let current = params_in_force(&empi);
        let noting = empi.begin();
        let trained =
            train_from(&empi.reader().expect("reader"), &current, &quick(), "t").expect("trained");
        let staged = empi.stage(&trained.params, noting).expect("staged");
        // Meanwhile: a new person, a changed name, a record merged away.
        let mut newcomer = Record::new("h9", "N-1");
        newcomer.given_name = Some(PersonName::new("Wilhelmina"));
        newcomer.family_name = Some(PersonName::new("Quartermaine"));
        let newcomer = empi.register(&newcomer, "t").expect("new");
        let renamed = keys[10].clone();
        let mut changed = record(&empi, &renamed);
        changed.family_name = Some(PersonName::new("Zyxwvutsrq"));
        empi.register(&changed, "t").expect("changed");
        let gone = keys[20].clone();
        empi.retire(
            &HospitalId::new(gone.source.clone()).expect("id"),
            &gone.local_id,
            "t",
        )
        .expect("retire");
        let before = eids(&empi, &keys);

        let done = empi
            .swap_in(&trained.params, staged, false, "t", &|tx| {
                store(tx, &trained)?;
                Ok(trained.info.clone())
            })
            .expect("swap")
            .expect("no decision came in");
        assert!(!done.rebuilt, "the noted records sufficed");
        assert_eq!(params_in_force(&empi).version, trained.info.version);
        assert_eq!(eids(&empi, &keys), before);
        assert_eq!(empi.eid_of("h9", "N-1"), Some(newcomer.eid));
        assert_eq!(empi.eid_of(&gone.source, gone.local_id.expose()), None);
        // The new engine holds the changed name.
        let hits = empi.search(&changed, 1);
        let top = hits.first().expect("a hit");
        assert_eq!(top.key, renamed);
        assert_eq!(
            top.explanation.fields[hms_domain::empi::Field::FamilyName as usize].level,
            "exact"
        );
    }

    #[test]
    fn a_human_decision_during_the_build_is_kept_by_building_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        let current = params_in_force(&empi);
        let (a, b) = linked_pair(&empi, &keys);
        let trained =
            train_from(&empi.reader().expect("reader"), &current, &quick(), "t").expect("trained");
        let persist = |tx: &Transaction<'_>| {
            store(tx, &trained)?;
            Ok(trained.info.clone())
        };
        let staged = empi.stage(&trained.params, empi.begin()).expect("staged");
        empi.decide(&a, &b, "unlink", "operator:t").expect("unlink");
        // Not the last try: nothing changes, build again.
        assert!(
            empi.swap_in(&trained.params, staged, false, "t", &persist)
                .expect("swap")
                .is_none()
        );
        assert_eq!(empi.model(), ModelInfo::defaults());
        // The last try rebuilds with the decision while changes wait.
        let staged = empi.stage(&trained.params, empi.begin()).expect("staged");
        empi.decide(&a, &b, "link", "operator:t").expect("link");
        let before = eids(&empi, &keys);
        let decisions = empi.engine.lock().expect("engine").decisions().clone();
        let done = empi
            .swap_in(&trained.params, staged, true, "t", &persist)
            .expect("swap")
            .expect("installed");
        assert!(done.rebuilt);
        assert_eq!(empi.model().version, trained.info.version);
        assert_eq!(eids(&empi, &keys), before);
        assert_eq!(*empi.engine.lock().expect("engine").decisions(), decisions);
    }

    #[test]
    fn stored_models_are_activated_again_and_one_runs_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        let before = eids(&empi, &keys);
        let first = empi.train(&quick(), "operator:t").expect("first");
        let first_params = params_in_force(&empi);
        let mut other = quick();
        other.sample = MIN_TRAIN_RECORDS;
        other.config.seed = 7;
        let second = empi.train(&other, "operator:t").expect("second");
        assert!(second.version.starts_with("em-2-"), "{}", second.version);
        assert_eq!(second.sampled, Some(MIN_TRAIN_RECORDS as u64));
        assert_ne!(params_in_force(&empi).fields, first_params.fields);
        // Back to the first.
        assert_eq!(
            empi.activate(&first.version, "operator:t")
                .expect("first again"),
            first
        );
        assert_eq!(params_in_force(&empi), first_params);
        assert_eq!(count(&empi, Count::ActiveModels), 1);
        // Back to the hand-set model, which a restart keeps.
        let hand_set = Params::default().version;
        assert!(
            !empi
                .activate(&hand_set, "operator:t")
                .expect("hand-set")
                .trained
        );
        assert_eq!(params_in_force(&empi), Params::default());
        assert!(matches!(
            empi.activate("em-99-20260101T000000Z", "operator:t"),
            Err(ModelError::UnknownVersion(_))
        ));
        assert_eq!(eids(&empi, &keys), before);
        // One at a time.
        {
            let _held = empi.installing.lock().expect("lock");
            assert!(matches!(empi.train(&quick(), "t"), Err(ModelError::Busy)));
            assert!(matches!(
                empi.activate(&first.version, "t"),
                Err(ModelError::Busy)
            ));
            assert!(empi.model_busy());
        }
        drop(empi);
        let empi = open(dir.path());
        assert_eq!(empi.model(), ModelInfo::defaults());
        assert_eq!(eids(&empi, &keys), before);
    }

    #[test]
    fn a_never_trained_empi_trains_itself_once_when_it_holds_enough_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        empi.set_auto_train_records(0);
        assert!(empi.maybe_auto_train().is_none(), "off");
        empi.set_auto_train_records(keys.len() + 1);
        assert!(empi.maybe_auto_train().is_none(), "not enough records");
        empi.set_auto_train_records(MIN_TRAIN_RECORDS);
        let info = empi.maybe_auto_train().expect("due").expect("trained");
        assert_eq!(info.trained_by.as_deref(), Some("auto"));
        assert_eq!(empi.model(), info);
        assert!(empi.maybe_auto_train().is_none(), "once");
        // A restart with a trained model does not train again.
        drop(empi);
        let empi = open(dir.path());
        empi.set_auto_train_records(MIN_TRAIN_RECORDS);
        assert!(empi.maybe_auto_train().is_none());
        assert_eq!(count(&empi, Count::Models), 1);
    }

    #[test]
    fn a_model_the_command_line_stores_is_installed_by_the_running_empi() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 700);
        let empi = open(dir.path());
        let before = eids(&empi, &keys);
        assert!(!empi.follow_stored_model().expect("nothing stored"));
        let info = train_stored(dir.path(), &quick(), "cli").expect("trained");
        assert_eq!(info.trained_by.as_deref(), Some("cli"));
        assert_eq!(empi.model(), ModelInfo::defaults(), "not yet followed");
        assert!(empi.follow_stored_model().expect("followed"));
        assert_eq!(empi.model(), info);
        assert_eq!(params_in_force(&empi).version, info.version);
        assert!(!empi.follow_stored_model().expect("already in force"));
        assert_eq!(eids(&empi, &keys), before);
    }

    #[test]
    fn the_sample_is_seeded_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = seed_empi(dir.path(), 100);
        let conn = EmpiDb::reader(&dir.path().join("empi.sqlite")).expect("open");
        let (a, n) = sample(&conn, 50, 3).expect("sample");
        assert_eq!((a.len(), n), (50, keys.len()));
        let (b, _) = sample(&conn, 50, 3).expect("sample");
        let (c, _) = sample(&conn, 50, 4).expect("sample");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let (all, _) = sample(&conn, keys.len() * 2, 3).expect("sample");
        assert_eq!(all.len(), keys.len());
    }
}
