//! `cargo xtask bench sync [--events N] [--runs N] [--backend sqlite|postgres|both]`:
//! catch-up, restore and online lag of cloud sync, on loopback.
//!
//! For each backend: a fresh appliance (the 2,000-bed hospital) with its
//! uplink pointing at a cloud that is not running takes N/2 ADT A28
//! messages over 16 MLLP connections: the outage backlog of about N events
//! (each A28 is two events, the patient record and the message's integration
//! record; the 2,000 beds' commissioning adds 2,000).
//! Then the cloud starts and the time from its ready line to the moment the
//! appliance reports every event acknowledged is the **catch-up** time, in
//! two parts: **reconnect** (until the first acknowledgement; the uplink's
//! back-off and breaker decide it) and **drain** (the rest); the
//! cloud's store is then checked to hold exactly seqs 1..=N (count == max ==
//! the appliance's last seq). The appliance is stopped, its data dir deleted
//! and rebuilt with `hms-edge restore --from-cloud`, timed (**restore**; its
//! peer is `hms-edge verify` of the restored dir, replay without network or
//! durable writes; the drain's peer is the rate the appliance itself wrote
//! the backlog at). The
//! restored appliance starts again and takes 20,000 messages over one
//! connection while online; the uplink's commit-to-acknowledgement histogram
//! (`hms_uplink_lag_seconds`) gives the **online lag** p50 and p99.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{build_release, http_get, load, start};
use crate::target_dir;

const HOSPITAL: &str = "metro-general";
const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// The uplink part of `/health` (its components need a token).
fn sync_state(addr: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&http_get(addr, "/health", Some(token))?)?;
    Ok(v["components"]["uplink"]["sync"].clone())
}

/// A viewer token of the appliance whose data dir is `data`.
fn monitor_token(edge: &Path, data: &Path) -> anyhow::Result<String> {
    let out = run_ok(
        Command::new(edge)
            .args([
                "token",
                "create",
                "--role",
                "viewer",
                "--name",
                "bench-monitor",
            ])
            .arg("--data-dir")
            .arg(data),
    )?;
    Ok(out
        .lines()
        .last()
        .context("no token printed")?
        .trim()
        .to_owned())
}

