//! The store: group commit, refusal on commit failure, replay == live.

use std::sync::Arc;

use edge_node::board::Command;
use edge_node::metrics::Metrics;
use edge_node::store::{Store, StoreSettings, WriteError, WriteRequest, verify};
use hms_domain::{Actor, BedId, HospitalId, Housekeeping, UnitId};
use hms_e2e::client::Conn;
use serde_json::json;

use crate::support::TestApp;

fn req(cmd: Command) -> WriteRequest {
    WriteRequest {
        cmd,
        actor: Actor::system(),
        correlation: None,
        occurred_at: None,
    }
}

/// Store settings for hospital `h1` in `dir`.
fn settings(dir: &std::path::Path) -> StoreSettings {
    StoreSettings {
        data_dir: dir.to_owned(),
        hospital: HospitalId::new("h1").unwrap(),
        writer_queue: 1024,
        max_batch: 256,
        journal_size_limit: 1 << 20,
        history_limit: 20,
        locations: Default::default(),
        parse: Default::default(),
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(settings(dir), Arc::new(Metrics::new())).unwrap()
}

async fn commission(store: &Store, n: usize) {
    for i in 0..n {
        store
            .write(req(Command::Commission {
                bed: BedId::new(format!("B{i:03}")).unwrap(),
                unit: UnitId::new("U").unwrap(),
                attributes: hms_domain::BedAttributes {
                    gender: Default::default(),
                    isolation_capable: false,
                    telemetry: false,
                    bariatric: false,
                    level_of_care: hms_domain::LevelOfCare::Acute,
                    room: None,
                    tags: vec![],
                },
            }))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_are_observable_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(settings(dir.path()), metrics.clone()).unwrap();
    commission(&store, 50).await;
    let dirty = |i: usize| {
        req(Command::Housekeeping {
            bed: BedId::new(format!("B{i:03}")).unwrap(),
            to: Housekeeping::Dirty,
            expected_version: Some(1),
        })
    };
    // Hold the database's write lock: the writer takes the first write and
    // stalls on BEGIN IMMEDIATE, so the other 49 queue up behind it.
    let blocker = rusqlite::Connection::open(dir.path().join("edge.sqlite")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = store.submit(dirty(0)).await.unwrap();
    while store.queued() > 0 {
        tokio::task::yield_now().await;
    }
    let mut pending = vec![first];
    for i in 1..50 {
        pending.push(store.submit(dirty(i)).await.unwrap());
    }
    blocker.execute_batch("COMMIT").unwrap();
    for p in pending {
        p.committed().await.unwrap();
    }
    let text = metrics.render(&store.view());
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hms_store_commits_total "))
        .unwrap()
        .parse()
        .unwrap();
    // 50 sequential commissions; then the first write alone (or with the rest
    // if they arrived before it started) and the 49 queued ones in one commit.
    assert!((51..=52).contains(&commits), "commits = {commits}\n{text}");
    assert_eq!(store.view().census("U").unwrap().dirty, 50);
    store.close().await;
    let report = verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 100);
}

#[tokio::test]
async fn a_failed_commit_changes_nothing_and_is_reported() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let db = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    // Simulate a failing disk: every event insert aborts.
    db.execute_batch(
        "CREATE TRIGGER fail_inserts BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'simulated IO failure'); END;",
    )
    .unwrap();
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-000/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json().unwrap();
    assert_eq!(v["type"], "urn:hms:problem:unavailable");
    // Nothing changed in memory either.
    let bed = m.get("/api/v1/beds/3W-000").await.unwrap().json().unwrap();
    assert_eq!(bed["bed"]["state"], "vacant_clean");
    assert_eq!(bed["bed"]["version"], 1);
    let mut anon = Conn::connect(app.addr, None).await.unwrap();
    let h = anon.get("/health").await.unwrap().json().unwrap();
    assert_eq!(h["status"], "degraded");
    assert!(
        h["components"]["store"]["last_error"]
            .as_str()
            .unwrap()
            .contains("simulated IO failure")
    );
    // The disk recovers: writes succeed and health is ok again.
    db.execute_batch("DROP TRIGGER fail_inserts").unwrap();
    let r = m
        .post(
            "/api/v1/beds/3W-000/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        anon.get("/health").await.unwrap().json().unwrap()["status"],
        "ok"
    );
    let dir = app.stop().await;
    let report = verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test]
async fn writes_after_close_are_refused_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    commission(&store, 1).await;
    store.close().await;
    let r = store
        .write(req(Command::Housekeeping {
            bed: BedId::new("B000").unwrap(),
            to: Housekeeping::Dirty,
            expected_version: None,
        }))
        .await;
    assert!(matches!(r, Err(WriteError::Closed)), "{r:?}");
    // Reopening finds the board as committed.
    let store = open(dir.path());
    assert_eq!(store.view().bed("B000").unwrap().version, 1);
    store.close().await;
}

#[tokio::test]
async fn topology_changes_reconcile_on_restart() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-003/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let dir = app.stop().await;
    // Restart with only two beds configured: bed 2 (vacant) goes, bed 3 (occupied) stays.
    let text = crate::support::hospital_toml(&dir.path().join("data"), &[("3W", 2, 2)]);
    let file = dir.path().join("smaller.toml");
    std::fs::write(&file, text).unwrap();
    let cfg = firmware_config::load(&file).unwrap().config;
    let (app, rec) = edge_node::appliance::Appliance::open(&cfg).await.unwrap();
    assert_eq!(rec.decommissioned, 1);
    assert_eq!(rec.kept, vec!["3W-003".to_owned()]);
    assert!(app.store.view().bed("3W-002").is_none());
    assert_eq!(
        app.store.view().bed("3W-003").unwrap().state.name(),
        "occupied"
    );
    app.store.close().await;
    let report = verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.beds, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_consistent_while_the_appliance_writes() {
    let app = TestApp::start(&[("3W", 40, 2)]).await;
    let data = app.data_dir();
    let writer = {
        let mut m = app.conn(&app.manager).await;
        tokio::spawn(async move {
            for i in 0..40 {
                let r = m
                    .post(
                        "/api/v1/units/3W/placements",
                        &json!({ "encounter": format!("E{i}") }),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 201);
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        let d = data.clone();
        let report = tokio::task::spawn_blocking(move || verify::verify(&d))
            .await
            .unwrap()
            .unwrap();
        assert!(report.ok(), "{report:?}");
        checks += 1;
    }
    writer.await.unwrap();
    assert!(checks >= 1);
    let report = verify::verify(&data).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 80);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_run_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(
        StoreSettings {
            writer_queue: 16,
            max_batch: 16,
            history_limit: 3,
            ..settings(dir.path())
        },
        metrics.clone(),
    )
    .unwrap();
    commission(&store, 20).await;
    store.refresh_wal_size();
    assert!(store.wal_bytes() > 0);
    store.checkpoint().await;
    let text = metrics.render(&store.view());
    assert!(text.contains("hms_store_checkpoints_total 1"), "{text}");
    // Writes go on after a checkpoint, and history keeps only the last entries.
    for _ in 0..2 {
        let v = store.view().bed("B000").unwrap().version;
        store
            .write(req(Command::SetIsolation {
                bed: BedId::new("B000").unwrap(),
                isolation: v % 2 == 1,
                expected_version: Some(v),
            }))
            .await
            .unwrap();
    }
    let h = store.history("B000");
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].kind, "bed.isolation_changed");
    assert_eq!(h[2].kind, "bed.commissioned");
    store.close().await;
    assert!(verify::verify(dir.path()).unwrap().ok());
}
