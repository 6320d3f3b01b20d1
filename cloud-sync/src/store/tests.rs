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
    let router = super::postgres::PgRouter::new(admin).expect("router");
    let hospital = hms_domain::HospitalId::new(format!("conf-{}", std::process::id())).expect("id");
    router.drop_database(&hospital).expect("clean start");
    conformance::run(&|| Box::new(router.open(&hospital).expect("open")) as Box<_>);
    router.drop_database(&hospital).expect("clean up");
}

#[test]
fn a_pooled_postgres_connection_that_died_is_replaced() {
    use super::HospitalStore;
    let Some(admin) = pg_admin() else { return };
    let router = super::postgres::PgRouter::new(&admin).expect("router");
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

/// Whether the session of `target` is encrypted, as the server sees it.
fn encrypted(target: &super::pg_tls::PgTarget) -> Result<bool, String> {
    let mut c = target
        .connect()
        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
    let row = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(|e| format!("{e:#}"))?;
    Ok(row.get(0))
}

#[test]
fn postgres_sessions_use_tls_as_sslmode_says_and_never_fall_back_to_plain() {
    use super::pg_tls::PgTarget;
    let Some(admin) = pg_admin() else { return };
    let with = |extra: &str| PgTarget::parse(&format!("{admin} {extra}")).expect("parses");
    assert_eq!(encrypted(&with("sslmode=disable")), Ok(false));
    let server_tls: String = with("sslmode=disable")
        .connect()
        .expect("connect")
        .query_one("SHOW ssl", &[])
        .expect("show ssl")
        .get(0);
    match server_tls.as_str() {
        // A server with TLS: require and prefer encrypt.
        "on" => {
            assert_eq!(encrypted(&with("sslmode=require")), Ok(true));
            assert_eq!(encrypted(&with("sslmode=prefer")), Ok(true));
            assert_eq!(encrypted(&with("")), Ok(true), "prefer is the default");
        }
        // A server without: require is refused, clearly; prefer goes plain.
        _ => {
            let e = encrypted(&with("sslmode=require")).expect_err("no TLS, no session");
            assert!(e.contains("server does not support TLS"), "{e}");
            assert_eq!(encrypted(&with("sslmode=prefer")), Ok(false));
        }
    }
    // A CA that did not sign the server's certificate: never a session.
    let dir = tempfile::tempdir().expect("tempdir");
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let ca = dir.path().join("stranger.pem");
    std::fs::write(&ca, stranger.cert.pem()).expect("write");
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = encrypted(&with(&format!(
            "sslmode={mode} sslrootcert={}",
            ca.display()
        )))
        .expect_err(mode);
        assert!(
            e.contains("invalid peer certificate") || e.contains("server does not support TLS"),
            "{mode}: {e}"
        );
    }
    // The router says which mode failed.
    let router = super::postgres::PgRouter::new(format!(
        "{admin} sslmode=verify-full sslrootcert={}",
        ca.display()
    ))
    .expect("router");
    let hospital = hms_domain::HospitalId::new("tls-refused").expect("id");
    let e = format!("{:#}", router.open(&hospital).expect_err("refused"));
    assert!(e.contains("sslmode=verify-full"), "{e}");
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

/// Ids of 59, 60, 60 and 63 bytes that share their first 59: with plain
/// `hms_{id}` names PostgreSQL would cut all four to the same 63 bytes.
fn sharing_59(tag: &str) -> [hms_domain::HospitalId; 4] {
    let base = format!("{:x<59}", format!("{tag}-{}-", std::process::id()));
    assert_eq!(base.len(), 59);
    [
        base.clone(),
        format!("{base}a"),
        format!("{base}b"),
        format!("{base}bcde"),
    ]
    .map(|s| hms_domain::HospitalId::new(s).expect("id"))
}

#[test]
fn database_names_fit_postgres_identifiers_and_stay_apart_for_long_ids() {
    use super::postgres::{MAX_IDENTIFIER_BYTES, database_name};
    let id = |s: &str| hms_domain::HospitalId::new(s).expect("id");
    // Short ids keep the names their databases already have.
    assert_eq!(database_name(&id("h1")), "hms_h1");
    let ids = sharing_59("names");
    assert_eq!(
        database_name(&ids[0]),
        format!("hms_{}", ids[0]),
        "59 bytes still fit"
    );
    let longest = id(&"z".repeat(hms_domain::ids::MAX_ID_LEN));
    let names: Vec<String> = ids.iter().chain([&longest]).map(database_name).collect();
    for n in &names {
        assert!(n.len() <= MAX_IDENTIFIER_BYTES, "{n}: {} bytes", n.len());
        assert!(n.starts_with("hms_"), "{n}");
    }
    let distinct: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    // A shortened name keeps a readable prefix and is stable.
    assert!(
        names[1].starts_with(&format!("hms_{}+", &ids[1].as_str()[..26])),
        "{}",
        names[1]
    );
    assert_eq!(database_name(&ids[1]), names[1]);
}

#[test]
fn hospitals_whose_ids_share_59_bytes_keep_their_events_apart_on_postgres() {
    use super::HospitalStore;
    let Some(admin) = pg_admin() else { return };
    let router = super::postgres::PgRouter::new(&admin).expect("router");
    let ids = sharing_59("apart");
    for h in &ids {
        router.drop_database(h).expect("clean start");
    }
    // Each hospital ships a log of its own length.
    for (i, h) in ids.iter().enumerate() {
        let batch = hms_domain::sync::SyncBatch {
            hospital: h.clone(),
            node: hms_domain::NodeId::new("edge-1").expect("id"),
            events: conformance::log(h.as_str(), 3 + i as u64),
        };
        let mut s = router.open(h).expect("open");
        super::ingest(&mut s, &batch).expect("ingest");
    }
    for (i, h) in ids.iter().enumerate() {
        let mut s = router.open(h).expect("reopen");
        assert_eq!(s.position().expect("position").seq, 3 + i as u64, "{h}");
        let events = s.events(1, 100).expect("events");
        assert_eq!(events, conformance::log(h.as_str(), 3 + i as u64), "{h}");
    }
    // Four databases, under exactly the names given (none cut short).
    let names: Vec<String> = ids.iter().map(super::postgres::database_name).collect();
    let mut a = postgres::Client::connect(&admin, postgres::NoTls).expect("admin");
    let found: Vec<String> = a
        .query(
            "SELECT datname::text FROM pg_database WHERE datname::text = ANY($1) ORDER BY 1",
            &[&names],
        )
        .expect("list")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want = names.clone();
    want.sort();
    assert_eq!(found, want);
    for h in &ids {
        router.drop_database(h).expect("clean up");
    }
}

/// Waits (up to 10 s) until `held` says `want`.
fn lease_becomes(held: &tokio::sync::watch::Receiver<bool>, want: bool) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while *held.borrow() != want {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the lease never became {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn one_instance_holds_a_lease_and_another_takes_it_over_when_its_session_ends() {
    use super::lease::{Lease, key};
    let Some(admin) = pg_admin() else { return };
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let name = format!("test-lease-{}", std::process::id());
    let retry = std::time::Duration::from_millis(200);
    let db = format!("hms+lease+{}", std::process::id());
    let a = Lease::keep(target.clone(), &db, &name, retry).expect("a");
    lease_becomes(&a.held(), true);
    let b = Lease::keep(target.clone(), &db, &name, retry).expect("b");
    // The same name in another database is another lease.
    let elsewhere = format!("{db}+other");
    let apart = Lease::keep(target.clone(), &elsewhere, &name, retry).expect("apart");
    lease_becomes(&apart.held(), true);
    // Another name is another lease.
    let other = Lease::keep(target.clone(), &db, &format!("{name}-other"), retry).expect("other");
    lease_becomes(&other.held(), true);
    std::thread::sleep(retry * 4);
    assert!(*a.held().borrow() && !*b.held().borrow(), "one holder only");

    // The holder's session dies (its instance killed, say): the server
    // releases the lock, the old holder says so, the other takes it.
    let mut sql = postgres::Client::connect(&admin, postgres::NoTls).expect("admin");
    let killed = sql
        .query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = $2)
               AND (l.classid::bigint << 32 | l.objid::bigint) = $1",
            &[&key(&name), &db],
        )
        .expect("terminate");
    assert_eq!(killed.len(), 1, "one session held the lock");
    lease_becomes(&a.held(), false);
    let took = lease_becomes(&b.held(), true);
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    std::thread::sleep(retry * 4);
    assert!(!*a.held().borrow(), "the old holder does not take it back");

    // Released on drop: the first gets it again.
    drop(b);
    lease_becomes(&a.held(), true);
    drop((a, other, apart));
    let mut sql = postgres::Client::connect(&admin, postgres::NoTls).expect("admin");
    for d in [db, elsewhere] {
        sql.batch_execute(&format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"))
            .expect("drop");
    }
}

/// A registry on PostgreSQL in a database of its own (dropped first, so a
/// crashed run leaves nothing behind), with its name; none when
/// PostgreSQL cannot be reached (a failure under `CI=true`).
fn pg_registry(tag: &str) -> Option<(super::registry::RegistryDb, String, String)> {
    let admin = pg_admin()?;
    let db = format!("hms+registry-{tag}-{}", std::process::id());
    drop_pg_database(&admin, &db);
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let reg = super::registry::RegistryDb::open_postgres(target, &db).expect("open");
    Some((reg, db, admin))
}

fn drop_pg_database(admin: &str, db: &str) {
    let mut sql = postgres::Client::connect(admin, postgres::NoTls).expect("admin");
    sql.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .expect("drop");
}

#[test]
fn the_registry_on_postgres_keeps_tokens_enrolments_and_command_ids_as_on_sqlite() {
    use super::registry::{
        AuditEntry, Enrolled, EnrolmentRow, NewOperatorToken, Revoked, Scopes, TokenError,
    };
    let Some((db, name, admin)) = pg_registry("ops") else {
        return;
    };
    assert!(db.is_shared());
    let new = |name| NewOperatorToken {
        name,
        scopes: Scopes::parse(["read"]).expect("scopes"),
        expires_ms: None,
        by: "cli:test",
    };
    // Tokens: hashed, unique among live ones, revocable, expiring.
    let t = db.create_operator_token(&new("ops-1"), 5).expect("token");
    assert_eq!(db.token_name(&t).expect("lookup").as_deref(), Some("ops-1"));
    assert!(matches!(
        db.create_operator_token(&new("ops-1"), 6),
        Err(TokenError::Duplicate(_))
    ));
    assert!(matches!(
        db.create_operator_token(&new("bad name"), 6),
        Err(TokenError::BadName)
    ));
    assert_eq!(
        db.revoke_token("ops-1", 7, "cli:test").expect("revoke"),
        Revoked::Revoked(1)
    );
    assert_eq!(
        db.revoke_token("ops-1", 7, "cli:test").expect("revoke"),
        Revoked::Already
    );
    assert_eq!(
        db.revoke_token("nobody", 7, "cli:test").expect("revoke"),
        Revoked::Unknown
    );
    assert_eq!(db.token_name(&t).expect("lookup"), None);
    let temp = db
        .create_operator_token(
            &NewOperatorToken {
                expires_ms: Some(100),
                ..new("temp")
            },
            10,
        )
        .expect("temp");
    assert!(db.operator(&temp, 99).expect("lookup").is_some());
    assert!(db.operator(&temp, 100).expect("lookup").is_none());
    let rows = db.tokens().expect("tokens");
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.revoked_ms))
            .collect::<Vec<_>>(),
        [("ops-1", Some(7)), ("temp", None)]
    );
    // Enrolments: new, unchanged, refused without replace, replaced.
    let row = |node: &str, key: u8| EnrolmentRow {
        hospital: "h1".parse().expect("id"),
        region: "eu-west".parse().expect("id"),
        node: node.parse().expect("id"),
        public_key: vec![key; 32],
    };
    let put = |e: &EnrolmentRow, replace| {
        db.put_enrolment_checked(e, replace, "cli:test", 20)
            .expect("enrol")
    };
    assert_eq!(put(&row("edge-1", 1), false), Enrolled::New);
    assert_eq!(put(&row("edge-1", 1), false), Enrolled::Unchanged);
    assert!(matches!(
        put(&row("edge-2", 2), false),
        Enrolled::Refused { .. }
    ));
    assert!(matches!(
        put(&row("edge-2", 2), true),
        Enrolled::Replaced { .. }
    ));
    assert_eq!(db.enrolments().expect("enrolments"), [row("edge-2", 2)]);
    assert_eq!(
        db.enrolment(&"h1".parse().expect("id")).expect("one"),
        Some(row("edge-2", 2))
    );
    // Fleet command ids: at least the time, always above the last.
    let (h, n) = ("h1".parse().expect("id"), "edge-2".parse().expect("id"));
    let next = |db: &super::registry::RegistryDb, now| {
        db.next_fleet_command_id(&h, &n, "operator:ops", "command ping", now)
            .expect("id")
    };
    assert_eq!(next(&db, 1_000), 1_000);
    assert_eq!(next(&db, 1_000), 1_001);
    assert_eq!(next(&db, 500), 1_002);
    // Primaries, ingest times, the audit.
    let region = "eu-central".parse().expect("id");
    db.put_primary(&region, &[7; 32]).expect("primary");
    assert_eq!(db.primaries().expect("primaries")[&region], vec![7; 32]);
    let hospital = "h1".parse().expect("id");
    db.record_ingest(&hospital, &"eu-west".parse().expect("id"), 50)
        .expect("ingest");
    assert_eq!(
        db.hospital_region(&hospital)
            .expect("region")
            .map(|r| r.to_string()),
        Some("eu-west".to_owned())
    );
    assert_eq!(
        db.ingest_status().expect("status")[&hospital].last_ingest_ms,
        50
    );
    db.audit(&AuditEntry {
        at_ms: 60,
        actor: "cli:test",
        action: "note",
        subject: "h1",
        detail: "",
    })
    .expect("audit");
    let actions: Vec<String> = db
        .audit_log()
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        [
            "token_created",
            "token_revoked",
            "token_created",
            "enrolment_created",
            "enrolment_replaced",
            "fleet_command",
            "fleet_command",
            "fleet_command",
            "note"
        ]
    );
    // Another instance opening the same database sees it all, and the
    // command ids go on above the last.
    drop(db);
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let again = super::registry::RegistryDb::open_postgres(target, &name).expect("reopen");
    assert_eq!(next(&again, 900), 1_003);
    assert!(again.operator(&temp, 50).expect("lookup").is_some());
    drop(again);
    drop_pg_database(&admin, &name);
}

