//! DR replication between two in-process clouds, on each store backend:
//! a replica ending with exactly the primary's events, lag reported, the
//! replica's refusals, and the replicator's per-hospital shippers through
//! an outage (breaker included), a gap answer and a refusal, under paused
//! time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_sync_client::push::PushError;
use cloud_sync_client::resilience::BreakerState;
use cloud_sync_client::shipper::Phase;
use cloud_sync_client::{Client, Endpoint, Signer, fetch, generate_key, push};
use hms_domain::HospitalId;
use hms_e2e::client::Conn;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dr::{HospitalLag, ReplicationStatus, Replicator};
use crate::store::conformance;
use crate::testkit::{Backend, Cloud, Served, T, available, batch, id, now, serve};

/// Guard against a hang; replication normally takes milliseconds. Under
/// paused time it is time on the paused clock (longer than the breaker's
/// 30 s pause).
const PATIENCE: Duration = Duration::from_secs(60);

fn as_primary(pkcs8: &[u8], hospital: &str, region: &str) -> Signer {
    Signer::new(pkcs8, id(hospital), id(&format!("dr:{region}"))).expect("signer")
}

fn replicator(
    primary: &Cloud,
    peer: Endpoint,
    key: Vec<u8>,
    status: Arc<ReplicationStatus>,
) -> Replicator {
    Replicator::new(
        Client::new(peer),
        key,
        primary.state.registry.clone(),
        primary.state.open.clone(),
        status,
        primary.state.ingested.clone(),
    )
    .expect("replicator")
}

fn start(primary: &Cloud, peer: Endpoint, key: Vec<u8>, status: Arc<ReplicationStatus>) {
    let r = replicator(primary, peer, key, status);
    tokio::spawn(r.run(CancellationToken::new()));
}

/// A primary of eu-west on `backend` with `hospitals` enrolled, noting its
/// ingests for replication to `peer` (of eu-central).
fn primary_to(
    backend: Backend,
    hospitals: &[&str],
    peer: &Served,
) -> (Cloud, Arc<ReplicationStatus>) {
    let status = Arc::new(ReplicationStatus::new(peer.http().url(), id("eu-central")));
    let mut primary = Cloud::primary_on(backend, "eu-west", hospitals);
    primary.state = primary.state.clone().with_replication(status.clone());
    (primary, status)
}

/// A replica of eu-central on `backend` accepting eu-west's primary, served;
/// with the primary's key.
async fn replica_of_eu_west(backend: Backend) -> (Cloud, Served, Vec<u8>) {
    let (key, public) = generate_key().expect("key");
    let replica = Cloud::replica_on(backend, "eu-central", &["eu-west"], &[("eu-west", public)]);
    let served = serve(replica.state.clone(), None).await;
    (replica, served, key)
}

/// Drives `hospital` with [`Replicator::replicate`], which must return
/// within a second of paused time: it makes a few requests at most, then
/// waits. (A replicator that never waited would not let paused time move
/// and would hang instead, until the runner's time limit.)
async fn drive(r: &mut Replicator, hospital: &HospitalId) -> Result<u64, String> {
    tokio::time::timeout(Duration::from_secs(1), r.replicate(hospital))
        .await
        .expect("replicate returned")
}

/// Under paused time the runtime moves the clock on to the next timer
/// whenever it has nothing to run, also while a request is on the loopback,
/// which would fire a client's timeout before the answer is read. A timer
/// every millisecond keeps each move to 1 ms: waits of seconds pass in a
/// moment of real time, in order, and the network keeps up.
fn tick() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

async fn until(
    status: &ReplicationStatus,
    what: &str,
    pred: impl Fn(&BTreeMap<HospitalId, HospitalLag>) -> bool,
) {
    if tokio::time::timeout(PATIENCE, status.wait_until(pred))
        .await
        .is_err()
    {
        panic!("{what}: not reached; status {:?}", status.snapshot());
    }
}

fn replicated(h: &str, seq: u64) -> impl Fn(&BTreeMap<HospitalId, HospitalLag>) -> bool {
    let h: HospitalId = id(h);
    move |m| m.get(&h).is_some_and(|s| s.replica_seq == Some(seq))
}

on_each_backend!(
    #[tokio::test]
    a_replica_ends_with_exactly_the_primarys_events,
    replication_to_an_unreachable_peer_is_reported_as_lag,
    a_replica_refuses_unknown_primaries_regions_it_does_not_allow_and_appliances,
    a_replica_acknowledging_what_it_was_not_sent_or_another_hash_is_not_believed,
);

