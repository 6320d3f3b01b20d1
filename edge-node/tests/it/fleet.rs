//! The fleet channel: signed commands checked (each refusal), and the
//! appliance's status, telemetry and command results over a real MQTT
//! broker.

use base64::Engine;
use edge_node::fleet::command::{Action, Refusal, Signed, Target, check};
use hms_domain::Timestamp;
use ring::signature::{Ed25519KeyPair, KeyPair};

fn keys() -> (Ed25519KeyPair, [u8; 32]) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut public = [0u8; 32];
    public.copy_from_slice(pair.public_key().as_ref());
    (pair, public)
}

fn signed(pair: &Ed25519KeyPair, payload: &serde_json::Value) -> Vec<u8> {
    let payload = payload.to_string();
    let signature =
        base64::engine::general_purpose::STANDARD.encode(pair.sign(payload.as_bytes()).as_ref());
    serde_json::to_vec(&Signed { payload, signature }).unwrap()
}

fn target() -> Target {
    Target {
        region: "eu-west".into(),
        hospital: "h1".into(),
        node: "edge-1".into(),
    }
}

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2026-12-05T12:00:00Z").unwrap()
}

fn ping(id: u64, node: &str, expires: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "region": "eu-west", "hospital": "h1", "node": node,
        "expires_at": expires, "command": "ping",
    })
}

#[test]
fn a_signed_command_for_this_node_in_time_and_in_order_is_accepted() {
    let (pair, key) = keys();
    let ok = check(
        &signed(&pair, &ping(7, "edge-1", "2026-12-05T12:05:00Z")),
        &key,
        &target(),
        6,
        now(),
    )
    .unwrap();
    assert_eq!((ok.id, ok.action), (7, Action::Ping));
    let revoke = serde_json::json!({
        "id": 8, "region": "eu-west", "hospital": "h1", "node": "edge-1",
        "expires_at": "2026-12-05T12:05:00Z", "command": "revoke_token", "name": "kiosk-3",
    });
    let ok = check(&signed(&pair, &revoke), &key, &target(), 7, now()).unwrap();
    assert_eq!(
        ok.action,
        Action::RevokeToken {
            name: "kiosk-3".into()
        }
    );
}

#[test]
fn each_refusal_has_its_reason() {
    let (pair, key) = keys();
    let (other, _) = keys();
    let good = ping(7, "edge-1", "2026-12-05T12:05:00Z");
    let reason = |bytes: &[u8], last: u64| check(bytes, &key, &target(), last, now()).unwrap_err();
    assert_eq!(
        reason(&signed(&other, &good), 0),
        (Refusal::BadSignature, None)
    );
    // A payload changed after signing.
    let mut env: Signed = serde_json::from_slice(&signed(&pair, &good)).unwrap();
    env.payload = env.payload.replace("\"id\":7", "\"id\":8");
    assert_eq!(
        reason(&serde_json::to_vec(&env).unwrap(), 0).0,
        Refusal::BadSignature
    );
    assert_eq!(reason(b"not json", 0), (Refusal::Malformed, None));
    assert_eq!(
        reason(
            &signed(&pair, &ping(7, "edge-2", "2026-12-05T12:05:00Z")),
            0
        ),
        (Refusal::OtherTarget, Some(7))
    );
    assert_eq!(
        reason(
            &signed(&pair, &ping(7, "edge-1", "2026-12-05T12:00:00Z")),
            0
        ),
        (Refusal::Expired, Some(7))
    );
    assert_eq!(
        reason(&signed(&pair, &good), 7),
        (Refusal::Replayed, Some(7))
    );
    assert_eq!(
        reason(&signed(&pair, &good), 9),
        (Refusal::Replayed, Some(7))
    );
    let mut odd = good.clone();
    odd["command"] = "reboot".into();
    assert_eq!(
        reason(&signed(&pair, &odd), 0),
        (Refusal::Unsupported, Some(7))
    );
    assert_eq!(
        reason(&signed(&pair, &serde_json::json!({"hello": 1})), 0),
        (Refusal::Malformed, None)
    );
}

