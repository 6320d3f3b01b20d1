//! The `hms-edge` binary as a process: durability across SIGKILL, verify,
//! configuration errors, graceful SIGTERM, the 2,000-bed example.

use std::path::Path;
use std::time::Duration;

use hms_e2e::client::Conn;
use serde_json::json;

use crate::support::{Proc, cli_token, hospital_toml, run_cli};

fn write_config(dir: &Path, units: &[(&str, usize, usize)]) -> std::path::PathBuf {
    let file = dir.join("hospital.toml");
    std::fs::write(&file, hospital_toml(&dir.join("data"), units)).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_assignment_survives_sigkill_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 8, 2)]);
    let data = dir.path().join("data");
    // Several rounds: each acknowledged write is followed at once by SIGKILL.
    for round in 0..4u64 {
        let proc = Proc::start(&config, &[]);
        let token = cli_token(&data, "bed_manager", &format!("bm-{round}"));
        let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
        let bed = format!("3W-{round:03}");
        let r = c
            .post(
                &format!("/api/v1/beds/{bed}/assign"),
                &json!({ "encounter": format!("E{round}"), "version": 1 }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        proc.kill9();

        let proc = Proc::start(&config, &[]);
        let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
        for earlier in 0..=round {
            let v = c
                .get(&format!("/api/v1/beds/3W-{earlier:03}"))
                .await
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(
                v["bed"]["state"], "occupied",
                "round {round}, bed {earlier}: {v}"
            );
            assert_eq!(v["bed"]["encounter"], format!("E{earlier}"));
            assert_eq!(v["bed"]["version"], 2);
            // The bed's history is rebuilt from the log at start.
            assert_eq!(v["history"][0]["kind"], "bed.assigned", "{v}");
            assert_eq!(v["history"][0]["actor"], format!("user:bm-{earlier}"));
            assert_eq!(v["history"][1]["kind"], "bed.commissioned");
        }
        proc.kill9();
        let (code, out, err) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
        assert_eq!(code, 0, "verify failed: {out}{err}");
        assert!(out.contains("verify: ok"), "{out}");
    }
}

#[test]
fn verify_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 3, 1)]);
    let data = dir.path().join("data");
    let proc = Proc::start(&config, &[]);
    proc.kill9();
    let (code, out, _) = run_cli(&["verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 events, 3 beds"), "{out}");

    // Edit a projection behind the log's back: replay != projections.
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    conn.execute("UPDATE beds SET version = 9 WHERE bed_id = '3W-001'", [])
        .unwrap();
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("beds:") && out.contains("3W-001"), "{out}");
    conn.execute("UPDATE beds SET version = 1 WHERE bed_id = '3W-001'", [])
        .unwrap();

    // Edit an event: the hash chain breaks.
    conn.execute(
        "UPDATE events SET body = replace(body, '3W-002', '3W-00X') WHERE seq = 3",
        [],
    )
    .unwrap();
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("hash chain: seq 3"), "{out}");
}

