//! The uplink against a cloud that lies: acknowledgements beyond what was
//! sent, or with another hash than the log's, are refused; nothing is pruned
//! by them, `/health` raises the alarm and `/metrics` counts them. The cloud
//! is a small real HTTP server here; the uplink is the real task (or the
//! real `hms-edge run`) over real sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use edge_node::metrics::Metrics;
use edge_node::store::Store;
use edge_node::sync::uplink::{self, Settings, Status};
use hms_domain::EventHash;
use hms_domain::sync::SyncBatch;
use hms_e2e::client::Conn;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{commission, settings};
use crate::support::{Proc, cli_token, hospital_toml, run_cli};

/// How the fake cloud acknowledges a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Ten seqs beyond the batch's last, with the batch's last hash.
    Beyond,
    /// The batch's last seq, with a hash that is not its.
    WrongHash,
    /// The batch's last seq and hash, as a real cloud does.
    Honest,
}

/// A batch the fake cloud answered: its seqs and the seq it acknowledged.
#[derive(Debug, Clone, Copy)]
struct Served {
    first: u64,
    last: u64,
    acked: u64,
}

struct Fake {
    answer: Mutex<Answer>,
    served: mpsc::UnboundedSender<Served>,
}

/// A cloud on a real socket that says it stands at 0 and answers batches as
/// told; it checks no signature.
struct FakeCloud {
    addr: SocketAddr,
    fake: Arc<Fake>,
    served: mpsc::UnboundedReceiver<Served>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeCloud {
    async fn start(answer: Answer) -> FakeCloud {
        let (tx, served) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            answer: Mutex::new(answer),
            served: tx,
        });
        let app = axum::Router::new()
            .route(
                "/sync/v1/position",
                get(|| async {
                    axum::Json(json!({"acked_seq": 0, "acked_hash": EventHash::GENESIS}))
                }),
            )
            .route("/sync/v1/batches", post(batch))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeCloud {
            addr,
            fake,
            served,
            server,
        }
    }

    fn answer(&self, a: Answer) {
        *self.fake.answer.lock().unwrap() = a;
    }

    /// The next batch it answered.
    async fn next_batch(&mut self) -> Served {
        tokio::time::timeout(Duration::from_secs(30), self.served.recv())
            .await
            .expect("the uplink sent no batch within 30 s")
            .unwrap()
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn batch(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let json = if headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip")
    {
        cloud_sync_client::codec::gunzip_bounded(&body, 8 << 20).unwrap()
    } else {
        body.to_vec()
    };
    let batch: SyncBatch = serde_json::from_slice(&json).unwrap();
    let (first, last) = (batch.events[0].seq, batch.events.last().unwrap());
    let answer = *fake.answer.lock().unwrap();
    let (acked, hash) = match answer {
        Answer::Beyond => (last.seq + 10, last.hash),
        Answer::WrongHash => (last.seq, EventHash([0xee; 32])),
        Answer::Honest => (last.seq, last.hash),
    };
    let _ = fake.served.send(Served {
        first,
        last: last.seq,
        acked,
    });
    axum::Json(json!({"acked_seq": acked, "acked_hash": hash, "stored": 0, "duplicates": 0}))
}

/// Uplink settings for the fake cloud at `addr`: batches of 5.
fn uplink_settings(addr: SocketAddr) -> Settings {
    let (pkcs8, _) = cloud_sync_client::generate_key().unwrap();
    let hospital: hms_domain::HospitalId = "h1".parse().unwrap();
    let node: hms_domain::NodeId = "edge-1".parse().unwrap();
    Settings {
        endpoints: vec![
            cloud_sync_client::Endpoint::parse(&format!("http://{addr}"), None).unwrap(),
        ],
        failback: Duration::from_secs(300),
        signer: Arc::new(
            cloud_sync_client::Signer::new(&pkcs8, hospital.clone(), node.clone()).unwrap(),
        ),
        node,
        hospital,
        batch_events: 5,
        timeout: Duration::from_secs(10),
        poll: Duration::from_millis(50),
        outbox_budget_bytes: 1 << 30,
        outbox_alarm_percent: 80,
        backoff: Default::default(),
        breaker: Default::default(),
    }
}

fn event_count(data: &Path) -> u64 {
    rusqlite::Connection::open(data.join("edge.sqlite"))
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

/// Every stream's retention over at once: whatever the acknowledged
/// position covers may go.
const NO_RETENTION: firmware_config::Retention = firmware_config::Retention {
    adt_h: 0,
    bed_h: 0,
    or_h: 0,
    billing_h: 0,
    audit_h: 0,
    integration_h: 0,
    empi_h: 0,
};

/// An hour from now: every event has passed its retention.
fn later() -> hms_domain::Timestamp {
    hms_domain::Timestamp::from_millis(hms_domain::Timestamp::now().as_millis() + 3_600_000)
}

/// Runs the real uplink task against `cloud` until its first batch is
/// answered and the outcome recorded; returns the batch and the report.
async fn one_batch(
    store: &Store,
    cloud: &mut FakeCloud,
    metrics: &Arc<Metrics>,
) -> (Served, uplink::Report, Arc<Status>) {
    let status = Status::disabled();
    let mut acked = status.acknowledged();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uplink::run(
        store.clone(),
        uplink_settings(cloud.addr),
        status.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let served = cloud.next_batch().await;
    // The batch followed the cloud's position (0, checked); the answer is
    // recorded when the acknowledged position moves on from there.
    tokio::time::timeout(Duration::from_secs(30), acked.wait_for(|a| *a != Some(0)))
        .await
        .expect("the uplink recorded no answer within 30 s")
        .unwrap();
    shutdown.cancel();
    task.await.unwrap();
    (served, status.report(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_acknowledging_what_it_was_not_sent_or_another_hash_gets_nothing_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(settings(dir.path()), metrics.clone()).unwrap();
    commission(&store, 30).await;
    let local = store.last_seq();
    assert_eq!(local, 30);
    let mut cloud = FakeCloud::start(Answer::Beyond).await;

    // Acknowledged ten seqs beyond the batch, well within the log: a
    // retention that trusted it would delete ten events never sent.
    let (served, report, status) = one_batch(&store, &mut cloud, &metrics).await;
    assert_eq!((served.first, served.last, served.acked), (1, 5, 15));
    assert_eq!(report.acked_seq, None, "{report:?}");
    assert!(!report.ok(), "/health turns degraded: {report:?}");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["state"], "refused", "{v}");
    assert_eq!(v["refusal"], "ack_beyond_sent", "{v}");
    let error = v["last_error"].as_str().unwrap();
    assert!(
        error.contains("acknowledged seq 15 beyond what was sent") && error.contains("seq 5"),
        "{error}"
    );
    let pruned =
        edge_node::store::pruning::round(&store, &NO_RETENTION, &status.acknowledged(), later())
            .await
            .unwrap();
    assert_eq!(pruned, None, "nothing acknowledged, nothing pruned");
    assert_eq!(event_count(dir.path()), local);
    assert_eq!(store.outbox(0, 0).await.unwrap().events, local);

    // The batch's last seq, with a hash that is not the log's.
    cloud.answer(Answer::WrongHash);
    let (served, report, status) = one_batch(&store, &mut cloud, &metrics).await;
    assert_eq!((served.last, served.acked), (5, 5));
    assert_eq!(report.acked_seq, None, "{report:?}");
    assert_eq!(report.refusal, Some("ack_hash_mismatch"), "{report:?}");
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&"ee".repeat(32)) && e.contains("not trusted")),
        "{report:?}"
    );
    let pruned =
        edge_node::store::pruning::round(&store, &NO_RETENTION, &status.acknowledged(), later())
            .await
            .unwrap();
    assert_eq!(pruned, None);
    assert_eq!(event_count(dir.path()), local);

    let text = metrics.render(&store.view());
    for reason in ["ack_beyond_sent", "ack_hash_mismatch"] {
        let line = format!("hms_uplink_acks_refused_total{{reason=\"{reason}\"}} 1");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("hms_uplink_events_total 5"),
        "untrusted acknowledgements count no events as shipped"
    );

    // The control: a cloud that acknowledges truthfully is trusted, and the
    // same retention round then does prune (so the checks above can fail).
    cloud.answer(Answer::Honest);
    let status = Status::disabled();
    let mut acked = status.acknowledged();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uplink::run(
        store.clone(),
        uplink_settings(cloud.addr),
        status.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tokio::time::timeout(
        Duration::from_secs(30),
        acked.wait_for(|a| *a == Some(local)),
    )
    .await
    .expect("the uplink did not catch up with an honest cloud")
    .unwrap();
    let report = status.report();
    assert_eq!((report.refusal, report.ok()), (None, true), "{report:?}");
    let (a, deleted) =
        edge_node::store::pruning::round(&store, &NO_RETENTION, &status.acknowledged(), later())
            .await
            .unwrap()
            .expect("a trusted position");
    assert_eq!((a.to, deleted as u64), (local, local - 1));
    assert_eq!(event_count(dir.path()), 1, "the newest event is kept");
    shutdown.cancel();
    task.await.unwrap();
    store.close().await;
}

/// The appliance's `/health` (with `token`: every component), and `/metrics`.
async fn health_and_metrics(http: SocketAddr, token: &str) -> (serde_json::Value, String) {
    let mut c = Conn::connect(http, Some(token)).await.unwrap();
    let health = c.get("/health").await.unwrap().json().unwrap();
    let metrics = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    (health, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_shows_an_untrusted_acknowledgement_in_health_and_keeps_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = run_cli(&["sync", "keygen", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let token = cli_token(&data, "viewer", "kiosk");
    let mut cloud = FakeCloud::start(Answer::Beyond).await;
    let config = dir.path().join("hospital.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[uplink]\ncloud = \"http://{}\"\nbatch_events = 5\npoll_ms = 50\ntimeout_s = 10\n",
            hospital_toml(&data, &[("U", 20, 2)]),
            cloud.addr
        ),
    )
    .unwrap();
    let mut local = 0;
    for (answer, refusal, says) in [
        (
            Answer::Beyond,
            "ack_beyond_sent",
            "acknowledged seq 15 beyond what was sent",
        ),
        (
            Answer::WrongHash,
            "ack_hash_mismatch",
            "acknowledged seq 5 with hash eeee",
        ),
    ] {
        cloud.answer(answer);
        let proc = Proc::start(&config, &[]);
        let served = cloud.next_batch().await;
        assert_eq!(served.last, 5);
        // The refusal is recorded right after the answer; each look is a
        // real round trip to the appliance.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (health, metrics) = loop {
            let (h, m) = health_and_metrics(proc.addr, &token).await;
            if h["components"]["uplink"]["sync"]["refusal"] == refusal {
                break (h, m);
            }
            assert!(tokio::time::Instant::now() < deadline, "no alarm: {h}");
        };
        assert_eq!(health["status"], "degraded", "{health}");
        let uplink = &health["components"]["uplink"];
        assert_eq!(uplink["status"], "degraded", "{health}");
        assert_eq!(uplink["sync"]["state"], "refused", "{health}");
        assert_eq!(uplink["sync"]["acked_seq"], serde_json::Value::Null);
        let error = uplink["sync"]["last_error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
        local = uplink["sync"]["local_seq"].as_u64().unwrap();
        assert!(local > 15, "the lie lies within the log: {health}");
        assert_eq!(uplink["sync"]["lag_events"], local, "{health}");
        let line = format!("hms_uplink_acks_refused_total{{reason=\"{refusal}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
        assert!(proc.terminate().success());
    }
    // Everything the appliance committed is still in its log, and verifies.
    assert_eq!(event_count(&data), local);
    let (code, out, err) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}
