//! `cargo xtask bench fleet-outage [--runs N]`: the HL7 feed while the
//! fleet's MQTT broker comes and goes (docs/fleet.md: MQTT is never the
//! durability layer).
//!
//! A release appliance on the 2,000-bed hospital with `[fleet]` pointing at
//! a Mosquitto of its own (`/usr/sbin/mosquitto` on a free loopback port,
//! started and stopped by the bench; keep-alive 5 s, telemetry every 5 s).
//! Each run sends ADT^A28 over MLLP (one connection, 5,000 messages per
//! phase, each phase numbering its messages apart) in three phases:
//! broker up, broker stopped (the appliance's `/health` says the fleet is
//! `disconnected` first), broker back (after `/health` says `connected`
//! again; the time that took is the reconnection time). Reports per phase
//! msg/s, p50 and p99 of the time to the ACK, and the ratios of the
//! stopped and back phases' p99 to the up phase's, as medians over the runs
//! (the peer is the same appliance with the broker up, in the same run).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{build_release, fresh_data_dir, http_get, load, medians, num, start};
use crate::create_token;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Messages per phase.
const MESSAGES: usize = 5_000;

/// A Mosquitto of the bench's own on `port` (loopback).
fn broker(port: u16) -> anyhow::Result<Child> {
    let child = Command::new(MOSQUITTO)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {MOSQUITTO} (cargo xtask ci installs Mosquitto)"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("Mosquitto did not listen on 127.0.0.1:{port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Waits until the appliance's `/health` reports the fleet `state`; how long.
fn fleet_state(addr: &str, token: &str, state: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let body = http_get(addr, "/health", Some(token)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["components"]["fleet"]["status"] == state {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the appliance's fleet component did not turn {state} within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the bench.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let [runs] = crate::bench::count_options(args, "fleet-outage", ["--runs"], [1])?;
    if !Path::new(MOSQUITTO).exists() {
        bail!("{MOSQUITTO} is missing: install Debian's mosquitto package");
    }
    let (edge, load_bin) = build_release()?;
    let hospital = root.join("config/hospital-2000.toml");
    let mut rows = vec![];
    for run_no in 1..=runs {
        eprintln!("xtask: bench fleet-outage run {run_no}/{runs}");
        let data = fresh_data_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // The hospital with a fleet section, beside it so its paths resolve.
        let key = data.join("fleet.pub");
        std::fs::write(&key, [7u8; 32])?;
        let config = hospital.with_file_name("hospital-2000-fleet-bench.toml");
        let text = std::fs::read_to_string(&hospital)?;
        std::fs::write(
            &config,
            format!(
                "{text}\n[fleet]\nbroker = \"mqtt://127.0.0.1:{port}\"\ncommand_key = \"{}\"\n\
                 keepalive_s = 5\ntelemetry_s = 5\n",
                key.display()
            ),
        )?;
        let mut mosquitto = broker(port)?;
        let app = start(&edge, &config, &data, true);
        let _ = std::fs::remove_file(&config);
        let app = app?;
        let token = create_token(&edge, &data, "viewer", "bench-fleet")?;
        let m = app
            .mllp
            .clone()
            .context("the appliance did not open MLLP")?;
        let phase = |first: usize| -> anyhow::Result<serde_json::Value> {
            let (first, messages) = (first.to_string(), MESSAGES.to_string());
            load(
                &load_bin,
                &m,
                "",
                &[
                    "--scenario",
                    "mllp",
                    "--trigger",
                    "A28",
                    "--first",
                    &first,
                    "--messages",
                    &messages,
                    "--clients",
                    "1",
                ],
            )
        };
        fleet_state(&app.addr, &token, "connected")?;
        let up = phase(0)?;
        let _ = mosquitto.kill();
        let _ = mosquitto.wait();
        fleet_state(&app.addr, &token, "disconnected")?;
        let down = phase(MESSAGES)?;
        let mut mosquitto = broker(port)?;
        let reconnect = fleet_state(&app.addr, &token, "connected")?;
        let back = phase(2 * MESSAGES)?;
        let _ = mosquitto.kill();
        let _ = mosquitto.wait();
        drop(app);
        let mut figures = vec![];
        for (name, v) in [("up", &up), ("down", &down), ("back", &back)] {
            figures.push((format!("{name}_mps"), num(v, "/throughput_mps")));
            figures.push((format!("{name}_p50_ms"), num(v, "/latency/p50_ms")));
            figures.push((format!("{name}_p99_ms"), num(v, "/latency/p99_ms")));
            figures.push((format!("{name}_errors"), num(v, "/errors")));
        }
        let p99 = |v: &serde_json::Value| num(v, "/latency/p99_ms");
        figures.push(("down_vs_up_p99".into(), p99(&down) / p99(&up)));
        figures.push(("back_vs_up_p99".into(), p99(&back) / p99(&up)));
        figures.push(("reconnect_s".into(), reconnect.as_secs_f64()));
        let row: serde_json::Map<String, serde_json::Value> = figures
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(v)))
            .collect();
        println!("{}", serde_json::Value::Object(row.clone()));
        rows.push(row);
    }
    let summary = medians(&rows);
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "bench": "fleet-outage", "runs": rows.len(), "medians": summary })
        )?
    );
    Ok(())
}