#[test]
fn a_bad_config_stops_start_up_with_file_line_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    let good = hospital_toml(&dir.path().join("data"), &[("3W", 2, 1)]);
    // A dangling unit reference on the first bed.
    let broken = good.replacen("unit = \"3W\"\ngender", "unit = \"NOPE\"\ngender", 1);
    std::fs::write(&file, &broken).unwrap();
    let (code, _, err) = run_cli(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("broken.toml:"), "{err}");
    assert!(err.contains("NOPE"), "{err}");
    // Nothing was created: the config was refused before anything else.
    assert!(!dir.path().join("data").exists());

    let (code, _, err) = run_cli(&["run", "--config", "/nonexistent/x.toml"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = run_cli(&["run"]);
    assert_eq!(code, 64);
    let (code, _, _) = run_cli(&["frobnicate"]);
    assert_eq!(code, 64);
    let (code, _, err) = run_cli(&[
        "token",
        "create",
        "--role",
        "overlord",
        "--name",
        "x",
        "--data-dir",
        "/tmp",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown role"));
}

#[test]
fn the_data_dir_of_another_hospital_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    Proc::start(&config, &[]).kill9();
    let other = std::fs::read_to_string(&config).unwrap().replace(
        "hospital_id = \"test-hospital\"",
        "hospital_id = \"other-hospital\"",
    );
    let other_file = dir.path().join("other.toml");
    std::fs::write(&other_file, other).unwrap();
    let (code, _, err) = run_cli(&[
        "run",
        "--config",
        other_file.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("belongs to hospital \"test-hospital\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 4, 2)]);
    let data = dir.path().join("data");
    let proc = Proc::start(&config, &[]);
    let token = cli_token(&data, "bed_manager", "bm");
    let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
    let r = c
        .post("/api/v1/units/3W/placements", &json!({ "encounter": "E1" }))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    // SIGTERM: it drains and stops cleanly (nextest's limit guards a hang).
    let exit = proc.terminate();
    assert!(exit.success(), "{exit:?}");
    // The writer checkpointed on close: the WAL is empty.
    let wal = std::fs::metadata(data.join("edge.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0);
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2000_bed_example_starts_and_serves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hospital-2000.toml");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Made before the start, its audit event is in the log before anything
    // is served.
    let token = cli_token(&data, "viewer", "kiosk");
    let proc = Proc::start(
        &root,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--mllp",
            "127.0.0.1:0",
        ],
    );
    let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
    let v = c.get("/api/v1/units").await.unwrap().json().unwrap();
    let total: u64 = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["census"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2000);
    proc.kill9();
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // 2,000 beds commissioned and the token's creation.
    assert!(out.contains("2001 events, 2000 beds"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_hospital_starts_and_a_kiosk_token_lists_its_beds() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo-hospital.toml");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The committed file names fixed ports: tests use free ones.
    let proc = Proc::start(
        &demo,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--mllp",
            "127.0.0.1:0",
        ],
    );
    let token = cli_token(&data, "viewer", "demo-kiosk");
    let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
    let v = c.get("/api/v1/units").await.unwrap().json().unwrap();
    let units = v["units"].as_array().unwrap();
    let total: u64 = units
        .iter()
        .map(|u| u["census"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 40);
    assert!(
        units
            .iter()
            .any(|u| u["id"] == "ICU" && u["level_of_care"] == "icu"),
        "{v}"
    );
    let beds = c
        .get("/api/v1/units/3W/beds")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(beds["beds"].as_array().unwrap().len(), 14);
    assert!(
        beds["beds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["state"] == "vacant_clean")
    );
}

#[test]
fn unknown_config_keys_warn_but_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = hospital_toml(&dir.path().join("data"), &[("3W", 2, 1)])
        .replace("[store]\n", "[store]\nfuture_option = true\n");
    let file = dir.path().join("newer.toml");
    std::fs::write(&file, text).unwrap();
    // The appliance starts (the strict linter would refuse the file), with a
    // warning naming the key and its place.
    let mut child = std::process::Command::new(crate::support::bin())
        .args([
            "run",
            "--config",
            file.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ])
        .env("HMS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.starts_with("hms-edge ready"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("newer.toml:") && err.contains("future_option"),
        "{err}"
    );
}

fn a28(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|{control}|P|2.5.1\r\
         EVN|A28|20261127101500\rPID|1||MRN-{control}^^^TH^MR||Roe^Rick||19800101|M\r"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_hl7_message_survives_sigkill_exactly_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let data = dir.path().join("data");
    let mut acked = vec![];
    let mut in_flight = vec![];
    // Kill the appliance at a different point of the stream each round.
    for round in 0..5usize {
        let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
        let mut s = tokio::net::TcpStream::connect(proc.mllp.unwrap())
            .await
            .unwrap();
        let kill_after = 20 + round * 17;
        let mut buf = vec![0u8; 4096];
        for i in 0..kill_after + 1 {
            let id = format!("K{round}-{i}");
            s.write_all(&edge_node::integration::mllp::Framer::encode(&a28(&id)))
                .await
                .unwrap();
            if i == kill_after {
                // The last message is in flight when the appliance dies.
                in_flight.push(id);
                break;
            }
            let mut got = Vec::new();
            while !got.ends_with(b"\x1c\r") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&got).contains(&format!("MSA|AA|{id}")));
            acked.push(id);
        }
        proc.kill9();
    }
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    let stored = |id: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM events WHERE kind = 'integration.hl7_message' AND correlation = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    for id in &acked {
        assert_eq!(stored(id), 1, "{id} (acknowledged) stored that many times");
    }
    // A message in flight at the kill was committed or not, never twice.
    assert_eq!(in_flight.len(), 5);
    for id in &in_flight {
        assert!(stored(id) <= 1, "{id} (in flight) stored twice");
    }
    drop(conn);
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn hl7_send_prints_one_line_per_ack() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    let to = proc.mllp.unwrap().to_string();
    // A batch file of two messages, CRLF line endings.
    let mut batch = b"FHS|^~\\&|EPIC\r\nBHS|^~\\&|EPIC\r\n".to_vec();
    for id in ["S1", "S2"] {
        batch.extend(
            String::from_utf8(a28(id))
                .unwrap()
                .replace('\r', "\r\n")
                .into_bytes(),
        );
    }
    batch.extend(b"BTS|2\r\nFTS|1\r\n");
    let file = dir.path().join("batch.hl7");
    std::fs::write(&file, &batch).unwrap();
    let (code, out, err) = run_cli(&["hl7", "send", "--to", &to, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let summary = format!(
        "{}: 2 messages, 2 AA, 0 AE, 0 AR, 0 CA, 0 CE, 0 CR, 0 no ACK, 0 timed out",
        file.display()
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["S1 AA", "S2 AA", &summary]
    );
    // Sent again: duplicates, acknowledged identically.
    let (code, out2, _) = run_cli(&["hl7", "send", "--to", &to, file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(out, out2);
    // A trigger not applied yet is AE with the reason; exit 1.
    let bad = dir.path().join("a99.hl7");
    std::fs::write(
        &bad,
        String::from_utf8(a28("S3")).unwrap().replace("A28", "A99"),
    )
    .unwrap();
    let (code, out, _) = run_cli(&["hl7", "send", "--to", &to, bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.starts_with("S3 AE ") && out.contains("A99"), "{out}");
    let (code, _, err) = run_cli(&["hl7", "send", "--to", &to, "/nonexistent.hl7"]);
    assert_eq!(code, 64, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_messages_replay_after_the_configuration_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let data = dir.path().join("data");
    let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    // Bed 3W-002 (PL 3W^2^2^TH) is not configured yet: the admit is parked.
    let admit = "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127||ADT^A01^ADT_A01|R1|P|2.5.1\r\
         PID|1||MRN-9^^^TH^MR||Poe^Pat\rPV1|1|I|3W^2^2^TH||||||||||||||||V9\r"
        .to_owned();
    let acks = edge_node::integration::client::send(
        proc.mllp.unwrap(),
        &[admit.into_bytes()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(acks[0].code, "AE");
    let admin = cli_token(&data, "admin", "integration-admin");
    let viewer = cli_token(&data, "viewer", "kiosk");
    let mut c = Conn::connect(proc.addr, Some(&admin)).await.unwrap();
    let v = c
        .get("/api/v1/integration/parked")
        .await
        .unwrap()
        .json()
        .unwrap();
    let parked = v["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["control_id"], "R1");
    assert!(parked[0]["reason"].as_str().unwrap().contains("PV1-3"));
    let seq = parked[0]["seq"].as_u64().unwrap();
    // A viewer may not list or replay; an unknown seq is a 404.
    let mut k = Conn::connect(proc.addr, Some(&viewer)).await.unwrap();
    assert_eq!(
        k.get("/api/v1/integration/parked").await.unwrap().status,
        403
    );
    assert_eq!(
        c.request(
            hyper::Method::POST,
            "/api/v1/integration/parked/999999/replay",
            None
        )
        .await
        .unwrap()
        .status,
        404
    );
    // Replaying before the fix leaves it parked.
    let http = proc.addr.to_string();
    let (code, out, _) = run_cli(&[
        "hl7",
        "replay",
        "--http",
        &http,
        "--token",
        &admin,
        &seq.to_string(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("{seq} parked")), "{out}");
    proc.kill9();
    // Fix the configuration (four beds) and restart: the replay applies it.
    std::fs::write(&config, hospital_toml(&data, &[("3W", 4, 1)])).unwrap();
    let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    let http = proc.addr.to_string();
    let (code, out, err) = run_cli(&["hl7", "replay", "--http", &http, "--token", &admin, "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("{seq} applied"));
    let mut c = Conn::connect(proc.addr, Some(&admin)).await.unwrap();
    let b = c.get("/api/v1/beds/3W-002").await.unwrap().json().unwrap();
    assert_eq!(b["bed"]["state"], "occupied");
    assert_eq!(b["bed"]["encounter"], "V9");
    let v = c
        .get("/api/v1/integration/parked")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert!(v["parked"].as_array().unwrap().is_empty());
    proc.kill9();
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_and_restore_into_a_new_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 6, 2)]);
    let data = dir.path().join("data");
    // Made before the start, its audit event is in the log before anything
    // is served.
    let token = cli_token(&data, "bed_manager", "bm");
    let proc = Proc::start(&config, &[]);
    let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
    for i in 0..3 {
        let r = c
            .post(
                "/api/v1/units/3W/placements",
                &json!({ "encounter": format!("E{i}") }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    let before = c
        .get("/api/v1/units/3W/beds")
        .await
        .unwrap()
        .json()
        .unwrap();
    let snap = dir.path().join("snap.sqlite");
    let (code, out, err) = run_cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Six beds commissioned, the token's creation, three placements.
    assert!(out.contains("10 events"), "{out}");
    // Backups never overwrite.
    let (code, _, err) = run_cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    proc.kill9();
    // Restore into a fresh data dir; the appliance starts on it with the same board.
    let restored = dir.path().join("restored");
    let (code, out, err) = run_cli(&[
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restore: ok (10 events, 6 beds"), "{out}");
    // Not over an existing store.
    let (code, _, err) = run_cli(&[
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"not a database").unwrap();
    let (code, _, _) = run_cli(&[
        "restore",
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
        "--from",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let proc = Proc::start(&config, &["--data-dir", restored.to_str().unwrap()]);
    let token = cli_token(&restored, "viewer", "kiosk");
    let mut c = Conn::connect(proc.addr, Some(&token)).await.unwrap();
    let after = c
        .get("/api/v1/units/3W/beds")
        .await
        .unwrap()
        .json()
        .unwrap();
    let strip = |v: &serde_json::Value| {
        v["beds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].clone(),
                    b["state"].clone(),
                    b["encounter"].clone(),
                    b["version"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&before), strip(&after));
}

#[test]
fn sync_keygen_makes_a_key_pair_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = run_cli(&["sync", "keygen", "--data-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    let private = std::fs::read(data.join("sync-key.pk8")).unwrap();
    let public = std::fs::read(data.join("sync-key.pub")).unwrap();
    assert_eq!(public.len(), 32);
    assert_eq!(
        out.lines().last().unwrap().len(),
        64,
        "hex public key on the last line"
    );
    // The private key signs as this appliance and matches the public key.
    let signer =
        cloud_sync_client::Signer::new(&private, "h1".parse().unwrap(), "edge-1".parse().unwrap())
            .unwrap();
    assert_eq!(signer.public_key(), public);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("sync-key.pk8"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key is readable by its owner only"
        );
    }
    // Never replaced silently.
    let (code, _, err) = run_cli(&["sync", "keygen", "--data-dir", d]);
    assert_eq!(code, 1);
    assert!(err.contains("never replaced"), "{err}");
}

#[test]
fn new_commands_answer_bad_usage_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("hospital.toml");
    std::fs::write(&config, hospital_toml(&data, &[("U", 2, 2)])).unwrap();
    let c = config.to_str().unwrap();
    // restore --from-cloud needs --config, and that config needs [uplink].
    let (code, _, err) = run_cli(&["restore", "--from-cloud", "--data-dir", "x"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run_cli(&["restore", "--from-cloud", "--config", c]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("[uplink]"), "{err}");
    // --from and --from-cloud exclude each other; one of them is needed.
    let (code, _, _) = run_cli(&["restore", "--from", "f", "--from-cloud", "--config", c]);
    assert_eq!(code, 64);
    let (code, _, _) = run_cli(&["restore", "--config", c]);
    assert_eq!(code, 64);
    // A model set that is not there: a clear refusal, nothing installed.
    let (code, _, err) = run_cli(&["models", "install", "/nonexistent/set", "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("manifest.toml"), "{err}");
    let (code, _, err) = run_cli(&["models", "rollback", "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("no previous model set"), "{err}");
    let (code, out, _) = run_cli(&[
        "models",
        "check",
        "--dir",
        "/nonexistent/set",
        "--library",
        "/nonexistent/lib.so",
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty() || out.contains("\"ok\":false"), "{out}");
    assert!(!data.join("models").exists());
}

#[test]
fn a_second_owner_of_a_data_dir_is_refused_at_once_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let data = dir.path().join("data");
    let first = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    let pid = first.pid();
    // A second `run` on the same data dir: refused before it opens anything
    // or binds a port, with the holder's pid and exit code 75.
    let started = std::time::Instant::now();
    let (code, out, err) = run_cli(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--mllp",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(
        err.contains("in use by another hms-edge process") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(!out.contains("ready"), "the second owner printed {out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not after a wait"
    );
    // A restore into it is refused the same way.
    let snapshot = dir.path().join("snap.sqlite");
    let (code, _, err) = run_cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "a backup is safe beside the owner: {err}");
    let (code, _, err) = run_cli(&[
        "restore",
        "--from",
        snapshot.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 75, "{err}");
    // Commands that are safe beside the owner still work.
    let token = cli_token(&data, "bed_manager", "bm-two-processes");
    let (code, out, _) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // The first appliance still writes, and the token made beside it works.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let acks = edge_node::integration::client::send(
            first.mllp.unwrap(),
            &[a28("TWO-1")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(acks[0].code, "AA");
        let mut c = Conn::connect(first.addr, Some(&token)).await.unwrap();
        let r = c.get("/api/v1/units").await.unwrap();
        assert_eq!(r.status, 200);
    });
    // Once the first is gone (even killed), the data dir is free again.
    first.kill9();
    let second = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    drop(second);
}

/// [`a28`] asking for ACKs by MSH-15 and MSH-16 (enhanced mode).
fn a28_asking(control: &str, msh15: &str, msh16: &str) -> Vec<u8> {
    String::from_utf8(a28(control))
        .unwrap()
        .replacen("|P|2.5.1\r", &format!("|P|2.5.1|||{msh15}|{msh16}\r"), 1)
        .into_bytes()
}

/// The same with trigger A99, which the appliance does not know and parks (AE).
fn a99_asking(control: &str, msh15: &str, msh16: &str) -> Vec<u8> {
    String::from_utf8(a28_asking(control, msh15, msh16))
        .unwrap()
        .replace("A28", "A99")
        .into_bytes()
}

#[test]
fn hl7_send_waits_only_for_the_acks_msh15_and_msh16_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    let to = proc.mllp.unwrap().to_string();
    let write = |name: &str, msgs: &[Vec<u8>]| {
        let path = dir.path().join(name);
        std::fs::write(&path, msgs.concat()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let summary = |file: &str, counts: &str| format!("{file}: {counts}");
    // NE|NE is answered by nothing and waited for by nothing; two files,
    // a summary after each; every ACK AA/CA: exit 0.
    let quiet = write("quiet.hl7", &[a28_asking("Q1", "NE", "NE"), a28("Q2")]);
    let enhanced = write(
        "enhanced.hl7",
        &[
            a28_asking("E1", "AL", "AL"),
            a28_asking("E2", "AL", "NE"),
            a28_asking("E3", "ER", "SU"),
            a28_asking("E4", "NE", "NE"),
        ],
    );
    let (code, out, err) = run_cli(&["hl7", "send", "--to", &to, &quiet, &enhanced]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Q1 no ACK requested",
            "Q2 AA",
            &summary(
                &quiet,
                "2 messages, 1 AA, 0 AE, 0 AR, 0 CA, 0 CE, 0 CR, 1 no ACK, 0 timed out"
            ),
            "E1 CA",
            "E1 AA",
            "E2 CA",
            "E3 AA",
            "E3 no commit ACK sent (MSH-15 ER: condition not met)",
            "E4 no ACK requested",
            &summary(
                &enhanced,
                "4 messages, 2 AA, 0 AE, 0 AR, 1 CA, 0 CE, 0 CR, 1 no ACK, 0 timed out"
            ),
        ]
    );
    // A mixed file with messages the appliance parks: AE, conditional
    // application ACKs that are due; exit 1.
    let mixed = write(
        "mixed.hl7",
        &[
            a28("M1"),
            a28_asking("M2", "NE", "NE"),
            a99_asking("M3", "NE", "AL"),
            a99_asking("M4", "AL", "ER"),
        ],
    );
    let (code, out, err) = run_cli(&["hl7", "send", "--to", &to, &mixed]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[..2], ["M1 AA", "M2 no ACK requested"]);
    assert!(
        lines[2].starts_with("M3 AE ") && lines[2].contains("A99"),
        "{out}"
    );
    assert_eq!(lines[3], "M4 CA");
    assert!(lines[4].starts_with("M4 AE "), "{out}");
    assert_eq!(
        lines[5],
        summary(
            &mixed,
            "4 messages, 1 AA, 2 AE, 0 AR, 0 CA, 0 CE, 0 CR, 1 no ACK, 0 timed out"
        )
    );
    // ER|ER on success: neither ACK comes; silence for --timeout is the
    // condition not met, not a failure.
    let silent = write("silent.hl7", &[a28_asking("C1", "ER", "ER")]);
    let (code, out, err) = run_cli(&["hl7", "send", "--to", &to, "--timeout", "1", &silent]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "C1 no commit ACK sent (MSH-15 ER: condition not met)",
            "C1 no application ACK sent (MSH-16 ER: condition not met)",
            &summary(
                &silent,
                "1 message, 0 AA, 0 AE, 0 AR, 0 CA, 0 CE, 0 CR, 1 no ACK, 0 timed out"
            ),
        ]
    );
    // A receiver that accepts the connection and never answers: the due ACK
    // times out, sending stops there; exit 1.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap().to_string();
    let (code, out, err) = run_cli(&[
        "hl7",
        "send",
        "--to",
        &mute_addr,
        "--timeout",
        "1",
        &quiet,
        &enhanced,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Q1 no ACK requested",
            "Q2 no ACK within 1 s",
            &summary(
                &quiet,
                "2 messages, 0 AA, 0 AE, 0 AR, 0 CA, 0 CE, 0 CR, 1 no ACK, 1 timed out"
            ),
        ]
    );
    assert!(
        err.contains("stopped after a missing ACK; 4 messages not sent"),
        "{err}"
    );
    drop(mute);
    // Usage errors: exit 64, naming what is wrong.
    let (code, _, err) = run_cli(&["hl7", "send", "--to", &to, &quiet, "/nonexistent.hl7"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("/nonexistent.hl7"), "{err}");
    let (code, _, err) = run_cli(&["hl7", "send", "--to", "127.0.0.1", &quiet]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run_cli(&["hl7", "send", "--to", &to, "--timeout", "0", &quiet]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn an_unknown_time_zone_stops_start_up_with_its_line_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zone.toml");
    let good = hospital_toml(&dir.path().join("data"), &[("3W", 2, 1)]);
    let bad = good.replacen("timezone = \"UTC\"", "timezone = \"Europe/Warsw\"", 1);
    assert_ne!(bad, good);
    std::fs::write(&file, &bad).unwrap();
    let (code, _, err) = run_cli(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("zone.toml:5:12: error: `node.timezone` is not a time zone: \"Europe/Warsw\"")
            && err.contains("did you mean \"Europe/Warsaw\"?"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_plain_http_uplink_off_this_machine_stops_start_up_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uplink.toml");
    let good = hospital_toml(&dir.path().join("data"), &[("3W", 2, 1)]);
    std::fs::write(
        &file,
        format!("{good}\n[uplink]\ncloud = \"http://10.0.0.5:9443\"\n"),
    )
    .unwrap();
    let (code, _, err) = run_cli(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("uplink.toml:")
            && err.contains("`uplink.cloud` must be https:// to reach another machine")
            && err.contains("\"http://10.0.0.5:9443\""),
        "{err}"
    );
    // Refused before anything was created (or any connection tried).
    assert!(!dir.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_the_kiosk_listener_with_hsts_and_no_plain_http() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("kiosk.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("kiosk.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let config = write_config(dir.path(), &[("3W", 2, 1)]);
    let text = std::fs::read_to_string(&config).unwrap();
    // One half of the pair alone is a configuration error with its line.
    assert!(text.contains("\n[http]\n"));
    let with = |keys: &str| text.replacen("\n[http]\n", &format!("\n[http]\n{keys}"), 1);
    std::fs::write(&config, with("tls_cert = \"kiosk.pem\"\n")).unwrap();
    let (code, _, err) = run_cli(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("http.tls_cert") && err.contains("http.tls_key"),
        "{err}"
    );
    std::fs::write(
        &config,
        with("tls_cert = \"kiosk.pem\"\ntls_key = \"kiosk.key\"\n"),
    )
    .unwrap();
    let proc = Proc::start(&config, &[]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(proc.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got).to_lowercase();
    assert!(got.starts_with("http/1.1 200 "), "{got}");
    assert!(
        got.contains("strict-transport-security: max-age=31536000"),
        "{got}"
    );
    // Plain HTTP on the same port gets no HTTP answer: the handshake fails.
    let mut plain = tokio::net::TcpStream::connect(proc.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "{got:?}"
    );
}
