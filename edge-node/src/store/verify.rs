//! `hms-edge verify`: the hash chain is intact and replay == projections.
//!
//! The log is read in seq order and checked link by link; every event is
//! replayed through the same board and projection code the live writer uses,
//! into a fresh in-memory database; the rebuilt `beds`, `encounters` and
//! `patients` tables must then equal the stored ones row for row. Works on a
//! live appliance's data dir (WAL readers do not block the writer).

use std::path::Path;

use anyhow::Context;
use hms_domain::Envelope;
use rusqlite::Connection;

use super::projection::{self, EVENT_COLUMNS};
use super::replay::Replayer;
use super::{DB_FILE, retention, schema};
use crate::board::Board;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events checked.
    pub events: u64,
    /// The retention base the log replays onto (0: the whole log is kept).
    pub base_seq: u64,
    /// Beds on the replayed board.
    pub beds: usize,
    /// Problems found; empty means the store verifies.
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the store verified.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the store in `data_dir`.
///
/// One connection does everything: the replay goes into its in-memory main
/// database, the store is attached read-only as `live`, and a single read
/// transaction covers reading the log and comparing the projections, so a
/// running appliance's later commits cannot cause false differences.
pub fn verify(data_dir: &Path) -> anyhow::Result<Report> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        anyhow::bail!("no store at {}", path.display());
    }
    let mut conn = Connection::open_in_memory()?;
    schema::migrate(&mut conn)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute(
        "ATTACH DATABASE ?1 AS live",
        [format!("file:{}?mode=ro", path.display())],
    )
    .with_context(|| format!("opening {}", path.display()))?;
    let tx = conn.transaction()?;
    let hospital: String = tx
        .query_row(
            "SELECT value FROM live.meta WHERE key = 'hospital_id'",
            [],
            |r| r.get(0),
        )
        .context("reading the store's hospital id")?;
    let hospital =
        hms_domain::HospitalId::new(hospital).context("the store's hospital id is invalid")?;

    // A pruned log replays onto its retention base.
    let base = retention::base_of(&tx, "live")?;
    let mut replay = match base {
        None => Replayer::new(),
        Some((seq, hash)) => {
            retention::copy_base(&tx, "live", "main")?;
            let board = Board::from_beds(super::load_beds(&tx)?)
                .context("rebuilding the board of the retention base")?;
            Replayer::resume(board, seq + 1, hash, true)
        }
    };
    let base_seq = base.map_or(0, |b| b.0);
    let mut problems = vec![];
    let mut events = 0u64;
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM live.events ORDER BY seq"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let env: Envelope = projection::event_from_row(&hospital, row)?;
            events += 1;
            if env.seq <= base_seq {
                // Kept for its stream's retention, already in the base: its
                // own hash must still hold.
                if env.compute_hash() != env.hash {
                    problems.push(format!(
                        "hash chain: event {} does not match its hash",
                        env.seq
                    ));
                    break;
                }
                continue;
            }
            if let Some(problem) = replay.apply(&tx, &env)? {
                problems.push(problem);
                break;
            }
        }
    }
    let board = replay.board;
    if let Err(e) = board.check_invariants() {
        problems.push(format!("replayed board: {e}"));
    }
    if problems.is_empty() {
        for (table, key) in [
            ("beds", "bed_id"),
            ("encounters", "encounter_id"),
            ("patients", "mrn"),
            ("hl7_messages", "control_id"),
            ("parked", "control_id"),
            ("or_cases", "case_id"),
            ("or_predictions", "case_id"),
            ("charges", "transaction_id"),
        ] {
            compare(&tx, table, key, &mut problems)?;
        }
    }
    tx.rollback()?;
    Ok(Report {
        events,
        base_seq,
        beds: board.view().len(),
        problems,
    })
}

/// Compares `main.table` (replayed) with `live.table` (stored).
fn compare(
    conn: &Connection,
    table: &str,
    key: &str,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let diff = |a: &str, b: &str| -> anyhow::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {key} FROM (SELECT * FROM {a}.{table} EXCEPT SELECT * FROM {b}.{table}) LIMIT 20"
        ))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    };
    let missing = diff("main", "live")?;
    let extra = diff("live", "main")?;
    // Patient keys are MRNs (PHI): report counts only.
    let show = |keys: &[String]| {
        if table == "patients" {
            format!("{} rows", keys.len())
        } else {
            keys.join(", ")
        }
    };
    if !missing.is_empty() {
        problems.push(format!(
            "{table}: replay gives rows the store lacks or differs on: {}",
            show(&missing)
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{table}: the store has rows replay does not give: {}",
            show(&extra)
        ));
    }
    Ok(())
}
