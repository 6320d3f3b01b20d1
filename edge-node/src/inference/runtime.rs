//! Local ONNX inference with graceful degradation.
//!
//! [`Runtime::start`] loads the ONNX Runtime shared library (`ort` with
//! `load-dynamic`: `inference.library` or `ORT_DYLIB_PATH`), reads the model
//! set's `manifest.toml`, checks each model's file against its SHA-256,
//! creates a session (CUDA execution provider when configured and offered,
//! CPU otherwise) and checks the session's input and output names, element
//! types and shapes against the manifest. Whatever fails disables that model
//! with the reason; nothing here stops the appliance.
//!
//! Each ready model runs on a thread of its own (never on the async
//! runtime), fed by a small bounded queue. With CUDA, a model has two
//! sessions, each on its own thread: the provider policy ([`route`]) sends
//! calls of at least `inference.cuda_min_rows` rows to the GPU and smaller
//! ones to the CPU, where one row costs a fraction of a trip to the GPU. Every call goes through a
//! [`Guard`]: a timeout and a circuit breaker (sliding window of 20 calls,
//! judged from 10, opens at 60 % failures, stays open 60 s, then 3 probes).
//! A call that cannot be answered by the model returns the [`Reason`], and
//! the caller answers with its fallback rule instead.
//!
//! Shutdown goes in one order: the sessions, then the ONNX Runtime
//! environment, then the library. Dropping a [`Runtime`] (or
//! [`Runtime::shutdown`]) closes every model's queue and waits for its
//! thread, which drops its session there. The environment is the process's:
//! it is opened once and kept across runtimes (an in-process restart, a
//! model set installed while running), since ONNX Runtime allows one per
//! process, and [`release_environment`] releases it at the end of the
//! process, after the runtimes, before `main` returns. The library is never
//! unloaded while the process runs (`ort` keeps it); its own destructors
//! run at exit, when nothing of it is left in use. An environment or a CUDA
//! session still open at exit is what crashes there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_sync_client::resilience::{Breaker, BreakerConfig, BreakerState};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::manifest::{Manifest, ModelSpec};
use crate::metrics::{Metrics, ModelLabels};

/// The bed-demand model's name.
pub const BED_DEMAND: &str = "bed_demand";
/// The OR-duration model's name.
pub const OR_DURATION: &str = "or_duration";
/// Every model the appliance knows.
pub const MODELS: [&str; 2] = [BED_DEMAND, OR_DURATION];

/// Calls waiting for a model's thread beyond the one it runs.
const QUEUE: usize = 8;

/// Longest a shutdown waits for the models' threads (a call in hand
/// finishes first); a thread still busy then closes its session when done.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Why a fallback answered instead of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No such model in the set, or its file is missing.
    ModelMissing,
    /// The ONNX Runtime library could not be loaded.
    LibraryMissing,
    /// The file or the session does not match the manifest.
    ManifestMismatch,
    /// The call took longer than `inference.timeout_ms`.
    Timeout,
    /// The model failed.
    Error,
    /// The breaker is open after too many failures.
    BreakerOpen,
    /// The model's queue is full.
    Busy,
}

impl Reason {
    /// The reason as a label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ModelMissing => "model_missing",
            Reason::LibraryMissing => "library_missing",
            Reason::ManifestMismatch => "manifest_mismatch",
            Reason::Timeout => "timeout",
            Reason::Error => "error",
            Reason::BreakerOpen => "breaker_open",
            Reason::Busy => "busy",
        }
    }

    /// Parses a label of [`Reason::as_str`].
    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::ModelMissing,
            Reason::LibraryMissing,
            Reason::ManifestMismatch,
            Reason::Timeout,
            Reason::Error,
            Reason::BreakerOpen,
            Reason::Busy,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Where a model call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider.
    Cuda,
}

impl Provider {
    /// `cpu` or `cuda`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }
}

