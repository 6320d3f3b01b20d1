//! Per-hospital event stores of the regional cloud, and ingest into them.
//!
//! Every hospital's events live in that hospital's own database. A
//! [`HospitalStore`] is one such database; [`ingest`] applies a
//! [`SyncBatch`] to it with the rules of [`hms_domain::sync::plan_ingest`]:
//! idempotent by (hospital, seq), in order, gaps and broken chains refused,
//! nothing stored from a refused batch. Every backend must pass
//! [`conformance::run`]: SQLite here, PostgreSQL in [`postgres`] (over TLS
//! as its connection string says, [`pg_tls`]). An
//! [`OpenStore`] is how the rest of the cloud reaches a hospital's store,
//! whatever the backend.
//!
//! The cloud's own databases live here too, each behind typed functions:
//! [`registry`] (`registry.sqlite`: enrolments, operator tokens, DR
//! primaries, ingest times), [`empi`] (`empi.sqlite`: the regional EMPI's
//! records, EIDs, decisions, reviews, audit and models) and [`downlink`]
//! (`downlink.sqlite`); [`lease`] elects the one instance of a region that
//! runs a task (advisory locks on the shared PostgreSQL). Every SQLite connection is opened by [`sqlite`], so
//! each writing one commits with `synchronous=FULL`. No SQL is written
//! anywhere else in the cloud.
//!
//! This module imports nothing of the cloud's own: everything else builds
//! on it.

pub mod downlink;
pub mod empi;
pub mod lease;
pub mod pg_tls;
pub mod postgres;
pub mod registry;
pub mod sqlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hms_domain::sync::{Position, Refusal, SyncBatch, plan_ingest};
use hms_domain::{Envelope, EventHash, HospitalId};
use rusqlite::{Connection, OptionalExtension, params};

/// Opens a hospital's store (database per hospital), whatever the backend.
pub type OpenStore =
    Arc<dyn Fn(&HospitalId) -> anyhow::Result<Box<dyn HospitalStore>> + Send + Sync>;

/// One hospital's event database.
pub trait HospitalStore: Send {
    /// The highest seq stored and its hash.
    fn position(&mut self) -> anyhow::Result<Position>;
    /// The hash stored under `seq`.
    fn stored_hash(&mut self, seq: u64) -> anyhow::Result<Option<EventHash>>;
    /// Appends consecutive events after the current position, atomically and
    /// durably (the call returns after the commit). When another writer
    /// (another instance of the cloud on the same database) stored one of
    /// these seqs first, nothing is stored and the error is a [`Conflict`].
    fn append(&mut self, events: &[Envelope]) -> anyhow::Result<()>;
    /// Up to `limit` events from `from` (inclusive), ascending.
    fn events(&mut self, from: u64, limit: usize) -> anyhow::Result<Vec<Envelope>>;
}

/// Another writer stored a seq of the batch first (the database's unique
/// key on seq decided); nothing of the batch was stored.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("another writer stored these seqs first")]
pub struct Conflict;

/// Whether `e` is (or wraps) a [`Conflict`].
pub fn is_conflict(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Conflict>().is_some())
}

/// Why ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch breaks a rule; nothing was stored.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing was stored.
    #[error("store failure: {0:#}")]
    Store(anyhow::Error),
}

/// What ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The position after the batch: acknowledge up to here.
    pub acked: Position,
    /// New events stored.
    pub stored: usize,
    /// Events already stored (acknowledged, ignored).
    pub duplicates: usize,
}

/// Applies a batch to a hospital's store. When another instance stored
/// part of the batch between this one's look at the position and its
/// append ([`Conflict`]), the batch is planned again against what is
/// stored now: the events the other stored are then duplicates (or a
/// refused history, if they differ), as if this batch had come second.
pub fn ingest(store: &mut dyn HospitalStore, batch: &SyncBatch) -> Result<Ingested, IngestError> {
    match ingest_once(store, batch) {
        Err(IngestError::Store(e)) if is_conflict(&e) => ingest_once(store, batch),
        r => r,
    }
}

fn ingest_once(store: &mut dyn HospitalStore, batch: &SyncBatch) -> Result<Ingested, IngestError> {
    let position = store.position().map_err(IngestError::Store)?;
    let mut known = HashMap::new();
    for e in batch.events.iter().filter(|e| e.seq <= position.seq) {
        if let Some(h) = store.stored_hash(e.seq).map_err(IngestError::Store)? {
            known.insert(e.seq, h);
        }
    }
    let new = plan_ingest(position, batch, |seq| known.get(&seq).copied())?;
    let events = &batch.events[new.clone()];
    if !events.is_empty() {
        store.append(events).map_err(IngestError::Store)?;
    }
    let acked = events.last().map_or(position, |e| Position {
        seq: e.seq,
        hash: e.hash,
    });
    Ok(Ingested {
        acked,
        stored: events.len(),
        duplicates: new.start,
    })
}

/// The SQLite backend: one file per hospital.
#[derive(Debug)]
pub struct SqliteHospitalStore {
    conn: Connection,
}

