//! The sync transport: compressed and plain batches, bounded decompression,
//! restore reads, connection reuse, and HTTPS.

use cloud_sync_client::push::{EVENTS, PushError};
use cloud_sync_client::{Client, Endpoint, Signer, codec, fetch, position, push};
use hms_e2e::client::{Conn, Reply};
use hyper::Method;

use crate::http::BATCHES;
use crate::store::conformance;
use crate::testkit::{Backend, Cloud, T, available, batch, now, self_signed, serve};

on_each_backend!(
    #[tokio::test]
    gzip_and_plain_batches_are_accepted_and_bombs_refused,
    restore_reads_back_the_hospitals_own_events,
    a_client_keeps_one_connection_across_calls,
    https_with_the_trusted_ca_and_refused_without_it,
);

/// Sends `body` signed by `signer` to `path`, with `encoding` when given.
async fn raw(
    c: &mut Conn,
    signer: &Signer,
    method: Method,
    path: &str,
    body: Vec<u8>,
    encoding: Option<&str>,
) -> Reply {
    let s = signer.sign(method.as_str(), path, now(), &body);
    let mut headers = vec![
        ("x-hms-hospital", s.hospital.to_string()),
        ("x-hms-node", s.node.to_string()),
        ("x-hms-timestamp", s.timestamp_ms.to_string()),
        ("x-hms-signature", s.signature.clone()),
    ];
    if let Some(e) = encoding {
        headers.push(("content-encoding", e.to_owned()));
    }
    let body = (!body.is_empty()).then_some(body);
    c.request_with(method, path, &headers, body)
        .await
        .expect("request")
}

