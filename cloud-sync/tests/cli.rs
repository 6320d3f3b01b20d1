//! `hms-cloud` as a process: enrolment with residency, configuration errors, serving.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hms-cloud"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn enroll_and_run_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("cloud.toml");
    std::fs::write(
        &cfg,
        "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .expect("write");
    let (_, public) = cloud_sync_client::generate_key().expect("key");
    let key = dir.path().join("edge.pub");
    std::fs::write(&key, public).expect("write");
    let c = cfg.to_str().expect("utf8");
    let k = key.to_str().expect("utf8");
    let (code, out, err) = cli(&[
        "enroll",
        "--config",
        c,
        "--hospital",
        "h1",
        "--region",
        "eu-west",
        "--node",
        "edge-1",
        "--public-key",
        k,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&[
        "enroll",
        "--config",
        c,
        "--hospital",
        "h2",
        "--region",
        "us-east",
        "--node",
        "edge-1",
        "--public-key",
        k,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("us-east") && err.contains("eu-west"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region = \"eu-west\"\nlisten = 5\ndata_dir = \"d\"\n").expect("write");
    let (code, _, err) = cli(&["run", "--config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 64);
    assert!(err.contains("bad.toml:2:"), "{err}");
    // It serves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hms-cloud"))
        .args(["run", "--config", c])
        .env("HMS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("hms-cloud ready http=http://127.0.0.1:"),
        "{line}"
    );
}
