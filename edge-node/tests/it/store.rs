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
pub(crate) fn settings(dir: &std::path::Path) -> StoreSettings {
    StoreSettings {
        data_dir: dir.to_owned(),
        hospital: HospitalId::new("h1").unwrap(),
        writer_queue: 1024,
        max_batch: 256,
        journal_size_limit: 1 << 20,
        history_limit: 20,
        locations: Default::default(),
        or_locations: Default::default(),
        parse: Default::default(),
        clock: Default::default(),
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(settings(dir), Arc::new(Metrics::new())).unwrap()
}

pub(crate) async fn commission(store: &Store, n: usize) {
    for i in 0..n {
        commission_named(store, &format!("B{i:03}")).await;
    }
}

/// Commissions one acute bed of unit `U`.
async fn commission_named(store: &Store, bed: &str) {
    store
        .write(req(Command::Commission {
            bed: BedId::new(bed).unwrap(),
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

fn commits(metrics: &Metrics, store: &Store) -> u64 {
    metrics
        .render(&store.view())
        .lines()
        .find_map(|l| l.strip_prefix("hms_store_commits_total "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Look-ups' audit events go to the writer in groups: many events, one
/// commit; and the queue's task hands over what it holds and ends once the
/// last sender is gone, before the store closes.
#[tokio::test(start_paused = true)]
async fn the_audit_queue_commits_a_burst_of_look_ups_in_one_group_and_loses_none_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(settings(dir.path()), metrics.clone()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (queue, task) =
        edge_node::audit::AuditQueue::new(store.clone(), metrics.clone(), shutdown.clone());
    let task = tokio::spawn(task);
    let search = |i: u32| WriteRequest {
        cmd: Command::RecordPatientSearch {
            role: "nurse".into(),
            by: "mrn".into(),
            fields: vec![],
            results: i,
        },
        actor: Actor {
            kind: hms_domain::ActorKind::User,
            id: format!("nurse-{i}"),
        },
        correlation: Some(format!("req-{i}")),
        occurred_at: None,
    };
    let before = commits(&metrics, &store);
    for i in 0..300 {
        queue.record(search(i)).await.unwrap();
    }
    // Within the window, more than a group's worth: two groups at most.
    while store.last_seq() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(commits(&metrics, &store) - before, 1);
    // At shutdown, what is queued goes at once, and the task ends with the
    // last sender.
    shutdown.cancel();
    for i in 300..310 {
        queue.record(search(i)).await.unwrap();
    }
    drop(queue);
    task.await.unwrap();
    assert_eq!(store.last_seq(), 310);
    store.close().await;
    let report = verify::verify(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 310);
    let conn = rusqlite::Connection::open(dir.path().join("edge.sqlite")).unwrap();
    let (kinds, actors): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT actor_id) FROM events \
             WHERE kind = 'audit.patients_searched' AND correlation LIKE 'req-%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((kinds, actors), (310, 310));
    assert_eq!(metrics.audit_failures.get(), 0);
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
    assert_eq!(
        anon.get("/health").await.unwrap().json().unwrap(),
        json!({ "status": "degraded" })
    );
    let h = m.get("/health").await.unwrap().json().unwrap();
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
    // 40 beds, 40 placements, and the creation of the test's four tokens.
    assert_eq!(report.events, 84);
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
    // The checkpointer copies what is committed, beside the writer.
    let c = store.checkpoint().await.unwrap();
    assert!(c.log > 0 && c.copied == c.log, "{c:?}");
    let text = metrics.render(&store.view());
    assert!(text.contains("hms_store_checkpoints_total 1"), "{text}");
    // The writer finishes it; its next commits overwrite the WAL from the
    // beginning instead of growing the file.
    let r = store.restart_wal().await.unwrap();
    assert_eq!(r.copied, r.log, "{r:?}");
    let wal = dir.path().join("edge.sqlite-wal");
    let size = std::fs::metadata(&wal).unwrap().len();
    commission_named(&store, "C001").await;
    commission_named(&store, "C002").await;
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        size,
        "the WAL restarted and was overwritten in place"
    );
    let after = store.checkpoint().await.unwrap();
    assert!(
        after.log > 0 && after.log < c.log,
        "a new, short WAL: {after:?} after {c:?}"
    );
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

#[tokio::test]
async fn scheduled_backups_keep_the_newest_and_each_restores() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    commission(&store, 5).await;
    let snaps = dir.path().join("snapshots");
    let mut made = vec![];
    for round in 0..3 {
        // One more bed per round, so each snapshot differs from the one before.
        commission_named(&store, &format!("X{round}")).await;
        let (b, removed) = edge_node::store::backup::take_scheduled(dir.path(), &snaps, 2).unwrap();
        made.push(b.file.clone());
        assert_eq!(
            removed.len(),
            usize::from(round == 2),
            "round {round}: {removed:?}"
        );
        if round == 2 {
            assert_eq!(removed, vec![made[0].clone()], "the oldest goes first");
        }
    }
    let mut left: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, made[1..].to_vec());
    // The newest holds every event so far and restores into a verified store.
    let target = dir.path().join("restored");
    let report = edge_node::store::backup::restore(&made[2], &target).unwrap();
    assert!(report.ok());
    assert_eq!(report.events, store.last_seq());
    store.close().await;
}

/// The board as comparable text.
fn board_text(store: &Store) -> Vec<String> {
    store.view().beds().map(|b| format!("{b:?}")).collect()
}

/// A mix of events: assignments and releases, HL7 patients, a parked message.
async fn traffic(store: &Store, round: usize) {
    for i in 0..4 {
        let bed = BedId::new(format!("B{:03}", round * 4 + i)).unwrap();
        let enc = hms_domain::EncounterId::new(format!("E{round}-{i}")).unwrap();
        store
            .write(req(Command::Assign {
                bed: bed.clone(),
                encounter: enc,
                patient: None,
                expected_version: None,
            }))
            .await
            .unwrap();
        if i % 2 == 0 {
            store
                .write(req(Command::Release {
                    bed,
                    expected_version: None,
                }))
                .await
                .unwrap();
        }
    }
    for i in 0..3 {
        let raw = format!(
            "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|R{round}-{i}|P|2.5.1\r\
             EVN|A28|20261127101500\rPID|1||M{round}-{i}^^^TH^MR||Doe^Jane||19700102|F\r"
        );
        store
            .hl7(edge_node::store::Hl7Request {
                raw: raw.into_bytes(),
            })
            .await
            .unwrap();
    }
    let parked = format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|P{round}|P|2.5.1\r\
         EVN|A01|20261127101500\rPID|1||MP{round}^^^TH^MR||Doe^Jo||19700102|F\r\
         PV1|1|I|NOWHERE^1^1^TH||||||||||||||||V{round}\r"
    );
    store
        .hl7(edge_node::store::Hl7Request {
            raw: parked.into_bytes(),
        })
        .await
        .unwrap();
}

fn event_count(dir: &std::path::Path) -> u64 {
    rusqlite::Connection::open(dir.join("edge.sqlite"))
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_only_acknowledged_expired_events_and_verify_still_holds() {
    use edge_node::store::pruning::prune_once;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    commission(&store, 16).await;
    traffic(&store, 0).await;
    let hour = firmware_config::Retention {
        adt_h: 1,
        bed_h: 1,
        or_h: 1,
        billing_h: 1,
        audit_h: 1,
        integration_h: 1,
        empi_h: 1,
    };
    let later = hms_domain::Timestamp::from_millis(
        hms_domain::Timestamp::now().as_millis() + 2 * 3_600_000,
    );

    // Retention not yet passed: the base moves, nothing is deleted.
    let acked = store.last_seq() / 2;
    let total = store.last_seq();
    let (a, deleted) = prune_once(&store, acked, &hour, hms_domain::Timestamp::now())
        .await
        .unwrap();
    assert_eq!((a.from, a.to, deleted), (0, acked, 0));
    assert!(a.rows > 0);
    assert_eq!(event_count(dir.path()), total);
    let r = verify::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.base_seq, acked);

    // Passed, but only what the cloud acknowledged goes.
    let (a, deleted) = prune_once(&store, acked, &hour, later).await.unwrap();
    assert_eq!((a.from, a.to, deleted), (acked, acked, acked as usize));
    assert_eq!(event_count(dir.path()), total - acked);
    let r = verify::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);

    // More traffic; everything acknowledged: all but the newest event go.
    traffic(&store, 1).await;
    let last = store.last_seq();
    let (a, deleted) = prune_once(&store, last, &hour, later).await.unwrap();
    assert_eq!(a.to, last);
    assert_eq!(deleted as u64, last - acked - 1);
    assert_eq!(event_count(dir.path()), 1, "the newest event is kept");
    let r = verify::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.base_seq, last);

    assert!(
        !dir.path()
            .join(edge_node::store::retention::SCRATCH_FILE)
            .exists(),
        "the scratch database is removed"
    );

    // A base computed from a base that has moved since is refused whole.
    traffic(&store, 3).await;
    let db = dir.path().join("edge.sqlite");
    let stale = edge_node::store::retention::compute_base(&db, store.last_seq() - 1)
        .unwrap()
        .unwrap();
    let stale_copy = dir.path().join("stale.sqlite");
    std::fs::copy(&stale.path, &stale_copy).unwrap();
    let fresh = edge_node::store::retention::compute_base(&db, store.last_seq())
        .unwrap()
        .unwrap();
    assert!(store.write_base(fresh).await.unwrap() > 0);
    let stale = edge_node::store::retention::Delta {
        path: stale_copy,
        ..stale
    };
    assert!(matches!(
        store.write_base(stale).await,
        Err(WriteError::Unavailable(m)) if m.contains("moved")
    ));
    let last = store.last_seq();
    assert_eq!(verify::verify(dir.path()).unwrap().base_seq, last);

    // A restart carries on from the log's end with the same board.
    let board = board_text(&store);
    store.close().await;
    let store = open(dir.path());
    assert_eq!(board_text(&store), board);
    assert_eq!(store.last_seq(), last);
    traffic(&store, 2).await;
    assert!(store.last_seq() > last);
    let r = verify::verify(dir.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);

    // Tampering is caught both in a retained event the base covers (its
    // own hash) and in one after the base (the chain).
    store.close().await;
    let conn = rusqlite::Connection::open(dir.path().join("edge.sqlite")).unwrap();
    for seq in [last as i64, last as i64 + 2] {
        let bump = |d: i64| {
            conn.execute(
                "UPDATE events SET recorded_at = recorded_at + ?2 WHERE seq = ?1",
                [seq, d],
            )
            .unwrap()
        };
        assert_eq!(bump(1), 1);
        let r = verify::verify(dir.path()).unwrap();
        assert!(!r.ok(), "tampering with event {seq} went unnoticed");
        bump(-1);
        assert!(verify::verify(dir.path()).unwrap().ok());
    }
}