impl SqliteHospitalStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = sqlite::writer(
            path,
            sqlite::Create::IfMissing,
            std::time::Duration::from_secs(5),
        )?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                 seq      INTEGER PRIMARY KEY,
                 hash     BLOB NOT NULL,
                 envelope TEXT NOT NULL
             ) STRICT;",
        )?;
        Ok(Self { conn })
    }
}

impl SqliteHospitalStore {
    /// `PRAGMA synchronous` and `journal_mode` of the connection (tests).
    #[cfg(test)]
    pub(crate) fn durability(&self) -> (i64, String) {
        sqlite::durability(&self.conn)
    }
}

impl HospitalStore for SqliteHospitalStore {
    fn position(&mut self) -> anyhow::Result<Position> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            None => Position::START,
            Some((seq, hash)) => Position {
                seq: u64::try_from(seq).context("negative seq in the store")?,
                hash: EventHash::from_slice(&hash).context("malformed hash in the store")?,
            },
        })
    }

    fn stored_hash(&mut self, seq: u64) -> anyhow::Result<Option<EventHash>> {
        let h: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM events WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get(0))
            .optional()?;
        Ok(h.and_then(|h| EventHash::from_slice(&h)))
    }

    fn append(&mut self, events: &[Envelope]) -> anyhow::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO events(seq, hash, envelope) VALUES (?1, ?2, ?3)")?;
            for e in events {
                let inserted = stmt.execute(params![
                    e.seq as i64,
                    &e.hash.0[..],
                    serde_json::to_string(e)?
                ]);
                match inserted {
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Err(Conflict.into());
                    }
                    r => {
                        r?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn events(&mut self, from: u64, limit: usize) -> anyhow::Result<Vec<Envelope>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT envelope FROM events WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![from as i64, limit as i64], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = vec![];
        for r in rows {
            out.push(serde_json::from_str(&r?)?);
        }
        Ok(out)
    }
}

/// Database per hospital: where each hospital's SQLite store lives.
#[derive(Debug, Clone)]
pub struct SqliteRouter {
    dir: PathBuf,
}

impl SqliteRouter {
    /// Stores under `data_dir/hospitals/`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("hospitals"),
        }
    }

    /// Opens the store of `hospital` (ids are validated tokens, safe as file names).
    pub fn open(&self, hospital: &HospitalId) -> anyhow::Result<SqliteHospitalStore> {
        SqliteHospitalStore::open(&self.dir.join(format!("{hospital}.sqlite")))
    }

    /// The router as an [`OpenStore`].
    pub fn opener(self) -> OpenStore {
        Arc::new(move |h: &HospitalId| Ok(Box::new(self.open(h)?) as Box<dyn HospitalStore>))
    }
}

/// Keeps the longest prefix of `events` (at least one) whose JSON fits one
/// sync batch ([`cloud_sync_client::MAX_BATCH_BYTES`]).
pub fn trim_to_batch_bytes(events: &mut Vec<Envelope>) {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for e in events.iter() {
        bytes += serde_json::to_vec(e).map_or(0, |v| v.len()) + 1;
        if keep > 0 && bytes > cloud_sync_client::MAX_BATCH_BYTES {
            break;
        }
        keep += 1;
    }
    events.truncate(keep);
}

