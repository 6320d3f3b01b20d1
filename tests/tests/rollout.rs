//! A staged rollout with real processes: one `hms-cloud` (its embedded
//! MQTT broker, the fleet key, the bundles it hosts) and three `hms-edge`
//! appliances enrolled for sync, on the fleet channel and taking signed
//! bundles. A signed model set goes to a canary, then to the other two;
//! one of them had its HL7 feed flowing before the switch and none after,
//! so its probation fails and it rolls back: the rollout stops naming it
//! and why. A second rollout with that appliance as the canary stops at
//! once, the others never sent the bundle.
//!
//! And a region of two instances on one PostgreSQL and one broker: a
//! rollout started at the first goes on at the second when the first dies.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use hms_e2e::client::Conn;
use hms_e2e::process::{self, bin, demo_config, run_ok, until};
use serde_json::{Value, json};

// The PostgreSQL helpers of the sync tests (only some of them used here).
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pg;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn admit(control: &str, room: &str, bed: &str) -> String {
    format!(
        "MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205080000||ADT^A01^ADT_A01|{control}|P|2.5.1\r\
         EVN|A01|20261205080000\rPID|1||MRN-{control}^^^DGH^MR||Berg^Alva||19700101|F\r\
         PV1|1|I|3W^{room}^{bed}^DGH||||||||||||||||V-{control}"
    )
}

/// Rollout `id` once it has ended (polled through `ops`, for up to `secs`).
async fn rollout_ended(ops: &mut Conn, id: u64, secs: u64, what: &str) -> serde_json::Value {
    until(secs, what, async || {
        let v = ops
            .get(&format!("/api/v1/fleet/rollouts/{id}"))
            .await
            .ok()?
            .json()
            .ok()?;
        (v["ended_at"].is_string()).then_some(v)
    })
    .await
}

