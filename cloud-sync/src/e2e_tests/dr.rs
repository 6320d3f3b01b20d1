//! DR replication between two in-process clouds (SQLite backends).

use std::sync::Arc;
use std::time::Duration;

use cloud_sync_client::push::PushError;
use cloud_sync_client::{Client, Endpoint, Signer, fetch, generate_key, push};
use hms_domain::HospitalId;
use hms_e2e::client::Conn;

use crate::dr::{HospitalLag, ReplicationStatus, Replicator};
use crate::store::{HospitalStore, conformance, ingest};
use crate::testkit::{Cloud, T, batch, id, now, serve};

/// Guard against a hang; replication normally takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(60);

fn as_primary(pkcs8: &[u8], hospital: &str, region: &str) -> Signer {
    Signer::new(pkcs8, id(hospital), id(&format!("dr:{region}"))).expect("signer")
}

fn start(primary: &Cloud, peer: Endpoint, key: Vec<u8>, status: Arc<ReplicationStatus>) {
    let r = Replicator::new(
        Client::new(peer),
        key,
        primary.state.registry.clone(),
        primary.state.open.clone(),
        status,
        primary.state.ingested.clone(),
    )
    .expect("replicator");
    tokio::spawn(r.run(tokio_util::sync::CancellationToken::new()));
}

async fn until(
    status: &ReplicationStatus,
    what: &str,
    pred: impl Fn(&std::collections::BTreeMap<HospitalId, HospitalLag>) -> bool,
) {
    if tokio::time::timeout(PATIENCE, status.wait_until(pred))
        .await
        .is_err()
    {
        panic!("{what}: not reached; status {:?}", status.snapshot());
    }
}

fn replicated(
    h: &str,
    seq: u64,
) -> impl Fn(&std::collections::BTreeMap<HospitalId, HospitalLag>) -> bool {
    let h: HospitalId = id(h);
    move |m| m.get(&h).is_some_and(|s| s.replica_seq == Some(seq))
}

#[tokio::test]
async fn a_replica_ends_with_exactly_the_primarys_events() {
    let (primary_key, primary_pub) = generate_key().expect("key");
    let replica = Cloud::replica("eu-central", &["eu-west"], &[("eu-west", primary_pub)]);
    let replica_at = serve(replica.state.clone(), None).await;
    let status = Arc::new(ReplicationStatus::new(
        replica_at.http().url(),
        id("eu-central"),
    ));
    let mut primary = Cloud::primary("eu-west", &["h1", "h2", "h3"]);
    primary.state = primary.state.clone().with_replication(status.clone());
    let primary_at = serve(primary.state.clone(), None).await;
    let ep = primary_at.http();
    let (h1_log, h2_log) = (conformance::log("h1", 45), conformance::log("h2", 1_500));
    // The replica already holds h1's first 10 events (an earlier run).
    let mut pre = replica.stores.open(&id("h1")).expect("open");
    ingest(&mut pre, &batch("h1", &h1_log[..10])).expect("seed");
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

#[tokio::test]
async fn replication_to_an_unreachable_peer_is_reported_as_lag() {
    let (primary_key, _) = generate_key().expect("key");
    let status = Arc::new(ReplicationStatus::new(
        "http://127.0.0.1:9".into(),
        id("eu-central"),
    ));
    let mut primary = Cloud::primary("eu-west", &["h1"]);
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
    let mut c = Conn::connect(primary_at.addr, None).await.expect("connect");
    let h = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["replication"]["hospitals_failing"], 1);
    assert_eq!(h["replication"]["max_lag_events"], 5);
}

#[tokio::test]
async fn a_replica_refuses_unknown_primaries_regions_it_does_not_allow_and_appliances() {
    let (west, west_pub) = generate_key().expect("key");
    let (north, north_pub) = generate_key().expect("key");
    let replica = Cloud::replica(
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
    // Appliances do not sync with a replica, nor restore from it.
    let (appliance, _) = generate_key().expect("key");
    let edge = Signer::new(&appliance, id("h1"), id("edge-1")).expect("signer");
    let (status, _) = refused(push(&ep, &edge, &batch("h1", &log[3..]), now(), T).await);
    assert_eq!(status, 403);
    match fetch(&ep, &edge, 1, 10, now(), T).await {
        Err(PushError::Refused { status: 403, .. }) => {}
        other => panic!("restore from a replica: {other:?}"),
    }
    // Nothing of the refused requests was stored.
    assert_eq!(replica.events("h1"), log[..3]);
    assert!(replica.events("h9").is_empty());
    let mut s = replica.stores.open(&id("h1")).expect("open");
    assert_eq!(s.position().expect("position").seq, 3);
    // And a primary accepts no replication at all.
    let primary = Cloud::primary("eu-west", &["h1"]);
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
