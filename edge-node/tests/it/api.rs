//! The kiosk API over real HTTP against an in-process appliance.

use std::collections::HashSet;

use hms_e2e::client::{Conn, Reply};
use hyper::Method;
use serde_json::{Value, json};

use crate::support::TestApp;

fn problem(r: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    let v = r.json().unwrap();
    assert_eq!(v["type"], format!("urn:hms:problem:{kind}"), "{v}");
    assert_eq!(v["status"], status);
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    v
}

async fn bed(c: &mut Conn, id: &str) -> Value {
    let r = c.get(&format!("/api/v1/beds/{id}")).await.unwrap();
    assert_eq!(r.status, 200);
    r.json().unwrap()["bed"].clone()
}

#[tokio::test]
async fn units_and_beds_are_listed_with_census() {
    let app = TestApp::start(&[("3W", 6, 2), ("ICU", 4, 1)]).await;
    let mut c = app.conn(&app.viewer).await;
    let r = c.get("/api/v1/units").await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 2);
    assert_eq!(units[0]["id"], "3W");
    assert_eq!(units[0]["name"], "Unit 3W");
    assert_eq!(units[0]["census"]["total"], 6);
    assert_eq!(units[0]["census"]["available"], 6);
    let r = c.get("/api/v1/units/ICU/beds").await.unwrap();
    let v = r.json().unwrap();
    let ids: Vec<_> = v["beds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["ICU-000", "ICU-001", "ICU-002", "ICU-003"]);
    assert_eq!(v["beds"][0]["state"], "vacant_clean");
    assert_eq!(v["beds"][0]["version"], 1);
    let r = c.get("/api/v1/units/ICU").await.unwrap();
    assert_eq!(r.json().unwrap()["census"]["total"], 4);
    app.stop().await;
}

