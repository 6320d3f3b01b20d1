//! [`Store`]: the handle every other part of the appliance holds.
//!
//! Cheap to clone. Mutations go to the writer over one bounded queue and
//! are answered after commit; reads come from what the writer published
//! after its last commit (the board view, beds' histories, the committed
//! seq) or, for what only the log holds, from a small pool of read-only
//! connections through the typed queries of [`super::queries`].

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use hms_domain::{EventBody, EventHash, HospitalId};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::history::{HistoryItem, load_history};
use super::lock::DataDirLock;
use super::published::{Published, lock};
use super::writer::{Checkpointed, Prune, Reply, Request, Writer};
use super::{
    Committed, DB_FILE, Hl7Reply, Hl7Request, Notice, QUEUE_WAIT, Replayed, StoreSettings,
    WriteError, WriteRequest, connection, load_beds, retention, schema,
};
use crate::board::{Board, BoardView};
use crate::metrics::Metrics;

/// Handle to the store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.inner.published.db_path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    tx: mpsc::Sender<Request>,
    published: Arc<Published>,
    hospital: HospitalId,
    /// The writer thread's runtime (the MLLP listener runs on it too).
    runtime: tokio::runtime::Handle,
    reads: Mutex<Vec<Connection>>,
    checkpointer: Mutex<Option<Connection>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held from open to close: one process per data dir.
    lock: Mutex<Option<DataDirLock>>,
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

/// The last event's seq and hash, or none for an empty log. A damaged tail
/// is refused: sealing new events onto a guessed hash would hide the damage
/// in the chain.
fn tail(conn: &Connection) -> anyhow::Result<(u64, EventHash)> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match last {
        None => Ok((1, EventHash::GENESIS)),
        Some((seq, hash)) => {
            let hash = EventHash::from_slice(&hash).with_context(|| {
                format!("event {seq} has a malformed hash; run hms-edge verify")
            })?;
            let next = u64::try_from(seq)
                .ok()
                .and_then(|s| s.checked_add(1))
                .with_context(|| format!("event seq {seq} is out of range; run hms-edge verify"))?;
            Ok((next, hash))
        }
    }
}

/// Sends `req` to the writer, waiting for room up to [`QUEUE_WAIT`].
async fn send(
    tx: &mpsc::Sender<Request>,
    metrics: &Metrics,
    req: Request,
) -> Result<(), WriteError> {
    // The queue is rarely full: no timer unless it is.
    let req = match tx.try_send(req) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriteError::Closed),
        Err(mpsc::error::TrySendError::Full(req)) => req,
    };
    match tokio::time::timeout(QUEUE_WAIT, tx.send(req)).await {
        Err(_) => {
            metrics.store_busy.inc();
            Err(WriteError::Busy)
        }
        Ok(Err(_)) => Err(WriteError::Closed),
        Ok(Ok(())) => Ok(()),
    }
}

impl Store {
    /// Opens (creating if needed) the store in `settings.data_dir`: locks
    /// the data dir (one owner at a time, see [`super::lock`]), migrates,
    /// loads the board from the projections and starts the writer thread.
    pub fn open(settings: StoreSettings, metrics: Arc<Metrics>) -> anyhow::Result<Store> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let lock = DataDirLock::take(&settings.data_dir)?;
        let db_path = settings.data_dir.join(DB_FILE);
        let mut conn = connection::open_write(&db_path, settings.journal_size_limit)
            .with_context(|| format!("opening {}", db_path.display()))?;
        schema::migrate(&mut conn).context("migrating the store")?;
        claim_hospital(&conn, &settings.hospital)?;
        let beds = load_beds(&conn).context("loading the beds projection")?;
        let board = Board::from_beds(beds).context("rebuilding the board from the projection")?;
        let or_board = crate::or_board::OrBoard::from_cases(
            super::load_or_cases(&conn).context("loading the OR cases projection")?,
        );
        let (next_seq, last_hash) = tail(&conn)?;
        let history = load_history(&conn, &board, &settings.hospital, settings.history_limit)
            .context("loading bed histories")?;