#[test]
fn instances_opening_an_empty_registry_database_together_migrate_it_once() {
    let Some(admin) = pg_admin() else { return };
    let name = format!("hms+registry-race-{}", std::process::id());
    drop_pg_database(&admin, &name);
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (target, name, start) = (target.clone(), name.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                super::registry::RegistryDb::open_postgres(target, &name)
            })
        })
        .collect();
    let dbs: Vec<_> = opened
        .into_iter()
        .map(|t| t.join().expect("thread").expect("every instance opens"))
        .collect();
    let mut sql = super::pg_tls::PgTarget::parse(&admin)
        .expect("target")
        .with_dbname(&name)
        .connect()
        .expect("connect");
    let versions: Vec<i64> = sql
        .query(
            "SELECT version FROM registry_migrations ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i64> = (1..=super::registry::pg::VERSION).collect();
    assert_eq!(versions, want, "each step applied once");
    // A database newer than this binary is refused.
    sql.execute(
        "INSERT INTO registry_migrations(version, applied_ms) VALUES ($1, 0)",
        &[&(super::registry::pg::VERSION + 1)],
    )
    .expect("bump");
    let e = super::registry::RegistryDb::open_postgres(target, &name).expect_err("newer");
    assert!(
        format!("{e:#}").contains("newer than this hms-cloud knows"),
        "{e:#}"
    );
    drop((dbs, sql));
    drop_pg_database(&admin, &name);
}

