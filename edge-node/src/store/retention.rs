//! Retention: acknowledged, expired events leave the appliance's log.
//!
//! An event may be deleted from the local log only when (1) the cloud has
//! acknowledged it, (2) its stream's retention (`uplink.retention_*_h`) has
//! passed since it was recorded, and (3) it is covered by the **base**: the
//! projections as they stood after some seq P (tables `base_*`, with P and
//! its hash as `base_seq`/`base_hash` in `meta`). The base is what lets
//! `hms-edge verify` still prove "replay == projections" once the head of
//! the log is gone: it replays the retained events after P onto the base.
//! The newest event is never deleted, so the next seq always follows the log.
//!
//! Pruning runs in two steps, each safe to interrupt:
//!
//! 1. [`compute_base`], off the writer, reading the store only: copies the
//!    base into a scratch database under the projections' own names, replays
//!    the events after the old base up to the new P through the live
//!    writer's board and projection code, and notes every key it touched.
//! 2. The writer ([`write_base`], through its ordinary queue) writes only
//!    the touched rows and the new P into the store's base, in one short
//!    transaction; it never touches the events or the live projections.
//! 3. The writer deletes eligible events at or below the base (see
//!    [`DELETE_SQL`]), in bounded chunks.
//!
//! A crash between the steps leaves a base ahead of the deletions: valid.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use firmware_config::Retention;
use hms_domain::{EventHash, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::load_beds;
use super::projection::{EVENT_COLUMNS, event_from_row};
use super::replay::Replayer;
use crate::board::Board;

/// A projection table and its key columns.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Table name (the base copy is `base_{name}`).
    pub name: &'static str,
    /// Primary key columns.
    pub key: &'static [&'static str],
}

/// The projections a base holds.
pub const TABLES: &[Table] = &[
    Table {
        name: "beds",
        key: &["bed_id"],
    },
    Table {
        name: "encounters",
        key: &["encounter_id"],
    },
    Table {
        name: "patients",
        key: &["mrn"],
    },
    Table {
        name: "hl7_messages",
        key: &["sending_app", "sending_facility", "control_id", "content"],
    },
    Table {
        name: "parked",
        key: &["seq"],
    },
    Table {
        name: "or_cases",
        key: &["case_id"],
    },
    Table {
        name: "or_predictions",
        key: &["case_id"],
    },
    Table {
        name: "charges",
        key: &["transaction_id"],
    },
];

/// Streams in the order of the cut-off parameters of [`DELETE_SQL`].
pub const STREAMS: [&str; 7] = [
    "adt",
    "bed",
    "or",
    "billing",
    "audit",
    "integration",
    "empi",
];

/// Deletes up to `?10` events with seq at or below both `?1` and the base,
/// below the newest seq, recorded before their stream's cut-off (`?2`..`?8`
/// in [`STREAMS`] order, ms since the epoch). `?9` is unused padding so the
/// limit keeps its number.
pub const DELETE_SQL: &str = "DELETE FROM events WHERE seq IN (
    SELECT seq FROM events
     WHERE seq <= min(?1, coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'base_seq'), 0))
       AND seq < (SELECT max(seq) FROM events)
       AND recorded_at < CASE stream
             WHEN 'adt' THEN ?2 WHEN 'bed' THEN ?3 WHEN 'or' THEN ?4 WHEN 'billing' THEN ?5
             WHEN 'audit' THEN ?6 WHEN 'integration' THEN ?7 WHEN 'empi' THEN ?8
             ELSE -9223372036854775807 + 0 * ?9 END
     ORDER BY seq LIMIT ?10)";

/// Per-stream cut-offs: an event recorded before its stream's cut-off has
/// passed its retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs(pub [i64; 7]);

impl Cutoffs {
    /// The cut-offs at `now` for `retention`.
    pub fn at(retention: &Retention, now: Timestamp) -> Cutoffs {
        let h = |hours: u64| {
            now.as_millis()
                .saturating_sub(i64::try_from(hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX))
        };
        Cutoffs([
            h(retention.adt_h),
            h(retention.bed_h),
            h(retention.or_h),
            h(retention.billing_h),
            h(retention.audit_h),
            h(retention.integration_h),
            h(retention.empi_h),
        ])
    }
}

