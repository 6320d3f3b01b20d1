//! The durable store: SQLite (WAL, `synchronous=FULL`) with one writer thread.
//!
//! Every mutation is a [`WriteRequest`] sent over a bounded channel to the
//! writer thread, which owns the [`Board`] and the only write connection. The
//! writer takes everything queued (up to `max_batch`), applies each command to
//! the board, appends the resulting events with their hash chain and updates
//! the projections, all in one `BEGIN IMMEDIATE … COMMIT` (group commit). Only
//! after the commit returns does it answer the callers, publish the new
//! [`BoardView`] to readers and broadcast the changes to live streams. If the
//! transaction fails, the board is restored to its state before the batch and
//! every caller gets [`WriteError::Unavailable`]: nothing is acknowledged that
//! is not on disk.
//!
//! When the channel is full, senders wait (clinical writes are never dropped);
//! a sender that waits longer than [`QUEUE_WAIT`] gets [`WriteError::Busy`]
//! having changed nothing. Live-stream subscribers that fall behind lose
//! notices and are told to resynchronise (telemetry drops and counts).

pub mod backup;
pub mod cloud_restore;
pub mod projection;
pub mod retention;
pub mod schema;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use hms_domain::{Actor, BedId, Draft, Envelope, EventBody, EventHash, HospitalId, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::adt::{self, Locations};
use crate::board::{Bed, Board, BoardError, BoardView, Command};
use crate::hl7::ack::{self, Header, Outcome as AckOutcome};
use crate::hl7::{Message, ParseConfig};
use crate::metrics::Metrics;

/// File name of the event store inside the data dir.
pub const DB_FILE: &str = "edge.sqlite";

/// How long a writer waits for room in a full queue before giving up.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// The hospital this appliance serves.
    pub hospital: HospitalId,
    /// Capacity of the writer queue.
    pub writer_queue: usize,
    /// Most commands per group commit.
    pub max_batch: usize,
    /// `journal_size_limit` in bytes.
    pub journal_size_limit: u64,
    /// Events kept in memory per bed for its recent history.
    pub history_limit: usize,
    /// HL7 locations of the configured beds.
    pub locations: Locations,
    /// HL7 parse settings.
    pub parse: ParseConfig,
}

/// One inbound HL7 message for the writer.
#[derive(Debug, Clone)]
pub struct Hl7Request {
    /// The message bytes as received (one MLLP frame's content).
    pub raw: Vec<u8>,
}

/// What a replay of a parked message did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// The parked message (seq of its event).
    pub seq: u64,
    /// `applied`, or `parked` when it still cannot apply.
    pub status: &'static str,
    /// Why it is still parked.
    pub reason: Option<String>,
}

/// What became of an HL7 message.
#[derive(Debug, Clone)]
pub struct Hl7Reply {
    /// The ACKs to send, in order (already durable).
    pub acks: Vec<Vec<u8>>,
    /// `applied`, `parked`, `rejected` or `duplicate`.
    pub status: &'static str,
}

/// One entry of a bed's recent history (no patient details).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryItem {
    /// Event seq.
    pub seq: u64,
    /// Event kind.
    pub kind: String,
    /// When the appliance recorded it.
    pub recorded_at: Timestamp,
    /// `kind:id` of the actor.
    pub actor: String,
    /// State of the bed after the event, for state changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Version of the bed after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl HistoryItem {
    /// The history entry of an event.
    pub fn of(env: &Envelope, body: &EventBody) -> Self {
        let (state, version) = match body {
            EventBody::BedStateChanged { state, version, .. } => {
                (Some(state.name()), Some(*version))
            }
            EventBody::BedIsolationChanged { version, .. }
            | EventBody::BedPendingDischargeChanged { version, .. } => (None, Some(*version)),
            EventBody::BedCommissioned { .. } => (Some("vacant_clean"), Some(1)),
            _ => (None, None),
        };
        let kind = match env.actor.kind {
            hms_domain::ActorKind::User => "user",
            hms_domain::ActorKind::Device => "device",
            hms_domain::ActorKind::Interface => "interface",
            hms_domain::ActorKind::System => "system",
        };
        HistoryItem {
            seq: env.seq,
            kind: env.kind.clone(),
            recorded_at: env.recorded_at,
            actor: format!("{kind}:{}", env.actor.id),
            state,
            version,
        }
    }
}

/// Recent history per bed, newest last.
type Histories = std::collections::HashMap<BedId, std::collections::VecDeque<HistoryItem>>;

/// A mutation for the writer.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// What to do.
    pub cmd: Command,
    /// Who asks.
    pub actor: Actor,
    /// Correlation id (request id, HL7 control id).
    pub correlation: Option<String>,
    /// Source time; the appliance time when absent.
    pub occurred_at: Option<Timestamp>,
}

