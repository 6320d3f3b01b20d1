//! A synthetic day of the 2,000-bed hospital's 20-room OR suite and its
//! charges, sent over MLLP to a real `hms-edge`: the OR board and every
//! visit's charge total equal the generator's truth exactly; and coding
//! suggestions learned from a week of charges beat the fallback on the
//! held-out day's visits.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hms_e2e::or_day;
use hms_e2e::process::{self, bin};

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hospital-2000.toml")
}

struct Edge {
    proc: Option<process::Proc>,
    http: SocketAddr,
    mllp: SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            let _ = p.kill9();
        }
    }
}

fn start() -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (proc, http, mllp) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(config())
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--mllp", "127.0.0.1:0"])
            .env("HMS_LOG", "error"),
    )
    .unwrap();
    let out = Command::new(bin("hms-edge"))
        .args([
            "token",
            "create",
            "--role",
            "bed_manager",
            "--name",
            "or-day",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    Edge {
        proc: Some(proc),
        http,
        mllp: mllp.unwrap(),
        token,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_or_day_and_its_charges_match_the_generators_truth_exactly() {
    let edge = start();
    let rooms = or_day::rooms(&config()).unwrap();
    assert_eq!(rooms.len(), 20);
    let day = or_day::generate(11, &rooms, "2027-03-01");
    let report = or_day::check_day(edge.http, edge.mllp, &edge.token, &day)
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["bumped"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["visits"].as_u64().unwrap() > 40, "{report:#}");

    // A week of charges as history, then the next day's visits.
    let days: Vec<or_day::Day> = (0..8)
        .map(|i| or_day::generate(100 + i, &rooms, &or_day::add_days("2027-02-01", i as i64)))
        .collect();
    let eval = or_day::coding_eval(edge.http, edge.mllp, &edge.token, &days)
        .await
        .unwrap();
    eprintln!("{report:#}\n{eval:#}");
    let (model, fallback) = (
        eval["top5_hit_rate"].as_f64().unwrap(),
        eval["fallback_top5_hit_rate"].as_f64().unwrap(),
    );
    assert!(
        model > fallback,
        "suggestions from history should beat the unit's frequent codes: {eval:#}"
    );
    assert_eq!(
        eval["answered_from_history"], eval["test_visits"],
        "{eval:#}"
    );
}