#[tokio::test]
async fn authentication_and_roles() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    // No token.
    let mut anon = Conn::connect(app.addr, None).await.unwrap();
    let r = anon.get("/api/v1/units").await.unwrap();
    problem(&r, 401, "unauthorized");
    // A wrong token.
    let mut bad = Conn::connect(app.addr, Some("hms_not-a-real-token"))
        .await
        .unwrap();
    problem(
        &bad.get("/api/v1/units").await.unwrap(),
        401,
        "unauthorized",
    );
    // Health and metrics need no token.
    assert_eq!(anon.get("/health").await.unwrap().status, 200);
    assert_eq!(anon.get("/metrics").await.unwrap().status, 200);

    let assign = json!({ "encounter": "E1", "version": 1 });
    // A kiosk may read but not write.
    let mut viewer = app.conn(&app.viewer).await;
    let r = viewer
        .post("/api/v1/beds/3W-000/assign", &assign)
        .await
        .unwrap();
    let p = problem(&r, 403, "forbidden");
    assert!(p["detail"].as_str().unwrap().contains("bed_manager"));
    let r = viewer
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "dirty", "version": 1 }),
        )
        .await
        .unwrap();
    problem(&r, 403, "forbidden");
    // A nurse may do housekeeping but not assign or block.
    let mut nurse = app.conn(&app.nurse).await;
    let r = nurse
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "dirty", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    problem(
        &nurse
            .post("/api/v1/beds/3W-001/assign", &assign)
            .await
            .unwrap(),
        403,
        "forbidden",
    );
    let r = nurse
        .post(
            "/api/v1/beds/3W-001/status",
            &json!({ "status": "blocked", "reason": "x", "version": 1 }),
        )
        .await
        .unwrap();
    problem(&r, 403, "forbidden");
    // A bed manager and an admin may assign.
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-001/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let mut a = app.conn(&app.admin).await;
    let r = a
        .post(
            "/api/v1/beds/3W-002/assign",
            &json!({ "encounter": "E2", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The actor of each change is the token's name.
    let r = a.get("/api/v1/beds/3W-001").await.unwrap();
    let v = r.json().unwrap();
    assert_eq!(v["history"][0]["kind"], "bed.assigned");
    assert_eq!(v["history"][0]["actor"], "user:bm-bob");
    assert_eq!(v["history"][1]["kind"], "bed.commissioned");
    // Failures are counted.
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("hms_auth_failures_total{reason=\"forbidden\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("hms_auth_failures_total{reason=\"missing\"} 1"));
    app.stop().await;
}

#[tokio::test]
async fn stale_versions_and_invalid_transitions_are_conflicts_with_the_current_bed() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-000/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["bed"]["state"], "occupied");
    assert_eq!(v["bed"]["encounter"], "E1");
    assert_eq!(v["bed"]["version"], 2);
    assert!(v["seq"].as_u64().unwrap() > 4);
    // Someone who saw version 1 tries to mark it dirty: 409 with the current bed.
    let mut n = app.conn(&app.nurse).await;
    let r = n
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "dirty", "version": 1 }),
        )
        .await
        .unwrap();
    let p = problem(&r, 409, "stale-version");
    assert_eq!(p["current"]["version"], 2);
    assert_eq!(p["current"]["state"], "occupied");
    assert_eq!(p["current"]["encounter"], "E1");
    // Right version, wrong state.
    let r = n
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "dirty", "version": 2 }),
        )
        .await
        .unwrap();
    let p = problem(&r, 409, "invalid-transition");
    assert_eq!(p["current"]["state"], "occupied");
    // The same encounter cannot take a second bed.
    let r = m
        .post(
            "/api/v1/beds/3W-001/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    problem(&r, 409, "encounter-already-placed");
    // Nothing changed on the bed.
    assert_eq!(bed(&mut m, "3W-000").await["version"], 2);
    // Release, clean, and the bed is free again.
    let r = m
        .post("/api/v1/beds/3W-000/release", &json!({ "version": 2 }))
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bed"]["state"], "vacant_dirty");
    let r = n
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "cleaning", "version": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bed"]["state"], "cleaning");
    let r = n
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "clean", "version": 4 }),
        )
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bed"]["state"], "vacant_clean");
    // Block needs a reason; then back in service.
    let r = m
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "blocked", "version": 5 }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    let r = m
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "blocked", "reason": "bed rail broken", "until": "2030-01-01T00:00:00Z", "version": 5 }),
        )
        .await
        .unwrap();
    let v = r.json().unwrap();
    assert_eq!(v["bed"]["state"], "blocked");
    assert_eq!(v["bed"]["reason"], "bed rail broken");
    assert_eq!(v["bed"]["until"], "2030-01-01T00:00:00.000Z");
    let r = m
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "in_service", "version": 6 }),
        )
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bed"]["state"], "vacant_dirty");
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_documents() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let mut m = app.conn(&app.manager).await;
    // Unknown bed / unit / route / method.
    problem(
        &m.get("/api/v1/beds/NOPE").await.unwrap(),
        404,
        "unknown-bed",
    );
    problem(
        &m.get("/api/v1/beds/bad%20id").await.unwrap(),
        404,
        "unknown-bed",
    );
    problem(
        &m.get("/api/v1/units/NOPE/beds").await.unwrap(),
        404,
        "unknown-unit",
    );
    problem(
        &m.get("/api/v1/units/NOPE").await.unwrap(),
        404,
        "unknown-unit",
    );
    let r = m
        .post(
            "/api/v1/beds/NOPE/assign",
            &json!({ "encounter": "E1", "version": 1 }),
        )
        .await
        .unwrap();
    problem(&r, 404, "unknown-bed");
    let r = m
        .post(
            "/api/v1/units/NOPE/placements",
            &json!({ "encounter": "E1" }),
        )
        .await
        .unwrap();
    problem(&r, 404, "unknown-unit");
    problem(
        &m.get("/api/v2/whatever").await.unwrap(),
        404,
        "no-such-route",
    );
    let r = m
        .request(Method::DELETE, "/api/v1/beds/3W-000", None)
        .await
        .unwrap();
    problem(&r, 405, "method-not-allowed");
    // Malformed JSON, wrong types, missing and unknown fields.
    let path = "/api/v1/beds/3W-000/assign";
    let r = m
        .request(Method::POST, path, Some(b"{\"encounter\": ".to_vec()))
        .await
        .unwrap();
    problem(&r, 400, "malformed-json");
    let r = m
        .post(path, &json!({ "encounter": "E1", "version": "one" }))
        .await
        .unwrap();
    let p = problem(&r, 422, "invalid-request");
    assert!(
        !p["detail"].as_str().unwrap().contains("one"),
        "values are redacted: {p}"
    );
    problem(
        &m.post(path, &json!({ "encounter": "E1" })).await.unwrap(),
        422,
        "invalid-request",
    );
    let r = m
        .post(
            path,
            &json!({ "encounter": "E1", "version": 1, "extra": true }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    let r = m
        .post(path, &json!({ "encounter": "not valid!", "version": 1 }))
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    let r = m
        .post(
            path,
            &json!({ "encounter": "E1", "version": 1, "patient": { "mrn": "M1", "sex": "robot" } }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    // Not JSON at all.
    let r = m
        .request(
            Method::POST,
            "/api/v1/beds/3W-000/release",
            Some(b"\xff\xfe garbage".to_vec()),
        )
        .await
        .unwrap();
    problem(&r, 400, "malformed-json");
    // Values sent are never echoed in error details (they may be PHI).
    let r = m
        .post(
            path,
            &json!({ "encounter": "E1", "version": 1, "patient": { "mrn": 1234567 } }),
        )
        .await
        .unwrap();
    let p = problem(&r, 422, "invalid-request");
    assert!(!p["detail"].as_str().unwrap().contains("1234567"), "{p}");
    let r = m
        .post(path, &json!({ "encounter": "E1", "version": 1, "patient": { "mrn": "M1", "sex": "DOE JANE" } }))
        .await
        .unwrap();
    let p = problem(&r, 422, "invalid-request");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        !detail.contains("DOE") && detail.contains("patient.sex"),
        "{p}"
    );
    // Unknown patient fields are refused, not silently dropped.
    let r = m
        .post(
            path,
            &json!({ "encounter": "E1", "version": 1, "patient": { "mrn": "M1", "ssn": "123" } }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    // A time that cannot be stored and read back is refused.
    let r = m
        .post(
            "/api/v1/beds/3W-000/status",
            &json!({ "status": "blocked", "reason": "x", "until": 9_000_000_000_000_000i64, "version": 1 }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    // A path that does not decode, and a raw path echoing PHI-like text.
    problem(
        &m.get("/api/v1/beds/%FF%FE").await.unwrap(),
        400,
        "bad-request",
    );
    let p = problem(
        &m.get("/api/v1/beds/DOE%2C%20JANE").await.unwrap(),
        404,
        "unknown-bed",
    );
    assert!(!p["detail"].as_str().unwrap().contains("DOE"), "{p}");
    // ?access_token= only works for the live stream.
    let mut anon = Conn::connect(app.addr, None).await.unwrap();
    let r = anon
        .get(&format!("/api/v1/units?access_token={}", app.manager))
        .await
        .unwrap();
    problem(&r, 401, "unauthorized");
    // Oversized body (limit 64 KiB by default): refused on its declared length,
    // before the body is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        app.manager,
        200 * 1024
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("application/problem+json")
            && text.contains("urn:hms:problem:payload-too-large"),
        "{text}"
    );
    // A chunked body (no declared length) is cut off while it is read.
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        app.manager,
        64 * 1024 + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; 64 * 1024 + 1]).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("urn:hms:problem:payload-too-large"), "{text}");
    // Nothing changed.
    let mut m = app.conn(&app.manager).await;
    assert_eq!(bed(&mut m, "3W-000").await["version"], 1);
    app.stop().await;
}

#[tokio::test]
async fn patient_details_only_for_clinical_roles() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let mut m = app.conn(&app.manager).await;
    let body = json!({
        "encounter": "E7",
        "patient": { "mrn": "MRN-0042", "name": "DOE, JANE", "sex": "female", "birth_date": "1970-01-02" },
        "version": 1
    });
    let r = m.post("/api/v1/beds/3W-000/assign", &body).await.unwrap();
    assert_eq!(r.json().unwrap()["bed"]["patient"]["name"], "DOE, JANE");
    let mut v = app.conn(&app.viewer).await;
    let r = v.get("/api/v1/units/3W/beds").await.unwrap();
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.contains("\"encounter\":\"E7\""));
    assert!(
        !text.contains("DOE") && !text.contains("MRN-0042"),
        "{text}"
    );
    let mut n = app.conn(&app.nurse).await;
    assert_eq!(bed(&mut n, "3W-000").await["patient"]["mrn"], "MRN-0042");
    app.stop().await;
}

