//! Signed bundles end to end with real processes: `hms-config` signs,
//! `hms-edge bundle apply` hands the bundle to a running `hms-edge`, which
//! checks it, switches to it in-process, keeps it after a healthy
//! probation, refuses what it must (older version, another hospital, a
//! wrong key, a truncated file, a configuration that drops an occupied
//! bed), and rolls back by itself a configuration whose probation fails
//! (its HL7 listener gone while the feed was flowing). A model set comes as
//! a signed bundle too; unsigned installs are refused.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hms_e2e::client::Conn;
use hms_e2e::process::{self, bin, demo_config, edge_token, run_ok};
use serde_json::Value;

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Signs `what` (a config file or a model-set dir) as version `v`.
fn sign(d: &Path, key: &str, v: u64, hospital: &str, what: &Path, out: &str) -> PathBuf {
    let path = d.join(out);
    run_ok(
        Command::new(bin("hms-config"))
            .args(["sign", "--key"])
            .arg(d.join(key))
            .args(["--version", &v.to_string(), "--hospital", hospital, "--out"])
            .arg(&path)
            .arg(what),
    );
    path
}

/// `hms-edge bundle apply`: (exit code, stdout + stderr).
fn apply(edge_cfg: &Path, bundle: &Path) -> (i32, String) {
    let data = edge_cfg.with_file_name("data");
    let out = output(
        Command::new(bin("hms-edge"))
            .args(["bundle", "apply"])
            .arg(bundle)
            .arg("--config")
            .arg(edge_cfg)
            .arg("--data-dir")
            .arg(data)
            .args(["--wait-s", "60"]),
    );
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// An HL7 A08 (no bed change) every 300 ms while `on`, each on a new
/// connection (the appliance restarts under it); how many were answered.
fn feed(mllp: SocketAddr, on: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut n = 0u64;
        while on.load(Ordering::Relaxed) {
            n += 1;
            let m = format!(
                "MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205090000||ADT^A08^ADT_A01|FEED-{}-{n}|P|2.5.1\r\
                 EVN|A08|20261205090000\rPID|1||MRN-B1^^^DGH^MR||Berg^Alva||19700101|F\r\
                 PV1|1|I|ICU^202^A^DGH||||||||||||||||V-B1",
                std::process::id()
            );
            if let Ok(Ok(acks)) =
                tokio::time::timeout(Duration::from_secs(2), hms_e2e::or_day::send(mllp, &[m]))
                    .await
                && !acks.is_empty()
            {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

async fn health(conn: &mut Conn) -> Value {
    conn.get("/health").await.unwrap().json().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_apply_on_probation_refuse_what_they_must_and_roll_back_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        Command::new(bin("hms-config"))
            .args(["keygen", "--out"])
            .arg(d.join("bundle.pk8")),
    );
    run_ok(
        Command::new(bin("hms-config"))
            .args(["keygen", "--out"])
            .arg(d.join("other.pk8")),
    );

    // The appliance: the demo hospital, its HL7 listener named in its own
    // file (a bundle may change it), trusting bundle.pk8.pub.
    let mllp_port = free_port();
    let demo = demo_config().replace(
        "mllp = \"127.0.0.1:2575\"",
        &format!("mllp = \"127.0.0.1:{mllp_port}\""),
    );
    let with_bundles = |text: &str| {
        format!("{text}\n[bundles]\ntrusted_keys = [\"bundle.pk8.pub\"]\nprobation_s = 5\n")
    };
    let own = d.join("edge.toml");
    std::fs::write(&own, with_bundles(&demo)).unwrap();
    let data = d.join("data");
    let (edge, http, mllp) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(&own)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0"])
            .env("HMS_LOG", "warn"),
    )
    .unwrap();
    let mllp = mllp.unwrap();
    let token = edge_token(&data, "admin", "ops");
    let mut api = Conn::connect(http, Some(&token)).await.unwrap();
    // A patient in ICU-202-A, and the feed flowing.
    let admit = "MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205080000||ADT^A01^ADT_A01|ADM-1|P|2.5.1\r\
                 EVN|A01|20261205080000\rPID|1||MRN-B1^^^DGH^MR||Berg^Alva||19700101|F\r\
                 PV1|1|I|ICU^202^A^DGH||||||||||||||||V-B1"
        .to_owned();
    assert_eq!(hms_e2e::or_day::send(mllp, &[admit]).await.unwrap(), ["AA"]);
    let (on, answered) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    feed(mllp, on.clone(), answered.clone());
    let h = health(&mut api).await;
    assert_eq!(h["components"]["bundles"]["status"], "ok", "{h}");

    // Version 1 adds a bed: applied, on probation, in force.
    let extra = "\n[[bed]]\nid = \"ICU-201-B\"\nroom = \"ICU-201\"\n\
                 hl7 = { facility = \"DGH\", point_of_care = \"ICU\", room = \"201\", bed = \"B\" }\n";
    let v1_cfg = d.join("v1.toml");
    std::fs::write(&v1_cfg, with_bundles(&format!("{demo}{extra}"))).unwrap();
    let v1 = sign(d, "bundle.pk8", 1, "demo-general", &v1_cfg, "v1.bundle");
    let (code, out) = tokio::task::spawn_blocking({
        let (own, v1) = (own.clone(), v1.clone());
        move || apply(&own, &v1)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in force: config version 1"), "{out}");
    let mut api = Conn::connect(http, Some(&token)).await.unwrap();
    let bed = api.get("/api/v1/beds/ICU-201-B").await.unwrap();
    assert_eq!(bed.status, 200, "the new bed is on the board");
    let h = health(&mut api).await;
    assert_eq!(h["components"]["bundles"]["config"]["in_force"], 1, "{h}");
    assert_eq!(h["components"]["bundles"]["status"], "ok", "{h}");
    assert_eq!(h["status"], "ok", "{h}");

    // Refusals, each with nothing changed.
    let again = apply(&own, &v1);
    assert_eq!(again.0, 1, "{}", again.1);
    assert!(
        again.1.contains("version 1 is not above version 1"),
        "{}",
        again.1
    );
    let other_h = sign(
        d,
        "bundle.pk8",
        9,
        "st-mary",
        &v1_cfg,
        "other-hospital.bundle",
    );
    let r = apply(&own, &other_h);
    assert_eq!(r.0, 1, "{}", r.1);
    assert!(r.1.contains("for hospital st-mary"), "{}", r.1);
    let wrong_key = sign(
        d,
        "other.pk8",
        9,
        "demo-general",
        &v1_cfg,
        "wrong-key.bundle",
    );
    let r = apply(&own, &wrong_key);
    assert_eq!(r.0, 1, "{}", r.1);
    assert!(r.1.contains("not a trusted key"), "{}", r.1);
    let bytes = std::fs::read(&v1).unwrap();
    let truncated = d.join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let r = apply(&own, &truncated);
    assert_eq!(r.0, 1, "{}", r.1);
    assert!(r.1.contains("truncated"), "{}", r.1);
    // Version 2 drops ICU-202-A, which holds a patient: refused by the appliance.
    let without = format!("{demo}{extra}").replace(
        "[[bed]]\nid = \"ICU-202-A\"\nroom = \"ICU-202\"\nisolation_capable = true\ntelemetry = true\n\
         hl7 = { facility = \"DGH\", point_of_care = \"ICU\", room = \"202\", bed = \"A\" }\n",
        "",
    );
    assert!(!without.contains("ICU-202-A"));
    let v2_cfg = d.join("v2.toml");
    std::fs::write(&v2_cfg, with_bundles(&without)).unwrap();
    let v2 = sign(d, "bundle.pk8", 2, "demo-general", &v2_cfg, "v2.bundle");
    let r = tokio::task::spawn_blocking({
        let (own, v2) = (own.clone(), v2.clone());
        move || apply(&own, &v2)
    })
    .await
    .unwrap();
    assert_eq!(r.0, 1, "{}", r.1);
    assert!(
        r.1.contains("removes beds that hold a patient: ICU-202-A"),
        "{}",
        r.1
    );
    let h = health(&mut api).await;
    assert_eq!(h["components"]["bundles"]["config"]["in_force"], 1, "{h}");

    // Version 3 drops the HL7 listener while the feed flows: its probation
    // fails and the appliance goes back to version 1 by itself.
    let v3_cfg = d.join("v3.toml");
    std::fs::write(
        &v3_cfg,
        with_bundles(
            &format!("{demo}{extra}").replace(&format!("mllp = \"127.0.0.1:{mllp_port}\"\n"), ""),
        ),
    )
    .unwrap();
    let v3 = sign(d, "bundle.pk8", 3, "demo-general", &v3_cfg, "v3.bundle");
    let r = tokio::task::spawn_blocking({
        let (own, v3) = (own.clone(), v3.clone());
        move || apply(&own, &v3)
    })
    .await
    .unwrap();
    assert_eq!(r.0, 1, "{}", r.1);
    assert!(r.1.contains("rolled back: config version 3"), "{}", r.1);
    assert!(r.1.contains("no HL7 message arrived"), "{}", r.1);
    // Back on version 1: the listener answers again, the bed is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = answered.load(Ordering::Relaxed);
    while answered.load(Ordering::Relaxed) == before {
        assert!(
            Instant::now() < deadline,
            "the HL7 listener did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut api = Conn::connect(http, Some(&token)).await.unwrap();
    let h = health(&mut api).await;
    let b = &h["components"]["bundles"];
    assert_eq!(b["config"]["in_force"], 1, "{h}");
    assert_eq!(b["config"]["highest"], 3, "{h}");
    assert_eq!(b["last"]["step"], "rolled_back", "{h}");
    assert_eq!(b["status"], "degraded", "{h}");
    assert_eq!(api.get("/api/v1/beds/ICU-201-B").await.unwrap().status, 200);

    // A model set comes signed; unsigned installs are refused.
    let unsigned = output(
        Command::new(bin("hms-edge"))
            .args(["models", "install", "--config"])
            .arg(&own)
            .arg(root.join("models")),
    );
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("only as signed bundles"));
    let set = sign(
        d,
        "bundle.pk8",
        7,
        "*",
        &root.join("models"),
        "models.bundle",
    );
    let r = tokio::task::spawn_blocking({
        let own = own.clone();
        move || apply(&own, &set)
    })
    .await
    .unwrap();
    assert_eq!(r.0, 0, "{}", r.1);
    assert!(r.1.contains("in force: model_set version 7"), "{}", r.1);
    let h = health(&mut api).await;
    assert_eq!(
        h["components"]["bundles"]["model_set"]["in_force"], 7,
        "{h}"
    );

    // Stopped and started again: the same version in force, the same
    // anti-rollback record, the bundle's bed still there; and the log
    // (with every step as an audit.bundle event) verifies against its
    // projections.
    on.store(false, Ordering::Relaxed);
    let status = edge.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    let verified = output(
        Command::new(bin("hms-edge"))
            .args(["verify", "--data-dir"])
            .arg(&data),
    );
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let (_edge, http, _) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(&own)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0"])
            .env("HMS_LOG", "warn"),
    )
    .unwrap();
    let mut api = Conn::connect(http, Some(&token)).await.unwrap();
    let h = health(&mut api).await;
    let b = &h["components"]["bundles"];
    assert_eq!(
        (&b["config"]["in_force"], &b["config"]["highest"]),
        (&Value::from(1), &Value::from(3)),
        "{h}"
    );
    assert_eq!(b["model_set"]["in_force"], 7, "{h}");
    assert_eq!(api.get("/api/v1/beds/ICU-201-B").await.unwrap().status, 200);
    let r = apply(&own, &v1);
    assert!(r.1.contains("version 1 is not above version 3"), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_killed_during_a_probation_starts_again_on_the_configuration_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(
        Command::new(bin("hms-config"))
            .args(["keygen", "--out"])
            .arg(d.join("bundle.pk8")),
    );
    let demo = demo_config();
    // A long probation: the kill comes in the middle of it.
    let with_bundles = |text: &str| {
        format!("{text}\n[bundles]\ntrusted_keys = [\"bundle.pk8.pub\"]\nprobation_s = 600\n")
    };
    let own = d.join("edge.toml");
    std::fs::write(&own, with_bundles(&demo)).unwrap();
    let data = d.join("data");
    let start = || {
        process::start_edge(
            Command::new(bin("hms-edge"))
                .args(["run", "--config"])
                .arg(&own)
                .arg("--data-dir")
                .arg(&data)
                .args(["--http", "127.0.0.1:0", "--mllp", "127.0.0.1:0"])
                .env("HMS_LOG", "warn"),
        )
        .unwrap()
    };
    let (edge, http, _) = start();
    let token = edge_token(&data, "admin", "ops");
    let extra = "\n[[bed]]\nid = \"ICU-201-B\"\nroom = \"ICU-201\"\n\
                 hl7 = { facility = \"DGH\", point_of_care = \"ICU\", room = \"201\", bed = \"B\" }\n";
    let v1_cfg = d.join("v1.toml");
    std::fs::write(&v1_cfg, with_bundles(&format!("{demo}{extra}"))).unwrap();
    let v1 = sign(d, "bundle.pk8", 1, "demo-general", &v1_cfg, "v1.bundle");
    // Handed over without waiting for the outcome.
    let out = output(
        Command::new(bin("hms-edge"))
            .args(["bundle", "apply"])
            .arg(&v1)
            .arg("--config")
            .arg(&own)
            .arg("--data-dir")
            .arg(&data)
            .args(["--wait-s", "1"]),
    );
    assert_eq!(out.status.code(), Some(1), "no outcome within 1 s");
    assert!(String::from_utf8_lossy(&out.stderr).contains("still queued or on probation"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut api = match Conn::connect(http, Some(&token)).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Ok(r) = api.get("/health").await
            && let Ok(h) = r.json()
            && h["components"]["bundles"]["status"] == "probation"
        {
            assert_eq!(api.get("/api/v1/beds/ICU-201-B").await.unwrap().status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 1 never went on probation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.kill9().unwrap();

    let (_edge, http, _) = start();
    let mut api = Conn::connect(http, Some(&token)).await.unwrap();
    let h = health(&mut api).await;
    let b = &h["components"]["bundles"];
    assert_eq!(
        b["config"]["in_force"],
        Value::Null,
        "its own configuration: {h}"
    );
    assert_eq!(b["config"]["highest"], 1, "{h}");
    assert_eq!(b["last"]["step"], "rolled_back", "{h}");
    assert_eq!(
        b["last"]["reason"], "the appliance stopped during the probation",
        "{h}"
    );
    assert_eq!(
        api.get("/api/v1/beds/ICU-201-B").await.unwrap().status,
        404,
        "the bundle's bed is gone with it"
    );
    let outcome: Value = serde_json::from_str(
        &std::fs::read_to_string(
            data.join("bundles/outcome")
                .join(format!("{}.json", sha256_of(&v1))),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(outcome["step"], "rolled_back");
}

/// The SHA-256 of a file, hex (as `sha256sum` prints it).
fn sha256_of(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_owned()
}
