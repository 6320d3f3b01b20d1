//! Tests of the per-hospital stores: the conformance suite on SQLite and
//! PostgreSQL, the PostgreSQL pool, a database per hospital, and
//! `synchronous=FULL` on every kind of writing connection the cloud opens.

use super::{SqliteHospitalStore, SqliteRouter, conformance};

#[test]
fn sqlite_backend_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h1.sqlite");
    conformance::run(&|| Box::new(SqliteHospitalStore::open(&path).expect("open")) as Box<_>);
}

/// The PostgreSQL server for tests: `HMS_TEST_PG` (libpq-style), by
/// default the local server with trust authentication.
fn pg_admin() -> Option<String> {
    let conn = std::env::var("HMS_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into());
    match postgres::Client::connect(&conn, postgres::NoTls) {
        Ok(_) => Some(conn),
        Err(e) => {
            hms_e2e::skip::skip(
                "PostgreSQL store tests",
                &format!("PostgreSQL unreachable ({conn}): {e}; set HMS_TEST_PG or start it"),
            );
            None
        }
    }
}

#[test]
fn postgres_backend_passes_the_conformance_suite() {
    let Some(admin) = pg_admin() else { return };
    let router = super::postgres::PgRouter::new(admin);
    let hospital = hms_domain::HospitalId::new(format!("conf-{}", std::process::id())).expect("id");
    router.drop_database(&hospital).expect("clean start");
    conformance::run(&|| Box::new(router.open(&hospital).expect("open")) as Box<_>);
    router.drop_database(&hospital).expect("clean up");
}

#[test]
fn a_pooled_postgres_connection_that_died_is_replaced() {
    use super::HospitalStore;
    let Some(admin) = pg_admin() else { return };
    let router = super::postgres::PgRouter::new(admin.clone());
    let hospital = hms_domain::HospitalId::new(format!("pool-{}", std::process::id())).expect("id");
    router.drop_database(&hospital).expect("clean start");
    let batch = hms_domain::sync::SyncBatch {
        hospital: hospital.clone(),
        node: hms_domain::NodeId::new("edge-1").expect("id"),
        events: conformance::log(hospital.as_str(), 5),
    };
    let mut s = router.open(&hospital).expect("open");
    super::ingest(&mut s, &batch).expect("ingest");
    drop(s); // back to the pool
    // The server ends every session of that database.
    let mut a = postgres::Client::connect(&admin, postgres::NoTls).expect("admin");
    a.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        &[&super::postgres::database_name(&hospital)],
    )
    .expect("terminate");
    let mut s = router.open(&hospital).expect("reopen");
    assert_eq!(s.position().expect("position").seq, 5);
    drop(s);
    router.drop_database(&hospital).expect("clean up");
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
    super::ingest(&mut a, &batch).expect("ingest");
    assert!(dir.path().join("hospitals/h1.sqlite").exists());
    assert!(dir.path().join("hospitals/h2.sqlite").exists());
    let mut b = router.open(&h2).expect("reopen h2");
    use super::HospitalStore;
    assert_eq!(
        b.position().expect("position").seq,
        0,
        "h2 holds none of h1's events"
    );
}

#[test]
fn every_writing_sqlite_connection_of_the_cloud_commits_with_synchronous_full() {
    use super::downlink::DownlinkDb;
    use super::empi::EmpiDb;
    use super::registry::RegistryDb;
    const FULL: i64 = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = |(sync, mode): (i64, String)| (sync, mode.to_lowercase());
    let hospital = SqliteRouter::new(dir.path())
        .open(&hms_domain::HospitalId::new("h1").expect("id"))
        .expect("hospital store");
    let empi = EmpiDb::open(dir.path()).expect("empi");
    let training = EmpiDb::open_existing(&super::empi::path(dir.path())).expect("empi train");
    for (what, durability) in [
        ("a hospital store", hospital.durability()),
        (
            "registry.sqlite",
            RegistryDb::open(dir.path()).expect("registry").durability(),
        ),
        (
            "downlink.sqlite",
            DownlinkDb::open(dir.path()).expect("downlink").durability(),
        ),
        ("empi.sqlite", empi.durability()),
        ("empi.sqlite (hms-cloud empi train)", training.durability()),
    ] {
        assert_eq!(wal(durability), (FULL, "wal".to_owned()), "{what}");
    }
    for (what, (sync, _)) in [
        (
            "an in-memory registry",
            RegistryDb::in_memory().expect("registry").durability(),
        ),
        (
            "an in-memory downlink",
            DownlinkDb::in_memory().expect("downlink").durability(),
        ),
    ] {
        assert_eq!(sync, FULL, "{what}");
    }
}
