//! The sync service over HTTP with a durable registry: signed batches,
//! gaps, unsigned and forged requests, and the appliance-side client
//! reading the same answers as typed results.

use cloud_sync_client::{Endpoint, Signer, generate_key};
use hms_domain::NodeId;
use hms_domain::sync::SyncBatch;
use hms_e2e::client::Conn;
use hyper::Method;

use crate::enrolment::{Enrolment, enroll_durably, open_registry};
use crate::http::{BATCHES, router};
use crate::state::CloudState;
use crate::store::conformance;
use crate::testkit::{Backend, Stores, available};

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id")
}

async fn push(
    c: &mut Conn,
    signer: &Signer,
    events: &[hms_domain::Envelope],
) -> hms_e2e::client::Reply {
    let body = serde_json::to_vec(&SyncBatch {
        hospital: id("h1"),
        node: id::<NodeId>("edge-1"),
        events: events.to_vec(),
    })
    .expect("json");
    let s = signer.sign(
        "POST",
        BATCHES,
        hms_domain::Timestamp::now().as_millis(),
        &body,
    );
    let headers = [
        ("x-hms-hospital", s.hospital.to_string()),
        ("x-hms-node", s.node.to_string()),
        ("x-hms-timestamp", s.timestamp_ms.to_string()),
        ("x-hms-signature", s.signature.clone()),
    ];
    c.request_with(Method::POST, BATCHES, &headers, Some(body))
        .await
        .expect("request")
}

on_each_backend!(
    #[tokio::test]
    signed_batches_over_http,
);

async fn signed_batches_over_http(backend: Backend) {
    if !available(backend) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pkcs8, public) = generate_key().expect("key");
    {
        // Enrolment is durable: a fresh registry reads it back.
        let (reg, conn) = open_registry(dir.path(), id("eu-west")).expect("registry");
        enroll_durably(
            &reg,
            &conn,
            Enrolment {
                hospital: id("h1"),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: public,
            },
        )
        .expect("enrol");
        let (_, pub2) = generate_key().expect("key");
        let other = enroll_durably(
            &reg,
            &conn,
            Enrolment {
                hospital: id("h9"),
                region: id("us-east"),
                node: id("edge-1"),
                public_key: pub2,
            },
        );
        assert!(other.is_err(), "a hospital of another region is refused");
    }
    let (registry, conn) = open_registry(dir.path(), id("eu-west")).expect("registry");
    let stores = Stores::new(backend, dir.path());
    let state = CloudState::new(registry, stores.opener(), conn);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let signer = Signer::new(&pkcs8, id("h1"), id("edge-1")).expect("signer");
    let log = conformance::log("h1", 10);
    let mut c = Conn::connect(addr, None).await.expect("connect");
    let r = push(&mut c, &signer, &log[..6]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json().expect("json")["acked_seq"], 6);
    // A gap: 409 naming the seq to resend from; nothing stored.
    let r = push(&mut c, &signer, &log[7..]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json().expect("json")["expected_seq"], 7);
    // Unsigned and wrongly signed requests.
    let r = c
        .request(Method::POST, BATCHES, Some(b"{}".to_vec()))
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    let (other, _) = generate_key().expect("key");
    let impostor = Signer::new(&other, id("h1"), id("edge-1")).expect("signer");
    assert_eq!(push(&mut c, &impostor, &log[6..]).await.status, 401);
    // The appliance-side client reads the same answers as typed results.
    use cloud_sync_client::push::{PushError, push as client_push};
    let batch = |events: &[hms_domain::Envelope]| SyncBatch {
        hospital: id("h1"),
        node: id::<NodeId>("edge-1"),
        events: events.to_vec(),
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let t = std::time::Duration::from_secs(5);
    let ep = Endpoint::parse(&format!("http://{addr}"), None).expect("endpoint");
    match client_push(&ep, &signer, &batch(&log[8..]), now, t).await {
        Err(PushError::Gap { expected: 7 }) => {}
        other => panic!("expected a gap at 7: {other:?}"),
    }
    match client_push(&ep, &impostor, &batch(&log[6..]), now, t).await {
        Err(PushError::Refused { status: 401, .. }) => {}
        other => panic!("expected a refusal: {other:?}"),
    }
    let dead = Endpoint::parse("http://127.0.0.1:9", None).expect("endpoint");
    assert!(matches!(
        client_push(&dead, &signer, &batch(&log[6..]), now, t).await,
        Err(PushError::Transient(_))
    ));
    // The resend from the expected position completes the log.
    let pushed = client_push(&ep, &signer, &batch(&log[6..]), now, t)
        .await
        .expect("pushed");
    assert_eq!(pushed.acked_seq, 10);
    assert_eq!(
        stores.with("h1", |s| s.events(1, 100)).expect("events"),
        log
    );
}
