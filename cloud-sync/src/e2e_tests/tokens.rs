//! Operator tokens over real HTTP against a served cloud: every operator
//! route checks its scope (403 `missing-scope` naming it, `admin` passes
//! everywhere, tokens from before scopes are `admin`), revoked and expired
//! tokens are refused at once, re-keying an enrolled appliance needs
//! `replace` and is audited, and every EMPI read is audited with the
//! operator's name and no values.

use std::sync::Arc;

use hms_e2e::client::Conn;
use hyper::Method;
use serde_json::{Value, json};

use crate::store::registry::{NewOperatorToken, Revoked, Scope, Scopes};
use crate::testkit::{Backend, Cloud, T, available, batch, now, serve};

on_each_backend!(
    #[tokio::test]
    every_operator_route_checks_its_scope,
    revoked_and_expired_operator_tokens_are_refused_at_once,
    re_keying_an_enrolled_appliance_needs_replace_and_is_audited,
);

/// A token of `cloud` named `name` with `scopes` (and an expiry).
fn token(cloud: &Cloud, name: &str, scopes: &[&str], expires_ms: Option<i64>) -> String {
    cloud
        .state
        .registry_db
        .create_operator_token(
            &NewOperatorToken {
                name,
                scopes: Scopes::parse(scopes.iter().copied()).expect("scopes"),
                expires_ms,
                by: "cli:test",
            },
            now(),
        )
        .expect("token")
}

/// A cloud with `h1` enrolled and a regional EMPI, served.
async fn with_empi(backend: Backend) -> (Cloud, crate::testkit::Served, tempfile::TempDir) {
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let downlink = Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    let empi = Arc::new(crate::empi::RegionalEmpi::open(dir.path(), downlink).expect("empi"));
    let at = serve(cloud.state.clone().with_empi(empi), None).await;
    (cloud, at, dir)
}

fn record(local_id: &str, family: &str) -> Value {
    json!({
        "source": "h1", "local_id": local_id, "given_name": "Florence",
        "family_name": family, "birth_date": "1980-05-12", "sex": "female",
        "postal_code": "LS1 4AB"
    })
}

/// Every operator route, as (method, path, body, the scope it needs).
fn routes() -> Vec<(Method, &'static str, Option<Value>, Scope)> {
    use base64::Engine;
    let (_, key) = cloud_sync_client::generate_key().expect("key");
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    vec![
        (Method::GET, "/health", None, Scope::Read),
        (Method::GET, "/api/v1/hospitals", None, Scope::Read),
        (
            Method::GET,
            "/api/v1/hospitals/h1/census?from=2026-03-02T00:00:00Z&to=2026-03-02T01:00:00Z",
            None,
            Scope::Read,
        ),
        (
            Method::GET,
            "/api/v1/hospitals/h1/adt-volumes?from=2026-03-02&to=2026-03-02",
            None,
            Scope::Read,
        ),
        (
            Method::GET,
            "/api/v1/hospitals/h1/charges/daily?from=2026-03-02&to=2026-03-02",
            None,
            Scope::Read,
        ),
        (
            Method::GET,
            "/api/v1/hospitals/h1/or/utilisation?from=2026-03-02&to=2026-03-02",
            None,
            Scope::Read,
        ),
        (Method::GET, "/api/v1/replication", None, Scope::Read),
        (
            Method::POST,
            "/api/v1/hospitals",
            Some(
                json!({ "hospital": "h7", "region": "eu-west", "node": "edge-7", "public_key": key }),
            ),
            Scope::Enrol,
        ),
        (
            Method::POST,
            "/api/v1/empi/records",
            Some(record("A-1", "Nightingale")),
            Scope::Empi,
        ),
        (
            Method::GET,
            "/api/v1/empi/records/h1/A-1",
            None,
            Scope::Empi,
        ),
        (
            Method::POST,
            "/api/v1/empi/search",
            Some(record("", "Nightingale")),
            Scope::Empi,
        ),
        (
            Method::POST,
            "/api/v1/empi/decisions",
            Some(
                json!({ "action": "link", "a": { "source": "h1", "local_id": "A-1" },
                         "b": { "source": "h1", "local_id": "A-9" } }),
            ),
            Scope::Empi,
        ),
        (
            Method::POST,
            "/api/v1/empi/merge",
            Some(json!({ "survivor": "E1", "other": "E2" })),
            Scope::Empi,
        ),
        (Method::GET, "/api/v1/empi/reviews", None, Scope::Empi),
        (
            Method::POST,
            "/api/v1/empi/reviews/99/close",
            Some(json!({ "resolution": "done" })),
            Scope::Empi,
        ),
        (Method::GET, "/api/v1/empi/model", None, Scope::Empi),
        (
            Method::POST,
            "/api/v1/empi/model/train",
            Some(json!({})),
            Scope::Empi,
        ),
        (
            Method::POST,
            "/api/v1/empi/model/activate",
            Some(json!({ "version": "em-none" })),
            Scope::Empi,
        ),
        (Method::GET, "/api/v1/fleet", None, Scope::Fleet),
        (Method::GET, "/api/v1/fleet/h1/edge-1", None, Scope::Fleet),
        (
            Method::POST,
            "/api/v1/fleet/commands",
            Some(json!({ "nodes": [{ "hospital": "h1", "node": "edge-1" }], "command": "ping" })),
            Scope::Fleet,
        ),
        (
            Method::GET,
            "/api/v1/fleet/h1/edge-1/commands/1",
            None,
            Scope::Fleet,
        ),
    ]
}

