//! The regional EMPI's model over the operator API: shown, trained on the
//! region's records, rolled back, refused with too few records; every EID
//! the same afterwards; automatic training in the background.

use std::sync::Arc;

use hms_domain::empi::{Eid, RecordKey};
use hms_e2e::client::Conn;
use serde_json::json;

use crate::downlink::Downlink;
use crate::empi::RegionalEmpi;
use crate::testkit::{Cloud, T, quick_training, seed_empi, serve};

/// An EMPI over `people` seeded synthetic people, trained quickly.
fn empi(dir: &std::path::Path, people: usize) -> (Arc<RegionalEmpi>, Vec<RecordKey>) {
    let keys = seed_empi(dir, people);
    let downlink = Arc::new(Downlink::in_memory().expect("downlink"));
    let empi = RegionalEmpi::open(dir, downlink).expect("open");
    empi.set_train_settings(quick_training());
    (Arc::new(empi), keys)
}

fn eids(empi: &RegionalEmpi, keys: &[RecordKey]) -> Vec<Option<Eid>> {
    keys.iter()
        .map(|k| empi.eid_of(&k.source, k.local_id.expose()))
        .collect()
}

#[tokio::test]
async fn the_model_endpoints_need_a_token_and_a_primary_with_the_empi() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    assert_eq!(
        anon.get("/api/v1/empi/model").await.expect("get").status,
        401
    );
    for path in ["/api/v1/empi/model/train", "/api/v1/empi/model/activate"] {
        let r = anon.post(path, &json!({})).await.expect("post");
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    }
    // A cloud without the EMPI (a replica) says where it runs.
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let r = c.get("/api/v1/empi/model").await.expect("get");
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json().expect("json")["type"],
        "urn:hms:problem:wrong-role"
    );
    let r = c
        .post("/api/v1/empi/model/train", &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn operators_see_train_and_roll_back_the_model_and_no_eid_changes() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (empi, keys) = empi(dir.path(), 700);
    let at = serve(cloud.state.clone().with_empi(empi.clone()), None).await;
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let before = eids(&empi, &keys);

    // The hand-set model, and /health says so.
    let m = c
        .get("/api/v1/empi/model")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(m["version"], "empi-default-1");
    assert_eq!(m["trained"], false);
    assert!(m["trained_at"].is_null() && m["em"].is_null(), "{m}");
    assert_eq!(
        m["thresholds"],
        json!({"link": 10.0, "review": 4.0, "margin": 3.0})
    );
    let fields = m["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), 11);
    assert_eq!(fields[0]["field"], "given_name");
    assert_eq!(fields[0]["levels"][0]["level"], "exact");
    assert!(fields[0]["levels"][0]["weight"].as_f64().expect("bits") > 5.0);
    assert_eq!(m["models"], json!([]));
    assert_eq!(m["min_train_records"], 1000);
    // Without a token the health check says only up or down.
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    let health = anon
        .get("/health")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(health, json!({ "status": "ok" }));
    let health = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(health["empi"]["model"], "empi-default-1");
    assert_eq!(health["empi"]["model_trained"], false);

    // Bad requests change nothing.
    for body in [
        json!({"sample": 10}),
        json!({"colour": "red"}),
        json!({"seed": -1}),
    ] {
        let r = c
            .post("/api/v1/empi/model/train", &body)
            .await
            .expect("post");
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json().expect("json")["type"], "urn:hms:problem:bad-query");
    }
    let r = c
        .request(
            hyper::Method::POST,
            "/api/v1/empi/model/train",
            Some(b"sample=5".to_vec()),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400);

    // Trained on request (an empty body takes the defaults).
    let r = c
        .request(hyper::Method::POST, "/api/v1/empi/model/train", None)
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = r.json().expect("json");
    let v1 = first["version"].as_str().expect("version").to_owned();
    assert!(v1.starts_with("em-1-"), "{v1}");
    assert_eq!(first["trained"], true);
    assert_eq!(first["trained_by"], "operator:ops");
    assert_eq!(first["records"], keys.len());
    assert!(first["em"]["iterations"].as_u64().expect("iterations") > 1);
    assert!(first["em"]["converged"].is_boolean());
    assert!(
        first["em"]["lambda"]
            .as_f64()
            .is_some_and(|l| l > 0.0 && l < 1.0)
    );
    assert_eq!(
        first["thresholds"], m["thresholds"],
        "thresholds stay declared"
    );
    assert_ne!(first["fields"], m["fields"]);
    assert_eq!(first["models"][0]["version"], v1.as_str());
    assert_eq!(first["models"][0]["active"], true);
    assert_eq!(eids(&empi, &keys), before);
    let health = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(health["empi"]["model"], v1.as_str());
    assert_eq!(health["empi"]["model_trained"], true);
    // GET shows the same.
    let shown = c
        .get("/api/v1/empi/model")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(shown, first);

    // Another sample and seed, then back to the first.
    let second = c
        .post(
            "/api/v1/empi/model/train",
            &json!({"sample": 1000, "seed": 9}),
        )
        .await
        .expect("post")
        .json()
        .expect("json");
    assert!(
        second["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("em-2-")),
        "{second}"
    );
    assert_eq!(
        (second["sampled"].as_u64(), second["seed"].as_u64()),
        (Some(1000), Some(9))
    );
    assert_eq!(second["models"].as_array().map(Vec::len), Some(2));
    let back = c
        .post("/api/v1/empi/model/activate", &json!({"version": v1}))
        .await
        .expect("post");
    assert_eq!(back.status, 200);
    let back = back.json().expect("json");
    assert_eq!(back["version"], v1.as_str());
    assert_eq!(back["fields"], first["fields"]);
    assert_eq!(back["models"][1]["active"], true, "{back}");
    let r = c
        .post("/api/v1/empi/model/activate", &json!({"version": "em-9"}))
        .await
        .expect("post");
    assert_eq!(r.status, 404);
    let r = c
        .post("/api/v1/empi/model/activate", &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 400);
    assert_eq!(eids(&empi, &keys), before);
}

#[tokio::test]
async fn training_with_too_few_records_is_a_conflict_that_says_how_many() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (empi, keys) = empi(dir.path(), 6);
    let at = serve(cloud.state.clone().with_empi(empi.clone()), None).await;
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let r = c
        .post("/api/v1/empi/model/train", &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 409);
    assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    let p = r.json().expect("json");
    assert_eq!(p["type"], "urn:hms:problem:too-few-records");
    assert_eq!(
        (p["held"].as_u64(), p["needed"].as_u64()),
        (Some(keys.len() as u64), Some(1000))
    );
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at least 1000")),
        "{p}"
    );
    assert_eq!(empi.model().version, "empi-default-1");
}

#[tokio::test]
async fn a_never_trained_empi_trains_itself_in_the_background_once_it_holds_enough() {
    let cloud = Cloud::primary("eu-west", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (empi, keys) = empi(dir.path(), 700);
    empi.set_auto_train_records(1_000);
    let before = eids(&empi, &keys);
    let mut version = empi.watch_model();
    let state = cloud.state.clone().with_empi(empi.clone());
    tokio::spawn(state.run_empi(tokio_util::sync::CancellationToken::new()));
    state.empi_wake.notify_one();
    // A guard, not a timing: training in a debug build takes seconds.
    tokio::time::timeout(6 * T, version.wait_for(|v| v.starts_with("em-1-")))
        .await
        .expect("trained in time")
        .expect("watch");
    assert_eq!(empi.model().trained_by.as_deref(), Some("auto"));
    assert_eq!(eids(&empi, &keys), before);
}
