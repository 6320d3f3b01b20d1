//! The fleet channel end to end, against Mosquitto on 127.0.0.1:1883
//! (`cargo xtask test` and `ci` start it; elsewhere a missing broker is a
//! visible skip, and a failure under `CI=true`): a cloud opened from its
//! configuration and served, and a simulated appliance (an MQTT client
//! here that publishes a retained status with its last will, and answers
//! commands after verifying their signature with the fleet's public key).
//! Ids are unique per run: the broker is shared. The cloud's embedded
//! broker (`[fleet] embedded = true`) is tested the same way on a free
//! port, with no Mosquitto involved.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use hms_e2e::client::Conn;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cloud::Cloud;
use crate::enrolment::{Enrolment, enroll_durably, open_registry};
use crate::store::registry::{NewOperatorToken, Scopes};
use crate::testkit::{id, now, unique_hospital};

const BROKER: &str = "127.0.0.1:1883";

/// How long anything may take to arrive (a guard, not a timing).
const PATIENCE: Duration = Duration::from_secs(15);

/// Whether Mosquitto answers; a skip (failing under CI=true) otherwise.
fn broker_up(test: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &BROKER.parse().expect("address"),
        Duration::from_millis(500),
    )
    .is_ok();
    if !up {
        hms_e2e::skip::skip(
            test,
            "no MQTT broker on 127.0.0.1:1883 (cargo xtask test and ci start Mosquitto)",
        );
    }
    up
}

/// A name no other run uses.
fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}-{}",
        std::process::id(),
        now() % 1_000_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A simulated appliance: its status topic, the commands it verified, and
/// the task that drives its connection (aborted: the connection drops
/// without a DISCONNECT, as when an appliance loses power).
struct Appliance {
    client: AsyncClient,
    topic: String,
    commands: mpsc::UnboundedReceiver<Value>,
    connection: tokio::task::JoinHandle<()>,
}

/// Mosquitto's address.
fn mosquitto() -> SocketAddr {
    BROKER.parse().expect("address")
}

fn status(hospital: &str, node: &str, online: bool) -> String {
    json!({
        "online": online, "region": "eu-west", "hospital": hospital, "node": node,
        "version": "9.9.9", "build": "test", "uptime_s": 1,
        "health": { "status": "ok", "components": { "uplink": "ok", "fleet": "connected" } },
        "acked_seq": 40, "local_seq": 42, "lag_seconds": 2.5, "outbox_bytes": 100,
        "model_set": "2026.1", "config_version": null,
    })
    .to_string()
}

/// Connects an appliance `node` of `hospital` to the broker at `broker`
/// that publishes a retained status (its last will says `online: false`)
/// and answers each command on its `cmd` topic: a valid signature over the
/// payload with `public_key` and the right target are checked, the payload
/// goes to `commands`, and the answer is `done` (`pong`) or `refused`
/// (`bad_signature`).
fn appliance(broker: SocketAddr, hospital: &str, node: &str, public_key: Vec<u8>) -> Appliance {
    let base = format!("hms/v1/eu-west/{hospital}/{node}");
    let mut opts = MqttOptions::new(unique("sim"), broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_last_will(LastWill::new(
        format!("{base}/status"),
        status(hospital, node, false),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (tx, commands) = mpsc::unbounded_channel();
    let (c, h, n, b) = (
        client.clone(),
        hospital.to_owned(),
        node.to_owned(),
        base.clone(),
    );
    let connection = tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    c.subscribe(format!("{b}/cmd"), QoS::AtLeastOnce)
                        .await
                        .expect("subscribe");
                    c.publish(
                        format!("{b}/status"),
                        QoS::AtLeastOnce,
                        true,
                        status(&h, &n, true),
                    )
                    .await
                    .expect("status");
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == format!("{b}/cmd") => {
                    let answer = verify(&p.payload, &public_key, &h, &n)
                        .map(|cmd| {
                            let answer = json!({
                                "id": cmd["id"], "status": "done", "command": cmd["command"],
                                "result": { "pong": hms_domain::Timestamp::now(), "version": "9.9.9" },
                            });
                            let _ = tx.send(cmd);
                            answer
                        })
                        .unwrap_or_else(|reason| {
                            json!({ "id": null, "status": "refused", "reason": reason })
                        });
                    c.publish(
                        format!("{b}/cmd/result"),
                        QoS::AtLeastOnce,
                        false,
                        answer.to_string(),
                    )
                    .await
                    .expect("result");
                }
                _ => {}
            }
        }
    });
    Appliance {
        client,
        topic: format!("{base}/status"),
        commands,
        connection,
    }
}

