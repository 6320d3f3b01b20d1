//! The downlink: what the regional cloud hands back to each hospital's
//! appliance, in order. Today that is the enterprise ids (EIDs) the regional
//! EMPI assigns to a hospital's patients.
//!
//! Assignments are appended per hospital with a dense `seq`; an appliance
//! reads them after the last `seq` it applied (`GET /sync/v1/downlink?after=N`,
//! signed like every sync request) and records each as an event in its own
//! log, so its position survives restarts and restores.
//!
//! With several instances of a region on PostgreSQL the assignments live in
//! the region's database, so an appliance reads its EIDs from any instance.
//!
//! Imports only [`crate::store`] (its database, [`crate::store::downlink`],
//! or the region's, [`crate::store::registry`]).

use std::path::Path;
use std::sync::Arc;

use hms_domain::HospitalId;
use hms_domain::phi::Mrn;
use hms_domain::sync::EidAssignment;

use crate::store::downlink::DownlinkDb;
use crate::store::registry::RegistryDb;

/// Most assignments in one downlink answer.
pub const MAX_ASSIGNMENTS: usize = 1_000;

/// The downlink: `downlink.sqlite` under the cloud's data dir
/// ([`crate::store::downlink`]), or, with several instances on PostgreSQL,
/// the region's database ([`Downlink::shared`]).
#[derive(Debug)]
pub struct Downlink {
    db: Place,
}

/// Where the assignments are kept.
#[derive(Debug)]
enum Place {
    Local(DownlinkDb),
    Shared(Arc<RegistryDb>),
}

impl Downlink {
    /// Opens (creating) `downlink.sqlite` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Downlink> {
        Ok(Downlink {
            db: Place::Local(DownlinkDb::open(data_dir)?),
        })
    }

    /// The downlink of the region whose shared registry is `db`: every
    /// instance answers every appliance's downlink read.
    pub fn shared(db: Arc<RegistryDb>) -> Downlink {
        Downlink {
            db: Place::Shared(db),
        }
    }

    /// An in-memory downlink (tests, and a cloud started without a data dir).
    pub fn in_memory() -> anyhow::Result<Downlink> {
        Ok(Downlink {
            db: Place::Local(DownlinkDb::in_memory()?),
        })
    }

    /// Appends an assignment for `hospital`'s patient `mrn`; returns its seq.
    pub fn assign(&self, hospital: &HospitalId, mrn: &Mrn, eid: &str) -> anyhow::Result<u64> {
        match &self.db {
            Place::Local(db) => db.append(hospital, mrn, eid),
            Place::Shared(db) => db.append_assignment(hospital, mrn, eid),
        }
    }

    /// Up to `limit` (at most [`MAX_ASSIGNMENTS`]) assignments of
    /// `hospital` after `after`, in order.
    pub fn after(
        &self,
        hospital: &HospitalId,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<EidAssignment>> {
        let limit = limit.min(MAX_ASSIGNMENTS);
        match &self.db {
            Place::Local(db) => db.after(hospital, after, limit),
            Place::Shared(db) => db.assignments_after(hospital, after, limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_dense_per_hospital_and_read_after_a_position() {
        let d = Downlink::in_memory().expect("open");
        dense_per_hospital(&d, &d);
    }

    /// Two instances of a region on one PostgreSQL: what one assigns the
    /// other reads, and appends from both at once stay dense.
    #[test]
    fn the_shared_downlink_is_the_regions_and_stays_dense() {
        let Some(region) = crate::testkit::RegionDb::fresh("downlink") else {
            return;
        };
        let open = || Downlink::shared(region.open());
        let (a, b) = (open(), open());
        dense_per_hospital(&a, &b);
        let h3 = HospitalId::new("h3").expect("id");
        std::thread::scope(|s| {
            for d in [&a, &b] {
                let h3 = &h3;
                s.spawn(move || {
                    for i in 0..25 {
                        d.assign(h3, &Mrn::new(format!("M{i}")), "E9")
                            .expect("assign");
                    }
                });
            }
        });
        let seqs: Vec<u64> = a
            .after(&h3, 0, 100)
            .expect("read")
            .iter()
            .map(|x| x.seq)
            .collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }

    /// Assigns through `d`, reads through `r`.
    fn dense_per_hospital(d: &Downlink, r: &Downlink) {
        let (h1, h2) = (
            HospitalId::new("h1").expect("id"),
            HospitalId::new("h2").expect("id"),
        );
        assert_eq!(d.assign(&h1, &Mrn::new("M1"), "E1").expect("assign"), 1);
        assert_eq!(d.assign(&h2, &Mrn::new("X9"), "E1").expect("assign"), 1);
        assert_eq!(d.assign(&h1, &Mrn::new("M2"), "E2").expect("assign"), 2);
        let all = r.after(&h1, 0, 10).expect("read");
        assert_eq!(
            all.iter()
                .map(|a| (a.seq, a.eid.as_str()))
                .collect::<Vec<_>>(),
            [(1, "E1"), (2, "E2")]
        );
        assert_eq!(all[1].mrn.expose(), "M2");
        assert_eq!(r.after(&h1, 1, 10).expect("read").len(), 1);
        assert!(r.after(&h1, 2, 10).expect("read").is_empty());
        assert_eq!(
            r.after(&h2, 0, 10).expect("read").len(),
            1,
            "hospitals apart"
        );
    }
}
