//! The downlink: what the regional cloud hands back to each hospital's
//! appliance, in order. Today that is the enterprise ids (EIDs) the regional
//! EMPI assigns to a hospital's patients.
//!
//! Assignments are appended per hospital with a dense `seq`; an appliance
//! reads them after the last `seq` it applied (`GET /sync/v1/downlink?after=N`,
//! signed like every sync request) and records each as an event in its own
//! log, so its position survives restarts and restores.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use hms_domain::HospitalId;
use hms_domain::phi::Mrn;
use hms_domain::sync::EidAssignment;
use rusqlite::{Connection, params};

/// Most assignments in one downlink answer.
pub const MAX_ASSIGNMENTS: usize = 1_000;

/// The downlink store (SQLite: `downlink.sqlite` under the cloud's data dir).
#[derive(Debug)]
pub struct Downlink {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS eid_assignments (
    hospital TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    mrn      TEXT    NOT NULL,
    eid      TEXT    NOT NULL,
    PRIMARY KEY (hospital, seq)
) STRICT;";

impl Downlink {
    /// Opens (creating) `downlink.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Downlink> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("downlink.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Downlink {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory downlink (tests, and a cloud started without a data dir).
    pub fn in_memory() -> anyhow::Result<Downlink> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Downlink {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an assignment for `hospital`'s patient `mrn`; returns its seq.
    pub fn assign(&self, hospital: &HospitalId, mrn: &Mrn, eid: &str) -> anyhow::Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let next: i64 = tx.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM eid_assignments WHERE hospital = ?1",
            [hospital.as_str()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO eid_assignments(hospital, seq, mrn, eid) VALUES (?1, ?2, ?3, ?4)",
            params![hospital.as_str(), next, mrn.expose(), eid],
        )?;
        tx.commit()?;
        Ok(next as u64)
    }

    /// Up to `limit` assignments of `hospital` after `after`, in order.
    pub fn after(
        &self,
        hospital: &HospitalId,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<EidAssignment>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, mrn, eid FROM eid_assignments WHERE hospital = ?1 AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                hospital.as_str(),
                after as i64,
                limit.min(MAX_ASSIGNMENTS) as i64
            ],
            |r| {
                Ok(EidAssignment {
                    seq: r.get::<_, i64>(0)? as u64,
                    mrn: Mrn::new(r.get::<_, String>(1)?),
                    eid: r.get(2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_dense_per_hospital_and_read_after_a_position() {
        let d = Downlink::in_memory().expect("open");
        let (h1, h2) = (
            HospitalId::new("h1").expect("id"),
            HospitalId::new("h2").expect("id"),
        );
        assert_eq!(d.assign(&h1, &Mrn::new("M1"), "E1").expect("assign"), 1);
        assert_eq!(d.assign(&h2, &Mrn::new("X9"), "E1").expect("assign"), 1);
        assert_eq!(d.assign(&h1, &Mrn::new("M2"), "E2").expect("assign"), 2);
        let all = d.after(&h1, 0, 10).expect("read");
        assert_eq!(
            all.iter()
                .map(|a| (a.seq, a.eid.as_str()))
                .collect::<Vec<_>>(),
            [(1, "E1"), (2, "E2")]
        );
        assert_eq!(d.after(&h1, 1, 10).expect("read").len(), 1);
        assert!(d.after(&h1, 2, 10).expect("read").is_empty());
        assert_eq!(
            d.after(&h2, 0, 10).expect("read").len(),
            1,
            "hospitals apart"
        );
    }
}