/// Up to `limit` events of `store` from `from`, and at most one batch of
/// JSON: what a restore read or a DR batch carries.
pub fn batch_from(
    store: &mut dyn HospitalStore,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<Envelope>> {
    let mut events = store.events(from, limit)?;
    trim_to_batch_bytes(&mut events);
    Ok(events)
}

#[cfg(test)]
mod tests;

/// The conformance suite every backend must pass.
pub mod conformance {
    use hms_domain::sync::{Position, Refusal, SyncBatch};
    use hms_domain::{Envelope, HospitalId, NodeId};

    #[cfg(doc)]
    use super::Conflict;

    use super::{HospitalStore, IngestError, ingest};

    /// A hash-chained log of `n` events of hospital `h`.
    pub fn log(h: &str, n: u64) -> Vec<Envelope> {
        let hospital = HospitalId::new(h).unwrap_or_else(|_| panic!("bad test hospital id {h}"));
        hms_domain::event::sample_log(&hospital, n)
    }

    fn batch(h: &str, events: &[Envelope]) -> SyncBatch {
        SyncBatch {
            hospital: HospitalId::new(h).unwrap_or_else(|_| panic!("bad id")),
            node: NodeId::new("edge-1").unwrap_or_else(|_| panic!("bad id")),
            events: events.to_vec(),
        }
    }

    /// Runs every case. `open` must open the same (initially empty) store
    /// each time it is called, so that durability across reopen is checked.
    pub fn run(open: &dyn Fn() -> Box<dyn HospitalStore>) {
        let all = log("h1", 50);
        let mut s = open();
        assert_eq!(s.position().expect("position"), Position::START);
        // First batch, then an overlapping resend.
        let r = ingest(s.as_mut(), &batch("h1", &all[..20])).expect("first batch");
        assert_eq!((r.stored, r.duplicates, r.acked.seq), (20, 0, 20));
        let r = ingest(s.as_mut(), &batch("h1", &all[10..30])).expect("overlap");
        assert_eq!((r.stored, r.duplicates, r.acked.seq), (10, 10, 30));
        assert_eq!(r.acked.hash, all[29].hash);
        // A gap is refused with the expected position; nothing stored.
        match ingest(s.as_mut(), &batch("h1", &all[31..40])) {
            Err(IngestError::Refused(Refusal::Gap {
                expected: 31,
                found: 32,
            })) => {}
            other => panic!("gap not refused: {other:?}"),
        }
        // A tampered event is refused; nothing of its batch is stored.
        let mut tampered = all[30..35].to_vec();
        tampered[3].body = tampered[3].body.replace("E34", "E99");
        match ingest(s.as_mut(), &batch("h1", &tampered)) {
            Err(IngestError::Refused(Refusal::BrokenChain { seq: 34 })) => {}
            other => panic!("tampering not refused: {other:?}"),
        }
        assert_eq!(s.position().expect("position").seq, 30);
        // Another hospital's events are refused.
        let theirs = log("h2", 31);
        match ingest(s.as_mut(), &batch("h1", &theirs[30..])) {
            Err(IngestError::Refused(Refusal::WrongHospital { .. })) => {}
            other => panic!("foreign events not refused: {other:?}"),
        }
        drop(s);
        // Reopened: the position and the events survive, in order.
        let mut s = open();
        assert_eq!(s.position().expect("position").seq, 30);
        let r = ingest(s.as_mut(), &batch("h1", &all[30..])).expect("rest");
        assert_eq!((r.stored, r.acked.seq), (20, 50));
        let back = s.events(1, 100).expect("events");
        assert_eq!(
            back, all,
            "the store gives back exactly the events, in order"
        );
        assert_eq!(hms_domain::verify_chain(&back), Ok(50));
        assert_eq!(s.events(49, 10).expect("tail").len(), 2);
        // Everything again: all duplicates, acknowledged at 50.
        let r = ingest(s.as_mut(), &batch("h1", &all)).expect("duplicates");
        assert_eq!((r.stored, r.duplicates, r.acked.seq), (0, 50, 50));
        drop(s);

        // Two instances take the same batch at once: the second stores it
        // between the first's look at the position and its append. The
        // database's key decides; the first answers as for a duplicate.
        let more = log("h1", 60);
        let mut racing = Racing {
            inner: open(),
            other: open(),
            first: Some(batch("h1", &more[50..60])),
        };
        let r = ingest(&mut racing, &batch("h1", &more[50..60])).expect("the loser");
        assert_eq!((r.stored, r.duplicates, r.acked.seq), (0, 10, 60));
        assert_eq!(r.acked.hash, more[59].hash);
        // Overlapping: the other stored 61..=65, this batch is 61..=70.
        let more = log("h1", 70);
        let mut racing = Racing {
            inner: open(),
            other: open(),
            first: Some(batch("h1", &more[60..65])),
        };
        let r = ingest(&mut racing, &batch("h1", &more[60..70])).expect("the rest");
        assert_eq!((r.stored, r.duplicates, r.acked.seq), (5, 5, 70));
        let mut s = open();
        let back = s.events(1, 100).expect("events");
        assert_eq!(back, more, "each event stored once, in order");
        // A different history stored by the other first is refused, not
        // taken as a duplicate.
        let forged = log("h1", 75);
        let mut theirs = forged[70..75].to_vec();
        theirs[0].body = theirs[0].body.replace("E71", "E99");
        let mut prev = more[69].hash;
        for e in &mut theirs {
            e.prev_hash = prev;
            e.hash = e.compute_hash();
            prev = e.hash;
        }
        let mut racing = Racing {
            inner: open(),
            other: open(),
            first: Some(batch("h1", &theirs)),
        };
        match ingest(&mut racing, &batch("h1", &forged[70..75])) {
            Err(IngestError::Refused(_)) => {}
            other => panic!("a conflicting history was not refused: {other:?}"),
        }
    }

    /// A store whose appends come second: before its first append, `other`
    /// (another connection to the same database, as another instance of
    /// the cloud has) ingests `first`.
    struct Racing {
        inner: Box<dyn HospitalStore>,
        other: Box<dyn HospitalStore>,
        first: Option<SyncBatch>,
    }

    impl HospitalStore for Racing {
        fn position(&mut self) -> anyhow::Result<Position> {
            self.inner.position()
        }

        fn stored_hash(&mut self, seq: u64) -> anyhow::Result<Option<hms_domain::EventHash>> {
            self.inner.stored_hash(seq)
        }

        fn append(&mut self, events: &[Envelope]) -> anyhow::Result<()> {
            if let Some(b) = self.first.take() {
                ingest(self.other.as_mut(), &b).expect("the other instance stores first");
            }
            self.inner.append(events)
        }

        fn events(&mut self, from: u64, limit: usize) -> anyhow::Result<Vec<Envelope>> {
            self.inner.events(from, limit)
        }
    }
}