async fn call(
    at: std::net::SocketAddr,
    token: &str,
    method: &Method,
    path: &str,
    body: &Option<Value>,
) -> (u16, Value) {
    let mut c = Conn::connect(at, Some(token)).await.expect("connect");
    let r = c
        .request(
            method.clone(),
            path,
            body.as_ref().map(|b| serde_json::to_vec(b).expect("json")),
        )
        .await
        .expect("request");
    (r.status, r.json().unwrap_or(Value::Null))
}

async fn every_operator_route_checks_its_scope(backend: Backend) {
    if !available(backend) {
        return;
    }
    let (cloud, at, _empi) = with_empi(backend).await;
    let single: Vec<(Scope, String)> = [Scope::Read, Scope::Empi, Scope::Fleet, Scope::Enrol]
        .into_iter()
        .map(|s| {
            (
                s,
                token(&cloud, &format!("only-{}", s.as_str()), &[s.as_str()], None),
            )
        })
        .collect();
    let admin = token(&cloud, "ops-admin", &["admin"], None);
    // A token from before scopes (none recorded) holds them all.
    let legacy = cloud.token("ops-legacy");
    let both = token(&cloud, "analyst", &["read", "empi"], None);
    for (method, path, body, needs) in routes() {
        for (scope, t) in &single {
            let (status, v) = call(at.addr, t, &method, path, &body).await;
            if *scope == needs {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} with {scope:?}: {status} {v}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} with {scope:?}: {v}");
                assert_eq!(v["type"], "urn:hms:problem:missing-scope", "{v}");
                assert_eq!(v["scope"], needs.as_str(), "{method} {path}: {v}");
                let detail = v["detail"].as_str().expect("detail");
                assert!(
                    detail.contains(&format!("lacks the scope {}", needs.as_str()))
                        && detail.contains(&format!("only-{}", scope.as_str())),
                    "{detail}"
                );
            }
        }
        for t in [&admin, &legacy] {
            let (status, v) = call(at.addr, t, &method, path, &body).await;
            assert!(
                status != 401 && status != 403,
                "{method} {path} with admin: {status} {v}"
            );
        }
        let (status, _) = call(at.addr, &both, &method, path, &body).await;
        assert_eq!(
            status == 403,
            matches!(needs, Scope::Enrol | Scope::Fleet),
            "{method} {path} with read,empi: {status}"
        );
    }
    // The health of a cloud still answers without a token, and says nothing.
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    let v = anon
        .get("/health")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert!(v.get("region").is_none(), "{v}");
}

