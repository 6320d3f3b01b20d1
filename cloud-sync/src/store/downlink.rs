//! The downlink's database, `downlink.sqlite` under the data dir: the EID
//! assignments handed back to each hospital's appliance, numbered densely
//! per hospital. The rules (what is assigned, how many are read at once)
//! are [`crate::downlink`]'s.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use hms_domain::HospitalId;
use hms_domain::phi::Mrn;
use hms_domain::sync::EidAssignment;
use rusqlite::{Connection, params};

use super::sqlite;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS eid_assignments (
    hospital TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    mrn      TEXT    NOT NULL,
    eid      TEXT    NOT NULL,
    PRIMARY KEY (hospital, seq)
) STRICT;";

/// The downlink database.
#[derive(Debug)]
pub struct DownlinkDb {
    conn: Mutex<Connection>,
}

impl DownlinkDb {
    /// Opens (creating) `downlink.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<DownlinkDb> {
        std::fs::create_dir_all(data_dir)?;
        let conn = sqlite::writer(
            &data_dir.join("downlink.sqlite"),
            sqlite::Create::IfMissing,
            std::time::Duration::ZERO,
        )?;
        Self::with(conn)
    }

    /// A downlink database in memory.
    pub fn in_memory() -> anyhow::Result<DownlinkDb> {
        Self::with(sqlite::memory()?)
    }

    fn with(conn: Connection) -> anyhow::Result<DownlinkDb> {
        conn.execute_batch(SCHEMA)?;
        Ok(DownlinkDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an assignment for `hospital`'s patient `mrn` after its last
    /// one, in one transaction; returns its seq.
    pub fn append(&self, hospital: &HospitalId, mrn: &Mrn, eid: &str) -> anyhow::Result<u64> {
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
            params![hospital.as_str(), after as i64, limit as i64],
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

    /// `PRAGMA synchronous` and `journal_mode` of the connection (tests).
    #[cfg(test)]
    pub(crate) fn durability(&self) -> (i64, String) {
        sqlite::durability(&self.conn())
    }
}