/// The base of the store seen through `schema` (`main`, `live`…): its seq
/// and hash, or none when nothing was ever pruned.
pub fn base_of(conn: &Connection, schema: &str) -> anyhow::Result<Option<(u64, EventHash)>> {
    let get = |k: &str| -> rusqlite::Result<Option<String>> {
        conn.query_row(
            &format!("SELECT value FROM {schema}.meta WHERE key = ?1"),
            [k],
            |r| r.get(0),
        )
        .optional()
    };
    let (Some(seq), Some(hash)) = (get("base_seq")?, get("base_hash")?) else {
        return Ok(None);
    };
    let seq: u64 = seq.parse().context("meta base_seq is not a number")?;
    let hash = EventHash::from_hex(&hash).context("meta base_hash is not a hash")?;
    Ok((seq > 0).then_some((seq, hash)))
}

/// Copies the base tables of `from` into the projection tables of `to`.
pub fn copy_base(conn: &Connection, from: &str, to: &str) -> rusqlite::Result<()> {
    for t in TABLES {
        conn.execute(
            &format!("INSERT INTO {to}.{0} SELECT * FROM {from}.base_{0}", t.name),
            [],
        )?;
    }
    Ok(())
}

/// A base computed off the writer, waiting to be written by it: the
/// projection rows the replay touched, in the scratch database `path`
/// (tables named like the projections, plus `touched_{table}` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The base it starts from.
    pub from: u64,
    /// The new base seq.
    pub to: u64,
    /// Hash of event `to`.
    pub hash: EventHash,
    /// The scratch database.
    pub path: PathBuf,
}

/// The scratch database of a base computation, beside the store.
pub const SCRATCH_FILE: &str = "retention-scratch.sqlite";