/// An appliance on the fleet channel taking signed bundles: the demo
/// hospital as `hospital`, node `node`, in `region`, its sync key made and
/// enrolled through `ops`, syncing with `clouds` (in order), on the MQTT
/// broker at `broker`, trusting the keys in `d` (`fleet.pk8.pub`,
/// `bundle.pk8.pub`). Started; with its MLLP address.
#[allow(clippy::too_many_arguments)]
async fn fleet_appliance(
    d: &Path,
    ops: &mut Conn,
    hospital: &str,
    node: &str,
    region: &str,
    clouds: &[String],
    broker: &str,
) -> (process::Proc, std::net::SocketAddr) {
    let data = d.join(format!("{hospital}-data"));
    run_ok(
        Command::new(bin("hms-edge"))
            .args(["sync", "keygen", "--data-dir"])
            .arg(&data),
    );
    let key = std::fs::read(data.join("sync-key.pub")).unwrap();
    let enrolled = ops
        .post(
            "/api/v1/hospitals",
            &json!({
                "hospital": hospital, "region": region, "node": node,
                "public_key": base64::engine::general_purpose::STANDARD.encode(key),
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        enrolled.status,
        201,
        "{}",
        String::from_utf8_lossy(&enrolled.body)
    );
    let list = clouds
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = d.join(format!("{hospital}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "{}\n[uplink]\ncloud = [{list}]\nfailback_s = 3600\n\n\
             [fleet]\nbroker = \"{broker}\"\ncommand_key = \"{}\"\nkeepalive_s = 5\ntelemetry_s = 5\n\n\
             [bundles]\ntrusted_keys = [\"{}\"]\nprobation_s = 5\n",
            demo_config()
                .replace("hospital_id = \"demo-general\"", &format!("hospital_id = \"{hospital}\""))
                .replace("node_id = \"edge-1\"", &format!("node_id = \"{node}\""))
                .replace("region = \"eu-west\"", &format!("region = \"{region}\"")),
            d.join("fleet.pk8.pub").display(),
            d.join("bundle.pk8.pub").display(),
        ),
    )
    .unwrap();
    let (proc, _http, mllp) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--mllp", "127.0.0.1:0"])
            .env("HMS_LOG", "warn"),
    )
    .unwrap();
    (proc, mllp.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_stops_at_the_appliance_whose_probation_fails_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The cloud, on its embedded broker.
    let broker = free_port();
    run_ok(
        Command::new(bin("hms-cloud"))
            .args(["fleet", "keygen", "--out"])
            .arg(d.join("fleet.pk8")),
    );
    std::fs::write(
        d.join("cloud.toml"),
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"cloud-data\"\nempi = false\n\n\
             [fleet]\nembedded = true\nlisten = \"127.0.0.1:{broker}\"\nkey_file = \"fleet.pk8\"\n"
        ),
    )
    .unwrap();
    let token = run_ok(
        Command::new(bin("hms-cloud"))
            .args(["token", "create", "--name", "ops", "--config"])
            .arg(d.join("cloud.toml")),
    )
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
    let mut ops = Conn::connect(cloud_http, Some(&token)).await.unwrap();
    run_ok(
        Command::new(bin("hms-config"))
            .args(["keygen", "--out"])
            .arg(d.join("bundle.pk8")),
    );

    // Three appliances: the demo hospital under three hospital ids.
    let mut edges = vec![];
    for name in ["h-a", "h-b", "h-c"] {
        let node = format!("edge-{name}");
        let (proc, mllp) = fleet_appliance(
            d,
            &mut ops,
            name,
            &node,
            "eu-west",
            &[format!("http://{cloud_http}")],
            &format!("mqtt://127.0.0.1:{broker}"),
        )
        .await;
        edges.push((name, node, proc, mllp));
    }
    for (name, node, _, _) in &edges {
        until(30, "every appliance online in the fleet", async || {
            let v = ops
                .get(&format!("/api/v1/fleet/{name}/{node}"))
                .await
                .ok()?
                .json()
                .ok()?;
            (v["online"] == true).then_some(())
        })
        .await;
    }
    // h-c's feed flows before the rollout, and stops.
    let c_mllp = edges[2].3;
    assert_eq!(
        hms_e2e::or_day::send(c_mllp, &[admit("C-1", "306", "B")])
            .await
            .unwrap(),
        ["AA"]
    );

    // The model set, signed for every hospital, uploaded to the cloud.
    let upload = async |ops: &mut Conn, version: u64| -> String {
        let out = d.join(format!("models-{version}.bundle"));
        run_ok(
            Command::new(bin("hms-config"))
                .args(["sign", "--key"])
                .arg(d.join("bundle.pk8"))
                .args(["--version", &version.to_string(), "--out"])
                .arg(&out)
                .arg(root.join("models")),
        );
        let r = ops
            .request(
                hyper::Method::POST,
                "/api/v1/fleet/bundles",
                Some(std::fs::read(&out).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json().unwrap()["sha256"].as_str().unwrap().to_owned()
    };
    let sha7 = upload(&mut ops, 7).await;
    let nodes = |order: [usize; 3]| -> Vec<Value> {
        order
            .iter()
            .map(|i| json!({ "hospital": edges[*i].0, "node": edges[*i].1 }))
            .collect()
    };
    let started = ops
        .post(
            "/api/v1/fleet/rollouts",
            &json!({ "bundle": sha7, "nodes": nodes([0, 1, 2]), "canary": 1, "wave": 2, "wait_s": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(
        started.status,
        202,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let id = started.json().unwrap()["id"].as_u64().unwrap();
    let ended = rollout_ended(&mut ops, id, 90, "the first rollout ends").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["failed"]["hospital"], "h-c", "{ended}");
    let why = ended["failed"]["reason"].as_str().unwrap();
    assert!(
        why.contains("rolled back version 7") && why.contains("no HL7 message arrived"),
        "{why}"
    );
    assert_eq!(ended["waves"][0][0]["state"], "done", "the canary: {ended}");
    // h-a has the set in force; h-c is back on the set before it.
    let status = |v: &Value| v["status"]["bundles"]["model_set"]["in_force"].clone();
    let a = ops
        .get("/api/v1/fleet/h-a/edge-h-a")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status(&a), 7, "{a}");
    let c = until(10, "h-c back on its own set", async || {
        let c = ops
            .get("/api/v1/fleet/h-c/edge-h-c")
            .await
            .ok()?
            .json()
            .ok()?;
        status(&c).is_null().then_some(c)
    })
    .await;
    assert_eq!(c["status"]["bundles"]["last"]["step"], "rolled_back", "{c}");

    // With h-c as the canary, the next version stops there; the others are
    // never sent it.
    assert_eq!(
        hms_e2e::or_day::send(c_mllp, &[admit("C-2", "301", "A")])
            .await
            .unwrap(),
        ["AA"]
    );
    let sha8 = upload(&mut ops, 8).await;
    let started = ops
        .post(
            "/api/v1/fleet/rollouts",
            &json!({ "bundle": sha8, "nodes": nodes([2, 0, 1]), "canary": 1, "wait_s": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202);
    let id = started.json().unwrap()["id"].as_u64().unwrap();
    let ended = rollout_ended(&mut ops, id, 60, "the second rollout ends").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["failed"]["hospital"], "h-c", "{ended}");
    assert_eq!(ended["waves"][1][0]["state"], "skipped", "{ended}");
    assert_eq!(ended["waves"][1][1]["state"], "skipped", "{ended}");
    assert!(ended["waves"][1][0].get("command").is_none(), "{ended}");
    let a = ops
        .get("/api/v1/fleet/h-a/edge-h-a")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status(&a), 7, "h-a never got version 8: {a}");

    // Both listed, newest first; bad requests refused.
    let list = ops
        .get("/api/v1/fleet/rollouts")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["rollouts"].as_array().unwrap().len(), 2);
    assert_eq!(list["rollouts"][0]["id"], id);
    let unknown = ops
        .post(
            "/api/v1/fleet/rollouts",
            &json!({ "bundle": "0".repeat(64), "nodes": nodes([0, 1, 2]) }),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    let bad = ops
        .post(
            "/api/v1/fleet/rollouts",
            &json!({ "bundle": sha8, "nodes": nodes([0, 1, 2]), "canary": 4 }),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    drop(edges);
}

/// Two instances of a region on one PostgreSQL and one MQTT broker
/// (Mosquitto): the bundle uploaded through the first, the rollout started
/// there, and the first SIGKILLed at once. The second takes the region's
/// rollout lease over, drives the rollout to its end (the appliances,
/// listing both instances, fetch the bundle from the second), and shows
/// it; both appliances end with the version in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_goes_on_at_another_instance_when_the_one_that_started_it_dies() {
    let test = "a_rollout_goes_on_at_another_instance_when_the_one_that_started_it_dies";
    let broker_up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:1883".parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_ok();
    if !broker_up {
        hms_e2e::skip::skip(
            test,
            "no MQTT broker on 127.0.0.1:1883 (cargo xtask test and ci start Mosquitto)",
        );
        return;
    }
    let pid = std::process::id();
    let region = format!("ro-{pid}");
    let region_db = format!("hms+rollouts-e2e-{pid}");
    let hospitals = [format!("ro-{pid}-a"), format!("ro-{pid}-b")];
    let drop_all = || {
        let mut c = pg::Pg::connect(&pg::admin(), "postgres")?;
        for db in [region_db.clone()]
            .into_iter()
            .chain(hospitals.iter().map(|h| format!("hms_{h}")))
        {
            c.query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))?;
        }
        Ok::<_, String>(())
    };
    if let Err(e) = drop_all() {
        hms_e2e::skip::skip(
            test,
            &format!("PostgreSQL unreachable ({}): {e}", pg::admin()),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        Command::new(bin("hms-cloud"))
            .args(["fleet", "keygen", "--out"])
            .arg(d.join("fleet.pk8")),
    );
    let ports = [free_port(), free_port()];
    for (i, port) in ports.iter().enumerate() {
        std::fs::write(
            d.join(format!("cloud-{i}.toml")),
            format!(
                "region = \"{region}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"cloud-{i}\"\n\
                 empi = false\nbackend = \"postgres\"\npostgres = \"{}\"\n\
                 region_database = \"{region_db}\"\n\n\
                 [fleet]\nbroker = \"mqtt://127.0.0.1:1883\"\nkey_file = \"fleet.pk8\"\n",
                pg::admin()
            ),
        )
        .unwrap();
    }
    let token = run_ok(
        Command::new(bin("hms-cloud"))
            .args(["token", "create", "--name", "ops", "--config"])
            .arg(d.join("cloud-0.toml")),
    )
    .trim()
    .to_owned();
    let start = |i: usize| {
        let p = process::Proc::spawn(
            Command::new(bin("hms-cloud"))
                .args(["run", "--config"])
                .arg(d.join(format!("cloud-{i}.toml")))
                .env("HMS_LOG", "warn"),
        )
        .unwrap();
        p.line_after("hms-cloud ready ").unwrap();
        p
    };
    let first = start(0);
    let _second = start(1);
    let addr = |i: usize| -> std::net::SocketAddr { ([127, 0, 0, 1], ports[i]).into() };
    let mut ops = Conn::connect(addr(0), Some(&token)).await.unwrap();
    run_ok(
        Command::new(bin("hms-config"))
            .args(["keygen", "--out"])
            .arg(d.join("bundle.pk8")),
    );
    let mut edges = vec![];
    for h in &hospitals {
        let clouds = [format!("http://{}", addr(0)), format!("http://{}", addr(1))];
        let (proc, _) = fleet_appliance(
            d,
            &mut ops,
            h,
            "edge-1",
            &region,
            &clouds,
            "mqtt://127.0.0.1:1883",
        )
        .await;
        edges.push(proc);
    }
    let mut at_second = Conn::connect(addr(1), Some(&token)).await.unwrap();
    for h in &hospitals {
        for c in [&mut ops, &mut at_second] {
            until(30, "every appliance online at both instances", async || {
                let v = c
                    .get(&format!("/api/v1/fleet/{h}/edge-1"))
                    .await
                    .ok()?
                    .json()
                    .ok()?;
                (v["online"] == true).then_some(())
            })
            .await;
        }
    }
    let bundle = d.join("models-7.bundle");
    run_ok(
        Command::new(bin("hms-config"))
            .args(["sign", "--key"])
            .arg(d.join("bundle.pk8"))
            .args(["--version", "7", "--out"])
            .arg(&bundle)
            .arg(root.join("models")),
    );
    let r = ops
        .request(
            hyper::Method::POST,
            "/api/v1/fleet/bundles",
            Some(std::fs::read(&bundle).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let sha = r.json().unwrap()["sha256"].as_str().unwrap().to_owned();
    let nodes: Vec<Value> = hospitals
        .iter()
        .map(|h| json!({ "hospital": h, "node": "edge-1" }))
        .collect();
    let started = ops
        .post(
            "/api/v1/fleet/rollouts",
            &json!({ "bundle": sha, "nodes": nodes, "canary": 1, "wave": 1, "wait_s": 2 }),
        )
        .await
        .unwrap();
    assert_eq!(
        started.status,
        202,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let id = started.json().unwrap()["id"].as_u64().unwrap();
    first.kill9().unwrap();

    let ended = rollout_ended(&mut at_second, id, 120, "the rollout ends at the second").await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    for wave in ended["waves"].as_array().unwrap() {
        assert_eq!(wave[0]["state"], "done", "{ended}");
    }
    for h in &hospitals {
        let v = at_second
            .get(&format!("/api/v1/fleet/{h}/edge-1"))
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["status"]["bundles"]["model_set"]["in_force"], 7, "{v}");
    }
    let list = at_second
        .get("/api/v1/fleet/rollouts")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["rollouts"][0]["id"], id, "{list}");
    drop(edges);
    drop(_second);
    let _ = drop_all();
}