/// What the appliance checks (docs/fleet.md): the envelope, the signature
/// over the payload's bytes, the target and the expiry.
fn verify(bytes: &[u8], key: &[u8], hospital: &str, node: &str) -> Result<Value, &'static str> {
    let env: Value = serde_json::from_slice(bytes).map_err(|_| "malformed")?;
    let payload = env["payload"].as_str().ok_or("malformed")?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(env["signature"].as_str().ok_or("malformed")?)
        .map_err(|_| "bad_signature")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(payload.as_bytes(), &sig)
        .map_err(|_| "bad_signature")?;
    let cmd: Value = serde_json::from_str(payload).map_err(|_| "malformed")?;
    if cmd["region"] != "eu-west" || cmd["hospital"] != hospital || cmd["node"] != node {
        return Err("other_target");
    }
    let expires = hms_domain::Timestamp::parse_rfc3339(cmd["expires_at"].as_str().unwrap_or(""))
        .map_err(|_| "malformed")?;
    if expires.as_millis() <= now() {
        return Err("expired");
    }
    cmd["id"].as_u64().ok_or("malformed")?;
    Ok(cmd)
}

/// GETs `path` until `ok` holds for the answer; panics after [`PATIENCE`].
async fn until(c: &mut Conn, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = c.get(path).await.expect("get");
        let v = r.json().unwrap_or(Value::Null);
        if r.status == 200 && ok(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {path} answers {} {v}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn row<'a>(fleet: &'a Value, hospital: &str) -> Option<&'a Value> {
    fleet["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["hospital"] == hospital)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_shows_online_takes_signed_commands_and_its_results_show() {
    if !broker_up(
        "e2e_tests::fleet::an_appliance_shows_online_takes_signed_commands_and_its_results_show",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pkcs8, public) = cloud_sync_client::generate_key().expect("key");
    std::fs::write(dir.path().join("fleet.pk8"), &pkcs8).expect("write");
    let seen = unique_hospital("fleet-on");
    let never = unique_hospital("fleet-never");
    {
        let (reg, db) = open_registry(&dir.path().join("data"), id("eu-west")).expect("registry");
        for h in [&seen, &never] {
            let (_, key) = cloud_sync_client::generate_key().expect("key");
            enroll_durably(
                &reg,
                &db,
                Enrolment {
                    hospital: h.clone(),
                    region: id("eu-west"),
                    node: id("edge-1"),
                    public_key: key,
                },
            )
            .expect("enrol");
        }
    }
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [fleet]\nbroker = \"mqtt://127.0.0.1:1883\"\nkey_file = \"fleet.pk8\"\n\
             client_id = \"{}\"\n",
            unique("hms-cloud-test")
        ),
    )
    .expect("write");
    let cloud = Cloud::open(crate::config::load(&config).expect("config")).expect("open");
    let token = |name: &str, scope: &str| {
        cloud
            .state()
            .registry_db
            .create_operator_token(
                &NewOperatorToken {
                    name,
                    scopes: Scopes::parse([scope]).expect("scope"),
                    expires_ms: None,
                    by: "cli:test",
                },
                now(),
            )
            .expect("token")
    };
    let (ops, reader) = (token("fleet-ops", "fleet"), token("reader", "read"));
    let registry_db = cloud.state().registry_db.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(cloud.serve(listener, shutdown.clone()));
    let mut c = Conn::connect(addr, Some(&ops)).await.expect("connect");

    // The appliance comes online; the enrolled one never heard from is unknown.
    let mut app = appliance(mosquitto(), seen.as_str(), "edge-1", public.clone());
    let fleet = until(&mut c, "/api/v1/fleet", "the appliance online", |v| {
        row(v, seen.as_str()).is_some_and(|r| r["online"] == true)
    })
    .await;
    let r = row(&fleet, seen.as_str()).expect("row");
    assert_eq!(
        (&r["region"], &r["node"], &r["version"]),
        (&json!("eu-west"), &json!("edge-1"), &json!("9.9.9"))
    );
    assert_eq!(
        (&r["acked_seq"], &r["local_seq"], &r["lag_seconds"]),
        (&json!(40), &json!(42), &json!(2.5))
    );
    assert_eq!(
        (&r["model_set"], &r["config_version"]),
        (&json!("2026.1"), &Value::Null)
    );
    assert_eq!(r["health"]["status"], "ok");
    assert!(r["last_seen"].is_string(), "{r}");
    let u = row(&fleet, never.as_str()).expect("the enrolled one is listed");
    assert_eq!(
        (&u["online"], &u["last_seen"]),
        (&json!("unknown"), &Value::Null)
    );
    assert_eq!(fleet["broker"], "connected");

    // Telemetry shows on the node's own page.
    app.client
        .publish(
            format!("hms/v1/eu-west/{seen}/edge-1/telemetry"),
            QoS::AtLeastOnce,
            false,
            json!({ "at": "2026-03-02T10:00:00.000Z", "parked": 0, "census": { "free": 3 } })
                .to_string(),
        )
        .await
        .expect("telemetry");
    let path = format!("/api/v1/fleet/{seen}/edge-1");
    let node = until(&mut c, &path, "its telemetry", |v| {
        v["telemetry"].as_array().is_some_and(|t| t.len() == 1)
    })
    .await;
    assert_eq!(node["telemetry"][0]["census"]["free"], 3);
    assert_eq!(node["status"]["build"], "test");

    // A command reaches it signed, and its result shows.
    let body = json!({ "nodes": [{ "hospital": seen, "node": "edge-1" }], "command": "ping" });
    let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
    assert_eq!(r.status, 202, "{:?}", r.json());
    let sent = r.json().expect("json");
    let first = sent["commands"][0]["id"].as_u64().expect("id");
    assert_eq!(
        (
            &sent["commands"][0]["hospital"],
            &sent["commands"][0]["node"]
        ),
        (&json!(seen), &json!("edge-1"))
    );
    let got = tokio::time::timeout(PATIENCE, app.commands.recv())
        .await
        .expect("the command arrived")
        .expect("verified");
    assert_eq!(
        (&got["id"], &got["command"], &got["hospital"], &got["node"]),
        (
            &json!(first),
            &json!("ping"),
            &json!(seen),
            &json!("edge-1")
        )
    );
    let result_path = format!("/api/v1/fleet/{seen}/edge-1/commands/{first}");
    let result = until(&mut c, &result_path, "the result", |v| {
        v["status"] == "done"
    })
    .await;
    assert_eq!(result["result"]["result"]["version"], "9.9.9");
    assert_eq!(result["id"], first);
    // The next command has a higher id; sync_now with a 5 s expiry.
    let body = json!({ "nodes": [{ "hospital": seen, "node": "edge-1" }],
                       "command": "sync_now", "expires_in_s": 5 });
    let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
    assert_eq!(r.status, 202);
    let second = r.json().expect("json")["commands"][0]["id"]
        .as_u64()
        .expect("id");
    assert!(second > first, "{second} > {first}");
    let got = tokio::time::timeout(PATIENCE, app.commands.recv())
        .await
        .expect("arrived")
        .expect("verified");
    assert_eq!(
        (&got["id"], &got["command"]),
        (&json!(second), &json!("sync_now"))
    );
    // Both audited with the operator's name, before they were sent.
    let audit: Vec<String> = registry_db
        .audit_log()
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "fleet_command" && a.subject == seen.as_str())
        .map(|a| format!("{} {}", a.actor, a.detail))
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit[0].starts_with(&format!(
            "operator:fleet-ops node edge-1; id {first}; command ping"
        )),
        "{audit:?}"
    );

    // Refusals: nothing sent.
    for (body, status, kind) in [
        (
            json!({ "nodes": [{ "hospital": seen, "node": "edge-9" }], "command": "ping" }),
            404,
            "not-found",
        ),
        (
            json!({ "nodes": [{ "hospital": seen, "node": "edge-1" }], "command": "reboot" }),
            400,
            "bad-query",
        ),
        (json!({ "nodes": [], "command": "ping" }), 400, "bad-query"),
        (
            json!({ "nodes": [{ "hospital": seen, "node": "edge-1" }], "command": "ping",
                    "expires_in_s": 0 }),
            400,
            "bad-query",
        ),
    ] {
        let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
        let v = r.json().expect("problem");
        assert_eq!(
            (r.status, &v["type"]),
            (status, &json!(format!("urn:hms:problem:{kind}"))),
            "{body}: {v}"
        );
    }
    let r = c
        .get(&format!(
            "/api/v1/fleet/{seen}/edge-1/commands/{}",
            second + 1000
        ))
        .await
        .expect("get");
    assert_eq!(r.status, 404);
    let r = c
        .get(&format!("/api/v1/fleet/{seen}/edge-9"))
        .await
        .expect("get");
    assert_eq!(r.status, 404);
    let mut read_only = Conn::connect(addr, Some(&reader)).await.expect("connect");
    let r = read_only.get("/api/v1/fleet").await.expect("get");
    assert_eq!(r.status, 403);
    assert_eq!(r.json().expect("json")["scope"], "fleet");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), app.commands.recv())
            .await
            .is_err(),
        "nothing else arrived"
    );

    // Its status goes offline (as a clean stop or its last will says).
    app.client
        .publish(
            &app.topic,
            QoS::AtLeastOnce,
            true,
            status(seen.as_str(), "edge-1", false),
        )
        .await
        .expect("offline");
    until(&mut c, "/api/v1/fleet", "the appliance offline", |v| {
        row(v, seen.as_str()).is_some_and(|r| r["online"] == false)
    })
    .await;

    // Leave the shared broker as found: no retained status of this run.
    app.client
        .publish(&app.topic, QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .expect("clear");
    until(&mut c, "/api/v1/fleet", "the status cleared", |v| {
        row(v, seen.as_str()).is_some_and(|r| r["online"] == "unknown")
    })
    .await;
    let _ = app.client.disconnect().await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returns with the fleet channel stopped")
        .expect("join")
        .expect("served");
}