fn remove_scratch(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Computes the base of the store at `db` as of seq `upto` (which the
/// cloud must have acknowledged), reading the store only: the old base is
/// copied into a scratch database under the projections' own names, the
/// events after it up to `upto` are replayed onto the copy through the live
/// writer's board and projection code, and triggers note every key the
/// replay touched. `None` when the base is already at or past `upto`.
pub fn compute_base(db: &Path, upto: u64) -> anyhow::Result<Option<Delta>> {
    let scratch = db.with_file_name(SCRATCH_FILE);
    remove_scratch(&scratch);
    let conn = super::connection::open_scratch(&scratch)
        .with_context(|| format!("creating {}", scratch.display()))?;
    conn.execute(
        "ATTACH DATABASE ?1 AS live",
        [format!("file:{}?mode=ro", db.display())],
    )
    .with_context(|| format!("opening {}", db.display()))?;
    let result = fill(&conn, upto);
    if !matches!(result, Ok(Some(_))) {
        drop(conn);
        remove_scratch(&scratch);
    }
    result.map(|o| {
        o.map(|(from, to, hash)| Delta {
            from,
            to,
            hash,
            path: scratch,
        })
    })
}

fn fill(conn: &Connection, upto: u64) -> anyhow::Result<Option<(u64, u64, EventHash)>> {
    // One read transaction: the old base and the events come from one snapshot.
    conn.execute_batch("BEGIN")?;
    let hospital: String = conn
        .query_row(
            "SELECT value FROM live.meta WHERE key = 'hospital_id'",
            [],
            |r| r.get(0),
        )
        .context("reading the store's hospital id")?;
    let hospital = hms_domain::HospitalId::new(hospital).context("bad hospital id")?;
    let (from, from_hash) = base_of(conn, "live")?.unwrap_or((0, EventHash::GENESIS));
    if upto <= from {
        conn.execute_batch("ROLLBACK")?;
        return Ok(None);
    }
    for t in TABLES {
        let sql: String = conn.query_row(
            "SELECT sql FROM live.sqlite_master WHERE type = 'table' AND name = ?1",
            [t.name],
            |r| r.get(0),
        )?;
        conn.execute_batch(&sql)?;
    }
    copy_base(conn, "live", "main")?;
    for t in TABLES {
        let keys = t.key.join(", ");
        // A trigger's own conflict clause would be overridden by the
        // statement that fired it (an upsert), so duplicates are skipped
        // with NOT EXISTS rather than OR IGNORE.
        let note = |row: &str| {
            let vals = t
                .key
                .iter()
                .map(|k| format!("{row}.{k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let same = t
                .key
                .iter()
                .map(|k| format!("{k} = {row}.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "INSERT INTO touched_{n} SELECT {vals} WHERE NOT EXISTS \
                 (SELECT 1 FROM touched_{n} WHERE {same});",
                n = t.name
            )
        };
        conn.execute_batch(&format!(
            "CREATE TABLE touched_{n} ({keys}, PRIMARY KEY ({keys}));
             CREATE TRIGGER touched_{n}_i AFTER INSERT ON {n} BEGIN {new} END;
             CREATE TRIGGER touched_{n}_u AFTER UPDATE ON {n} BEGIN {new} {old} END;
             CREATE TRIGGER touched_{n}_d AFTER DELETE ON {n} BEGIN {old} END;",
            n = t.name,
            new = note("new"),
            old = note("old"),
        ))?;
    }
    let beds = load_beds(conn).context("loading the base beds")?;
    let board = Board::from_beds(beds).context("rebuilding the base board")?;
    let mut replay = Replayer::resume(board, from + 1, from_hash, false);
    let mut last = (from, from_hash);
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM live.events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq"
        ))?;
        let mut rows = stmt.query(params![from as i64, upto as i64])?;
        while let Some(row) = rows.next()? {
            let env = event_from_row(&hospital, row)?;
            if let Some(problem) = replay.apply(conn, &env)? {
                bail!("computing the retention base: {problem}");
            }
            last = (env.seq, env.hash);
        }
    }
    conn.execute_batch("COMMIT")?;
    if last.0 != upto {
        bail!(
            "computing the retention base: the log ends at seq {} before {upto}",
            last.0
        );
    }
    Ok(Some((from, last.0, last.1)))
}

/// Writes a computed base into the store, on the writer's connection
/// (attached scratch database, one transaction). Refuses a delta computed
/// from a base that has moved since. Returns the rows written.
pub fn write_base(conn: &Connection, delta: &Delta) -> anyhow::Result<usize> {
    conn.execute(
        "ATTACH DATABASE ?1 AS delta",
        [format!("file:{}?mode=ro", delta.path.display())],
    )?;
    let result = (|| -> anyhow::Result<usize> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let run = || -> anyhow::Result<usize> {
            let now = base_of(conn, "main")?.map_or(0, |b| b.0);
            if now != delta.from {
                bail!(
                    "the retention base moved from {} to {now} meanwhile",
                    delta.from
                );
            }
            let mut rows = 0;
            for t in TABLES {
                let keys = t.key.join(", ");
                let cond = format!("({keys}) IN (SELECT {keys} FROM delta.touched_{})", t.name);
                conn.execute(
                    &format!("DELETE FROM main.base_{} WHERE {cond}", t.name),
                    [],
                )?;
                rows += conn.execute(
                    &format!(
                        "INSERT INTO main.base_{0} SELECT * FROM delta.{0} WHERE {cond}",
                        t.name
                    ),
                    [],
                )?;
            }
            for (k, v) in [
                ("base_seq", delta.to.to_string()),
                ("base_hash", delta.hash.to_hex()),
            ] {
                conn.execute(
                    "INSERT INTO main.meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?;
            }
            Ok(rows)
        };
        match run() {
            Ok(rows) => {
                conn.execute_batch("COMMIT")?;
                Ok(rows)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })();
    let _ = conn.execute("DETACH DATABASE delta", []);
    remove_scratch(&delta.path);
    result
}

/// What a base advance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// The base before.
    pub from: u64,
    /// The base after.
    pub to: u64,
    /// Projection rows written.
    pub rows: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_tables_mirror_the_projections_column_for_column() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let columns = |t: &str| -> Vec<(String, String, bool, i64)> {
            let mut stmt = c.prepare(&format!("PRAGMA table_info({t})")).unwrap();
            stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(5)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        for t in TABLES {
            assert_eq!(
                columns(t.name),
                columns(&format!("base_{}", t.name)),
                "{}",
                t.name
            );
        }
    }
}