#[test]
fn console_sessions_on_postgres_are_shared_and_end_with_their_token() {
    use super::registry::{NewOperatorToken, RegistryDb, Scopes};
    let Some((a, name, admin)) = pg_registry("sessions") else {
        return;
    };
    // Another instance on the same database.
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let b = RegistryDb::open_postgres(target, &name).expect("b");
    let token = a
        .create_operator_token(
            &NewOperatorToken {
                name: "ops",
                scopes: Scopes::ADMIN,
                expires_ms: None,
                by: "cli:test",
            },
            1,
        )
        .expect("token");
    let (idle, touch) = (1_000, 100);
    let id = [7u8; 32];
    a.open_console_session(&id, &token, 10, idle, 100)
        .expect("open");
    // Opened through one instance, good at the other.
    let op = b.console_operator(&id, 20, idle, touch).expect("look-up");
    assert_eq!(op.map(|o| o.name).as_deref(), Some("ops"));
    // Used at 500 (written: older than `touch`): alive until 1 500.
    assert!(
        b.console_operator(&id, 500, idle, touch)
            .expect("use")
            .is_some()
    );
    assert!(
        a.console_operator(&id, 1_499, idle, touch)
            .expect("use")
            .is_some()
    );
    // The oldest goes beyond the cap.
    for k in 0..3u8 {
        a.open_console_session(&[k; 32], &token, 1_500 + i64::from(k), idle, 3)
            .expect("open");
    }
    assert!(
        a.console_operator(&id, 1_510, idle, touch)
            .expect("look-up")
            .is_none()
    );
    assert!(
        a.console_operator(&[2; 32], 1_510, idle, touch)
            .expect("look-up")
            .is_some()
    );
    // Revoked: every session of the token ends, at every instance.
    a.revoke_token("ops", 1_600, "cli:test").expect("revoke");
    assert!(
        b.console_operator(&[2; 32], 1_601, idle, touch)
            .expect("look-up")
            .is_none()
    );
    drop((a, b));
    drop_pg_database(&admin, &name);
}

