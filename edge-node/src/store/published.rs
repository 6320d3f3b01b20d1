//! What the writer publishes after each commit, for everyone else to read
//! without touching SQLite or waiting for the writer: the board view, beds'
//! histories, the last commit failure, the committed seq and the streams of
//! committed bed changes and patient events; the OR board's view.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use hms_domain::EventBody;
use tokio::sync::{broadcast, watch};

use super::Notice;
use super::history::Histories;
use crate::board::BoardView;
use crate::metrics::Metrics;
use crate::or_board::OrView;

/// What the writer publishes after each commit, read by everyone else.
pub(super) struct Published {
    /// The latest committed board.
    pub(super) view: ArcSwap<BoardView>,
    /// The latest committed OR board.
    pub(super) or_view: ArcSwap<OrView>,
    /// Beds' recent histories, newest last.
    pub(super) history: RwLock<Histories>,
    /// Entries kept per bed.
    pub(super) history_limit: usize,
    /// The last commit failure, cleared by the next successful commit.
    pub(super) last_error: Mutex<Option<String>>,
    /// The highest committed seq (0: none).
    pub(super) committed: watch::Sender<u64>,
    /// Committed bed changes, for live streams.
    pub(super) notices: broadcast::Sender<Arc<Notice>>,
    /// Committed patient record events, for the patient index.
    pub(super) patients: broadcast::Sender<Arc<EventBody>>,
    /// The store's database file.
    pub(super) db_path: PathBuf,
    pub(super) metrics: Arc<Metrics>,
}

impl Published {
    /// Updates the WAL size gauge from the file system.
    pub(super) fn refresh_wal_size(&self) {
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        self.metrics.wal_bytes.set(size as i64);
    }
}

/// Locks `m`, whether or not a holder panicked (the data stays usable).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