async fn gzip_and_plain_batches_are_accepted_and_bombs_refused(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let served = serve(cloud.state.clone(), None).await;
    let signer = cloud.signer("h1");
    let log = conformance::log("h1", 12);
    let mut c = Conn::connect(served.addr, None).await.expect("connect");
    let json =
        |from: usize, to: usize| serde_json::to_vec(&batch("h1", &log[from..to])).expect("json");

    // Plain JSON, as before compression existed.
    let r = raw(&mut c, signer, Method::POST, BATCHES, json(0, 4), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json().expect("json")["acked_seq"], 4);
    // Gzip, signed over the compressed bytes.
    let z = codec::gzip(&json(4, 8)).expect("gzip");
    let r = raw(
        &mut c,
        signer,
        Method::POST,
        BATCHES,
        z.clone(),
        Some("gzip"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json().expect("json")["acked_seq"], 8);
    // The same compressed bytes signed as plain: the signature still holds
    // (it covers the bytes as sent) but they are not JSON.
    let r = raw(&mut c, signer, Method::POST, BATCHES, z, None).await;
    assert_eq!(r.status, 400);
    // A decompression bomb: 64 MiB of zeros in a few tens of KiB.
    let bomb = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 64 << 20]).expect("compress");
        enc.finish().expect("compress")
    };
    let r = raw(&mut c, signer, Method::POST, BATCHES, bomb, Some("gzip")).await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    // Too large as sent. Asked of the router directly: over a socket the
    // server answers before reading such a body and closes the connection,
    // so whether the client still reads the answer depends on timing.
    {
        use tower::ServiceExt;
        let body = vec![b' '; 5 << 20];
        let s = signer.sign("POST", BATCHES, now(), &body);
        let req = axum::http::Request::post(BATCHES)
            .header("x-hms-hospital", s.hospital.as_str())
            .header("x-hms-node", s.node.as_str())
            .header("x-hms-timestamp", s.timestamp_ms.to_string())
            .header("x-hms-signature", s.signature)
            .body(axum::body::Body::from(body))
            .expect("request");
        let r = crate::http::router(cloud.state.clone())
            .oneshot(req)
            .await
            .expect("answer");
        assert_eq!(r.status(), 413);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
    // Not gzip at all, and an encoding the cloud does not speak.
    let r = raw(
        &mut c,
        signer,
        Method::POST,
        BATCHES,
        b"garbage".to_vec(),
        Some("gzip"),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = raw(
        &mut c,
        signer,
        Method::POST,
        BATCHES,
        json(8, 12),
        Some("br"),
    )
    .await;
    assert_eq!(r.status, 415);
    // A compressed body tampered after signing.
    let mut z = codec::gzip(&json(8, 12)).expect("gzip");
    let s = signer.sign("POST", BATCHES, now(), &z);
    z.push(0);
    let r = c
        .request_with(
            Method::POST,
            BATCHES,
            &[
                ("x-hms-hospital", s.hospital.to_string()),
                ("x-hms-node", s.node.to_string()),
                ("x-hms-timestamp", s.timestamp_ms.to_string()),
                ("x-hms-signature", s.signature.clone()),
                ("content-encoding", "gzip".into()),
            ],
            Some(z),
        )
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    // None of the refused bodies stored anything; the client's push (gzip) completes the log.
    let ep = served.http();
    assert_eq!(
        position(&ep, signer, now(), T)
            .await
            .expect("position")
            .acked_seq,
        8
    );
    let p = push(&ep, signer, &batch("h1", &log[8..]), now(), T)
        .await
        .expect("push");
    assert_eq!(p.acked_seq, 12);
    assert_eq!(cloud.events("h1"), log);
}

async fn restore_reads_back_the_hospitals_own_events(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1", "h2"]);
    let served = serve(cloud.state.clone(), None).await;
    let ep = served.http();
    let (h1, h2) = (cloud.signer("h1"), cloud.signer("h2"));
    let log = conformance::log("h1", 25);
    push(&ep, h1, &batch("h1", &log), now(), T)
        .await
        .expect("push");

    assert_eq!(
        fetch(&ep, h1, 1, 10, now(), T).await.expect("fetch"),
        log[..10]
    );
    assert_eq!(
        fetch(&ep, h1, 21, 1000, now(), T).await.expect("fetch"),
        log[20..]
    );
    assert!(
        fetch(&ep, h1, 26, 10, now(), T)
            .await
            .expect("fetch")
            .is_empty()
    );
    // from 0 reads as 1; a limit of 0 as 1; a huge limit is capped.
    assert_eq!(
        fetch(&ep, h1, 0, 0, now(), T).await.expect("fetch"),
        log[..1]
    );
    assert_eq!(
        fetch(&ep, h1, 1, usize::MAX, now(), T)
            .await
            .expect("fetch"),
        log
    );
    // Walking the log as a restore does.
    let mut back = vec![];
    loop {
        let next = back.len() as u64 + 1;
        let page = fetch(&ep, h1, next, 7, now(), T).await.expect("page");
        if page.is_empty() {
            break;
        }
        back.extend(page);
    }
    assert_eq!(back, log);
    // Another hospital sees only its own (empty) log.
    assert!(
        fetch(&ep, h2, 1, 10, now(), T)
            .await
            .expect("fetch")
            .is_empty()
    );
    // Another appliance's key signing as h1 is refused.
    let (other, _) = cloud_sync_client::generate_key().expect("key");
    let impostor = Signer::new(
        &other,
        "h1".parse().expect("id"),
        "edge-1".parse().expect("id"),
    )
    .expect("signer");
    match fetch(&ep, &impostor, 1, 10, now(), T).await {
        Err(PushError::Refused { status: 401, .. }) => {}
        other => panic!("expected a refusal: {other:?}"),
    }
    // The signature covers the query: a signed path with another query is refused.
    let mut c = Conn::connect(served.addr, None).await.expect("connect");
    let s = h1.sign("GET", &format!("{EVENTS}?from=1&limit=5"), now(), b"");
    let r = c
        .request_with(
            Method::GET,
            &format!("{EVENTS}?from=1&limit=25"),
            &[
                ("x-hms-hospital", s.hospital.to_string()),
                ("x-hms-node", s.node.to_string()),
                ("x-hms-timestamp", s.timestamp_ms.to_string()),
                ("x-hms-signature", s.signature.clone()),
            ],
            None,
        )
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    // Bad parameters are 400 problems; unsigned is 401.
    for q in ["from=x", "limit=0", "limit=-1", "colour=red"] {
        let r = raw(
            &mut c,
            h1,
            Method::GET,
            &format!("{EVENTS}?{q}"),
            vec![],
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    }
    let r = c.get(&format!("{EVENTS}?from=1")).await.expect("request");
    assert_eq!(r.status, 401);
}

async fn a_client_keeps_one_connection_across_calls(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let served = serve(cloud.state.clone(), None).await;
    let signer = cloud.signer("h1");
    let log = conformance::log("h1", 40);
    let client = Client::new(served.http());
    for chunk in log.chunks(5) {
        client
            .push(signer, &batch("h1", chunk), now(), T)
            .await
            .expect("push");
    }
    assert_eq!(
        client
            .position(signer, now(), T)
            .await
            .expect("pos")
            .acked_seq,
        40
    );
    assert_eq!(
        client.fetch(signer, 1, 40, now(), T).await.expect("fetch"),
        log
    );
    assert_eq!(served.connections(), 1, "ten calls on one connection");
    // The free functions open a connection per call.
    position(&served.http(), signer, now(), T)
        .await
        .expect("pos");
    assert_eq!(served.connections(), 2);
    // Typed answers come through a kept connection too.
    match client.push(signer, &batch("h1", &log[..3]), now(), T).await {
        Ok(p) => assert_eq!(p.acked_seq, 40, "duplicates are acknowledged"),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(served.connections(), 2);
}

async fn https_with_the_trusted_ca_and_refused_without_it(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "cloud");
    let (stranger, _) = self_signed(dir.path(), "stranger");
    let acceptor = hms_web::tls::acceptor(&cert, &key).expect("acceptor");
    let served = serve(cloud.state.clone(), Some(acceptor)).await;
    let port = served.addr.port();
    let signer = cloud.signer("h1");
    let log = conformance::log("h1", 6);

    let ep = Endpoint::parse(&format!("https://localhost:{port}"), Some(&cert)).expect("endpoint");
    assert_eq!(ep.url(), format!("https://localhost:{port}"));
    let p = push(&ep, signer, &batch("h1", &log), now(), T)
        .await
        .expect("push over https");
    assert_eq!(p.acked_seq, 6);
    let client = Client::new(ep.clone());
    assert_eq!(
        client.fetch(signer, 1, 10, now(), T).await.expect("fetch"),
        log
    );
    assert_eq!(
        client
            .position(signer, now(), T)
            .await
            .expect("pos")
            .acked_seq,
        6
    );

    // A CA that did not sign the cloud's certificate: the handshake is refused.
    let wrong =
        Endpoint::parse(&format!("https://localhost:{port}"), Some(&stranger)).expect("endpoint");
    match push(&wrong, signer, &batch("h1", &log), now(), T).await {
        Err(PushError::Transient(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("an untrusted cloud must be refused: {other:?}"),
    }
    // The name checked is the URL's host: the certificate is for localhost only.
    let misnamed =
        Endpoint::parse(&format!("https://127.0.0.1:{port}"), Some(&cert)).expect("endpoint");
    match push(&misnamed, signer, &batch("h1", &log), now(), T).await {
        Err(PushError::Transient(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("a certificate for another name must be refused: {other:?}"),
    }
    // Plain HTTP to the TLS port gets no answer it could take for a position.
    let plain = Endpoint::parse(&format!("http://127.0.0.1:{port}"), None).expect("endpoint");
    assert!(position(&plain, signer, now(), T).await.is_err());
    assert_eq!(cloud.events("h1"), log);
}

#[tokio::test]
async fn the_downlink_gives_each_appliance_its_own_hospitals_eids_in_order() {
    use hms_domain::phi::Mrn;
    let cloud = Cloud::primary("eu-west", &["h1", "h2"]);
    let state = cloud
        .state
        .clone()
        .with_downlink(crate::downlink::Downlink::in_memory().expect("downlink"));
    let store = state.downlink.clone().expect("downlink");
    let at = serve(state, None).await;
    let client = Client::new(at.http());
    // Nothing yet.
    let none = client
        .downlink(cloud.signer("h1"), 0, now(), T)
        .await
        .expect("read");
    assert!(none.is_empty());
    let h1 = crate::testkit::id("h1");
    let h2 = crate::testkit::id("h2");
    store.assign(&h1, &Mrn::new("M1"), "E-100").expect("assign");
    store.assign(&h2, &Mrn::new("X1"), "E-100").expect("assign");
    store.assign(&h1, &Mrn::new("M2"), "E-101").expect("assign");
    let got = client
        .downlink(cloud.signer("h1"), 0, now(), T)
        .await
        .expect("read");
    assert_eq!(
        got.iter()
            .map(|a| (a.seq, a.mrn.expose(), a.eid.as_str()))
            .collect::<Vec<_>>(),
        [(1, "M1", "E-100"), (2, "M2", "E-101")]
    );
    let after = client
        .downlink(cloud.signer("h1"), 1, now(), T)
        .await
        .expect("read");
    assert_eq!(after.len(), 1);
    let h2s = client
        .downlink(cloud.signer("h2"), 0, now(), T)
        .await
        .expect("read");
    assert_eq!(h2s.len(), 1, "another hospital's EIDs are not shown");
    // Unsigned: 401; a bad parameter: 400.
    let mut c = Conn::connect(at.addr, None).await.expect("connect");
    assert_eq!(
        c.get("/sync/v1/downlink?after=0")
            .await
            .expect("get")
            .status,
        401
    );
    let r = raw(
        &mut c,
        cloud.signer("h1"),
        Method::GET,
        "/sync/v1/downlink?after=x",
        vec![],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
}