/// A running `hms-cloud`, stopped (SIGTERM) when dropped.
pub(crate) struct Cloud(Child);

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts `hms-cloud run --config CONFIG` and waits for its ready line.
pub(crate) fn start_cloud(bin: &Path, config: &Path) -> anyhow::Result<Cloud> {
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env("HMS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting hms-cloud")?;
    let out = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("hms-cloud ready") => break,
            Some(Ok(_)) => {}
            _ => bail!("hms-cloud exited before it was ready"),
        }
    }
    Ok(Cloud(child))
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (count, max seq) of the hospital's events in the cloud's store.
fn cloud_counts(site: &Path, backend: &str) -> anyhow::Result<(u64, u64)> {
    if backend == "postgres" {
        let mut c = postgres::Client::connect(
            &format!("host=127.0.0.1 port=5432 user=postgres dbname=hms_{HOSPITAL}"),
            postgres::NoTls,
        )?;
        let row = c.query_one("SELECT count(*), coalesce(max(seq), 0) FROM events", &[])?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    } else {
        let c = rusqlite::Connection::open(
            site.join("cloud-data/hospitals")
                .join(format!("{HOSPITAL}.sqlite")),
        )?;
        Ok(c.query_row(
            "SELECT count(*), coalesce(max(seq), 0) FROM events",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }
}

/// p50 and p99 (upper bucket bounds, seconds) of a Prometheus histogram.
fn histogram_quantiles(metrics: &str, name: &str) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let q = |p: f64| {
        buckets
            .iter()
            .find(|b| b.1 >= p * total)
            .map_or(f64::NAN, |b| b.0)
    };
    (q(0.5), q(0.99))
}

fn one_backend(
    root: &Path,
    bins: &(PathBuf, PathBuf, PathBuf),
    backend: &str,
    messages: usize,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let (edge, load_bin, cloud_bin) = bins;
    let site = target_dir().join(format!("bench-sync-{backend}"));
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site)?;
    if backend == "postgres" {
        let mut c = postgres::Client::connect(PG_ADMIN, postgres::NoTls)
            .context("PostgreSQL at 127.0.0.1:5432")?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS \"hms_{HOSPITAL}\""))?;
        // The region's database (registry, leases) of the bench, afresh.
        c.batch_execute("DROP DATABASE IF EXISTS \"hms+bench-sync\" WITH (FORCE)")?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cloud_cfg = site.join("cloud.toml");
    let mut text = format!(
        "region = \"eu-west\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"cloud-data\"\nbackend = \"{backend}\"\n\
         # the regional EMPI would match the 500,000 synthetic patients meanwhile: measured apart\n\
         empi = false\n"
    );
    if backend == "postgres" {
        text.push_str(&format!(
            "postgres = \"{PG_ADMIN}\"\nregion_database = \"hms+bench-sync\"\n"
        ));
    }
    std::fs::write(&cloud_cfg, text)?;
    let edge_cfg = site.join("edge.toml");
    let mut text = std::fs::read_to_string(root.join("config/hospital-2000.toml"))?;
    text.push_str(&format!(
        "\n[uplink]\ncloud = \"http://127.0.0.1:{port}\"\nkey_file = \"sync-key.pk8\"\n"
    ));
    std::fs::write(&edge_cfg, text)?;
    let data = site.join("data");
    run_ok(
        Command::new(edge)
            .args(["sync", "keygen", "--data-dir"])
            .arg(&site),
    )?;
    run_ok(
        Command::new(cloud_bin)
            .args(["enroll", "--config"])
            .arg(&cloud_cfg)
            .args(["--hospital", HOSPITAL, "--region", "eu-west", "--node"])
            .arg("edge-1")
            .arg("--public-key")
            .arg(site.join("sync-key.pub")),
    )?;

    // The outage backlog.
    let app = start(edge, &edge_cfg, &data, true)?;
    let token = monitor_token(edge, &data)?;
    let mllp = app.mllp.clone().context("no MLLP")?;
    eprintln!("xtask: bench sync ({backend}): queueing {messages} messages");
    let backlog = load(
        load_bin,
        &mllp,
        "",
        &[
            "--scenario",
            "mllp",
            "--messages",
            &messages.to_string(),
            "--clients",
            "16",
        ],
    )?;
    let local = sync_state(&app.addr, &token)?["local_seq"]
        .as_u64()
        .context("local_seq")?;

    // Catch-up.
    // The uplink retries on its back-off schedule (and the breaker may be
    // open), so the first acknowledgement comes up to the longest back-off
    // after the cloud is back: reported apart from the drain itself.
    let cloud = start_cloud(cloud_bin, &cloud_cfg)?;
    let t0 = Instant::now();
    let mut first_ack: Option<Instant> = None;
    loop {
        let s = sync_state(&app.addr, &token)?;
        let acked = s["acked_seq"].as_u64().unwrap_or(0);
        if first_ack.is_none() && acked > 0 {
            first_ack = Some(Instant::now());
        }
        if acked == local {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("no catch-up within 10 minutes: {s}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let catch_up_s = t0.elapsed().as_secs_f64();
    let reconnect_s = first_ack.map_or(catch_up_s, |t| t.duration_since(t0).as_secs_f64());
    let drain_s = catch_up_s - reconnect_s;
    let (count, max) = cloud_counts(&site, backend)?;
    if (count, max) != (local, local) {
        bail!("the cloud holds {count} events up to seq {max}; the appliance has {local}");
    }
    drop(app);

    // Restore from the cloud into an empty data dir.
    std::fs::remove_dir_all(&data)?;
    let t = Instant::now();
    let out = run_ok(
        Command::new(edge)
            .args(["restore", "--from-cloud", "--config"])
            .arg(&edge_cfg)
            .arg("--data-dir")
            .arg(&data),
    )?;
    let restore_s = t.elapsed().as_secs_f64();
    eprintln!("xtask: {}", out.trim());
    // Peer of the restore: verifying the same data dir (replay of the whole
    // log into memory, no network, no durable writes).
    let t = Instant::now();
    run_ok(Command::new(edge).args(["verify", "--data-dir"]).arg(&data))?;
    let verify_s = t.elapsed().as_secs_f64();

    // Online lag under steady ADT traffic.
    let app = start(edge, &edge_cfg, &data, true)?;
    let token = monitor_token(edge, &data)?;
    let mllp = app.mllp.clone().context("no MLLP")?;
    let steady = load(
        load_bin,
        &mllp,
        "",
        &[
            "--scenario",
            "mllp",
            "--messages",
            "20000",
            "--first",
            &messages.to_string(),
            "--clients",
            "1",
        ],
    )?;
    let t = Instant::now();
    while sync_state(&app.addr, &token)?["lag_events"].as_u64() != Some(0)
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = http_get(&app.addr, "/metrics", None)?;
    let (lag_p50, lag_p99) = histogram_quantiles(&metrics, "hms_uplink_lag_seconds");
    drop(app);
    drop(cloud);

    let mut row = serde_json::Map::new();
    for (k, v) in [
        ("events", local as f64),
        (
            "backlog_mps",
            backlog["throughput_mps"].as_f64().unwrap_or(f64::NAN),
        ),
        ("catch_up_s", catch_up_s),
        ("reconnect_s", reconnect_s),
        ("drain_s", drain_s),
        ("drain_events_per_s", local as f64 / drain_s),
        ("restore_s", restore_s),
        ("restore_events_per_s", local as f64 / restore_s),
        ("verify_s", verify_s),
        ("restore_over_verify", restore_s / verify_s),
        (
            "backlog_events_per_s",
            backlog["throughput_mps"].as_f64().unwrap_or(f64::NAN) * 2.0,
        ),
        (
            "online_mps",
            steady["throughput_mps"].as_f64().unwrap_or(f64::NAN),
        ),
        ("online_lag_p50_s_le", lag_p50),
        ("online_lag_p99_s_le", lag_p99),
    ] {
        row.insert(k.into(), serde_json::json!(v));
    }
    println!(
        "{}",
        serde_json::json!({ "backend": backend, "result": row })
    );
    Ok(row)
}

/// The number ≥ 1 given after `flag`.
fn count(value: Option<&String>, flag: &str) -> anyhow::Result<usize> {
    value
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .with_context(|| format!("{flag} needs a number >= 1"))
}

/// Runs the sync benchmark.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut events = 1_000_000usize;
    let mut runs = 1usize;
    let mut backends = vec!["sqlite", "postgres"];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => events = count(it.next(), a)?,
            "--runs" => runs = count(it.next(), a)?,
            "--backend" => {
                backends = match it.next().map(String::as_str) {
                    Some("sqlite") => vec!["sqlite"],
                    Some("postgres") => vec!["postgres"],
                    Some("both") => vec!["sqlite", "postgres"],
                    _ => bail!("--backend takes sqlite, postgres or both"),
                }
            }
            other => bail!("unknown option {other:?}; use --events N and/or --backend B"),
        }
    }
    let (edge, load_bin) = build_release()?;
    let bins = (edge, load_bin, crate::bench::build_cloud_release()?);
    let mut all = serde_json::Map::new();
    for b in backends {
        let mut rows = vec![];
        for run in 1..=runs {
            eprintln!("xtask: bench sync ({b}) run {run}/{runs}");
            let mut row = one_backend(root, &bins, b, events.div_ceil(2))?;
            row.insert(
                "drain_over_backlog".into(),
                serde_json::json!(
                    row["drain_events_per_s"].as_f64().unwrap_or(f64::NAN)
                        / row["backlog_events_per_s"].as_f64().unwrap_or(f64::NAN)
                ),
            );
            rows.push(row);
        }
        all.insert(
            b.into(),
            serde_json::Value::Object(crate::bench::medians(&rows)),
        );
    }
    println!("{}", serde_json::to_string_pretty(&all)?);
    Ok(())
}