/// The message retained on `topic`, as a client that subscribes now gets
/// it from the broker at `broker` (marked retained); panics after
/// [`PATIENCE`].
async fn retained(broker: SocketAddr, topic: &str) -> Value {
    let mut opts = MqttOptions::new(unique("late"), broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let p = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => return p,
                Ok(_) => {}
                Err(e) => panic!("the late subscriber lost its connection: {e}"),
            }
        }
    })
    .await
    .expect("the retained message arrived");
    assert!(p.retain, "delivered as a retained message");
    serde_json::from_slice(&p.payload).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_carries_retained_statuses_and_last_wills_without_mosquitto() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A free port: bound, then released for the broker.
    let broker = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [fleet]\nembedded = true\nlisten = \"{broker}\"\n"
        ),
    )
    .expect("write");
    let config = crate::config::load(&config).expect("config");
    let fleet = config.fleet.as_ref().expect("fleet");
    assert_eq!(fleet.broker, format!("mqtt://{broker}"));
    let cloud = Cloud::open(config).expect("open");
    let ops = cloud
        .state()
        .registry_db
        .create_operator_token(
            &NewOperatorToken {
                name: "fleet-ops",
                scopes: Scopes::parse(["fleet"]).expect("scope"),
                expires_ms: None,
                by: "cli:test",
            },
            now(),
        )
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(cloud.serve(listener, shutdown.clone()));
    let mut c = Conn::connect(addr, Some(&ops)).await.expect("connect");

    // The cloud's own client is on its broker, and an appliance shows online.
    let hospital = unique_hospital("fleet-embedded");
    let (_, public) = cloud_sync_client::generate_key().expect("key");
    let app = appliance(broker, hospital.as_str(), "edge-1", public);
    let fleet = until(&mut c, "/api/v1/fleet", "the appliance online", |v| {
        row(v, hospital.as_str()).is_some_and(|r| r["online"] == true)
    })
    .await;
    assert_eq!(fleet["broker"], "connected");
    assert_eq!(
        row(&fleet, hospital.as_str()).expect("row")["version"],
        "9.9.9"
    );
    // Its status is retained: a client that subscribes now gets it.
    let status = retained(broker, &app.topic).await;
    assert_eq!(
        (&status["online"], &status["node"]),
        (&json!(true), &json!("edge-1"))
    );

    // Its connection drops without a DISCONNECT: the broker publishes its
    // last will, retained, and the cloud shows it offline.
    app.connection.abort();
    until(&mut c, "/api/v1/fleet", "the appliance offline", |v| {
        row(v, hospital.as_str()).is_some_and(|r| r["online"] == false)
    })
    .await;
    let status = retained(broker, &app.topic).await;
    assert_eq!(
        (&status["online"], &status["hospital"]),
        (&json!(false), &json!(hospital))
    );

    // The broker stops with the cloud: its port is free again.
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returns with the broker stopped")
        .expect("join")
        .expect("served");
    std::net::TcpListener::bind(broker).expect("the broker's port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_broker_on_a_taken_port_stops_the_cloud_from_opening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [fleet]\nembedded = true\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .expect("write");
    let e = Cloud::open(crate::config::load(&config).expect("config")).expect_err("taken");
    // A runtime failure (exit 1, as a taken HTTP port), not a configuration one.
    assert!(
        e.downcast_ref::<crate::cloud::ConfigError>().is_none(),
        "{e:#}"
    );
    let e = format!("{e:#}");
    assert!(
        e.contains(&format!(
            "embedded MQTT broker cannot listen on 127.0.0.1:{port}"
        )) && e.contains("in use"),
        "{e}"
    );
    drop(taken);
    // Free again: the same configuration opens.
    let cloud = Cloud::open(crate::config::load(&config).expect("config")).expect("open");
    drop(cloud);
}

