//! The fleet channel end to end with real processes on one MQTT broker
//! (Mosquitto on 127.0.0.1:1883): an `hms-edge` with `[fleet]` shows in
//! the `hms-cloud` fleet registry as online, a `ping` and a `revoke_token`
//! sent through the cloud's API reach it signed and their results come
//! back, and a killed appliance shows offline.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use hms_e2e::client::Conn;
use hms_e2e::process::{self, bin, demo_config, edge_token, run_ok, until};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_shows_in_the_cloud_and_takes_signed_commands_from_it() {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:1883".parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_ok();
    if !up {
        hms_e2e::skip::skip(
            "fleet end to end",
            "no MQTT broker on 127.0.0.1:1883 (cargo xtask test and ci start Mosquitto)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The cloud, with the fleet's signing key.
    run_ok(
        Command::new(bin("hms-cloud"))
            .args(["fleet", "keygen", "--out"])
            .arg(d.join("fleet.pk8")),
    );
    let node = format!("edge-e2e-{}", std::process::id());
    std::fs::write(
        d.join("cloud.toml"),
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"cloud-data\"\nempi = false\n\n\
             [fleet]\nbroker = \"mqtt://127.0.0.1:1883\"\nkey_file = \"fleet.pk8\"\nclient_id = \"hms-cloud-{node}\"\n"
        ),
    )
    .unwrap();
    let token = run_ok(
        Command::new(bin("hms-cloud"))
            .args([
                "token", "create", "--name", "ops", "--scope", "fleet", "--config",
            ])
            .arg(d.join("cloud.toml")),
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_owned();
    let cloud = process::Proc::spawn(
        Command::new(bin("hms-cloud"))
            .args(["run", "--config"])
            .arg(d.join("cloud.toml"))
            .env("HMS_LOG", "warn"),
    )
    .unwrap();
    let cloud_http: std::net::SocketAddr = cloud
        .line_after("hms-cloud ready http=http://")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The appliance: the demo hospital with a node id of this run's own,
    // trusting the fleet's public key.
    let demo = demo_config().replace("node_id = \"edge-1\"", &format!("node_id = \"{node}\""));
    let edge_cfg = d.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "{demo}\n[fleet]\nbroker = \"mqtt://127.0.0.1:1883\"\ncommand_key = \"{}\"\nkeepalive_s = 5\n",
            d.join("fleet.pk8.pub").display()
        ),
    )
    .unwrap();
    let data = d.join("edge-data");
    let (edge, edge_http, _mllp) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(&edge_cfg)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0"])
            .env("HMS_LOG", "warn"),
    )
    .unwrap();
    let kiosk = edge_token(&data, "viewer", "wall-kiosk");

    let mut ops = Conn::connect(cloud_http, Some(&token)).await.unwrap();
    let path = format!("/api/v1/fleet/demo-general/{node}");
    let row = until(20, "the appliance online in the registry", async || {
        let r = ops.get(&path).await.ok()?;
        let v = r.json().ok()?;
        (v["online"] == true).then_some(v)
    })
    .await;
    assert_eq!(row["hospital"], "demo-general", "{row}");
    assert!(row["local_seq"].as_u64().unwrap() > 0, "{row}");

    // Commands through the cloud, signed there, checked and carried out here.
    for (command, extra) in [
        ("ping", json!({})),
        ("revoke_token", json!({"name": "wall-kiosk"})),
    ] {
        let mut body =
            json!({ "nodes": [{ "hospital": "demo-general", "node": node }], "command": command });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let sent = ops.post("/api/v1/fleet/commands", &body).await.unwrap();
        assert_eq!(sent.status, 202, "{}", String::from_utf8_lossy(&sent.body));
        let id = sent.json().unwrap()["commands"][0]["id"].as_u64().unwrap();
        let result: Value = until(20, "the command's result", async || {
            let v = ops
                .get(&format!("{path}/commands/{id}"))
                .await
                .ok()?
                .json()
                .ok()?;
            (v["status"] != "pending").then_some(v)
        })
        .await;
        assert!(
            result.to_string().contains("\"done\""),
            "{command}: {result}"
        );
    }
    // The revoked token no longer opens the appliance's API.
    let mut k = Conn::connect(edge_http, Some(&kiosk)).await.unwrap();
    assert_eq!(k.get("/api/v1/units").await.unwrap().status, 401);

    // Killed: the broker's last will shows it offline.
    edge.kill9().unwrap();
    until(20, "the appliance offline", async || {
        let v = ops.get(&path).await.ok()?.json().ok()?;
        (v["online"] == false).then_some(())
    })
    .await;
    // Leave the broker clean: clear the retained status.
    let (c, mut ev) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new(format!("clean-{node}"), "127.0.0.1", 1883),
        8,
    );
    c.publish(
        format!("hms/v1/eu-west/demo-general/{node}/status"),
        rumqttc::QoS::AtLeastOnce,
        true,
        Vec::new(),
    )
    .await
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(e) = ev.poll().await {
            if matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) {
                break;
            }
        }
    })
    .await;
    drop(cloud);
}