/// Region failover's records, the same on both backends: standby reports
/// (the head never goes back), a promotion once (audited), fences set once
/// and lifted once (audited).
fn takeover_records_behave(db: &super::registry::RegistryDb) {
    use super::registry::EnrolmentRow;
    let h1: hms_domain::HospitalId = "h1".parse().expect("id");
    let row = |key: u8| EnrolmentRow {
        hospital: h1.clone(),
        region: "eu-west".parse().expect("id"),
        node: "edge-1".parse().expect("id"),
        public_key: vec![key; 32],
    };
    assert!(db.standbys().expect("none").is_empty());
    assert!(db.standby(&h1).expect("none").is_none());
    assert!(
        !db.promote(&h1, 5, "cli:test", "x")
            .expect("nothing to promote")
    );
    db.put_standby(&row(1), 10, 100).expect("report");
    db.put_standby(&row(2), 7, 200)
        .expect("re-keyed, an older head");
    let s = db.standby(&h1).expect("read").expect("row");
    assert_eq!(
        (
            s.enrolment.public_key[0],
            s.head_seq,
            s.updated_ms,
            s.promoted_ms
        ),
        (2, 10, 200, None),
        "the key follows, the head never goes back"
    );
    assert!(
        db.promote(&h1, 300, "cli:test", "holds seq 10")
            .expect("promote")
    );
    assert!(!db.promote(&h1, 301, "cli:test", "again").expect("once"));
    db.put_standby(&row(2), 12, 400).expect("report after");
    let all = db.standbys().expect("read");
    assert_eq!(
        (all.len(), all[0].promoted_ms, all[0].head_seq),
        (1, Some(300), 12)
    );
    assert!(db.fences().expect("none").is_empty());
    assert!(
        db.fence(&h1, 500, "dr:replicator", "promoted there")
            .expect("fence")
    );
    assert!(!db.fence(&h1, 501, "dr:replicator", "again").expect("once"));
    let f = db.fences().expect("read");
    assert_eq!(
        (f.len(), f[0].since_ms, f[0].detail.as_str()),
        (1, 500, "promoted there")
    );
    assert!(db.unfence(&h1, 600, "cli:ops").expect("unfence"));
    assert!(!db.unfence(&h1, 601, "cli:ops").expect("not fenced"));
    assert!(db.fences().expect("read").is_empty());
    let audit: Vec<(String, String, String)> = db
        .audit_log()
        .expect("audit")
        .into_iter()
        .map(|a| (a.action, a.actor, a.subject))
        .collect();
    let want = |a: &str, b: &str| (a.to_owned(), b.to_owned(), "h1".to_owned());
    assert_eq!(
        audit,
        vec![
            want("promote", "cli:test"),
            want("fence", "dr:replicator"),
            want("unfence", "cli:ops"),
        ]
    );
}