async fn revoked_and_expired_operator_tokens_are_refused_at_once(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    let ops = token(&cloud, "ops", &["read", "enrol"], None);
    let mut c = Conn::connect(at.addr, Some(&ops)).await.expect("connect");
    assert_eq!(c.get("/api/v1/hospitals").await.expect("get").status, 200);
    let unknown = {
        let mut c = Conn::connect(at.addr, Some("hmsc_not-a-token"))
            .await
            .expect("connect");
        c.get("/api/v1/hospitals").await.expect("get")
    };
    assert_eq!(unknown.status, 401);
    // Revoked: the very next request on the same connection is refused,
    // like an unknown token, and so is a request with a body (refused
    // before the body is read).
    assert_eq!(
        cloud
            .state
            .registry_db
            .revoke_token("ops", now(), "cli:test")
            .expect("revoke"),
        Revoked::Revoked(1)
    );
    let r = c.get("/api/v1/hospitals").await.expect("get");
    assert_eq!((r.status, &r.body), (401, &unknown.body));
    let r = c
        .post("/api/v1/hospitals", &json!({ "hospital": "h2" }))
        .await
        .expect("post");
    assert_eq!(r.status, 401);
    // Expired: refused the same way.
    let expired = token(&cloud, "temp", &["read"], Some(now() - 1));
    let mut c = Conn::connect(at.addr, Some(&expired))
        .await
        .expect("connect");
    let r = c.get("/api/v1/hospitals").await.expect("get");
    assert_eq!((r.status, &r.body), (401, &unknown.body));
    let alive = token(&cloud, "temp-2", &["read"], Some(now() + 3_600_000));
    let mut c = Conn::connect(at.addr, Some(&alive)).await.expect("connect");
    assert_eq!(c.get("/api/v1/hospitals").await.expect("get").status, 200);
}

async fn re_keying_an_enrolled_appliance_needs_replace_and_is_audited(backend: Backend) {
    if !available(backend) {
        return;
    }
    use base64::Engine;
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let cloud = Cloud::primary_on(backend, "eu-west", &[]);
    let at = serve(cloud.state.clone(), None).await;
    let enroller = token(&cloud, "enroller", &["enrol"], None);
    let mut c = Conn::connect(at.addr, Some(&enroller))
        .await
        .expect("connect");
    let (old_pk8, old_key) = cloud_sync_client::generate_key().expect("key");
    let (new_pk8, new_key) = cloud_sync_client::generate_key().expect("key");
    let body = |node: &str, key: &[u8], replace: Option<bool>| {
        let mut v =
            json!({ "hospital": "h9", "region": "eu-west", "node": node, "public_key": b64(key) });
        if let Some(r) = replace {
            v["replace"] = json!(r);
        }
        v
    };
    let r = c
        .post("/api/v1/hospitals", &body("edge-1", &old_key, None))
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json().expect("json")["enrolment"], "enrolled");
    // The same again: 200, nothing changed.
    let r = c
        .post("/api/v1/hospitals", &body("edge-1", &old_key, None))
        .await
        .expect("post");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().expect("json")["enrolment"], "unchanged");
    // Another key (or node) without replace: 409, and the old key still syncs.
    for refused in [
        body("edge-1", &new_key, None),
        body("edge-2", &new_key, Some(false)),
    ] {
        let r = c.post("/api/v1/hospitals", &refused).await.expect("post");
        assert_eq!(r.status, 409, "{:?}", r.json());
        let v = r.json().expect("json");
        assert_eq!(v["type"], "urn:hms:problem:already-enrolled");
        assert_eq!(v["hospital"], "h9");
        assert!(
            v["detail"]
                .as_str()
                .expect("detail")
                .contains("\"replace\": true"),
            "{v}"
        );
    }
    let signer = |pk8: &[u8], node: &str| {
        cloud_sync_client::Signer::new(pk8, crate::testkit::id("h9"), crate::testkit::id(node))
            .expect("signer")
    };
    let log = crate::store::conformance::log("h9", 4);
    let pushed = cloud_sync_client::push(
        &at.http(),
        &signer(&old_pk8, "edge-1"),
        &batch("h9", &log[..2]),
        now(),
        T,
    )
    .await
    .expect("the enrolled key still syncs");
    assert_eq!(pushed.acked_seq, 2);
    // With replace: 200, the new key syncs at once and the old one is refused.
    let r = c
        .post("/api/v1/hospitals", &body("edge-2", &new_key, Some(true)))
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{:?}", r.json());
    let v = r.json().expect("json");
    assert_eq!(
        (&v["enrolment"], &v["replaced_node"]),
        (&json!("replaced"), &json!("edge-1"))
    );
    let mut new_batch = batch("h9", &log[2..]);
    new_batch.node = crate::testkit::id("edge-2");
    let pushed = cloud_sync_client::push(
        &at.http(),
        &signer(&new_pk8, "edge-2"),
        &new_batch,
        now(),
        T,
    )
    .await
    .expect("the new key syncs");
    assert_eq!(pushed.acked_seq, 4);
    assert!(
        cloud_sync_client::push(
            &at.http(),
            &signer(&old_pk8, "edge-1"),
            &batch("h9", &log[2..]),
            now(),
            T
        )
        .await
        .is_err(),
        "the replaced key is refused"
    );
    // Audited: who, which hospital, the nodes; never a key.
    let audit: Vec<String> = cloud
        .state
        .registry_db
        .audit_log()
        .expect("audit")
        .into_iter()
        .filter(|a| a.subject == "h9")
        .map(|a| format!("{} {} {}", a.actor, a.action, a.detail))
        .collect();
    assert_eq!(
        audit,
        [
            "operator:enroller enrolment_created node edge-1",
            "operator:enroller enrolment_replaced node edge-2 (was edge-1), new key",
        ]
    );
    // Durable: a restart reads the new enrolment.
    let (reg, _) =
        crate::enrolment::open_registry(cloud._dir.path(), crate::testkit::id("eu-west"))
            .expect("registry");
    assert_eq!(
        reg.get(&crate::testkit::id("h9"))
            .expect("enrolled")
            .public_key,
        new_key
    );
}