// ---------------------------------------------------------------------------
// Over a real broker (Mosquitto on 127.0.0.1:1883).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::support::TestApp;

const BROKER: &str = "127.0.0.1:1883";

/// Whether Mosquitto answers; skipped (failing under CI=true) otherwise.
fn broker_up(test: &str) -> bool {
    let up =
        std::net::TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_millis(500))
            .is_ok();
    if !up {
        hms_e2e::skip::skip(
            test,
            "no MQTT broker on 127.0.0.1:1883 (cargo xtask test and ci start Mosquitto)",
        );
    }
    up
}

/// A subscriber to everything under `prefix`, and its messages as they come.
async fn watch(
    prefix: &str,
    id: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev
                && let Ok(v) = serde_json::from_slice(&p.payload)
            {
                let _ = tx.send((p.topic.clone(), v));
            }
        }
    });
    (client, rx)
}

/// The next message on `topic` that `pred` accepts, within 15 s.
async fn next_on(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    topic: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let (t, v) = rx.recv().await.expect("subscriber alive");
            if t == topic && pred(&v) {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic} in 15 s"))
}

fn fleet_toml(key: &std::path::Path, broker: &str) -> String {
    format!(
        "\n[fleet]\nbroker = \"{broker}\"\ncommand_key = \"{}\"\nkeepalive_s = 5\ntelemetry_s = 5\n",
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_telemetry_and_signed_commands_over_mosquitto() {
    if !broker_up("fleet over Mosquitto") {
        return;
    }
    let keydir = tempfile::tempdir().unwrap();
    let (pair, public) = keys();
    let key = keydir.path().join("fleet.pub");
    std::fs::write(&key, public).unwrap();
    // A node id of its own: the broker is shared with other runs.
    let node = format!("edge-{}", std::process::id());
    let prefix = format!("hms/v1/eu-west/test-hospital/{node}");
    let (watcher, mut rx) = watch(&prefix, &format!("watch-{node}")).await;
    let node_id = node.clone();
    let app = TestApp::start_text(
        &[("3W", 2, 2)],
        &fleet_toml(&key, "mqtt://127.0.0.1:1883"),
        |c| {
            c.node.node_id = hms_domain::NodeId::new(node_id).unwrap();
        },
    )
    .await;

    let status = next_on(&mut rx, &format!("{prefix}/status"), |v| {
        v["online"] == true
    })
    .await;
    assert_eq!(status["node"], node.as_str());
    assert_eq!(status["hospital"], "test-hospital");
    assert_eq!(status["health"]["status"], "ok", "{status}");
    assert!(status["local_seq"].as_u64().unwrap() > 0, "{status}");
    assert!(status["uptime_s"].is_u64(), "{status}");
    let tele = next_on(&mut rx, &format!("{prefix}/telemetry"), |_| true).await;
    assert_eq!(tele["census"]["vacant_clean"], 2, "{tele}");
    assert!(tele["rss_bytes"].as_u64().unwrap() > 0, "{tele}");
    let mut c = app.conn(&app.admin).await;
    let health = c.get("/health").await.unwrap().json().unwrap();
    assert_eq!(
        health["components"]["fleet"]["status"], "connected",
        "{health}"
    );

    let in_a_minute = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
    let command = |id: u64, node: &str, expires: Timestamp, cmd: &str| {
        serde_json::json!({
            "id": id, "region": "eu-west", "hospital": "test-hospital", "node": node,
            "expires_at": expires, "command": cmd,
        })
    };
    let cmd_topic = format!("{prefix}/cmd");
    let result_topic = format!("{prefix}/cmd/result");
    let (other, _) = keys();
    let ago = Timestamp::from_millis(Timestamp::now().as_millis() - 1_000);
    let sends = [
        (
            signed(&pair, &command(5, &node, in_a_minute, "ping")),
            "done",
            Some(5),
        ),
        (
            signed(&pair, &command(5, &node, in_a_minute, "ping")),
            "replayed",
            Some(5),
        ),
        (
            signed(&pair, &command(4, &node, in_a_minute, "sync_now")),
            "replayed",
            Some(4),
        ),
        (
            signed(&other, &command(6, &node, in_a_minute, "ping")),
            "bad_signature",
            None,
        ),
        (
            signed(&pair, &command(6, "edge-elsewhere", in_a_minute, "ping")),
            "other_target",
            Some(6),
        ),
        (
            signed(&pair, &command(6, &node, ago, "ping")),
            "expired",
            Some(6),
        ),
        (
            signed(&pair, &command(6, &node, in_a_minute, "sync_now")),
            "done",
            Some(6),
        ),
    ];
    for (bytes, want, id) in sends {
        watcher
            .publish(&cmd_topic, QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
        let r = next_on(&mut rx, &result_topic, |_| true).await;
        let got = if r["status"] == "done" {
            "done"
        } else {
            r["reason"].as_str().unwrap()
        };
        assert_eq!((got, r["id"].as_u64()), (want, id), "{r}");
        if want == "done" && id == Some(5) {
            assert!(r["result"]["pong"].is_string(), "{r}");
        }
    }
    // revoke_token: the kiosk's token stops working at once; an unknown
    // name fails (the command was accepted and recorded all the same).
    let revoke = |id: u64, name: &str| {
        let mut c = command(id, &node, in_a_minute, "revoke_token");
        c["name"] = name.into();
        signed(&pair, &c)
    };
    let mut kiosk = app.conn(&app.viewer).await;
    assert_eq!(kiosk.get("/api/v1/units").await.unwrap().status, 200);
    for (bytes, want) in [
        (revoke(7, "kiosk"), "done"),
        (revoke(8, "nobody"), "unknown_token"),
    ] {
        watcher
            .publish(&cmd_topic, QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
        let r = next_on(&mut rx, &result_topic, |_| true).await;
        let got = if r["status"] == "done" {
            "done"
        } else {
            r["reason"].as_str().unwrap()
        };
        assert_eq!(got, want, "{r}");
    }
    let mut kiosk = app.conn(&app.viewer).await;
    assert_eq!(
        kiosk.get("/api/v1/units").await.unwrap().status,
        401,
        "revoked"
    );

    // Each accepted command is an audit event; the refused ones are not.
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let audited: Vec<String> = conn
        .prepare("SELECT body FROM events WHERE kind = 'audit.fleet_command' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(audited.len(), 4, "{audited:?}");
    assert!(
        audited[1].contains("\"command\":\"sync_now\""),
        "{audited:?}"
    );

    // A clean stop leaves `online: false` retained.
    app.stop().await;
    let last = next_on(&mut rx, &format!("{prefix}/status"), |v| {
        v["online"] == false
    })
    .await;
    assert_eq!(last["node"], node.as_str());
    // Retained: a new subscriber sees it too; then clear it.
    let (late, mut rx2) = watch(&prefix, &format!("late-{node}")).await;
    let seen = next_on(&mut rx2, &format!("{prefix}/status"), |_| true).await;
    assert_eq!(seen["online"], false);
    late.publish(
        format!("{prefix}/status"),
        QoS::AtLeastOnce,
        true,
        Vec::new(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_appliance_works_and_health_says_disconnected() {
    let keydir = tempfile::tempdir().unwrap();
    let (_, public) = keys();
    let key = keydir.path().join("fleet.pub");
    std::fs::write(&key, public).unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::start_text(
        &[("3W", 2, 2)],
        &fleet_toml(&key, &format!("mqtt://127.0.0.1:{port}")),
        |_| {},
    )
    .await;
    let ack = edge_node::integration::client::send(
        app.mllp,
        &[b"MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|F1|P|2.5.1\rPID|1||M1^^^TH^MR||Doe^Jane\r".to_vec()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(ack[0].code, "AA");
    let mut c = app.conn(&app.admin).await;
    let health = c.get("/health").await.unwrap().json().unwrap();
    assert_eq!(
        health["components"]["fleet"]["status"], "disconnected",
        "{health}"
    );
    assert_eq!(
        health["status"], "ok",
        "the fleet channel never degrades the appliance: {health}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_appliance_shows_offline_within_one_and_a_half_keepalives() {
    if !broker_up("fleet last will") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keys();
    let key = dir.path().join("fleet.pub");
    std::fs::write(&key, public).unwrap();
    let node = format!("edge-kill-{}", std::process::id());
    let text = crate::support::hospital_toml(&dir.path().join("data"), &[("3W", 2, 2)])
        .replace("node_id = \"edge-test\"", &format!("node_id = \"{node}\""))
        + &fleet_toml(&key, "mqtt://127.0.0.1:1883");
    let config = dir.path().join("hospital.toml");
    std::fs::write(&config, text).unwrap();
    let prefix = format!("hms/v1/eu-west/test-hospital/{node}");
    let (watcher, mut rx) = watch(&prefix, &format!("watch-{node}")).await;
    let proc = crate::support::Proc::start(&config, &[]);
    next_on(&mut rx, &format!("{prefix}/status"), |v| {
        v["online"] == true
    })
    .await;
    let killed = std::time::Instant::now();
    proc.kill9();
    // The broker publishes the will once 1.5 keepalives (5 s) pass in silence.
    let will = next_on(&mut rx, &format!("{prefix}/status"), |v| {
        v["online"] == false
    })
    .await;
    let took = killed.elapsed();
    assert_eq!(will["node"], node.as_str());
    assert!(
        took <= Duration::from_millis(7_500 + 1_000),
        "offline after {took:?}, more than 1.5 × keepalive (7.5 s) and a second of slack"
    );
    watcher
        .publish(
            format!("{prefix}/status"),
            QoS::AtLeastOnce,
            true,
            Vec::new(),
        )
        .await
        .unwrap();
}

/// A Mosquitto of the test's own on `port`, stopped when dropped.
struct Broker(std::process::Child);

impl Broker {
    fn start(port: u16) -> Option<Broker> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let child = std::process::Command::new(bin)
            .args(["-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Broker(child))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn fleet_state(app: &TestApp) -> String {
    let mut c = app.conn(&app.admin).await;
    let h = c.get("/health").await.unwrap().json().unwrap();
    h["components"]["fleet"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_comes_back_when_the_broker_does_and_the_feed_never_waits_for_it() {
    let keydir = tempfile::tempdir().unwrap();
    let (_, public) = keys();
    let key = keydir.path().join("fleet.pub");
    std::fs::write(&key, public).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::start_text(
        &[("3W", 2, 2)],
        &fleet_toml(&key, &format!("mqtt://127.0.0.1:{port}")),
        |_| {},
    )
    .await;
    assert_eq!(fleet_state(&app).await, "disconnected");
    let Some(broker) = Broker::start(port) else {
        hms_e2e::skip::skip(
            "fleet reconnection",
            "no mosquitto binary to start a broker of the test's own",
        );
        return;
    };
    // Back-off is at most 30 s; the broker is up within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    while fleet_state(&app).await != "connected" {
        assert!(std::time::Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(broker);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while fleet_state(&app).await != "disconnected" {
        assert!(
            std::time::Instant::now() < deadline,
            "the loss was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The feed is answered as ever with the broker gone.
    let acks = edge_node::integration::client::send(
        app.mllp,
        &[b"MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|R1|P|2.5.1\rPID|1||M1^^^TH^MR||Doe^Jane\r".to_vec()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(acks[0].code, "AA");
    app.stop().await;
}