async fn place_all(app: &TestApp, unit: &str, n: usize) -> (Vec<String>, Vec<Value>) {
    let mut tasks = vec![];
    for i in 0..n {
        let mut c = app.conn(&app.manager).await;
        let path = format!("/api/v1/units/{unit}/placements");
        tasks.push(tokio::spawn(async move {
            let body = json!({ "encounter": format!("MC-{i:04}"), "requirements": {} });
            c.post(&path, &body).await.unwrap()
        }));
    }
    let mut placed = vec![];
    let mut refused = vec![];
    for t in tasks {
        let r = t.await.unwrap();
        let v = r.json().unwrap();
        match r.status {
            201 => placed.push(v["bed"]["id"].as_str().unwrap().to_owned()),
            _ => refused.push(v),
        }
    }
    (placed, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_placements_get_two_hundred_distinct_beds() {
    let app = TestApp::start(&[("ED", 220, 4)]).await;
    let (placed, refused) = place_all(&app, "ED", 200).await;
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(placed.len(), 200);
    assert_eq!(
        placed.iter().collect::<HashSet<_>>().len(),
        200,
        "a bed was assigned twice"
    );
    let mut c = app.conn(&app.viewer).await;
    let v = c.get("/api/v1/units/ED").await.unwrap().json().unwrap();
    assert_eq!(v["census"]["occupied"], 200);
    assert_eq!(v["census"]["available"], 20);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surplus_placements_are_told_no_bed_is_available() {
    let app = TestApp::start(&[("ED", 50, 1)]).await;
    let (placed, refused) = place_all(&app, "ED", 80).await;
    assert_eq!(placed.len(), 50);
    assert_eq!(
        placed.iter().collect::<HashSet<_>>().len(),
        50,
        "a bed was assigned twice"
    );
    assert_eq!(refused.len(), 30);
    for p in &refused {
        assert_eq!(p["type"], "urn:hms:problem:no-bed-available", "{p}");
        assert_eq!(p["status"], 409);
    }
    // Every bed holds exactly one of the placed encounters.
    let mut c = app.conn(&app.viewer).await;
    let v = c
        .get("/api/v1/units/ED/beds")
        .await
        .unwrap()
        .json()
        .unwrap();
    let encounters: Vec<_> = v["beds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["encounter"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(encounters.len(), 50);
    assert_eq!(encounters.iter().collect::<HashSet<_>>().len(), 50);
    app.stop().await;
}

#[tokio::test]
async fn placement_honours_requirements() {
    let app = TestApp::start(&[("3W", 6, 2)]).await;
    let mut m = app.conn(&app.manager).await;
    // Beds 000-001 share room 0, 002-003 room 1, 004-005 room 2.
    let r = m
        .post("/api/v1/units/3W/placements", &json!({ "encounter": "E1", "patient": { "mrn": "M1" }, "requirements": { "sex": "male" } }))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.json().unwrap()["bed"]["id"], "3W-000");
    // A female patient is not put in the same room as him.
    let r = m
        .post(
            "/api/v1/units/3W/placements",
            &json!({ "encounter": "E2", "requirements": { "sex": "female" } }),
        )
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["bed"]["id"], "3W-002");
    let r = m
        .post(
            "/api/v1/units/3W/placements",
            &json!({ "encounter": "E3", "requirements": { "telemetry": true } }),
        )
        .await
        .unwrap();
    problem(&r, 409, "no-bed-available");
    let r = m
        .post(
            "/api/v1/units/3W/placements",
            &json!({ "encounter": "E4", "requirements": { "wings": true } }),
        )
        .await
        .unwrap();
    problem(&r, 422, "invalid-request");
    app.stop().await;
}

#[tokio::test]
async fn health_metrics_and_the_live_stream() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let mut anon = Conn::connect(app.addr, None).await.unwrap();
    // Without a token: up or down, nothing about the hospital.
    let h = anon.get("/health").await.unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.json().unwrap(), json!({ "status": "ok" }));
    // With a valid token of any role: the components.
    let h = app
        .conn(&app.viewer)
        .await
        .get("/health")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["hospital"], "test-hospital");
    assert_eq!(h["components"]["store"]["status"], "ok");
    assert_eq!(h["components"]["board"]["beds"], 2);
    // A token that is sent but not valid: refused, not quietly the summary.
    let r = Conn::connect(app.addr, Some("hms_not-a-token"))
        .await
        .unwrap()
        .get("/health")
        .await
        .unwrap();
    problem(&r, 401, "unauthorized");

    // Subscribe to the stream with a raw socket (SSE is a never-ending body).
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /api/v1/stream?access_token={} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
        app.viewer
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut seen_hello = false;
    while let Some(l) = lines.next_line().await.unwrap() {
        if l == "event: hello" {
            seen_hello = true;
            break;
        }
    }
    assert!(seen_hello);
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-001/assign",
            &json!({ "encounter": "E9", "patient": { "mrn": "SECRET-MRN" }, "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let data = loop {
        let l = lines.next_line().await.unwrap().unwrap();
        if let Some(d) = l.strip_prefix("data: ")
            && d.contains("\"bed\"")
        {
            break d.to_owned();
        }
    };
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["kind"], "bed.assigned");
    assert_eq!(v["bed"]["id"], "3W-001");
    assert_eq!(v["bed"]["state"], "occupied");
    assert!(
        !data.contains("SECRET-MRN"),
        "the stream carries no patient details"
    );

    // Extension methods do not create new metric label values.
    let xyz = Method::from_bytes(b"XYZ").unwrap();
    assert_eq!(
        anon.request(xyz, "/health", None).await.unwrap().status,
        405
    );
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        !metrics.contains("XYZ") && metrics.contains("method=\"other\""),
        "{metrics}"
    );
    for needle in [
        "hms_store_commits_total",
        "hms_store_events_total",
        "hms_store_wal_bytes",
        "hms_http_request_duration_seconds_bucket",
        "hms_beds{unit=\"3W\",state=\"occupied\"} 1",
        "hms_beds{unit=\"3W\",state=\"vacant_clean\"} 1",
        "route=\"/api/v1/beds/{bed}/assign\"",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // Shutdown ends the stream rather than hanging on it.
    app.stop().await;
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while lines.next_line().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end at shutdown");
}