        let published = Arc::new(Published {
            view: ArcSwap::from_pointee(board.view()),
            or_view: ArcSwap::from_pointee(or_board.view()),
            history: RwLock::new(history),
            history_limit: settings.history_limit,
            last_error: Mutex::new(None),
            committed: watch::Sender::new(next_seq - 1),
            notices: broadcast::channel(4096).0,
            // Deep enough for the patient index to ride out bursts of a
            // busy feed; if it still falls behind it catches up from the
            // projection.
            patients: broadcast::channel(65_536).0,
            db_path: db_path.clone(),
            metrics,
        });
        let (tx, rx) = mpsc::channel(settings.writer_queue.max(1));
        let writer = Writer::new(
            conn,
            board,
            or_board,
            next_seq,
            last_hash,
            &settings,
            published.clone(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("store-writer")
            .build()
            .context("starting the writer's runtime")?;
        let handle = runtime.handle().clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                runtime.block_on(writer.run(rx));
                // Tasks still on the writer's runtime (a listener not
                // stopped first) end here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("starting the writer thread")?;
        let store = Store {
            inner: Arc::new(Inner {
                tx,
                published,
                hospital: settings.hospital,
                runtime: handle,
                reads: Mutex::new(vec![]),
                checkpointer: Mutex::new(None),
                thread: Mutex::new(Some(thread)),
                lock: Mutex::new(Some(lock)),
            }),
        };
        store.refresh_wal_size();
        Ok(store)
    }

    /// Runs `fut` on the writer's thread, beside the writer (the MLLP
    /// listener: its messages then reach the commit and their ACKs the
    /// socket without a change of thread).
    pub fn spawn_on_writer<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.spawn(fut)
    }

    /// The latest committed board.
    pub fn view(&self) -> Arc<BoardView> {
        self.inner.published.view.load_full()
    }

    /// The latest committed OR board.
    pub fn or_view(&self) -> Arc<crate::or_board::OrView> {
        self.inner.published.or_view.load_full()
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
        self.inner.published.notices.subscribe()
    }

    /// The highest committed seq (0 when the log is empty).
    pub fn last_seq(&self) -> u64 {
        *self.inner.published.committed.borrow()
    }

    /// Committed patient record events (recorded, merged), after commit.
    pub fn subscribe_patients(&self) -> broadcast::Receiver<Arc<EventBody>> {
        self.inner.published.patients.subscribe()
    }