on_each_backend!(
    #[tokio::test]
    a_promoted_replica_serves_the_appliances_and_its_old_primary_fences_itself,
);

on_each_backend!(
    #[tokio::test(start_paused = true)]
    the_status_follows_each_hospitals_shipper_through_an_outage,
    a_replica_that_lost_its_copy_is_sent_it_again_through_a_gap_answer,
    a_refused_hospital_does_not_hold_up_the_others,
);

async fn a_replica_ends_with_exactly_the_primarys_events(backend: Backend) {
    if !available(backend) {
        return;
    }
    let (replica, replica_at, primary_key) = replica_of_eu_west(backend).await;
    let (primary, status) = primary_to(backend, &["h1", "h2", "h3"], &replica_at);
    let primary_at = serve(primary.state.clone(), None).await;
    let ep = primary_at.http();
    let (h1_log, h2_log) = (conformance::log("h1", 45), conformance::log("h2", 1_500));
    // The replica already holds h1's first 10 events (an earlier run).
    replica.seed("h1", &h1_log[..10]);
    // The appliances ship before replication starts (h3 ships nothing).
    push(
        &ep,
        primary.signer("h1"),
        &batch("h1", &h1_log[..30]),
        now(),
        T,
    )
    .await
    .expect("push h1");
    for part in h2_log.chunks(750) {
        push(&ep, primary.signer("h2"), &batch("h2", part), now(), T)
            .await
            .expect("push h2");
    }
    start(&primary, replica_at.http(), primary_key, status.clone());
    until(&status, "first catch-up", |m| {
        replicated("h1", 30)(m) && replicated("h2", 1_500)(m) && replicated("h3", 0)(m)
    })
    .await;
    assert_eq!(replica.events("h1"), primary.events("h1"));
    assert_eq!(
        replica.events("h2"),
        h2_log,
        "more than one batch, in order"
    );
    assert!(replica.events("h3").is_empty());
    // New events wake the replicator.
    push(
        &ep,
        primary.signer("h1"),
        &batch("h1", &h1_log[30..]),
        now(),
        T,
    )
    .await
    .expect("push h1");
    until(&status, "after a new ingest", replicated("h1", 45)).await;
    assert_eq!(replica.events("h1"), h1_log);
    for (h, lag) in status.snapshot() {
        assert_eq!(
            (lag.lag_events, lag.lag_seconds, lag.last_error.as_deref()),
            (0, 0.0, None),
            "{h}"
        );
    }
    // Lag as the operator and the health check see it.
    let token = primary.token("ops");
    let mut c = Conn::connect(primary_at.addr, Some(&token))
        .await
        .expect("connect");
    let r = c
        .get("/api/v1/replication")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(r["role"], "primary");
    assert_eq!(r["peer_region"], "eu-central");
    assert_eq!(r["hospitals"][0]["hospital"], "h1");
    assert_eq!(r["hospitals"][0]["primary_seq"], 45);
    assert_eq!(r["hospitals"][0]["replica_seq"], 45);
    assert_eq!(r["hospitals"][0]["lag_events"], 0);
    let h = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["mode"], "primary");
    assert_eq!(h["replication"]["max_lag_events"], 0);
    // The replica lists what it holds, with the hospitals' region.
    let token = replica.token("ops");
    let mut c = Conn::connect(replica_at.addr, Some(&token))
        .await
        .expect("connect");
    let r = c
        .get("/api/v1/hospitals")
        .await
        .expect("get")
        .json()
        .expect("json");
    let list = r["hospitals"].as_array().expect("list");
    assert_eq!(list.len(), 2, "{r}");
    assert_eq!(list[0]["id"], "h1");
    assert_eq!(list[0]["region"], "eu-west");
    assert_eq!(list[0]["events"], 45);
    assert_eq!(list[1]["events"], 1_500);
    let h = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(h["mode"], "replica");
}

async fn replication_to_an_unreachable_peer_is_reported_as_lag(backend: Backend) {
    if !available(backend) {
        return;
    }
    let (primary_key, _) = generate_key().expect("key");
    let status = Arc::new(ReplicationStatus::new(
        "http://127.0.0.1:9".into(),
        id("eu-central"),
    ));
    let mut primary = Cloud::primary_on(backend, "eu-west", &["h1"]);
    primary.state = primary.state.clone().with_replication(status.clone());
    let primary_at = serve(primary.state.clone(), None).await;
    let log = conformance::log("h1", 5);
    push(
        &primary_at.http(),
        primary.signer("h1"),
        &batch("h1", &log),
        now(),
        T,
    )
    .await
    .expect("push");
    let dead = Endpoint::parse("http://127.0.0.1:9", None).expect("endpoint");
    start(&primary, dead, primary_key, status.clone());
    let h1: HospitalId = id("h1");
    until(&status, "a failure", |m| {
        m.get(&h1).is_some_and(|s| s.last_error.is_some())
    })
    .await;
    let lag = status.snapshot()[&h1].clone();
    assert_eq!(lag.primary_seq, 5);
    assert_eq!(lag.lag_events, 5);
    let token = primary.token("ops");
    let mut c = Conn::connect(primary_at.addr, Some(&token))
        .await
        .expect("connect");
    let h = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["replication"]["hospitals_failing"], 1);
    assert_eq!(h["replication"]["max_lag_events"], 5);
}

