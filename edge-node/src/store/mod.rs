//! The durable store: SQLite (WAL, `synchronous=FULL`) behind one writer.
//!
//! Every mutation is a request to the writer ([`Store::submit`],
//! [`Store::hl7`], [`Store::replay`]), which owns the [`Board`](crate::board::Board) and the only
//! write connection. The writer takes everything queued (up to
//! `max_batch`), applies each request to the board, appends the resulting
//! events with their hash chain and updates the projections, all in one
//! `BEGIN IMMEDIATE … COMMIT` (group commit). Only after the commit returns
//! does it publish the new [`BoardView`](crate::board::BoardView) to readers, broadcast the changes to
//! live streams and answer the callers. If the transaction fails, the board
//! is rebuilt from the projections and every caller gets
//! [`WriteError::Unavailable`]: nothing is acknowledged that is not on disk.
//!
//! The writer runs on a thread of its own with a single-threaded async
//! runtime, on which the MLLP listener runs too ([`Store::spawn_on_writer`]):
//! an HL7 message goes from its socket to the commit and its ACK back to the
//! socket without changing threads, while HTTP mutations reach it over the
//! same bounded queue from the main runtime (ADR 0011).
//!
//! When the queue is full, senders wait (clinical writes are never dropped);
//! a sender that waits longer than [`QUEUE_WAIT`] gets [`WriteError::Busy`]
//! having changed nothing. Live-stream subscribers that fall behind lose
//! notices and are told to resynchronise (telemetry drops and counts).
//!
//! This is the only module that speaks SQL (`cargo xtask tidy`): everything
//! else reads through [`Store`]'s typed queries ([`queries`]).
//!
//! - `handle`: the cheap-to-clone [`Store`] handle and its read pool;
//! - `writer`: the writer loop and group commit; `apply_hl7`: what it does
//!   with an HL7 message or a parked message's replay;
//! - [`queries`]: typed reads; [`projection`]: the SQL shared by live writes
//!   and replay; [`schema`]: migrations; [`connection`]: how each connection
//!   is opened; `history`: beds' recent history in memory; `published`:
//!   what the writer publishes after each commit;
//! - [`verify`], [`backup`], [`cloud_restore`]: proofs, snapshots and
//!   restores, with [`replay`] (the log replayed through the writer's code);
//! - [`retention`]: the retention base and which events may go, and
//!   [`pruning`], the running appliance's task that applies it;
//! - [`lock`]: one process per data dir; [`credentials`]: `auth.sqlite`;
//!   [`bundles`]: the steps and anti-rollback record of signed bundles.

mod apply_hl7;
pub mod backup;
pub mod bundles;
pub mod cloud_restore;
pub mod connection;
pub mod credentials;
mod handle;
mod history;
pub mod lock;
pub mod projection;
pub mod pruning;
mod published;
pub mod queries;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod verify;
mod writer;

pub use bundles::{BundleStep, BundleVersions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hms_domain::{Actor, HospitalId, Timestamp};
use rusqlite::Connection;

use crate::board::{Bed, BoardError, Command};
use crate::integration::adt::Locations;
use crate::integration::hl7::ParseConfig;
use crate::integration::hl7::time::HospitalTime;

pub use handle::{Pending, Store};
pub use history::HistoryItem;
pub use writer::Checkpointed;

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
    /// HL7 locations of the configured operating rooms.
    pub or_locations: crate::integration::siu::OrLocations,
    /// HL7 parse settings.
    pub parse: ParseConfig,
    /// The hospital's clock: HL7 times without an offset are local to it,
    /// ACK times carry its offset.
    pub clock: HospitalTime,
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

/// Loads the OR cases projection (deleted cases included; the OR board
/// leaves them out).
pub fn load_or_cases(conn: &Connection) -> rusqlite::Result<Vec<hms_domain::OrCase>> {
    let mut stmt = conn.prepare("SELECT case_id, body FROM or_cases ORDER BY start_at")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (id, body) = row?;
        serde_json::from_str(&body).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("OR case {id}: {e}").into(),
            )
        })
    })
    .collect()
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