    /// Follows the highest committed seq (the uplink wakes on it).
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.published.committed.subscribe()
    }

    /// The data directory's database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.published.db_path
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.db_path().parent().unwrap_or(Path::new("."))
    }

    /// The last commit failure, cleared by the next successful commit.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.published.last_error).clone()
    }

    async fn ask<T>(&self, req: impl FnOnce(Reply<T>) -> Request) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        send(&self.inner.tx, &self.inner.published.metrics, req(reply)).await?;
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Processes one inbound HL7 message: stored, applied or parked, and its
    /// ACKs recorded, all in one commit; returns the ACKs to send.
    pub async fn hl7(&self, req: Hl7Request) -> Result<Hl7Reply, WriteError> {
        self.ask(|reply| Request::Hl7(req, reply)).await
    }

    /// Replays a parked HL7 message through the writer. `Ok(None)` when no
    /// message with that seq is parked.
    pub async fn replay(&self, seq: u64) -> Result<Option<Replayed>, WriteError> {
        self.ask(|reply| Request::Replay(seq, reply)).await
    }

    /// Records an accepted fleet command (`audit.fleet_command`), durably,
    /// as the fleet channel's actor.
    pub async fn record_fleet_command(&self, id: u64, command: &str) -> Result<(), WriteError> {
        self.write(WriteRequest {
            cmd: crate::board::Command::RecordFleetCommand {
                id,
                command: command.to_owned(),
            },
            actor: hms_domain::Actor {
                kind: hms_domain::ActorKind::System,
                id: "fleet".into(),
            },
            correlation: Some(format!("fleet-{id}")),
            occurred_at: None,
        })
        .await
        .map(|_| ())
    }

    /// Records a step of a signed bundle (`audit.bundle`), durably, as the
    /// bundles' actor; the anti-rollback versions follow from it
    /// ([`Store::bundle_versions`]).
    pub async fn record_bundle(&self, step: super::BundleStep) -> Result<(), WriteError> {
        let correlation = format!("bundle-{}-{}", step.kind, step.version);
        self.write(WriteRequest {
            cmd: crate::board::Command::RecordBundle {
                kind: step.kind.to_owned(),
                version: step.version,
                step: step.step.to_owned(),
                previous: step.previous,
                sha256: step.sha256,
                reason: step.reason,
            },
            actor: hms_domain::Actor {
                kind: hms_domain::ActorKind::System,
                id: "bundles".into(),
            },
            correlation: Some(correlation),
            occurred_at: None,
        })
        .await
        .map(|_| ())
    }

    /// Records OR case predictions (each only while its case is scheduled
    /// at the version predicted); how many were recorded.
    pub async fn record_predictions(
        &self,
        predictions: Vec<hms_domain::CasePrediction>,
    ) -> Result<usize, WriteError> {
        self.ask(|reply| Request::Predictions(predictions, reply))
            .await
    }

    /// Queues a write (waiting for room up to [`QUEUE_WAIT`]); await the
    /// returned [`Pending`] for its outcome.
    pub async fn submit(&self, req: WriteRequest) -> Result<Pending, WriteError> {
        let (reply, rx) = oneshot::channel();
        send(
            &self.inner.tx,
            &self.inner.published.metrics,
            Request::Write(req, reply),
        )
        .await?;
        Ok(Pending(rx))
    }

    /// Queues several writes as one request: the writer commits them in the
    /// same group (one transaction, one WAL sync) and answers each on its
    /// own. Waits for room in the queue, not for the commit.
    pub async fn submit_all(&self, reqs: Vec<WriteRequest>) -> Result<Vec<Pending>, WriteError> {
        let (replies, pending): (Vec<_>, Vec<_>) = reqs
            .into_iter()
            .map(|req| {
                let (reply, rx) = oneshot::channel();
                ((req, reply), Pending(rx))
            })
            .unzip();
        send(
            &self.inner.tx,
            &self.inner.published.metrics,
            Request::Writes(replies),
        )
        .await?;
        Ok(pending)
    }

    /// Sends a write and waits until it is committed (or refused).
    pub async fn write(&self, req: WriteRequest) -> Result<Committed, WriteError> {
        self.submit(req).await?.committed().await
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
        let p = Prune {
            upto,
            cutoffs,
            limit,
        };
        self.ask(|reply| Request::Prune(p, reply)).await
    }

    /// Has the writer write a computed retention base (see [`retention`]).
    pub async fn write_base(&self, delta: retention::Delta) -> Result<usize, WriteError> {
        self.ask(|reply| Request::Base(delta, reply)).await
    }

    /// Checkpoints the WAL from the checkpointer's own connection (PASSIVE):
    /// what is committed is copied into the database file beside the
    /// writer, so the copying and its fsync never delay a commit. Returns
    /// what it did (`None` when it failed; logged).
    pub async fn checkpoint(&self) -> Option<Checkpointed> {
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || -> rusqlite::Result<(i64, i64, i64)> {
            let mut slot = lock(&inner.checkpointer);
            if slot.is_none() {
                *slot = Some(connection::open_checkpointer(&inner.published.db_path)?);
            }
            let Some(conn) = slot.as_ref() else {
                return Ok((0, 0, 0));
            };
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .await;
        self.refresh_wal_size();
        match done {
            Ok(Ok((busy, log, copied))) => {
                tracing::debug!(busy, log, copied, "wal checkpoint");
                self.inner.published.metrics.checkpoints.inc();
                Some(Checkpointed { log, copied })
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint task failed");
                None
            }
        }
    }

    /// Has the writer, between two groups, copy the frames committed since
    /// the last [`Store::checkpoint`] (a few), so that its next commit starts
    /// the WAL again from the beginning and overwrites the file in place.
    /// Without it a WAL under steady load never restarts: it grows without
    /// end, every commit also syncs the file's new size, and the WAL index
    /// grows with it.
    pub async fn restart_wal(&self) -> Result<Checkpointed, WriteError> {
        self.ask(Request::Checkpoint).await
    }

    /// Current WAL size in bytes (as last measured).
    pub fn wal_bytes(&self) -> u64 {
        self.inner.published.metrics.wal_bytes.get().max(0) as u64
    }

    /// Updates the WAL size gauge from the file system.
    pub fn refresh_wal_size(&self) {
        self.inner.published.refresh_wal_size();
    }

    /// The recent history of a bed, newest first.
    pub fn history(&self, bed: &str) -> Vec<HistoryItem> {
        self.inner
            .published
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bed)
            .map(|h| h.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops the writer after it has committed everything queued before
    /// this call, then lets go of the data dir.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Request::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = lock(&self.inner.thread).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        lock(&self.inner.reads).clear();
        lock(&self.inner.checkpointer).take();
        if let Some(l) = lock(&self.inner.lock).take() {
            l.release();
        }
    }

    /// Runs `f` on a pooled read-only connection, off the async runtime.
    /// Private to the store: other modules use the typed queries.
    pub(super) async fn read<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &HospitalId) -> anyhow::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&inner.reads).pop();
            let conn = match conn {
                Some(c) => c,
                None => connection::open_read(&inner.published.db_path)?,
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
}