/// How a lying replica answers a batch ending at (seq, hash).
type Lie = fn(u64, hms_domain::EventHash) -> (u64, hms_domain::EventHash);

/// A replica on a real socket that stands at 0 and acknowledges every
/// batch at `lie(last seq, last hash)`, checking nothing.
async fn lying_replica(lie: Lie) -> Endpoint {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/sync/v1/position",
            get(|| async {
                axum::Json(
                    serde_json::json!({"acked_seq": 0, "acked_hash": hms_domain::EventHash::GENESIS}),
                )
            }),
        )
        .route(
            "/sync/v1/batches",
            post(move |body: axum::body::Bytes| async move {
                let json = cloud_sync_client::codec::gunzip_bounded(&body, 8 << 20).expect("gzip");
                let b: hms_domain::sync::SyncBatch = serde_json::from_slice(&json).expect("batch");
                let last = b.events.last().expect("events");
                let (seq, hash) = lie(last.seq, last.hash);
                axum::Json(serde_json::json!({"acked_seq": seq, "acked_hash": hash}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Endpoint::parse(&format!("http://{addr}"), None).expect("endpoint")
}

async fn a_replica_acknowledging_what_it_was_not_sent_or_another_hash_is_not_believed(
    backend: Backend,
) {
    if !available(backend) {
        return;
    }
    let lies: [(Lie, &str); 2] = [
        (
            |seq, hash| (seq + 10, hash),
            "acknowledged seq 22 beyond what was sent (the batch ended at seq 12)",
        ),
        (
            |seq, _| (seq, hms_domain::EventHash([0xee; 32])),
            "acknowledged seq 12 with hash eeee",
        ),
    ];
    for (lie, says) in lies {
        let (key, _) = generate_key().expect("key");
        let peer = lying_replica(lie).await;
        let status = Arc::new(ReplicationStatus::new(peer.url(), id("eu-central")));
        let mut primary = Cloud::primary_on(backend, "eu-west", &["h1"]);
        primary.state = primary.state.clone().with_replication(status.clone());
        let primary_at = serve(primary.state.clone(), None).await;
        push(
            &primary_at.http(),
            primary.signer("h1"),
            &batch("h1", &conformance::log("h1", 12)),
            now(),
            T,
        )
        .await
        .expect("push");
        let mut r = replicator(&primary, peer, key, status.clone());
        let h1: HospitalId = id("h1");
        let error = r.replicate(&h1).await.expect_err("refused");
        assert!(
            error.contains(says) && error.contains("not trusted"),
            "{error}"
        );
        // The replica's position stays the last one that checked out.
        let lag = status.snapshot()[&h1].clone();
        assert_eq!((lag.replica_seq, lag.lag_events), (Some(0), 12), "{lag:?}");
        assert_eq!(lag.phase, Some(Phase::Refused));
    }
}

async fn a_replica_refuses_unknown_primaries_regions_it_does_not_allow_and_appliances(
    backend: Backend,
) {
    if !available(backend) {
        return;
    }
    let (west, west_pub) = generate_key().expect("key");
    let (north, north_pub) = generate_key().expect("key");
    let replica = Cloud::replica_on(
        backend,
        "eu-central",
        &["eu-west", "eu-north"],
        &[("eu-west", west_pub), ("eu-north", north_pub)],
    );
    let at = serve(replica.state.clone(), None).await;
    let ep = at.http();
    let log = conformance::log("h1", 6);
    let refused = |r: Result<cloud_sync_client::Pushed, PushError>| match r {
        Err(PushError::Refused { status, detail }) => (status, detail),
        other => panic!("expected a refusal: {other:?}"),
    };
    // The enrolled primary of an allowed region: accepted.
    let p = push(
        &ep,
        &as_primary(&west, "h1", "eu-west"),
        &batch("h1", &log[..3]),
        now(),
        T,
    )
    .await
    .expect("replicated");
    assert_eq!(p.acked_seq, 3);
    // Another key claiming to be that primary.
    let (stranger, _) = generate_key().expect("key");
    let (status, _) = refused(
        push(
            &ep,
            &as_primary(&stranger, "h1", "eu-west"),
            &batch("h1", &log[3..]),
            now(),
            T,
        )
        .await,
    );
    assert_eq!(status, 401);
    // A primary of a region this replica does not allow (residency), whatever its key.
    let (status, detail) = refused(
        push(
            &ep,
            &as_primary(&stranger, "h9", "us-east"),
            &batch("h9", &conformance::log("h9", 2)),
            now(),
            T,
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(detail.contains("us-east"), "{detail}");
    // An allowed, enrolled primary of another region sending a hospital that
    // came from eu-west.
    let (status, detail) = refused(
        push(
            &ep,
            &as_primary(&north, "h1", "eu-north"),
            &batch("h1", &log[3..]),
            now(),
            T,
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(detail.contains("eu-west"), "{detail}");
    // Appliances do not sync with a replica that was not promoted, nor
    // restore from it: 421, on which an uplink moves to its next address.
    let (appliance, _) = generate_key().expect("key");
    let edge = Signer::new(&appliance, id("h1"), id("edge-1")).expect("signer");
    let (status, detail) = refused(push(&ep, &edge, &batch("h1", &log[3..]), now(), T).await);
    assert_eq!(status, 421);
    assert!(detail.contains("hms-cloud promote"), "{detail}");
    match fetch(&ep, &edge, 1, 10, now(), T).await {
        Err(PushError::Refused { status: 421, .. }) => {}
        other => panic!("restore from a replica: {other:?}"),
    }
    // Nothing of the refused requests was stored.
    assert_eq!(replica.events("h1"), log[..3]);
    assert!(replica.events("h9").is_empty());
    assert_eq!(replica.position("h1"), 3);
    // And a primary accepts no replication at all.
    let primary = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let pat = serve(primary.state.clone(), None).await;
    let (status, _) = refused(
        push(
            &pat.http(),
            &as_primary(&west, "h1", "eu-west"),
            &batch("h1", &log),
            now(),
            T,
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(primary.events("h1").is_empty());
}

/// Each hospital's status follows its own shipper: a replica that goes away
/// leaves the hospital with events to send failing (its last known position
/// kept, the lag growing) while a caught-up one stays as it was; the
/// failures open that hospital's breaker, and while it is open nothing is
/// sent even when an ingest wakes the replicator; once the replica is back
/// the probe after the breaker's pause catches up. Cancelled while backing
/// off, the replicator stops at once.
async fn the_status_follows_each_hospitals_shipper_through_an_outage(backend: Backend) {
    if !available(backend) {
        return;
    }
    let _tick = tick();
    let (replica, served, key) = replica_of_eu_west(backend).await;
    let (primary, status) = primary_to(backend, &["h1", "h2"], &served);
    let (h1_log, h2_log) = (conformance::log("h1", 50), conformance::log("h2", 10));
    let (h1, h2): (HospitalId, HospitalId) = (id("h1"), id("h2"));
    primary.ingest("h1", &h1_log[..20]);
    primary.ingest("h2", &h2_log);
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(replicator(&primary, served.http(), key, status.clone()).run(stop.clone()));
    until(&status, "first catch-up", |m| {
        replicated("h1", 20)(m) && replicated("h2", 10)(m)
    })
    .await;
    for (h, lag) in status.snapshot() {
        assert_eq!(
            (lag.phase, lag.last_error.as_deref(), lag.lag_events),
            (Some(Phase::Online), None, 0),
            "{h}"
        );
        assert_eq!(lag.breaker, Some(BreakerState::Closed), "{h}");
    }

    // The replica goes away; h1 has more to send, h2 nothing.
    served.set_up(false);
    primary.ingest("h1", &h1_log[20..30]);
    until(&status, "h1 failing", |m| m[&h1].last_error.is_some()).await;
    let lag = status.snapshot();
    assert_eq!(lag[&h1].phase, Some(Phase::Offline));
    assert_eq!(
        lag[&h1].replica_seq,
        Some(20),
        "the last known position is kept"
    );
    assert_eq!((lag[&h1].primary_seq, lag[&h1].lag_events), (30, 10));
    assert_eq!(
        (
            lag[&h2].phase,
            lag[&h2].last_error.as_deref(),
            lag[&h2].lag_events
        ),
        (Some(Phase::Online), None, 0),
        "a hospital with nothing to send is not failing"
    );

    // The failures open h1's breaker. While it is open nothing is sent,
    // even when a new ingest wakes the replicator.
    until(&status, "h1's breaker open", |m| {
        matches!(m[&h1].breaker, Some(BreakerState::Open { .. }))
    })
    .await;
    let Some(BreakerState::Open { until: probe_at }) = status.snapshot()[&h1].breaker else {
        panic!("the breaker closed again on its own");
    };
    let tried = served.connections();
    primary.ingest("h1", &h1_log[30..40]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        served.connections(),
        tried,
        "a connection was attempted while the breaker was open"
    );
    tokio::time::sleep_until(probe_at - Duration::from_millis(5)).await;
    assert_eq!(
        served.connections(),
        tried,
        "a connection was attempted while the breaker was open"
    );
    let lag = status.snapshot();
    assert_eq!((lag[&h1].primary_seq, lag[&h1].lag_events), (40, 20));
    assert_eq!(lag[&h1].replica_seq, Some(20));

    // Back: the probe after the pause goes through and h1 catches up.
    served.set_up(true);
    until(&status, "h1 caught up again", replicated("h1", 40)).await;
    assert!(
        Instant::now() >= probe_at,
        "sent before the breaker let a probe through"
    );
    let lag = status.snapshot();
    assert_eq!(
        (
            lag[&h1].phase,
            lag[&h1].last_error.as_deref(),
            lag[&h1].lag_events
        ),
        (Some(Phase::Online), None, 0)
    );
    assert_eq!(replica.events("h1"), h1_log[..40]);
    assert_eq!(replica.events("h2"), h2_log);

    // Away again: cancelled while it backs off, it stops at once.
    served.set_up(false);
    primary.ingest("h1", &h1_log[40..]);
    until(&status, "h1 failing again", |m| m[&h1].last_error.is_some()).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_millis(5), task)
        .await
        .expect("the replicator stopped at once")
        .expect("the replicator task");
}

/// A replica that lost its copy answers the next batch with a gap: the
/// hospital's shipper moves back to the seq the replica expects and resends
/// from there at once, and its status follows it down and up again without
/// ever counting it as a failure.
async fn a_replica_that_lost_its_copy_is_sent_it_again_through_a_gap_answer(backend: Backend) {
    if !available(backend) {
        return;
    }
    let _tick = tick();
    let (replica, served, key) = replica_of_eu_west(backend).await;
    let (primary, status) = primary_to(backend, &["h1"], &served);
    let log = conformance::log("h1", 40);
    let h1: HospitalId = id("h1");
    primary.ingest("h1", &log[..30]);
    tokio::spawn(
        replicator(&primary, served.http(), key, status.clone()).run(CancellationToken::new()),
    );
    until(&status, "first catch-up", replicated("h1", 30)).await;

    replica.stores.lose("h1");
    assert_eq!(replica.position("h1"), 0);
    // Every state h1 goes through from here on.
    let seen: Arc<Mutex<Vec<HospitalLag>>> = Arc::default();
    let watch = {
        let (status, seen, h1) = (status.clone(), seen.clone(), h1.clone());
        tokio::spawn(async move {
            status
                .wait_until(|m| {
                    let lag = m[&h1].clone();
                    let done = lag.replica_seq == Some(40);
                    seen.lock().expect("lock").push(lag);
                    done
                })
                .await;
        })
    };
    let sent = Instant::now();
    primary.ingest("h1", &log[30..]);
    tokio::time::timeout(PATIENCE, watch)
        .await
        .expect("resent in time")
        .expect("the watch");
    let took = sent.elapsed();
    assert_eq!(replica.events("h1"), log, "the whole log again, from seq 1");
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let mut positions: Vec<Option<u64>> = seen.iter().map(|l| l.replica_seq).collect();
    positions.dedup();
    assert_eq!(
        positions,
        [Some(30), Some(0), Some(40)],
        "the status follows the shipper back to where the replica is, then up"
    );
    for lag in &seen {
        assert_eq!(
            (lag.phase, lag.last_error.as_deref()),
            (Some(Phase::Online), None),
            "a gap is an answer, not a failure: {lag:?}"
        );
    }
    // The shortest back-off is 100 ms (200 ms, jittered down to half).
    assert!(
        took < Duration::from_millis(100),
        "resent after {took:?}: it backed off"
    );
}

/// A hospital the replica refuses (it came to the replica from another
/// region) stops for the refusal's pause, with the refusal reported; the
/// others go on being replicated meanwhile, each on its own shipper. Driven
/// one hospital at a time with [`Replicator::replicate`].
async fn a_refused_hospital_does_not_hold_up_the_others(backend: Backend) {
    if !available(backend) {
        return;
    }
    let _tick = tick();
    let (replica, served, key) = replica_of_eu_west(backend).await;
    // h2 reached this replica from eu-north before: eu-west may not send it.
    replica
        .state
        .registry_db
        .record_ingest(&id("h2"), &id("eu-north"), now())
        .expect("record");
    let (primary, status) = primary_to(backend, &["h1", "h2"], &served);
    let (h1_log, h2_log) = (conformance::log("h1", 20), conformance::log("h2", 5));
    let (h1, h2): (HospitalId, HospitalId) = (id("h1"), id("h2"));
    primary.ingest("h1", &h1_log[..10]);
    primary.ingest("h2", &h2_log);
    let mut r = replicator(&primary, served.http(), key, status.clone());

    let refused = drive(&mut r, &h2).await.expect_err("h2 is refused");
    assert!(
        refused.contains("403") && refused.contains("eu-north"),
        "{refused}"
    );
    assert_eq!(drive(&mut r, &h1).await, Ok(10));
    let lag = status.snapshot();
    assert_eq!(lag[&h2].phase, Some(Phase::Refused));
    assert_eq!(lag[&h2].last_error.as_deref(), Some(refused.as_str()));
    assert_eq!((lag[&h2].replica_seq, lag[&h2].lag_events), (None, 5));
    assert_eq!(
        (
            lag[&h1].phase,
            lag[&h1].last_error.as_deref(),
            lag[&h1].lag_events
        ),
        (Some(Phase::Online), None, 0)
    );

    // h1 goes on while h2 waits out its refusal, asking nothing.
    let asked = served.requests();
    assert_eq!(drive(&mut r, &h2).await, Err(refused.clone()));
    assert_eq!(served.requests(), asked, "h2 asked within its pause");
    primary.ingest("h1", &h1_log[10..]);
    assert_eq!(drive(&mut r, &h1).await, Ok(20));
    assert_eq!(replica.events("h1"), h1_log);
    assert_eq!(status.snapshot()[&h2].phase, Some(Phase::Refused));
    // After the pause (a minute) h2 asks again, and is refused again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let asked = served.requests();
    assert_eq!(drive(&mut r, &h2).await, Err(refused));
    assert_eq!(served.requests(), asked + 1, "h2 asked its position again");
    assert!(replica.events("h2").is_empty());
}

/// Region failover in process: the replicator's standby reports give the
/// replica each hospital's appliance enrolment and the primary's head;
/// promotion is all or nothing (a hospital without a report, or one the
/// replica is behind on unless forced, promotes none); a promoted replica
/// serves the appliance with its own key and refuses its old primary's
/// replication of the hospital with 421, on which the primary fences
/// itself (audited), answers the appliance 421 and replicates the hospital
/// no more, until unfenced.
async fn a_promoted_replica_serves_the_appliances_and_its_old_primary_fences_itself(
    backend: Backend,
) {
    use crate::takeover::PromoteError;
    if !available(backend) {
        return;
    }
    let (replica, replica_at, key) = replica_of_eu_west(backend).await;
    let (primary, status) = primary_to(backend, &["h1", "h2"], &replica_at);
    let primary_at = serve(primary.state.clone(), None).await;
    let (h1_log, h2_log) = (conformance::log("h1", 8), conformance::log("h2", 2));
    push(
        &primary_at.http(),
        primary.signer("h1"),
        &batch("h1", &h1_log[..4]),
        now(),
        T,
    )
    .await
    .expect("push h1");
    push(
        &primary_at.http(),
        primary.signer("h2"),
        &batch("h2", &h2_log),
        now(),
        T,
    )
    .await
    .expect("push h2");
    let mut r = replicator(&primary, replica_at.http(), key.clone(), status.clone())
        .with_takeover(primary.state.takeover.clone());
    assert_eq!(drive(&mut r, &id("h1")).await, Ok(4));
    assert_eq!(drive(&mut r, &id("h2")).await, Ok(2));

    // The replica knows each hospital's appliance and the primary's head.
    let db = replica.state.registry_db.clone();
    let standbys = db.standbys().expect("standbys");
    let h1_key = primary
        .state
        .registry
        .get(&id("h1"))
        .expect("h1")
        .public_key;
    assert_eq!(standbys.len(), 2);
    assert_eq!(
        (
            standbys[0].enrolment.hospital.as_str(),
            standbys[0].enrolment.node.as_str(),
            &standbys[0].enrolment.public_key,
            standbys[0].head_seq,
            standbys[0].promoted_ms
        ),
        ("h1", "edge-1", &h1_key, 4, None)
    );
    assert_eq!(standbys[1].head_seq, 2);

    let open = replica.state.open.clone();
    // As `hms-cloud promote` does (off the runtime: stores may block).
    let promote = |hospitals: Vec<HospitalId>, force: bool, at: i64| {
        let (db, open) = (db.clone(), open.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                crate::takeover::promote(&db, &open, &hospitals, force, "cli:test", at)
            })
            .await
            .expect("promote ran")
        }
    };
    // A hospital nobody reported: nothing promoted.
    match promote(vec![id("h9")], true, 10).await {
        Err(PromoteError::NoStandby(h)) => assert_eq!(h, vec![id("h9")]),
        other => panic!("promoted a hospital without an enrolment: {other:?}"),
    }
    // The primary had reported more of h1 than reached the replica.
    let h1_row = standbys[0].enrolment.clone();
    db.put_standby(&h1_row, 6, 11).expect("report");
    match promote(vec![], false, 12).await {
        Err(PromoteError::Behind(b)) => {
            assert_eq!(b.len(), 1);
            assert_eq!(
                (b[0].hospital.as_str(), b[0].held_seq, b[0].primary_head),
                ("h1", 4, 6)
            );
            let text = PromoteError::Behind(b).to_string();
            assert!(text.contains("h1 holds seq 4 of 6 (2 behind)"), "{text}");
        }
        other => panic!("promoted a replica behind its primary: {other:?}"),
    }
    assert!(
        db.standbys()
            .expect("standbys")
            .iter()
            .all(|s| s.promoted_ms.is_none()),
        "all or nothing"
    );
    let done = promote(vec![], true, 13).await.expect("forced");
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].behind(), done[1].behind()), (2, 0));
    // Again: nothing changes, each reported as promoted before.
    let again = promote(vec![], false, 14).await.expect("again");
    assert!(again.iter().all(|p| p.already_ms == Some(13)), "{again:?}");
    let audit = db.audit_log().expect("audit");
    let promotions: Vec<_> = audit.iter().filter(|a| a.action == "promote").collect();
    assert_eq!(promotions.len(), 2, "{audit:?}");
    assert!(
        promotions[0].detail.contains("forced"),
        "{:?}",
        promotions[0]
    );
    replica.state.takeover.refresh().expect("refresh");

    // The appliance goes on at the replica, signing with its own key.
    let edge = primary.signer("h1");
    let p = cloud_sync_client::position(&replica_at.http(), edge, now(), T)
        .await
        .expect("position at the promoted replica");
    assert_eq!(p.acked_seq, 4);
    let p = push(
        &replica_at.http(),
        edge,
        &batch("h1", &h1_log[4..]),
        now(),
        T,
    )
    .await
    .expect("the promoted replica takes the appliance's batch");
    assert_eq!(p.acked_seq, 8);
    assert_eq!(replica.events("h1"), h1_log);
    // Another key for that appliance is still refused.
    let (stranger, _) = generate_key().expect("key");
    let forged = Signer::new(&stranger, id("h1"), id("edge-1")).expect("signer");
    match push(
        &replica_at.http(),
        &forged,
        &batch("h1", &h1_log[4..]),
        now(),
        T,
    )
    .await
    {
        Err(PushError::Refused { status: 401, .. }) => {}
        other => panic!("a forged appliance at the promoted replica: {other:?}"),
    }

    // The old primary is not fenced until its replicator hears of it: at
    // its next standby report, the first after a restart (a replicator
    // made afresh here).
    assert!(primary.state.takeover.fenced(&id("h1")).is_none());
    let mut r = replicator(&primary, replica_at.http(), key.clone(), status.clone())
        .with_takeover(primary.state.takeover.clone());
    let _ = drive(&mut r, &id("h1")).await;
    let fence = primary.state.takeover.fenced(&id("h1")).expect("fenced");
    assert!(
        fence.detail.contains("promoted on this replica"),
        "{}",
        fence.detail
    );
    assert!(
        primary.state.takeover.fenced(&id("h2")).is_none(),
        "h2 not yet"
    );
    let lag = &status.snapshot()[&id::<HospitalId>("h1")];
    assert!(lag.fenced, "{lag:?}");
    let fences: Vec<_> = primary
        .state
        .registry_db
        .audit_log()
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "fence")
        .collect();
    assert_eq!(
        (fences.len(), fences[0].actor.as_str()),
        (1, crate::dr::FENCE_ACTOR)
    );
    // Fenced: the appliance is sent on with 421, nothing stored.
    match push(
        &primary_at.http(),
        edge,
        &batch("h1", &h1_log[4..]),
        now(),
        T,
    )
    .await
    {
        Err(PushError::Refused {
            status: 421,
            detail,
        }) => {
            assert!(detail.contains("DR peer"), "{detail}");
        }
        other => panic!("a fenced primary took a batch: {other:?}"),
    }
    match cloud_sync_client::position(&primary_at.http(), edge, now(), T).await {
        Err(PushError::Refused { status: 421, .. }) => {}
        other => panic!("a fenced primary's position: {other:?}"),
    }
    assert_eq!(primary.position("h1"), 4);
    // Its replication of h1 is refused by the replica too.
    match push(
        &replica_at.http(),
        &as_primary(&key, "h1", "eu-west"),
        &batch("h1", &h1_log),
        now(),
        T,
    )
    .await
    {
        Err(PushError::Refused { status: 421, .. }) => {}
        other => panic!("replication of a promoted hospital: {other:?}"),
    }
    // Unfenced after re-pairing: served again.
    assert!(
        primary
            .state
            .registry_db
            .unfence(&id("h1"), 20, "cli:test")
            .expect("unfence")
    );
    assert!(
        !primary
            .state
            .registry_db
            .unfence(&id("h1"), 21, "cli:test")
            .expect("again")
    );
    primary.state.takeover.refresh().expect("refresh");
    cloud_sync_client::position(&primary_at.http(), edge, now(), T)
        .await
        .expect("served again");
}

/// A standby report that is not one gets a clear refusal and stores
/// nothing: unsigned (401), signed by an appliance (403), for another
/// hospital than signed (403), not JSON or naming a DR node (400), a key
/// that is not 32 bytes (400), and at a primary (403).
#[tokio::test]
async fn bad_standby_reports_are_refused_and_store_nothing() {
    use base64::Engine;
    let (key, public) = generate_key().expect("key");
    let replica = Cloud::replica_on(
        Backend::Sqlite,
        "eu-central",
        &["eu-west"],
        &[("eu-west", public)],
    );
    let at = serve(replica.state.clone(), None).await;
    let good = |hospital: &str, node: &str, key: &str| {
        serde_json::json!({
            "hospital": hospital, "region": "eu-west", "node": node,
            "public_key": key, "head_seq": 3,
        })
        .to_string()
        .into_bytes()
    };
    let key32 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let send = |signer: Option<Signer>, body: Vec<u8>, addr: std::net::SocketAddr| async move {
        let mut headers = vec![];
        if let Some(s) = signer {
            let r = s.sign("PUT", crate::http::STANDBY, now(), &body);
            headers = vec![
                ("x-hms-hospital", r.hospital.to_string()),
                ("x-hms-node", r.node.to_string()),
                ("x-hms-timestamp", r.timestamp_ms.to_string()),
                ("x-hms-signature", r.signature),
            ];
        }
        let mut c = Conn::connect(addr, None).await.expect("connect");
        let hs: Vec<(&str, String)> = headers;
        c.request_with(hyper::Method::PUT, crate::http::STANDBY, &hs, Some(body))
            .await
            .expect("answer")
    };
    let primary = || Some(as_primary(&key, "h1", "eu-west"));
    let cases: Vec<(Option<Signer>, Vec<u8>, u16)> = vec![
        (None, good("h1", "edge-1", &key32), 401),
        (
            Some(Signer::new(&key, id("h1"), id("edge-1")).expect("signer")),
            good("h1", "edge-1", &key32),
            403,
        ),
        (primary(), good("h2", "edge-1", &key32), 403),
        (primary(), b"not json".to_vec(), 400),
        (primary(), good("h1", "dr:eu-west", &key32), 400),
        (primary(), good("h1", "edge-1", "c2hvcnQ="), 400),
    ];
    for (signer, body, want) in cases {
        let r = send(signer, body, at.addr).await;
        assert_eq!(r.status, want, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{want}"
        );
    }
    assert!(
        replica
            .state
            .registry_db
            .standbys()
            .expect("read")
            .is_empty()
    );
    // The good one is taken.
    let r = send(primary(), good("h1", "edge-1", &key32), at.addr).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(replica.state.registry_db.standbys().expect("read").len(), 1);
    // A primary takes no standby reports.
    let p = Cloud::primary_on(Backend::Sqlite, "eu-west", &["h1"]);
    let pat = serve(p.state.clone(), None).await;
    let r = send(primary(), good("h1", "edge-1", &key32), pat.addr).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
}