/// Sends `head` (a request head declaring a body, which is never sent) and
/// returns what comes back before the cloud closes the connection or
/// [`PATIENCE`] passes: an answer means the body was not waited for.
async fn declared_only(addr: SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        if String::from_utf8_lossy(&got).contains("\"status\"") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A bundle signed as `hms-config sign` signs it, with a key of its own.
fn signed_bundle(
    kind: firmware_config::bundle::Kind,
    version: u64,
    hospital: &str,
    files: Vec<(String, Vec<u8>)>,
) -> Vec<u8> {
    let (key, _) = firmware_config::bundle::generate_key().expect("bundle key");
    firmware_config::bundle::sign(
        kind,
        version,
        &firmware_config::bundle::Hospital::parse(hospital).expect("hospital"),
        files,
        jiff::Timestamp::now(),
        &key,
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_uploaded_served_to_enrolled_appliances_and_sent_with_apply_bundle() {
    use cloud_sync_client::{Client, Endpoint, PushError, Signer};
    use firmware_config::bundle::Kind;

    let dir = tempfile::tempdir().expect("tempdir");
    // The cloud's embedded broker on a free port: no Mosquitto needed.
    let broker = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (fleet_pkcs8, fleet_public) = cloud_sync_client::generate_key().expect("key");
    std::fs::write(dir.path().join("fleet.pk8"), &fleet_pkcs8).expect("write");
    let hospital = unique_hospital("bundles");
    let (edge_pkcs8, edge_public) = cloud_sync_client::generate_key().expect("key");
    {
        let (reg, db) = open_registry(&dir.path().join("data"), id("eu-west")).expect("registry");
        enroll_durably(
            &reg,
            &db,
            Enrolment {
                hospital: hospital.clone(),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: edge_public,
            },
        )
        .expect("enrol");
    }
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [fleet]\nembedded = true\nlisten = \"{broker}\"\nkey_file = \"fleet.pk8\"\n"
        ),
    )
    .expect("write");
    let cloud = Cloud::open(crate::config::load(&config).expect("config")).expect("open");
    let token = |name: &str, scope: &str| {
        cloud
            .state()
            .registry_db
            .create_operator_token(
                &NewOperatorToken {
                    name,
                    scopes: Scopes::parse([scope]).expect("scope"),
                    expires_ms: None,
                    by: "cli:test",
                },
                now(),
            )
            .expect("token")
    };
    let (ops, reader) = (token("fleet-ops", "fleet"), token("reader", "read"));
    let registry_db = cloud.state().registry_db.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(cloud.serve(listener, shutdown.clone()));
    let mut c = Conn::connect(addr, Some(&ops)).await.expect("connect");
    let mut app = appliance(broker, hospital.as_str(), "edge-1", fleet_public);
    until(&mut c, "/api/v1/fleet", "the appliance online", |v| {
        v["broker"] == "connected" && row(v, hospital.as_str()).is_some_and(|r| r["online"] == true)
    })
    .await;

    // Upload: 201 with what the bundle is; the same bytes again: 200.
    let toml = b"# a hospital's configuration\n".to_vec();
    let config_bundle = signed_bundle(
        Kind::Config,
        3,
        hospital.as_str(),
        vec![("hospital.toml".into(), toml.clone())],
    );
    let sha = crate::bundles::sha256_hex(&config_bundle);
    let octets = [("content-type", "application/octet-stream".to_owned())];
    let r = c
        .request_with(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            &octets,
            Some(config_bundle.clone()),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{:?}", r.json());
    let described = r.json().expect("json");
    assert_eq!(
        described,
        json!({ "sha256": sha, "size": config_bundle.len(), "kind": "config", "version": 3,
                "hospital": hospital, "files": [{ "name": "hospital.toml", "size": toml.len() }] })
    );
    let stored = dir
        .path()
        .join("data")
        .join("bundles")
        .join(format!("{sha}.bundle"));
    assert_eq!(std::fs::read(&stored).expect("stored"), config_bundle);
    let r = c
        .request_with(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            &octets,
            Some(config_bundle.clone()),
        )
        .await
        .expect("post");
    assert_eq!(
        (r.status, r.json().expect("json")),
        (200, described.clone())
    );
    // Not a bundle: 400, saying why without echoing it.
    let r = c
        .request_with(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            &octets,
            Some(b"MRN 123456 garbage".to_vec()),
        )
        .await
        .expect("post");
    let v = r.json().expect("problem");
    assert_eq!(
        (r.status, &v["type"]),
        (400, &json!("urn:hms:problem:bad-query")),
        "{v}"
    );
    let detail = v["detail"].as_str().expect("detail");
    assert!(detail.contains("not a bundle"), "{detail}");
    assert!(!detail.contains("123456"), "{detail}");
    // A token without the fleet scope uploads nothing.
    let mut read_only = Conn::connect(addr, Some(&reader)).await.expect("connect");
    let r = read_only
        .request_with(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            &octets,
            Some(config_bundle.clone()),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403);
    // Above the cloud's general 4 MiB body limit, within this route's own.
    let big_file: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let models = signed_bundle(
        Kind::ModelSet,
        2026,
        "*",
        vec![
            ("manifest.toml".into(), b"[set]\n".to_vec()),
            ("big.onnx".into(), big_file),
        ],
    );
    assert!(models.len() > crate::http::MAX_BODY_BYTES);
    let r = c
        .request_with(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            &octets,
            Some(models.clone()),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json().expect("json")["kind"], "model_set");
    // Declared over 64 MiB: 413 before the body is read (it is never sent);
    // other routes keep the general limit.
    let declared = |path: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: cloud\r\nauthorization: Bearer {ops}\r\n\
             content-type: application/octet-stream\r\ncontent-length: {length}\r\n\r\n"
        )
    };
    let too_big = declared_only(
        addr,
        &declared(
            "/api/v1/fleet/bundles",
            crate::bundles::MAX_BUNDLE_BYTES + 1,
        ),
    )
    .await;
    assert!(too_big.starts_with("HTTP/1.1 413 "), "{too_big}");
    let elsewhere = declared_only(
        addr,
        &declared("/api/v1/fleet/commands", crate::http::MAX_BODY_BYTES + 1),
    )
    .await;
    assert!(elsewhere.starts_with("HTTP/1.1 413 "), "{elsewhere}");
    // Both listed; each new upload audited once, without contents.
    let list = c.get("/api/v1/fleet/bundles").await.expect("get");
    assert_eq!(list.status, 200);
    let list = list.json().expect("json");
    let listed: Vec<_> = list["bundles"]
        .as_array()
        .expect("bundles")
        .iter()
        .map(|b| (b["kind"].clone(), b["version"].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (json!("config"), json!(3)),
            (json!("model_set"), json!(2026))
        ]
    );
    assert_eq!(list["bundles"][0], described);
    let uploads: Vec<_> = registry_db
        .audit_log()
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "bundle_uploaded")
        .collect();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(
        (uploads[0].actor.as_str(), uploads[0].subject.as_str()),
        ("operator:fleet-ops", hospital.as_str())
    );
    assert!(
        uploads[0]
            .detail
            .starts_with(&format!("sha256 {sha}; kind config; version 3")),
        "{uploads:?}"
    );
    assert!(!uploads[0].detail.contains("configuration"), "{uploads:?}");

    // The appliances' read: signed by the enrolled appliance, as stored.
    let mut anyone = Conn::connect(addr, None).await.expect("connect");
    let path = format!("/sync/v1/bundles/{sha}");
    let r = anyone.get(&path).await.expect("get");
    assert_eq!(r.status, 401);
    let signer = Signer::new(&edge_pkcs8, hospital.clone(), id("edge-1")).expect("signer");
    let client = Client::new(Endpoint::parse(&format!("http://{addr}"), None).expect("endpoint"));
    let got = client
        .bundle(&signer, &sha, now(), crate::testkit::T)
        .await
        .expect("the bundle");
    assert_eq!(got, config_bundle);
    let got = client
        .bundle(
            &signer,
            &crate::bundles::sha256_hex(&models),
            now(),
            crate::testkit::T,
        )
        .await
        .expect("the model set");
    assert_eq!(got, models);
    match client
        .bundle(&signer, &"0".repeat(64), now(), crate::testkit::T)
        .await
    {
        Err(PushError::Refused { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Signed, but by a key that is not the enrolled one: 401; by another
    // node of the hospital: 403.
    let (other_pkcs8, _) = cloud_sync_client::generate_key().expect("key");
    for (node, want) in [("edge-1", 401), ("edge-2", 403)] {
        let stranger = Signer::new(&other_pkcs8, hospital.clone(), id(node)).expect("signer");
        match client
            .bundle(&stranger, &sha, now(), crate::testkit::T)
            .await
        {
            Err(PushError::Refused { status, .. }) => assert_eq!(status, want, "{node}"),
            other => panic!("{node}: {other:?}"),
        }
    }
    // A path that is no SHA-256, signed: 404 too.
    let bad = "/sync/v1/bundles/..%2Fregistry.sqlite";
    let s = signer.sign("GET", bad, now(), b"");
    let r = anyone
        .request_with(
            hyper::Method::GET,
            bad,
            &[
                ("x-hms-hospital", s.hospital.to_string()),
                ("x-hms-node", s.node.to_string()),
                ("x-hms-timestamp", s.timestamp_ms.to_string()),
                ("x-hms-signature", s.signature),
            ],
            None,
        )
        .await
        .expect("get");
    assert_eq!(r.status, 404, "{:?}", r.json());

    // apply_bundle: an unknown bundle is a 404 and nothing is sent; a bad
    // sha256 a 400; a held one arrives signed with its sha256 and path.
    let target = json!([{ "hospital": hospital, "node": "edge-1" }]);
    for (sha256, status) in [("0".repeat(64), 404), ("not-a-sha".to_owned(), 400)] {
        let body = json!({ "nodes": target, "command": "apply_bundle", "sha256": sha256 });
        let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
        assert_eq!(r.status, status, "{:?}", r.json());
    }
    let body = json!({ "nodes": target, "command": "apply_bundle" });
    let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
    assert_eq!(r.status, 400, "no sha256: {:?}", r.json());
    let body = json!({ "nodes": target, "command": "apply_bundle", "sha256": sha });
    let r = c.post("/api/v1/fleet/commands", &body).await.expect("post");
    assert_eq!(r.status, 202, "{:?}", r.json());
    let sent = r.json().expect("json");
    assert_eq!(sent["command"], "apply_bundle");
    let id = sent["commands"][0]["id"].as_u64().expect("id");
    // The first command the appliance gets is this one: the refused ones
    // before it were never published.
    let got = tokio::time::timeout(PATIENCE, app.commands.recv())
        .await
        .expect("the command arrived")
        .expect("verified");
    assert_eq!(
        (&got["id"], &got["command"], &got["sha256"], &got["url"]),
        (
            &json!(id),
            &json!("apply_bundle"),
            &json!(sha),
            &json!(format!("/sync/v1/bundles/{sha}"))
        )
    );
    let result_path = format!("/api/v1/fleet/{hospital}/edge-1/commands/{id}");
    until(&mut c, &result_path, "the result", |v| {
        v["status"] == "done"
    })
    .await;
    let audited: Vec<_> = registry_db
        .audit_log()
        .expect("audit")
        .into_iter()
        .filter(|a| a.action == "fleet_command" && a.subject == hospital.as_str())
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0].detail.contains("command apply_bundle")
            && audited[0].detail.ends_with(&format!("; sha256 {sha}")),
        "{audited:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), app.commands.recv())
            .await
            .is_err(),
        "nothing else arrived"
    );

    let _ = app.client.disconnect().await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("served");
}