/// What a committed write produced.
#[derive(Debug, Clone)]
pub struct Committed {
    /// `(seq, kind)` of each event appended.
    pub events: Vec<(u64, &'static str)>,
    /// The beds the write touched, as committed.
    pub beds: Vec<Arc<Bed>>,
}

/// Why a write was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The board refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] BoardError),
    /// The store could not commit (disk full, read-only, IO error); nothing changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The writer queue stayed full; nothing changed.
    #[error("store busy: the writer queue is full")]
    Busy,
    /// The store is shutting down.
    #[error("store is shutting down")]
    Closed,
}

/// A change published to live-stream subscribers after commit.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Event seq.
    pub seq: u64,
    /// Event kind.
    pub kind: &'static str,
    /// The bed after the change.
    pub bed: Arc<Bed>,
}

/// A queued write.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Committed, WriteError>>);

impl Pending {
    /// Waits for the commit (or refusal) of the write.
    pub async fn committed(self) -> Result<Committed, WriteError> {
        self.0.await.unwrap_or(Err(WriteError::Closed))
    }
}

enum Msg {
    Write(WriteRequest, oneshot::Sender<Result<Committed, WriteError>>),
    Hl7(Hl7Request, oneshot::Sender<Result<Hl7Reply, WriteError>>),
    Replay(u64, oneshot::Sender<Result<Replayed, WriteError>>),
    Prune(Prune, oneshot::Sender<Result<usize, WriteError>>),
    Base(retention::Delta, oneshot::Sender<Result<usize, WriteError>>),
    Close(oneshot::Sender<()>),
}

/// Retention work the writer does between batches.
enum Upkeep {
    Prune(Prune, oneshot::Sender<Result<usize, WriteError>>),
    Base(retention::Delta, oneshot::Sender<Result<usize, WriteError>>),
}

/// A retention deletion for the writer (see [`retention::DELETE_SQL`]).
#[derive(Debug, Clone, Copy)]
struct Prune {
    upto: u64,
    cutoffs: retention::Cutoffs,
    limit: usize,
}

/// Handle to the store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.inner.db_path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    view: ArcSwap<BoardView>,
    notices: broadcast::Sender<Arc<Notice>>,
    db_path: PathBuf,
    hospital: HospitalId,
    reads: Mutex<Vec<Connection>>,
    checkpointer: Mutex<Option<Connection>>,
    history: std::sync::RwLock<Histories>,
    history_limit: usize,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    last_error: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
    /// The highest committed seq (0: none), for the uplink.
    committed: tokio::sync::watch::Sender<u64>,
    /// Committed patient record events, for the patient index.
    patients: broadcast::Sender<Arc<EventBody>>,
}

/// Opens a write connection with the durability settings of the store.
pub fn open_write_connection(path: &Path, journal_size_limit: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the store must be in WAL mode but SQLite chose {mode:?} (is the file system local?)"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", journal_size_limit as i64)?;
    // Checkpoints run on their own connection, off the commit path
    // (Store::checkpoint); the writer only truncates the WAL at close.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// Opens a read-only connection.
pub fn open_read_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Loads the beds projection.
pub fn load_beds(conn: &Connection) -> rusqlite::Result<Vec<Bed>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM beds ORDER BY bed_id",
        projection::BED_COLUMNS
    ))?;
    let beds = stmt.query_map([], projection::bed_from_row)?;
    beds.collect()
}

/// Loads the last `limit` events of every bed on the board.
fn load_history(
    conn: &Connection,
    board: &Board,
    hospital: &HospitalId,
    limit: usize,
) -> anyhow::Result<Histories> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM events WHERE subject = ?1 ORDER BY seq DESC LIMIT ?2",
        projection::EVENT_COLUMNS
    ))?;
    let mut out = Histories::new();
    for bed in board.view().beds() {
        let mut rows = stmt.query(rusqlite::params![bed.id.as_str(), limit as i64])?;
        let mut items = std::collections::VecDeque::new();
        while let Some(r) = rows.next()? {
            let env = projection::event_from_row(hospital, r)?;
            let body = env
                .decode_body()
                .with_context(|| format!("event {} has an undecodable body", env.seq))?;
            items.push_front(HistoryItem::of(&env, &body));
        }
        out.insert(bed.id.clone(), items);
    }
    Ok(out)
}