#[test]
fn takeover_records_on_sqlite() {
    takeover_records_behave(&super::registry::RegistryDb::in_memory().expect("db"));
}

#[test]
fn takeover_records_on_postgres_as_on_sqlite() {
    let Some((db, name, admin)) = pg_registry("takeover") else {
        return;
    };
    takeover_records_behave(&db);
    drop(db);
    drop_pg_database(&admin, &name);
}

/// Instances opening the region's EMPI tables at the same moment (on a
/// registry already there) migrate them once; a newer version is refused.
#[test]
fn instances_opening_the_regions_empi_together_migrate_it_once() {
    use super::empi::{EmpiDb, PG_MIGRATIONS};
    let Some(admin) = pg_admin() else { return };
    let name = format!("hms+empi-race-{}", std::process::id());
    drop_pg_database(&admin, &name);
    let target = super::pg_tls::PgTarget::parse(&admin).expect("target");
    let open = |target: super::pg_tls::PgTarget, name: &str| {
        std::sync::Arc::new(
            super::registry::RegistryDb::open_postgres(target, name).expect("registry"),
        )
    };
    drop(open(target.clone(), &name));
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (target, name, start) = (target.clone(), name.clone(), start.clone());
            std::thread::spawn(move || {
                let db = open(target, &name);
                start.wait();
                EmpiDb::shared(db)
            })
        })
        .collect();
    for t in opened {
        t.join().expect("thread").expect("every instance opens");
    }
    let mut sql = super::pg_tls::PgTarget::parse(&admin)
        .expect("target")
        .with_dbname(&name)
        .connect()
        .expect("connect");
    let versions: Vec<i32> = sql
        .query("SELECT version FROM empi_migrations ORDER BY version", &[])
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i32> = (1..=PG_MIGRATIONS.len() as i32).collect();
    assert_eq!(versions, want, "each step applied once");
    sql.execute(
        "INSERT INTO empi_migrations(version) VALUES ($1)",
        &[&(PG_MIGRATIONS.len() as i32 + 1)],
    )
    .expect("newer");
    let e = EmpiDb::shared(open(target, &name)).expect_err("newer refused");
    assert!(
        format!("{e:#}").contains("newer than this hms-cloud"),
        "{e:#}"
    );
    drop(sql);
    drop_pg_database(&admin, &name);
}