/// The provider policy: which session answers a call of `rows` rows. CUDA
/// only for calls of at least `cuda_min_rows` rows, and only when the model
/// has a CUDA session; the CPU otherwise, and CUDA again when the model has
/// no CPU session.
pub fn route(rows: usize, cuda_min_rows: usize, cpu: bool, cuda: bool) -> Option<Provider> {
    match (cpu, cuda) {
        (false, false) => None,
        (true, false) => Some(Provider::Cpu),
        (false, true) => Some(Provider::Cuda),
        (true, true) if rows >= cuda_min_rows => Some(Provider::Cuda),
        (true, true) => Some(Provider::Cpu),
    }
}

/// A model call that the model did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// Why.
    pub reason: Reason,
    /// Details (no PHI: file names, library errors, timings).
    pub detail: String,
}

/// Runtime settings, from `[inference]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The model set's directory.
    pub models_dir: PathBuf,
    /// The ONNX Runtime library; none: `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Use CUDA when offered.
    pub cuda: bool,
    /// Let CUDA use TensorFloat-32 for matrix products (`inference.cuda_tf32`);
    /// off: full float32.
    pub cuda_tf32: bool,
    /// Calls of at least this many rows run on CUDA (`inference.cuda_min_rows`).
    pub cuda_min_rows: usize,
    /// Per-call time limit.
    pub timeout: Duration,
}

impl Settings {
    /// From the configuration; a model set installed into the data dir
    /// (`hms-edge models install`) takes precedence over `inference.models`.
    pub fn from_config(config: &firmware_config::Config) -> Settings {
        let installed = crate::inference::models::current(&config.store.data_dir);
        Settings {
            models_dir: installed.unwrap_or_else(|| config.inference.models.clone()),
            library: config.inference.library.clone(),
            cuda: config.inference.cuda,
            cuda_tf32: config.inference.cuda_tf32,
            cuda_min_rows: usize::try_from(config.inference.cuda_min_rows).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(config.inference.timeout_ms),
        }
    }

    /// The library to load: the configured one, else `ORT_DYLIB_PATH`.
    pub fn library_path(&self) -> Option<PathBuf> {
        self.library.clone().or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// A timeout and a circuit breaker around a model's calls.
#[derive(Debug)]
pub struct Guard {
    breaker: Mutex<Breaker>,
    timeout: Duration,
}

/// The breaker settings for model calls.
pub fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        window: 20,
        min_calls: 10,
        failure_rate: 0.6,
        open_for: Duration::from_secs(60),
        half_open_probes: 3,
    }
}