/// Reads (or, on a new store, writes) the hospital a data dir belongs to.
fn claim_hospital(conn: &Connection, hospital: &HospitalId) -> anyhow::Result<()> {
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'hospital_id'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match found {
        None => {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('hospital_id', ?1)",
                [hospital.as_str()],
            )?;
        }
        Some(h) if h == hospital.as_str() => {}
        Some(h) => bail!(
            "the data dir belongs to hospital {h:?}, but the configuration says {:?}",
            hospital.as_str()
        ),
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `settings.data_dir`, migrates it,
    /// loads the board from the projections and starts the writer thread.
    pub fn open(settings: StoreSettings, metrics: Arc<Metrics>) -> anyhow::Result<Store> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let db_path = settings.data_dir.join(DB_FILE);
        let mut conn = open_write_connection(&db_path, settings.journal_size_limit)
            .with_context(|| format!("opening {}", db_path.display()))?;
        schema::migrate(&mut conn).context("migrating the store")?;
        claim_hospital(&conn, &settings.hospital)?;
        let beds = load_beds(&conn).context("loading the beds projection")?;
        let board = Board::from_beds(beds).context("rebuilding the board from the projection")?;
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // A damaged tail is refused: sealing new events onto a guessed hash
        // would hide the damage in the chain.
        let (next_seq, last_hash) = match last {
            None => (1, EventHash::GENESIS),
            Some((seq, hash)) => {
                let hash = EventHash::from_slice(&hash).with_context(|| {
                    format!("event {seq} has a malformed hash; run hms-edge verify")
                })?;
                let next = u64::try_from(seq)
                    .ok()
                    .and_then(|s| s.checked_add(1))
                    .with_context(|| {
                        format!("event seq {seq} is out of range; run hms-edge verify")
                    })?;
                (next, hash)
            }
        };

        let history = load_history(&conn, &board, &settings.hospital, settings.history_limit)
            .context("loading bed histories")?;

        let (tx, rx) = mpsc::channel(settings.writer_queue.max(1));
        let (notices, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            tx,
            view: ArcSwap::from_pointee(board.view()),
            notices,
            db_path,
            hospital: settings.hospital.clone(),
            reads: Mutex::new(vec![]),
            checkpointer: Mutex::new(None),
            history: std::sync::RwLock::new(history),
            history_limit: settings.history_limit,
            thread: Mutex::new(None),
            last_error: Mutex::new(None),
            metrics,
            committed: tokio::sync::watch::Sender::new(next_seq - 1),
            // Deep enough for the patient index to ride out bursts of a
            // busy feed; if it still falls behind it catches up from the
            // projection.
            patients: broadcast::channel(65_536).0,
        });
        let writer = Writer {
            board_stale: false,
            board_changed: false,
            pending_history: vec![],
            pending_notices: vec![],
            pending_patients: vec![],
            pending_events: 0,
            locations: settings.locations,
            parse: settings.parse,
            conn,
            board,
            next_seq,
            last_hash,
            hospital: settings.hospital,
            max_batch: settings.max_batch.max(1),
            inner: Arc::downgrade(&inner),
            notices: inner.notices.clone(),
            patients: inner.patients.clone(),
            metrics: inner.metrics.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .context("starting the writer thread")?;
        *lock(&inner.thread) = Some(handle);
        let store = Store { inner };
        store.refresh_wal_size();
        Ok(store)
    }

    /// The latest committed board.
    pub fn view(&self) -> Arc<BoardView> {
        self.inner.view.load_full()
    }

    /// Writes waiting in the queue.
    pub fn queued(&self) -> usize {
        self.inner.tx.max_capacity() - self.inner.tx.capacity()
    }

    /// Whether the writer thread is still running.
    pub fn writer_alive(&self) -> bool {
        !self.inner.tx.is_closed()
    }

    /// The hospital this store belongs to.
    pub fn hospital(&self) -> &HospitalId {
        &self.inner.hospital
    }

    /// Subscribes to committed changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.inner.notices.subscribe()
    }

    /// The highest committed seq (0 when the log is empty).
    pub fn last_seq(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// Committed patient record events (recorded, merged), after commit.
    pub fn subscribe_patients(&self) -> broadcast::Receiver<Arc<EventBody>> {
        self.inner.patients.subscribe()
    }

    /// Follows the highest committed seq (the uplink wakes on it).
    pub fn watch_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// The data directory's database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// The last commit failure, cleared by the next successful commit.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Processes one inbound HL7 message: stored, applied or parked, and its
    /// ACKs recorded, all in one commit; returns the ACKs to send.
    pub async fn hl7(&self, req: Hl7Request) -> Result<Hl7Reply, WriteError> {
        let (reply, rx) = oneshot::channel();
        match tokio::time::timeout(QUEUE_WAIT, self.inner.tx.send(Msg::Hl7(req, reply))).await {
            Err(_) => {
                self.inner.metrics.store_busy.inc();
                return Err(WriteError::Busy);
            }
            Ok(Err(_)) => return Err(WriteError::Closed),
            Ok(Ok(())) => {}
        }
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Replays a parked HL7 message through the writer. `Ok(None)` when no
    /// message with that seq is parked.
    pub async fn replay(&self, seq: u64) -> Result<Option<Replayed>, WriteError> {
        let (reply, rx) = oneshot::channel();
        match tokio::time::timeout(QUEUE_WAIT, self.inner.tx.send(Msg::Replay(seq, reply))).await {
            Err(_) => return Err(WriteError::Busy),
            Ok(Err(_)) => return Err(WriteError::Closed),
            Ok(Ok(())) => {}
        }
        match rx.await.unwrap_or(Err(WriteError::Closed)) {
            Ok(r) if r.status == "unknown" => Ok(None),
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(e),
        }
    }

    /// Queues a write (waiting for room up to [`QUEUE_WAIT`]); await the
    /// returned [`Pending`] for its outcome.
    pub async fn submit(&self, req: WriteRequest) -> Result<Pending, WriteError> {
        let (reply, rx) = oneshot::channel();
        match tokio::time::timeout(QUEUE_WAIT, self.inner.tx.send(Msg::Write(req, reply))).await {
            Err(_) => {
                self.inner.metrics.store_busy.inc();
                Err(WriteError::Busy)
            }
            Ok(Err(_)) => Err(WriteError::Closed),
            Ok(Ok(())) => Ok(Pending(rx)),
        }
    }

    /// Sends a write and waits until it is committed (or refused).
    pub async fn write(&self, req: WriteRequest) -> Result<Committed, WriteError> {
        self.submit(req).await?.committed().await
    }

    /// Checkpoints the WAL (PASSIVE) on a connection of its own, so that the
    /// fsyncs of copying pages into the database never delay a commit.
    pub async fn checkpoint(&self) {
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || -> rusqlite::Result<(i64, i64, i64)> {
            let mut slot = lock(&inner.checkpointer);
            if slot.is_none() {
                let c = Connection::open(&inner.db_path)?;
                c.busy_timeout(Duration::from_millis(100))?;
                *slot = Some(c);
            }
            let Some(conn) = slot.as_ref() else {
                return Ok((0, 0, 0));
            };
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .await;
        match done {
            Ok(Ok((busy, log, copied))) => {
                tracing::debug!(busy, log, copied, "wal checkpoint");
                self.inner.metrics.checkpoints.inc();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "wal checkpoint failed"),
            Err(e) => tracing::warn!(error = %e, "wal checkpoint task failed"),
        }
        self.refresh_wal_size();
    }

    /// Current WAL size in bytes (as last measured).
    pub fn wal_bytes(&self) -> u64 {
        self.inner.metrics.wal_bytes.get().max(0) as u64
    }

    /// The recent history of a bed, newest first.
    pub fn history(&self, bed: &str) -> Vec<HistoryItem> {
        self.inner
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bed)
            .map(|h| h.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops the writer after it has committed everything queued before this call.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = lock(&self.inner.thread).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Deletes up to `limit` events that the cloud acknowledged (seq at or
    /// below `upto`), that the retention base covers and whose stream's
    /// retention ended before `cutoffs`. Returns how many went.
    pub async fn prune(
        &self,
        upto: u64,
        cutoffs: retention::Cutoffs,
        limit: usize,
    ) -> Result<usize, WriteError> {
        let (reply, rx) = oneshot::channel();
        let p = Prune {
            upto,
            cutoffs,
            limit,
        };
        match tokio::time::timeout(QUEUE_WAIT, self.inner.tx.send(Msg::Prune(p, reply))).await {
            Err(_) => return Err(WriteError::Busy),
            Ok(Err(_)) => return Err(WriteError::Closed),
            Ok(Ok(())) => {}
        }
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Has the writer write a computed retention base (see [`retention`]).
    pub async fn write_base(&self, delta: retention::Delta) -> Result<usize, WriteError> {
        let (reply, rx) = oneshot::channel();
        match tokio::time::timeout(QUEUE_WAIT, self.inner.tx.send(Msg::Base(delta, reply))).await {
            Err(_) => return Err(WriteError::Busy),
            Ok(Err(_)) => return Err(WriteError::Closed),
            Ok(Ok(())) => {}
        }
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Runs `f` on a pooled read-only connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &HospitalId) -> anyhow::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&inner.reads).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_read_connection(&inner.db_path)?,
            };
            let out = f(&conn, &inner.hospital);
            let mut pool = lock(&inner.reads);
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .context("read task failed")?
    }

    /// Updates the WAL size gauge from the file system.
    pub fn refresh_wal_size(&self) {
        let mut wal = self.inner.db_path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        self.inner.metrics.wal_bytes.set(size as i64);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    /// The board must be rebuilt from the projections before the next batch.
    board_stale: bool,
    /// The batch changed the board in a way that sends no notice (patients, topology).
    board_changed: bool,
    /// History entries of the batch being committed.
    pending_history: Vec<(BedId, HistoryItem)>,
    /// Live-stream notices of the batch being committed.
    pending_notices: Vec<Notice>,
    /// Patient record events of the batch being committed.
    pending_patients: Vec<Arc<EventBody>>,
    /// Events appended by the batch being committed.
    pending_events: u64,
    conn: Connection,
    board: Board,
    next_seq: u64,
    last_hash: EventHash,
    hospital: HospitalId,
    max_batch: usize,
    locations: Locations,
    parse: ParseConfig,
    inner: std::sync::Weak<Inner>,
    notices: broadcast::Sender<Arc<Notice>>,
    patients: broadcast::Sender<Arc<EventBody>>,
    metrics: Arc<Metrics>,
}

/// One queued item of a batch.
enum Item {
    Write(WriteRequest, oneshot::Sender<Result<Committed, WriteError>>),
    Hl7(Hl7Request, oneshot::Sender<Result<Hl7Reply, WriteError>>),
    Replay(u64, oneshot::Sender<Result<Replayed, WriteError>>),
}

/// The outcome of one item, sent after the commit.
enum Outcome {
    Write(Result<Committed, WriteError>),
    Hl7(Hl7Reply),
    Replay(Replayed),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Item> = Vec::with_capacity(self.max_batch);
        while let Some(msg) = rx.blocking_recv() {
            let mut close = None;
            let mut prune = None;
            let mut next = Some(msg);
            while let Some(m) = next.take() {
                match m {
                    Msg::Prune(p, reply) => {
                        prune = Some(Upkeep::Prune(p, reply));
                        break;
                    }
                    Msg::Base(d, reply) => {
                        prune = Some(Upkeep::Base(d, reply));
                        break;
                    }
                    Msg::Write(req, reply) => batch.push(Item::Write(req, reply)),
                    Msg::Hl7(req, reply) => batch.push(Item::Hl7(req, reply)),
                    Msg::Replay(seq, reply) => batch.push(Item::Replay(seq, reply)),
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch));
            }
            match prune {
                Some(Upkeep::Prune(p, reply)) => {
                    let _ = reply.send(self.prune(p));
                }
                Some(Upkeep::Base(d, reply)) => {
                    let r = retention::write_base(&self.conn, &d).map_err(|e| {
                        tracing::error!(error = %format!("{e:#}"), "writing the retention base failed");
                        WriteError::Unavailable(format!("{e:#}"))
                    });
                    let _ = reply.send(r);
                }
                None => {}
            }
            if let Some(done) = close {
                self.checkpoint("TRUNCATE");
                rx.close();
                // Anything still queued after Close is answered, never dropped silently.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Write(_, reply) => {
                            let _ = reply.send(Err(WriteError::Closed));
                        }
                        Msg::Hl7(_, reply) => {
                            let _ = reply.send(Err(WriteError::Closed));
                        }
                        Msg::Replay(_, reply) => {
                            let _ = reply.send(Err(WriteError::Closed));
                        }
                        Msg::Prune(_, reply) | Msg::Base(_, reply) => {
                            let _ = reply.send(Err(WriteError::Closed));
                        }
                        Msg::Close(d) => {
                            let _ = d.send(());
                        }
                    }
                }
                let _ = done.send(());
                tracing::info!("store writer closed");
                return;
            }
        }
    }

    /// Deletes acknowledged, expired events covered by the base, in one transaction.
    fn prune(&mut self, p: Prune) -> Result<usize, WriteError> {
        let run = |conn: &Connection| -> rusqlite::Result<usize> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let c = &p.cutoffs.0;
            let n = conn.execute(
                retention::DELETE_SQL,
                rusqlite::params![
                    p.upto as i64,
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    c[5],
                    c[6],
                    0,
                    p.limit as i64
                ],
            )?;
            conn.execute_batch("COMMIT")?;
            Ok(n)
        };
        run(&self.conn).map_err(|e| {
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::error!(error = %e, "retention delete failed; nothing deleted");
            WriteError::Unavailable(e.to_string())
        })
    }

    /// Checkpoints the WAL at close (TRUNCATE: copy everything, empty the file).
    fn checkpoint(&mut self, mode: &str) {
        match self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            }) {
            Ok((busy, log, done)) => {
                tracing::debug!(busy, log, done, "wal checkpoint");
                self.metrics.checkpoints.inc();
            }
            Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
        }
        if let Some(inner) = self.inner.upgrade() {
            Store { inner }.refresh_wal_size();
        }
    }

    /// Rebuilds the board from the committed projections. Returns success.
    fn reload_board(&mut self) -> bool {
        match load_beds(&self.conn)
            .map_err(anyhow::Error::from)
            .and_then(|beds| Board::from_beds(beds).map_err(anyhow::Error::from))
        {
            Ok(board) => {
                self.board = board;
                self.board_stale = false;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the board after a failed commit failed");
                false
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Item>) {
        let started = Instant::now();
        let saved = (self.next_seq, self.last_hash);
        let n = batch.len();
        if self.board_stale && !self.reload_board() {
            // The board could not be rebuilt after a failed commit: refuse
            // the batch (nothing changes) until the database is readable.
            let err =
                WriteError::Unavailable("the store is recovering from a failed commit".into());
            for item in batch {
                match item {
                    Item::Write(_, r) => {
                        let _ = r.send(Err(err.clone()));
                    }
                    Item::Hl7(_, r) => {
                        let _ = r.send(Err(err.clone()));
                    }
                    Item::Replay(_, r) => {
                        let _ = r.send(Err(err.clone()));
                    }
                }
            }
            return;
        }
        self.pending_history.clear();
        self.pending_notices.clear();
        self.pending_patients.clear();
        self.pending_events = 0;
        let mut replies = Vec::with_capacity(n);
        let mut work = Vec::with_capacity(n);
        for item in batch {
            match item {
                Item::Write(req, reply) => {
                    work.push(Item2::Write(req));
                    replies.push(Reply::Write(reply));
                }
                Item::Hl7(req, reply) => {
                    work.push(Item2::Hl7(req));
                    replies.push(Reply::Hl7(reply));
                }
                Item::Replay(seq, reply) => {
                    work.push(Item2::Replay(seq));
                    replies.push(Reply::Replay(reply));
                }
            }
        }
        match self.apply_all(work) {
            Ok(outcomes) => {
                // Publish a new view only when the batch changed a bed.
                let view = (!self.pending_notices.is_empty() || self.board_changed)
                    .then(|| Arc::new(self.board.view()));
                self.board_changed = false;
                if let Some(inner) = self.inner.upgrade() {
                    {
                        let mut h = inner.history.write().unwrap_or_else(|p| p.into_inner());
                        for (bed, item) in self.pending_history.drain(..) {
                            let list = h.entry(bed).or_default();
                            list.push_back(item);
                            while list.len() > inner.history_limit {
                                list.pop_front();
                            }
                        }
                    }
                    if let Some(view) = view {
                        inner.view.store(view);
                    }
                    *lock(&inner.last_error) = None;
                    inner.committed.send_if_modified(|seq| {
                        let last = self.next_seq - 1;
                        let changed = *seq != last;
                        *seq = last;
                        changed
                    });
                }
                self.metrics.commits.inc();
                self.metrics.batch_size.observe(n as f64);
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.events.inc_by(self.pending_events);
                for change in self.pending_patients.drain(..) {
                    let _ = self.patients.send(change);
                }
                for notice in self.pending_notices.drain(..) {
                    let _ = self.notices.send(Arc::new(notice));
                }
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    match (outcome, reply) {
                        (Outcome::Write(o), Reply::Write(r)) => {
                            let _ = r.send(o);
                        }
                        (Outcome::Hl7(o), Reply::Hl7(r)) => {
                            let _ = r.send(Ok(o));
                        }
                        (Outcome::Replay(o), Reply::Replay(r)) => {
                            let _ = r.send(Ok(o));
                        }
                        // Outcomes are produced in the order of the items.
                        _ => {}
                    }
                }
            }
            Err(e) => {
                // The transaction rolled back, so the projections hold the last
                // committed state: the board is rebuilt from them (no copy of
                // the board is kept per batch for this rare case).
                (self.next_seq, self.last_hash) = saved;
                self.board_stale = true;
                self.reload_board();
                self.pending_history.clear();
                self.pending_notices.clear();
                self.pending_patients.clear();
                let msg = e.to_string();
                tracing::error!(error = %msg, items = n, "store commit failed; batch refused");
                self.metrics.commit_failures.inc();
                if let Some(inner) = self.inner.upgrade() {
                    *lock(&inner.last_error) = Some(msg.clone());
                }
                for reply in replies {
                    let err = WriteError::Unavailable(msg.clone());
                    match reply {
                        Reply::Write(r) => {
                            let _ = r.send(Err(err));
                        }
                        Reply::Hl7(r) => {
                            let _ = r.send(Err(err));
                        }
                        Reply::Replay(r) => {
                            let _ = r.send(Err(err));
                        }
                    }
                }
            }
        }
    }

    /// Seals one event, appends it and updates the projections; records the
    /// history entry and live notice to publish after commit.
    fn append(
        &mut self,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
        body: EventBody,
    ) -> rusqlite::Result<(u64, Option<Arc<Bed>>)> {
        let env = Envelope::seal(
            &self.hospital,
            self.next_seq,
            self.last_hash,
            at,
            Draft {
                occurred_at,
                actor: actor.clone(),
                correlation: correlation.cloned(),
                body: body.clone(),
            },
        );
        projection::insert_event(&self.conn, &env)?;
        projection::project(&self.conn, &env, &body, &self.board)?;
        if matches!(
            body,
            EventBody::PatientRecorded { .. }
                | EventBody::PatientsMerged { .. }
                | EventBody::EidAssigned { .. }
        ) {
            self.pending_patients.push(Arc::new(body.clone()));
        }
        if !matches!(
            body,
            EventBody::Hl7Message { .. }
                | EventBody::Hl7Replayed { .. }
                | EventBody::PatientRecorded { .. }
                | EventBody::EidAssigned { .. }
        ) {
            self.board_changed = true;
        }
        self.next_seq += 1;
        self.last_hash = env.hash;
        self.pending_events += 1;
        let bed = body.subject().and_then(|b| self.board.shared(b.as_str()));
        // A swap changes two beds: both get the history entry and the notice.
        let other = match &body {
            EventBody::BedsSwapped { other, .. } => Some(other),
            _ => None,
        };
        for id in body.subject().into_iter().chain(other) {
            if let Some(b) = self.board.shared(id.as_str()) {
                self.pending_history
                    .push((id.clone(), HistoryItem::of(&env, &body)));
                self.pending_notices.push(Notice {
                    seq: env.seq,
                    kind: body.kind(),
                    bed: b,
                });
            }
        }
        Ok((env.seq, bed))
    }

    /// Applies every item in one transaction. A refused command is an
    /// outcome; an SQLite failure aborts the whole batch.
    fn apply_all(&mut self, items: Vec<Item2>) -> rusqlite::Result<Vec<Outcome>> {
        // The transaction is held through a raw BEGIN so that `self` stays
        // borrowable while the items are applied.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = self.apply_items(items);
        match result {
            Ok(outcomes) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(outcomes),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn apply_items(&mut self, items: Vec<Item2>) -> rusqlite::Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item2::Write(req) => outcomes.push(Outcome::Write(self.apply_write(req)?)),
                Item2::Hl7(req) => outcomes.push(Outcome::Hl7(self.apply_hl7(req)?)),
                Item2::Replay(seq) => outcomes.push(Outcome::Replay(self.apply_replay(seq)?)),
            }
        }
        Ok(outcomes)
    }

    fn apply_write(
        &mut self,
        req: WriteRequest,
    ) -> rusqlite::Result<Result<Committed, WriteError>> {
        let at = Timestamp::now();
        let changes = match self.board.apply(req.cmd, at) {
            Ok(c) => c,
            Err(e) => return Ok(Err(WriteError::Rejected(e))),
        };
        let mut committed = Committed {
            events: Vec::with_capacity(changes.len()),
            beds: Vec::with_capacity(changes.len()),
        };
        for body in changes {
            let kind = body.kind();
            let (seq, bed) = self.append(
                at,
                req.occurred_at.unwrap_or(at),
                &req.actor,
                req.correlation.as_ref(),
                body,
            )?;
            if let Some(bed) = bed {
                committed.events.push((seq, kind));
                committed.beds.push(bed);
            }
        }
        Ok(Ok(committed))
    }
}