#[tokio::test]
async fn every_empi_read_is_audited_with_the_operator_and_no_values() {
    let (cloud, at, dir) = with_empi(Backend::Sqlite).await;
    let admin = token(&cloud, "registrar", &["admin"], None);
    for (id, family) in [
        ("A-1", "Nightingale"),
        ("A-2", "Nightingal"),
        ("A-3", "Seacole"),
    ] {
        let (status, v) = call(
            at.addr,
            &admin,
            &Method::POST,
            "/api/v1/empi/records",
            &Some(record(id, family)),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let steward = token(&cloud, "steward", &["empi"], None);
    let (status, v) = call(
        at.addr,
        &steward,
        &Method::POST,
        "/api/v1/empi/search",
        &Some(record("", "Nightingale")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let found = v["candidates"].as_array().expect("candidates").len();
    assert!(found >= 2, "{v}");
    let mut reviews = 0;
    for (path, want) in [
        ("/api/v1/empi/records/h1/A-3", 200),
        ("/api/v1/empi/records/h1/NOPE-1", 404),
        ("/api/v1/empi/reviews?status=open", 200),
        ("/api/v1/empi/model", 200),
    ] {
        let (status, v) = call(at.addr, &steward, &Method::GET, path, &None).await;
        assert_eq!(status, want, "{path}: {v}");
        if let Some(list) = v["reviews"].as_array() {
            reviews = list.len() as i64;
        }
    }
    // A refused read (no scope) is not answered, and not audited as a read.
    let reader = token(&cloud, "dashboard", &["read"], None);
    let (status, _) = call(at.addr, &reader, &Method::GET, "/api/v1/empi/model", &None).await;
    assert_eq!(status, 403);
    let db = crate::store::empi::EmpiDb::reader(&crate::store::empi::path(dir.path())).expect("db");
    let reads: Vec<(String, String, i64)> = db
        .audited_reads()
        .expect("reads")
        .into_iter()
        .map(|(at_ms, actor, query, results)| {
            assert!(at_ms > 0);
            (actor, query, results)
        })
        .collect();
    let row = |q: &str, n: i64| ("operator:steward".to_owned(), q.to_owned(), n);
    assert_eq!(
        reads,
        [
            row("search", found as i64),
            row("record", 1),
            row("record", 0),
            row("reviews", reviews),
            row("model", 1),
        ]
    );
    // No value asked for or answered is in the audit: its read rows hold
    // no source, local id, name or EID.
    assert_eq!(db.reads_naming_records(), 0);
    assert_eq!(db.count_audit(None, &["read"]), 5);
}
