//! The downlink: what the regional cloud hands back to each hospital's
//! appliance, in order. Today that is the enterprise ids (EIDs) the regional
//! EMPI assigns to a hospital's patients.
//!
//! Assignments are appended per hospital with a dense `seq`; an appliance
//! reads them after the last `seq` it applied (`GET /sync/v1/downlink?after=N`,
//! signed like every sync request) and records each as an event in its own
//! log, so its position survives restarts and restores.
//!
//! Imports only [`crate::store`] (its database, [`crate::store::downlink`]).

use std::path::Path;

use hms_domain::HospitalId;
use hms_domain::phi::Mrn;
use hms_domain::sync::EidAssignment;

use crate::store::downlink::DownlinkDb;

/// Most assignments in one downlink answer.
pub const MAX_ASSIGNMENTS: usize = 1_000;

/// The downlink (kept in `downlink.sqlite` under the cloud's data dir,
/// [`crate::store::downlink`]).
#[derive(Debug)]
pub struct Downlink {
    db: DownlinkDb,
}

impl Downlink {
    /// Opens (creating) `downlink.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Downlink> {
        Ok(Downlink {
            db: DownlinkDb::open(data_dir)?,
        })
    }

    /// An in-memory downlink (tests, and a cloud started without a data dir).
    pub fn in_memory() -> anyhow::Result<Downlink> {
        Ok(Downlink {
            db: DownlinkDb::in_memory()?,
        })
    }

    /// Appends an assignment for `hospital`'s patient `mrn`; returns its seq.
    pub fn assign(&self, hospital: &HospitalId, mrn: &Mrn, eid: &str) -> anyhow::Result<u64> {
        self.db.append(hospital, mrn, eid)
    }

    /// Up to `limit` (at most [`MAX_ASSIGNMENTS`]) assignments of
    /// `hospital` after `after`, in order.
    pub fn after(
        &self,
        hospital: &HospitalId,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<EidAssignment>> {
        self.db.after(hospital, after, limit.min(MAX_ASSIGNMENTS))
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