impl Writer {
    fn apply_hl7(&mut self, req: Hl7Request) -> rusqlite::Result<Hl7Reply> {
        let at = Timestamp::now();
        let parse = self.parse;
        let parsed =
            std::panic::catch_unwind(|| Message::parse(&req.raw, parse)).unwrap_or_else(|_| {
                tracing::error!("HL7 parse panicked; message rejected");
                Err(crate::hl7::ParseError {
                    code: crate::hl7::ErrorCode::InternalError,
                    location: None,
                    reason: "internal error while reading the message".into(),
                })
            });
        let header = match &parsed {
            Ok(m) => Header::of(m),
            Err(_) => Header::salvage(&req.raw),
        };
        if parsed.is_ok() && !header.control_id.is_empty() {
            let found: Option<String> = self
                .conn
                .prepare_cached(
                    "SELECT acks FROM hl7_messages
                     WHERE sending_app = ?1 AND sending_facility = ?2 AND control_id = ?3",
                )?
                .query_row(
                    rusqlite::params![
                        header.sending_app,
                        header.sending_facility,
                        header.control_id
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(acks) = found {
                // A duplicate: the identical stored ACKs, nothing applied.
                let acks: Vec<String> = serde_json::from_str(&acks).unwrap_or_default();
                self.metrics
                    .hl7_messages
                    .get_or_create(&crate::metrics::KindLabels { kind: "duplicate" })
                    .inc();
                return Ok(Hl7Reply {
                    acks: acks.into_iter().map(String::into_bytes).collect(),
                    status: "duplicate",
                });
            }
        }
        let actor = Actor {
            kind: hms_domain::ActorKind::Interface,
            id: format!(
                "hl7:{}",
                if header.sending_app.is_empty() {
                    "unknown"
                } else {
                    header.sending_app.as_str()
                }
            ),
        };
        let correlation = Some(header.control_id.clone()).filter(|c| !c.is_empty());
        let (outcome, status) = match &parsed {
            Err(e) => (
                AckOutcome::Reject {
                    code: e.code,
                    location: e.location.clone(),
                    reason: e.reason.clone(),
                },
                "rejected",
            ),
            Ok(m) => {
                let occurred_at = m
                    .get("EVN-6")
                    .or_else(|| m.get("EVN-2"))
                    .or_else(|| m.get("MSH-7"))
                    .and_then(|t| Timestamp::parse_hl7(&t))
                    .unwrap_or(at);
                self.apply_adt(m, at, occurred_at, &actor, correlation.as_ref())?
            }
        };
        let control = format!("ACK{}", self.next_seq);
        let acks = ack::acks(&header, &outcome, &control, &at.to_hl7());
        let ack_code = acks
            .last()
            .and_then(|a| {
                let t = String::from_utf8_lossy(a).into_owned();
                t.split("\rMSA|")
                    .nth(1)
                    .map(|r| r.chars().take(2).collect::<String>())
            })
            .unwrap_or_default();
        let reason = match &outcome {
            AckOutcome::Accepted => None,
            AckOutcome::Error { reason, .. } | AckOutcome::Reject { reason, .. } => {
                Some(reason.clone())
            }
        };
        let body = EventBody::Hl7Message {
            sending_app: header.sending_app.clone(),
            sending_facility: header.sending_facility.clone(),
            control_id: header.control_id.clone(),
            message_type: parsed
                .as_ref()
                .ok()
                .map(|m| {
                    format!(
                        "{}^{}",
                        m.get("MSH-9.1").unwrap_or_default(),
                        m.get("MSH-9.2").unwrap_or_default()
                    )
                })
                .unwrap_or_default(),
            status: status.to_owned(),
            ack_code,
            reason,
            raw_hex: hms_domain::event::to_hex(&req.raw),
            acks: acks
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        };
        self.append(at, at, &actor, correlation.as_ref(), body)?;
        self.metrics
            .hl7_messages
            .get_or_create(&crate::metrics::KindLabels { kind: status })
            .inc();
        Ok(Hl7Reply { acks, status })
    }

    /// Re-applies a parked message; it leaves the queue when it applies now.
    fn apply_replay(&mut self, seq: u64) -> rusqlite::Result<Replayed> {
        let unknown = Replayed {
            seq,
            status: "unknown",
            reason: None,
        };
        let parked: bool = self
            .conn
            .prepare_cached("SELECT count(*) FROM parked WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get::<_, i64>(0))?
            > 0;
        if !parked {
            return Ok(unknown);
        }
        let body: String = self
            .conn
            .prepare_cached("SELECT body FROM events WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get(0))?;
        let raw = match serde_json::from_str::<EventBody>(&body) {
            Ok(EventBody::Hl7Message { raw_hex, .. }) => hms_domain::event::from_hex(&raw_hex),
            _ => None,
        };
        let Some(raw) = raw else { return Ok(unknown) };
        let at = Timestamp::now();
        let actor = Actor {
            kind: hms_domain::ActorKind::System,
            id: "replay".into(),
        };
        let (status, reason) = match Message::parse(&raw, self.parse) {
            Err(e) => ("parked", Some(e.reason)),
            Ok(m) => {
                let correlation = m.get("MSH-10");
                match self.apply_adt(&m, at, at, &actor, correlation.as_ref())? {
                    (AckOutcome::Accepted, _) => ("applied", None),
                    (AckOutcome::Error { reason, .. } | AckOutcome::Reject { reason, .. }, _) => {
                        ("parked", Some(reason))
                    }
                }
            }
        };
        self.append(
            at,
            at,
            &actor,
            None,
            EventBody::Hl7Replayed {
                parked_seq: seq,
                status: status.to_owned(),
                reason: reason.clone(),
            },
        )?;
        Ok(Replayed {
            seq,
            status,
            reason,
        })
    }

    /// Applies the ADT semantics of a parsed message; parks it when they cannot apply.
    fn apply_adt(
        &mut self,
        m: &Message,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
    ) -> rusqlite::Result<(AckOutcome, &'static str)> {
        let plan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let conn = &self.conn;
            let last_bed = |v: &hms_domain::EncounterId| -> Option<BedId> {
                conn.prepare_cached("SELECT bed_id FROM encounters WHERE encounter_id = ?1")
                    .and_then(|mut s| {
                        s.query_row([v.as_str()], |r| r.get::<_, Option<String>>(0))
                            .optional()
                    })
                    .ok()
                    .flatten()
                    .flatten()
                    .and_then(|b| BedId::new(b).ok())
            };
            adt::plan(m, &self.board, &self.locations, &last_bed)
        }))
        .unwrap_or_else(|_| {
            // Planning is pure: a bug there must cost one message, not the
            // writer. The message is parked for replay after a fix.
            tracing::error!("ADT planning panicked; message parked");
            Err(adt::Refusal {
                code: crate::hl7::ErrorCode::InternalError,
                location: None,
                reason: "internal error while applying the message".into(),
            })
        });
        let plan = match plan {
            Ok(p) => p,
            Err(r) => {
                return Ok((
                    AckOutcome::Error {
                        code: r.code,
                        location: r.location,
                        reason: format!("{}; message parked", r.reason),
                    },
                    "parked",
                ));
            }
        };
        let backup = (plan.commands.len() > 1).then(|| self.board.clone());
        let mut changes = vec![];
        for cmd in plan.commands {
            match self.board.apply(cmd, at) {
                Ok(c) => changes.extend(c),
                Err(e) => {
                    if let Some(b) = backup {
                        self.board = b;
                    }
                    return Ok((
                        AckOutcome::Error {
                            code: crate::hl7::ErrorCode::ApplicationError,
                            location: None,
                            reason: format!("{e}; message parked"),
                        },
                        "parked",
                    ));
                }
            }
        }
        if let Some(p) = plan.patient {
            let trigger = m.get("MSH-9.2").unwrap_or_default();
            let d = plan.details;
            self.append(
                at,
                occurred_at,
                actor,
                correlation,
                EventBody::PatientRecorded {
                    patient: p,
                    trigger,
                    identifiers: d.identifiers,
                    address: d.address,
                    phone: d.phone,
                    visit: d.visit,
                    class: d.class,
                },
            )?;
        }
        for body in changes {
            self.append(at, occurred_at, actor, correlation, body)?;
        }
        Ok((AckOutcome::Accepted, "applied"))
    }
}

/// An item without its reply channel.
enum Item2 {
    Write(WriteRequest),
    Hl7(Hl7Request),
    Replay(u64),
}

/// The reply channel of an item.
enum Reply {
    Write(oneshot::Sender<Result<Committed, WriteError>>),
    Hl7(oneshot::Sender<Result<Hl7Reply, WriteError>>),
    Replay(oneshot::Sender<Result<Replayed, WriteError>>),
}
