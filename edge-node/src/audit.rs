//! The audit queue: audit events of reads (patient look-ups), handed to the
//! writer in groups.
//!
//! A look-up is answered once its audit event is in this queue, not after
//! the event's commit (as it was when each event went to the writer's queue
//! alone). The queue gathers what arrives within [`WINDOW`] of the first
//! event, at most [`MAX_GROUP`] events, and hands them to the writer as one
//! request ([`Store::submit_all`]): one transaction and one WAL sync for a
//! group of look-ups instead of one each. With one sync per look-up the
//! writer's thread took a third of the appliance's CPU under a stream of
//! searches and cut their throughput by a fifth; grouped, the audit costs
//! a few percent.
//!
//! Nothing is dropped silently: when the queue is full a look-up waits for
//! room; when it is closed (shutdown) the look-up is refused. A group whose
//! commit fails is counted in `audit_write_failures` and logged. At
//! shutdown the queue hands over at once whatever arrives and ends when the
//! last sender (the HTTP server's state) is gone, before the store closes.
//! An event still in the queue when the process is killed is lost, like
//! one waiting in the writer's queue: at most [`WINDOW`] of look-ups.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Store, WriteRequest};

/// How long the queue gathers events after the first of a group.
pub const WINDOW: Duration = Duration::from_millis(100);

/// The most events one group holds.
pub const MAX_GROUP: usize = 512;

/// Events waiting for a group; a look-up waits for room beyond this.
const CAPACITY: usize = 4096;

/// The sending side, held by the API.
#[derive(Debug, Clone)]
pub struct AuditQueue {
    tx: mpsc::Sender<WriteRequest>,
}

/// The queue no longer takes events (the appliance is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl AuditQueue {
    /// A queue and the task that hands its groups to `store` (run it until
    /// it returns: it ends once every [`AuditQueue`] is dropped).
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> (AuditQueue, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (AuditQueue { tx }, run(store, metrics, rx, shutdown))
    }

    /// Queues an audit event; waits for room, never for the commit.
    pub async fn record(&self, req: WriteRequest) -> Result<(), Closed> {
        self.tx.send(req).await.map_err(|_| Closed)
    }
}

async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<WriteRequest>,
    shutdown: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        if !shutdown.is_cancelled() {
            let deadline = tokio::time::Instant::now() + WINDOW;
            while group.len() < MAX_GROUP {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(req) => group.push(req),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = shutdown.cancelled() => break,
                }
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        hand_over(&store, &metrics, group).await;
    }
}

/// Submits a group and waits for its commit (the next group gathers
/// meanwhile).
async fn hand_over(store: &Store, metrics: &Metrics, group: Vec<WriteRequest>) {
    let n = group.len();
    let pending = match store.submit_all(group).await {
        Ok(p) => p,
        Err(e) => {
            metrics.audit_failures.inc_by(n as u64);
            tracing::error!(events = n, error = %e, "audit events could not be queued to the writer");
            return;
        }
    };
    for p in pending {
        if let Err(e) = p.committed().await {
            metrics.audit_failures.inc();
            tracing::error!(error = %e, "an audit event was not committed");
        }
    }
}
