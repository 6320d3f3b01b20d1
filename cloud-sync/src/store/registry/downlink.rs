//! The downlink's EID assignments in the region's database (`backend =
//! "postgres"`), so every instance of a region answers an appliance's
//! downlink read, whichever instance assigned the EIDs. Numbered densely
//! per hospital, as `downlink.sqlite` numbers them; with SQLite there is
//! one instance and that file ([`crate::store::downlink`]).

use anyhow::Context;
use hms_domain::HospitalId;
use hms_domain::phi::Mrn;
use hms_domain::sync::EidAssignment;

use super::{Inner, RegistryDb};

/// The PostgreSQL migration that adds the table (region database version 6).
pub(super) const PG_MIGRATION: &str = "CREATE TABLE eid_assignments (
         hospital TEXT   NOT NULL,
         seq      BIGINT NOT NULL,
         mrn      TEXT   NOT NULL,
         eid      TEXT   NOT NULL,
         PRIMARY KEY (hospital, seq)
     );";

impl RegistryDb {
    fn downlink_pg(&self) -> anyhow::Result<&super::pg::Session> {
        match &self.inner {
            Inner::Postgres(pg) => Ok(pg),
            Inner::Sqlite(_) => anyhow::bail!("with SQLite the downlink is downlink.sqlite"),
        }
    }

    /// Appends an assignment for `hospital`'s patient `mrn` after its last
    /// one (one at a time per hospital, whatever instance appends); returns
    /// its seq. PostgreSQL only.
    pub fn append_assignment(
        &self,
        hospital: &HospitalId,
        mrn: &Mrn,
        eid: &str,
    ) -> anyhow::Result<u64> {
        let (h, m, e) = (
            hospital.as_str().to_owned(),
            mrn.expose().to_owned(),
            eid.to_owned(),
        );
        let lock = super::pg::lock_key(&format!("downlink/{h}"));
        self.downlink_pg()?.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
            let seq: i64 = tx
                .query_one(
                    "INSERT INTO eid_assignments(hospital, seq, mrn, eid)
                     SELECT $1, coalesce(max(seq), 0) + 1, $2, $3
                       FROM eid_assignments WHERE hospital = $1
                     RETURNING seq",
                    &[&h, &m, &e],
                )?
                .get(0);
            tx.commit()?;
            u64::try_from(seq).context("assignment seq")
        })
    }

    /// Up to `limit` assignments of `hospital` after `after`, in order.
    /// PostgreSQL only.
    pub fn assignments_after(
        &self,
        hospital: &HospitalId,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<EidAssignment>> {
        let h = hospital.as_str().to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.downlink_pg()?.call(move |c| {
            c.query(
                "SELECT seq, mrn, eid FROM eid_assignments WHERE hospital = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&h, &after, &limit],
            )?
            .into_iter()
            .map(|r| {
                Ok(EidAssignment {
                    seq: u64::try_from(r.get::<_, i64>(0)).context("assignment seq")?,
                    mrn: Mrn::new(r.get::<_, String>(1)),
                    eid: r.get(2),
                })
            })
            .collect()
        })
    }
}
