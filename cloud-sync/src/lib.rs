//! The regional cloud of HMS Edge.
//!
//! One deployment per region receives every hospital's event log into that
//! hospital's own database, federates patients (EMPI), keeps analytics,
//! replicates to a DR peer and hosts the fleet console. It depends on
//! `hms-domain` and `cloud-sync-client`, never on `edge-node`.
//!
//! Built so far: [`store`], the per-hospital event stores with idempotent,
//! in-order, chain-verified ingest (SQLite backend and the conformance suite
//! every backend must pass). The HTTP service, enrolment, residency, DR and
//! restore come next.

pub mod store;

pub use cloud_sync_client::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS};

#[cfg(test)]
mod tests {
    use super::store::{SqliteHospitalStore, SqliteRouter, conformance};

    #[test]
    fn sqlite_backend_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h1.sqlite");
        conformance::run(&|| Box::new(SqliteHospitalStore::open(&path).expect("open")) as Box<_>);
    }

    #[test]
    fn each_hospital_has_its_own_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let router = SqliteRouter::new(dir.path());
        let h1 = hms_domain::HospitalId::new("h1").expect("id");
        let h2 = hms_domain::HospitalId::new("h2").expect("id");
        let mut a = router.open(&h1).expect("open h1");
        let b = router.open(&h2).expect("open h2");
        drop(b);
        let batch = hms_domain::sync::SyncBatch {
            hospital: h1.clone(),
            node: hms_domain::NodeId::new("edge-1").expect("id"),
            events: conformance::log("h1", 3),
        };
        super::store::ingest(&mut a, &batch).expect("ingest");
        assert!(dir.path().join("hospitals/h1.sqlite").exists());
        assert!(dir.path().join("hospitals/h2.sqlite").exists());
        let mut b = router.open(&h2).expect("reopen h2");
        use super::store::HospitalStore;
        assert_eq!(
            b.position().expect("position").seq,
            0,
            "h2 holds none of h1's events"
        );
    }
}