impl Guard {
    /// A guard with a closed breaker.
    pub fn new(timeout: Duration) -> Guard {
        Guard {
            breaker: Mutex::new(Breaker::new(breaker_config())),
            timeout,
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `closed`, `open` or `half_open`.
    pub fn state(&self) -> &'static str {
        match self.breaker().state(Instant::now()) {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    /// Runs `call` within the time limit, if the breaker allows; records
    /// the outcome. A busy queue is not held against the model.
    pub async fn call<T, F>(&self, call: F) -> Result<T, Unanswered>
    where
        F: std::future::Future<Output = Result<T, Unanswered>>,
    {
        if !self.breaker().allow(Instant::now()) {
            return Err(Unanswered {
                reason: Reason::BreakerOpen,
                detail: "too many recent failures; the model rests".into(),
            });
        }
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Unanswered {
                reason: Reason::Timeout,
                detail: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        };
        match &outcome {
            Err(u) if u.reason == Reason::Busy => {}
            r => self.breaker().record(r.is_ok(), Instant::now()),
        }
        outcome
    }
}

/// What `/health` shows of a model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    /// Model name.
    pub name: String,
    /// `ready` or `disabled`.
    pub state: &'static str,
    /// Why it is disabled.
    pub reason: Option<Reason>,
    /// Details of the reason.
    pub detail: Option<String>,
    /// `cuda` or `cpu` when ready: `cuda` when the model has a CUDA session.
    pub provider: Option<&'static str>,
    /// With a CUDA session: calls of at least this many rows run there, the
    /// smaller ones on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_min_rows: Option<usize>,
    /// Asked for CUDA and answering on the CPU: why CUDA did not open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_error: Option<String>,
    /// The model's version from the manifest.
    pub version: Option<String>,
    /// Breaker state.
    pub breaker: &'static str,
}

struct Job {
    rows: usize,
    input: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// A model's sessions: each lives on its own thread behind a queue.
#[derive(Default)]
struct Workers {
    cpu: Option<SyncSender<Job>>,
    cuda: Option<SyncSender<Job>>,
}

impl Workers {
    fn get(&self, p: Provider) -> Option<&SyncSender<Job>> {
        match p {
            Provider::Cpu => self.cpu.as_ref(),
            Provider::Cuda => self.cuda.as_ref(),
        }
    }
}

struct Model {
    spec: Option<ModelSpec>,
    disabled: Option<Unanswered>,
    workers: Workers,
    /// Why CUDA was asked for and did not open.
    cuda_error: Option<String>,
    guard: Guard,
}

impl Model {
    fn provider(&self) -> Option<&'static str> {
        match (&self.disabled, &self.workers) {
            (Some(_), _) => None,
            (None, Workers { cuda: Some(_), .. }) => Some("cuda"),
            (None, Workers { cpu: Some(_), .. }) => Some("cpu"),
            (None, _) => None,
        }
    }

    /// The queue of `provider`'s session, or of the one [`route`] picks.
    fn worker(
        &self,
        provider: Option<Provider>,
        rows: usize,
        cuda_min_rows: usize,
    ) -> Option<&SyncSender<Job>> {
        let w = &self.workers;
        let p =
            provider.or_else(|| route(rows, cuda_min_rows, w.cpu.is_some(), w.cuda.is_some()))?;
        w.get(p)
    }
}

/// The models of one appliance. Dropping it closes its sessions (see the
/// module doc).
pub struct Runtime {
    models: BTreeMap<&'static str, Model>,
    cuda_min_rows: usize,
    set: Option<String>,
    dir: PathBuf,
    metrics: Arc<Metrics>,
    /// Disconnected once every model's thread has ended (each holds a sender).
    threads: Mutex<Option<Receiver<()>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("dir", &self.dir)
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

/// The process's ONNX Runtime environment.
enum Slot {
    /// Not opened yet.
    Empty,
    /// Open (the first library loaded); sessions hold clones of it.
    Open(ort::environment::Environment),
    /// Released by [`release_environment`]; ONNX Runtime allows no second one.
    Released,
}

static ENVIRONMENT: Mutex<Slot> = Mutex::new(Slot::Empty);

/// Sessions open in this process (each lives on its model's thread).
static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// How many model sessions are open in this process.
pub fn open_sessions() -> usize {
    OPEN_SESSIONS.load(Ordering::SeqCst)
}

fn environment(library: &Path) -> Result<ort::environment::Environment, String> {
    if !library.is_file() {
        return Err(format!(
            "the ONNX Runtime library {} does not exist",
            library.display()
        ));
    }
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    match &*slot {
        Slot::Open(env) => return Ok(env.clone()),
        Slot::Released => {
            return Err(
                "the ONNX Runtime environment of this process was released at its shutdown".into(),
            );
        }
        Slot::Empty => {}
    }
    let env = ort::init_from(library)
        .map_err(|e| format!("loading {}: {e}", library.display()))?
        .with_name("hms-edge")
        .build()
        .map_err(|e| format!("starting ONNX Runtime: {e}"))?;
    *slot = Slot::Open(env.clone());
    Ok(env)
}

/// Releases the process's ONNX Runtime environment: the last step of a
/// process that used models, after its runtimes were dropped or shut down
/// (sessions first; it waits up to 5 s for sessions still closing). No
/// runtime of this process can load a model after it.
/// True when the environment was released now; false when none was open, or
/// when sessions are still open (logged: the environment then goes with the
/// last of them, since each holds it).
pub fn release_environment() -> bool {
    let previous = {
        let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *slot, Slot::Released)
    };
    let Slot::Open(env) = previous else {
        return false;
    };
    // Runtimes dropped on an async runtime close their sessions as their
    // threads end (a call in hand first): wait for them.
    let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
    while open_sessions() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = open_sessions();
    if open > 0 {
        tracing::warn!(
            sessions = open,
            "releasing ONNX Runtime while model sessions are open; it closes with the last of them"
        );
    }
    drop(env);
    open == 0
}

fn mismatch(detail: String) -> Unanswered {
    Unanswered {
        reason: Reason::ManifestMismatch,
        detail,
    }
}

/// Checks a session's single input and output against the manifest.
fn check_signature(session: &ort::session::Session, spec: &ModelSpec) -> Result<(), Unanswered> {
    let check = |what: &str, outlets: &[ort::value::Outlet], want: &super::manifest::TensorSpec| {
        let [outlet] = outlets else {
            return Err(mismatch(format!(
                "the model has {} {what}s, the manifest describes one",
                outlets.len()
            )));
        };
        if outlet.name() != want.name {
            return Err(mismatch(format!(
                "{what} is named {:?}, the manifest says {:?}",
                outlet.name(),
                want.name
            )));
        }
        match outlet.dtype() {
            ort::value::ValueType::Tensor { ty, shape, .. } => {
                if want.ty != "float32" || *ty != ort::value::TensorElementType::Float32 {
                    return Err(mismatch(format!(
                        "{what} {:?} has type {ty}, the manifest says {}",
                        want.name, want.ty
                    )));
                }
                let got: &[i64] = shape;
                let fits = got.len() == want.shape.len()
                    && got
                        .iter()
                        .zip(&want.shape)
                        .all(|(g, w)| *w < 0 && *g < 0 || g == w);
                if !fits {
                    return Err(mismatch(format!(
                        "{what} {:?} has shape {got:?}, the manifest says {:?}",
                        want.name, want.shape
                    )));
                }
                Ok(())
            }
            other => Err(mismatch(format!("{what} is {other:?}, not a tensor"))),
        }
    };
    check("input", session.inputs(), &spec.input)?;
    check("output", session.outputs(), &spec.output)
}

/// The CUDA execution provider. TF32 is set either way: ONNX Runtime's CUDA
/// provider uses it for MatMul and Conv unless told `use_tf32 = 0`.
fn cuda_provider(tf32: bool) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_tf32(tf32)
        .build()
        .error_on_failure()
}

/// Opens a session for the model at `path` on `provider`.
fn open_session(
    env: &ort::environment::Environment,
    path: &Path,
    provider: Provider,
    tf32: bool,
) -> Result<ort::session::Session, String> {
    let open = || -> ort::Result<ort::session::Session> {
        let mut b = ort::session::Session::builder(env)?
            .with_intra_threads(1)?
            .with_inter_threads(1)?;
        if provider == Provider::Cuda {
            b = b.with_execution_providers([cuda_provider(tf32)])?;
        }
        b.commit_from_file(path)
    };
    open().map_err(|e| format!("loading {} on {}: {e}", path.display(), provider.as_str()))
}

/// A model's open sessions, and why CUDA did not open when it was asked for.
type Opened = (Vec<(Provider, ort::session::Session)>, Option<String>);

/// Opens `spec`'s sessions: with `cuda`, a CUDA one (a warning when it is
/// not offered) beside the CPU one; each checked against the manifest.
fn open_sessions_for(
    env: &ort::environment::Environment,
    path: &Path,
    spec: &ModelSpec,
    settings: &Settings,
) -> Result<Opened, Unanswered> {
    let mut out = vec![];
    let mut failure = None;
    let mut cuda_error = None;
    let providers: &[Provider] = if settings.cuda {
        &[Provider::Cuda, Provider::Cpu]
    } else {
        &[Provider::Cpu]
    };
    for &p in providers {
        let opened = open_session(env, path, p, settings.cuda_tf32)
            .map_err(|e| Unanswered {
                reason: Reason::Error,
                detail: e,
            })
            .and_then(|s| {
                check_signature(&s, spec)?;
                Ok(s)
            });
        match opened {
            Ok(s) => out.push((p, s)),
            Err(u) => {
                if p == Provider::Cuda {
                    tracing::warn!(model = %spec.name, error = %u.detail, "CUDA execution provider unavailable; using CPU");
                    cuda_error = Some(u.detail.clone());
                }
                failure = Some(u);
            }
        }
    }
    match failure {
        Some(u) if out.is_empty() => Err(u),
        _ => Ok((out, cuda_error)),
    }
}

/// Runs `session` on a thread of its own until its queue closes, then drops
/// it there; `ended` goes last.
fn spawn_worker(
    name: &str,
    provider: Provider,
    mut session: ort::session::Session,
    spec: ModelSpec,
    ended: std::sync::mpsc::Sender<()>,
) -> std::io::Result<SyncSender<Job>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
    OPEN_SESSIONS.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name(format!("onnx-{name}-{}", provider.as_str()))
        .spawn(move || {
            // Dropped last: the session is closed by then.
            let _ended = ended;
            while let Ok(job) = rx.recv() {
                // A caller that gave up (timed out) wants no answer:
                // skip its job rather than spend the model on it.
                if job.reply.is_closed() {
                    continue;
                }
                let out = run_job(&mut session, &spec, job.rows, job.input);
                let _ = job.reply.send(out);
            }
            // The queue is closed: the runtime shuts down.
            drop(session);
            OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        // The closure, and the session in it, are gone.
        OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| tx)
}

fn run_job(
    session: &mut ort::session::Session,
    spec: &ModelSpec,
    rows: usize,
    input: Vec<f32>,
) -> Result<Vec<f32>, String> {
    let (w_in, w_out) = (spec.input_width(), spec.output_width());
    if input.len() != rows * w_in {
        return Err(format!("{} values for {rows} rows of {w_in}", input.len()));
    }
    let tensor = ort::value::Tensor::from_array((vec![rows as i64, w_in as i64], input))
        .map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![spec.input.name.as_str() => tensor])
        .map_err(|e| e.to_string())?;
    let (shape, data) = outputs[spec.output.name.as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let want = [rows as i64, w_out as i64];
    if shape[..] != want[..] {
        return Err(format!("output shape {:?}, expected {want:?}", &shape[..]));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err("the model returned a non-finite value".into());
    }
    Ok(data.to_vec())
}

impl Runtime {
    /// Loads what can be loaded; never fails (see the module doc). Blocking.
    pub fn start(settings: &Settings, metrics: Arc<Metrics>) -> Runtime {
        let guard = || Guard::new(settings.timeout);
        let disabled = |reason: Reason, detail: String| Model {
            spec: None,
            disabled: Some(Unanswered { reason, detail }),
            workers: Workers::default(),
            cuda_error: None,
            guard: guard(),
        };
        let mut models = BTreeMap::new();
        let manifest = Manifest::load(&settings.models_dir);
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                let detail = format!("{e:#}");
                // A manifest naming files outside its set is not followed.
                let reason = if e.chain().any(|c| {
                    c.downcast_ref::<super::manifest::UnsafeFile>().is_some()
                        || c.downcast_ref::<super::manifest::BadTolerance>().is_some()
                }) {
                    tracing::error!(error = %detail, "the model set's manifest is refused; every answer comes from the fallback rules");
                    Reason::ManifestMismatch
                } else {
                    tracing::warn!(error = %detail, "no model set; every answer comes from the fallback rules");
                    Reason::ModelMissing
                };
                for name in MODELS {
                    models.insert(name, disabled(reason, detail.clone()));
                }
                return Runtime {
                    models,
                    cuda_min_rows: settings.cuda_min_rows,
                    set: None,
                    dir: settings.models_dir.clone(),
                    metrics,
                    threads: Mutex::new(None),
                };
            }
        };
        let files: BTreeMap<String, Result<(), String>> =
            super::manifest::check_files(&settings.models_dir, &manifest)
                .into_iter()
                .collect();
        // Each model's thread holds a sender; all gone: all threads ended.
        let (ended, threads) = std::sync::mpsc::channel::<()>();
        let env = match settings.library_path() {
            None => Err("no ONNX Runtime library: set inference.library or ORT_DYLIB_PATH".into()),
            Some(p) => environment(&p),
        };
        for name in MODELS {
            let Some(spec) = manifest.model(name).cloned() else {
                models.insert(
                    name,
                    disabled(
                        Reason::ModelMissing,
                        format!("the model set has no {name} model"),
                    ),
                );
                continue;
            };
            let prepared = match (&env, files.get(name), spec.path(&settings.models_dir)) {
                // Not a plain file of the set: not followed.
                (_, _, Err(e)) => Err(mismatch(e.to_string())),
                (_, Some(Err(e)), Ok(path)) if !path.exists() => Err(Unanswered {
                    reason: Reason::ModelMissing,
                    detail: e.clone(),
                }),
                (_, Some(Err(e)), _) => Err(mismatch(e.clone())),
                (Err(e), _, _) => Err(Unanswered {
                    reason: Reason::LibraryMissing,
                    detail: e.clone(),
                }),
                (Ok(env), _, Ok(path)) => open_sessions_for(env, &path, &spec, settings),
            };
            let model = match prepared {
                Err(u) => {
                    tracing::warn!(model = name, reason = u.reason.as_str(), detail = %u.detail, "model disabled");
                    Model {
                        spec: Some(spec),
                        disabled: Some(u),
                        workers: Workers::default(),
                        cuda_error: None,
                        guard: guard(),
                    }
                }
                Ok((sessions, cuda_error)) => {
                    let mut workers = Workers::default();
                    let mut failed = None;
                    for (provider, session) in sessions {
                        match spawn_worker(name, provider, session, spec.clone(), ended.clone()) {
                            Ok(tx) => match provider {
                                Provider::Cpu => workers.cpu = Some(tx),
                                Provider::Cuda => workers.cuda = Some(tx),
                            },
                            Err(e) => failed = Some(format!("starting its thread: {e}")),
                        }
                    }
                    match failed {
                        Some(detail) if workers.cpu.is_none() && workers.cuda.is_none() => {
                            disabled(Reason::Error, detail)
                        }
                        _ => {
                            let model = Model {
                                spec: Some(spec),
                                disabled: None,
                                workers,
                                cuda_error,
                                guard: guard(),
                            };
                            let version = model
                                .spec
                                .as_ref()
                                .map(|s| s.version.clone())
                                .unwrap_or_default();
                            tracing::info!(model = name, provider = model.provider(), version = %version, "model ready");
                            model
                        }
                    }
                }
            };
            models.insert(name, model);
        }
        drop(ended);
        Runtime {
            models,
            cuda_min_rows: settings.cuda_min_rows,
            set: Some(manifest.version.clone()),
            dir: settings.models_dir.clone(),
            metrics,
            threads: Mutex::new(Some(threads)),
        }
    }

    /// Closes the models' sessions: closes every queue, lets each thread
    /// finish the call in hand and waits (up to 5 s) for the threads, which
    /// drop their sessions. True when every session is closed. Dropping the
    /// runtime does the same; the environment stays for the next runtime
    /// until [`release_environment`]. Blocking (dropping it on an async
    /// runtime does not wait: the threads close their sessions as they end).
    pub fn shutdown(mut self) -> bool {
        self.close_sessions(true)
    }

    fn close_sessions(&mut self, wait: bool) -> bool {
        for model in self.models.values_mut() {
            model.workers = Workers::default();
        }
        if !wait {
            return false;
        }
        let threads = self
            .threads
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(threads) = threads else {
            return true;
        };
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match threads.recv_timeout(left) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "a model is still running at shutdown; its session closes when it ends"
                    );
                    return false;
                }
            }
        }
    }

    /// The manifest entry of `model`, when the set has one.
    pub fn spec(&self, model: &str) -> Option<&ModelSpec> {
        self.models.get(model).and_then(|m| m.spec.as_ref())
    }

    /// The directory the model set was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model set's version.
    pub fn set_version(&self) -> Option<&str> {
        self.set.as_deref()
    }

    /// Each model's state.
    pub fn reports(&self) -> Vec<ModelReport> {
        self.models
            .iter()
            .map(|(name, m)| ModelReport {
                name: (*name).to_owned(),
                state: if m.disabled.is_some() {
                    "disabled"
                } else {
                    "ready"
                },
                reason: m.disabled.as_ref().map(|u| u.reason),
                detail: m.disabled.as_ref().map(|u| u.detail.clone()),
                provider: m.provider(),
                cuda_min_rows: m.workers.cuda.as_ref().map(|_| self.cuda_min_rows),
                cuda_error: m.cuda_error.clone(),
                version: m.spec.as_ref().map(|s| s.version.clone()),
                breaker: m.guard.state(),
            })
            .collect()
    }

    /// Runs `model` on `rows` rows of `input` (row-major, the manifest's
    /// feature order). The output rows, row-major, or why there are none.
    /// The session is chosen by [`route`].
    pub async fn infer(
        &self,
        model: &str,
        rows: usize,
        input: Vec<f32>,
    ) -> Result<Vec<f32>, Unanswered> {
        self.infer_on(model, None, rows, input).await
    }

    /// As [`Runtime::infer`], on the session of `provider` when one is
    /// named (`models check` compares them); an error when the model has
    /// no such session.
    pub async fn infer_on(
        &self,
        model: &str,
        provider: Option<Provider>,
        rows: usize,
        input: Vec<f32>,
    ) -> Result<Vec<f32>, Unanswered> {
        let started = std::time::Instant::now();
        let result = match self.models.get(model) {
            None => Err(Unanswered {
                reason: Reason::ModelMissing,
                detail: format!("no model {model}"),
            }),
            Some(m) => match (&m.disabled, m.worker(provider, rows, self.cuda_min_rows)) {
                (Some(u), _) => Err(u.clone()),
                (None, None) => Err(Unanswered {
                    reason: Reason::Error,
                    detail: match provider {
                        Some(p) => format!("the model has no {} session", p.as_str()),
                        None => "the model has no worker".into(),
                    },
                }),
                (None, Some(tx)) => {
                    let tx = tx.clone();
                    m.guard
                        .call(async move {
                            let (reply, rx) = oneshot::channel();
                            match tx.try_send(Job { rows, input, reply }) {
                                Err(TrySendError::Full(_)) => {
                                    return Err(Unanswered {
                                        reason: Reason::Busy,
                                        detail: "the model's queue is full".into(),
                                    });
                                }
                                Err(TrySendError::Disconnected(_)) => {
                                    return Err(Unanswered {
                                        reason: Reason::Error,
                                        detail: "the model's thread stopped".into(),
                                    });
                                }
                                Ok(()) => {}
                            }
                            match rx.await {
                                Ok(Ok(v)) => Ok(v),
                                Ok(Err(e)) => Err(Unanswered {
                                    reason: Reason::Error,
                                    detail: e,
                                }),
                                Err(_) => Err(Unanswered {
                                    reason: Reason::Error,
                                    detail: "the model's thread stopped".into(),
                                }),
                            }
                        })
                        .await
                }
            },
        };
        let outcome = match &result {
            Ok(_) => "model",
            Err(u) => u.reason.as_str(),
        };
        let labels = ModelLabels {
            model: model.to_owned(),
            outcome,
        };
        self.metrics.model_calls.get_or_create(&labels).inc();
        if result.is_ok() {
            self.metrics
                .model_seconds
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                    outcome: "model",
                })
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Never block an async runtime's thread on a model call in hand.
        let wait = tokio::runtime::Handle::try_current().is_err();
        self.close_sessions(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<u32, Unanswered> {
        Ok(7)
    }

    /// A call that never answers (a hung model).
    async fn hang() -> Result<u32, Unanswered> {
        std::future::pending().await
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_on_timeouts_rests_60_s_and_closes_on_good_probes() {
        let g = Guard::new(Duration::from_millis(250));
        assert_eq!(g.call(async { ok() }).await, Ok(7));
        // Hung calls time out (paused time: no real waiting) until the
        // window judges the failure rate: 10 calls, 60 % failures.
        let mut reasons = vec![];
        for _ in 0..12 {
            let started = Instant::now();
            let r = g.call(hang()).await.unwrap_err();
            if r.reason == Reason::Timeout {
                assert_eq!(started.elapsed(), Duration::from_millis(250));
            }
            reasons.push(r.reason);
        }
        assert_eq!(reasons[0], Reason::Timeout);
        let first_open = reasons
            .iter()
            .position(|r| *r == Reason::BreakerOpen)
            .expect("the breaker opened");
        assert!(
            (9..=11).contains(&first_open),
            "opened after {first_open} failures"
        );
        assert_eq!(g.state(), "open");
        // Open: even a healthy model is not called.
        let r = g.call(async { ok() }).await.unwrap_err();
        assert_eq!(r.reason, Reason::BreakerOpen);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(g.state(), "open");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.state(), "half_open");
        // Three good probes close it.
        for _ in 0..3 {
            assert_eq!(g.call(async { ok() }).await, Ok(7));
        }
        assert_eq!(g.state(), "closed");
        // A failed probe opens it again at once.
        for _ in 0..10 {
            let _ = g.call(hang()).await;
        }
        assert_eq!(g.state(), "open");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(g.call(hang()).await.unwrap_err().reason, Reason::Timeout);
        assert_eq!(g.state(), "open");
    }

    #[test]
    fn small_calls_run_on_the_cpu_and_large_ones_on_cuda() {
        use Provider::{Cpu, Cuda};
        let both = |rows| route(rows, 4096, true, true);
        assert_eq!(
            [1, 64, 4095, 4096, 65536].map(both),
            [Some(Cpu), Some(Cpu), Some(Cpu), Some(Cuda), Some(Cuda)]
        );
        // One session only: it answers every call, whatever the size.
        assert_eq!(route(1, 4096, false, true), Some(Cuda));
        assert_eq!(route(65536, 4096, true, false), Some(Cpu));
        assert_eq!(route(1, 4096, false, false), None);
        // A threshold of 1 sends everything to the GPU.
        assert_eq!(route(1, 1, true, true), Some(Cuda));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_queue_is_not_held_against_the_model() {
        let g = Guard::new(Duration::from_millis(250));
        for _ in 0..30 {
            let r = g
                .call(async {
                    Err::<u32, _>(Unanswered {
                        reason: Reason::Busy,
                        detail: String::new(),
                    })
                })
                .await;
            assert_eq!(r.unwrap_err().reason, Reason::Busy);
        }
        assert_eq!(g.state(), "closed");
    }
}
