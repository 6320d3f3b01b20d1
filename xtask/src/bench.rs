//! `cargo xtask bench [--quick] [--runs N]`: the kiosk API benchmarks.
//!
//! Builds `hms-edge` and `hms-load` in release mode, then for each run starts
//! a fresh appliance on the 2,000-bed hospital and measures, in this order:
//! the disk's fsync latency back to back and at 500 fsyncs a second (peers of
//! durable writes), the mass-casualty
//! scenario (200 admissions with 5 emergency OR add-ons at the same moment), `/health` at 5,000 req/s as the HTTP floor (peer of bed
//! queries), bed queries at 5,000 req/s over many keep-alive clients, bed
//! queries closed-loop (saturation throughput), durable assignments at
//! 500 req/s, and the appliance's RSS. Prints every result and a summary with medians across runs
//! and ratios against the peers as JSON.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{cargo, create_token, target_dir};

struct Settings {
    runs: usize,
    query_clients: usize,
    seconds: f64,
}

fn parse(args: &[String]) -> anyhow::Result<Settings> {
    let mut s = Settings {
        runs: 1,
        query_clients: 2000,
        seconds: 10.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {
                s.query_clients = 200;
                s.seconds = 3.0;
            }
            "--runs" => {
                s.runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n >= 1)
                    .context("--runs needs a number >= 1")?;
            }
            other => bail!("unknown bench option {other:?}; use --quick and/or --runs N"),
        }
    }
    Ok(s)
}

/// fsync latency of 4 KiB appends in `dir`, back to back: (p50, p99) in ms.
fn fsync_peer(dir: &Path) -> anyhow::Result<(f64, f64)> {
    fsync_probe(dir, 500, None)
}

/// fsync latency of 4 KiB appends in `dir`, `n` of them, one every `every`
/// when given (the pace of the writes it is the peer of: a virtual disk
/// that idles between requests answers each one more slowly than a
/// stream of back-to-back ones): (p50, p99) in ms.
fn fsync_probe(dir: &Path, n: usize, every: Option<Duration>) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        if let Some(every) = every {
            let due = start + every * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    Ok(hms_e2e::bench::p50_p99(samples))
}

pub(crate) use hms_e2e::bench::{median, rss_mb};

/// A bench's `--NAME N` options (each a count ≥ 1), starting from
/// `defaults`, in the order of `names`.
pub(crate) fn count_options<const N: usize>(
    args: &[String],
    bench: &str,
    names: [&str; N],
    defaults: [usize; N],
) -> anyhow::Result<[usize; N]> {
    let mut values = defaults;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(i) = names.iter().position(|n| n == a) else {
            let usage: Vec<String> = names.iter().map(|n| format!("{n} N")).collect();
            bail!(
                "unknown bench {bench} option {a:?}; use {}",
                usage.join(" and/or ")
            );
        };
        values[i] = it
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .with_context(|| format!("{} needs a number >= 1", names[i]))?;
    }
    Ok(values)
}

/// `GET path` on `addr` (HTTP/1.1, connection close), with a bearer token
/// when given; the body.
pub(crate) fn http_get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

pub(crate) struct Appliance {
    pub(crate) proc: hms_e2e::process::Proc,
    pub(crate) addr: String,
    pub(crate) mllp: Option<String>,
}

impl Appliance {
    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.id()
    }
}

impl Drop for Appliance {
    /// A clean stop (SIGTERM) within 15 s, else SIGKILL.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn start(
    bin: &Path,
    config: &Path,
    data: &Path,
    with_mllp: bool,
) -> anyhow::Result<Appliance> {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--http", "127.0.0.1:0"])
        .env("HMS_LOG", "warn");
    if with_mllp {
        cmd.args(["--mllp", "127.0.0.1:0"]);
    }
    let (proc, http, mllp) = hms_e2e::process::start_edge(&mut cmd).map_err(anyhow::Error::msg)?;
    Ok(Appliance {
        proc,
        addr: http.to_string(),
        mllp: mllp.map(|m| m.to_string()),
    })
}

pub(crate) fn load(
    load_bin: &Path,
    addr: &str,
    token: &str,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(load_bin)
        .args(["--addr", addr, "--token", token])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running hms-load")?;
    if !out.status.success() {
        bail!("hms-load {args:?} failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("hms-load output")?;
    println!("{}", serde_json::to_string(&v)?);
    Ok(v)
}

/// Builds the release `hms-cloud` and returns its path.
pub(crate) fn build_cloud_release() -> anyhow::Result<std::path::PathBuf> {
    crate::run({
        let mut c = cargo();
        c.args([
            "build",
            "--release",
            "-p",
            "cloud-sync",
            "--bin",
            "hms-cloud",
        ]);
        c
    })?;
    Ok(crate::target_dir().join("release/hms-cloud"))
}

/// Builds the appliance and the load generator in release mode; their paths.
pub(crate) fn build_release() -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    crate::run({
        let mut c = cargo();
        c.args([
            "build",
            "--release",
            "-p",
            "edge-node",
            "--bin",
            "hms-edge",
            "-p",
            "hms-e2e",
            "--bin",
            "hms-load",
        ]);
        c
    })?;
    let release = target_dir().join("release");
    Ok((release.join("hms-edge"), release.join("hms-load")))
}

/// An empty data dir for one run (`target/bench-data`).
pub(crate) fn fresh_data_dir() -> anyhow::Result<std::path::PathBuf> {
    let data = target_dir().join("bench-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    Ok(data)
}

/// The number at JSON pointer `p` of `v` (NaN when absent).
pub(crate) fn num(v: &serde_json::Value, p: &str) -> f64 {
    v.pointer(p)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// One run's row of named figures.
pub(crate) fn row(figures: &[(&str, f64)]) -> serde_json::Map<String, serde_json::Value> {
    figures
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect()
}

/// Medians per key over the runs' rows.
pub(crate) fn medians(
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> serde_json::Map<String, serde_json::Value> {
    let mut summary = serde_json::Map::new();
    if let Some(first) = rows.first() {
        for k in first.keys() {
            let m = median(rows.iter().filter_map(|r| r[k].as_f64()).collect());
            summary.insert(k.clone(), serde_json::json!(m));
        }
    }
    summary
}

/// Runs the benchmarks.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let s = parse(args)?;
    let (edge, load_bin) = build_release()?;
    let config = root.join("config/hospital-2000.toml");
    let secs = s.seconds.to_string();
    let clients = s.query_clients.to_string();
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = vec![];
    for run_no in 1..=s.runs {
        eprintln!("xtask: bench run {run_no}/{}", s.runs);
        let data = fresh_data_dir()?;
        let (fsync_p50, fsync_p99) = fsync_peer(&data)?;
        // The peer of writes paced at 500 req/s: fsyncs at the same pace.
        let (paced_p50, paced_p99) = fsync_probe(&data, 2_500, Some(Duration::from_millis(2)))?;
        let app = start(&edge, &config, &data, true)?;
        let pid = app.pid();
        let rss_start = rss_mb(pid);
        let viewer = create_token(&edge, &data, "viewer", "bench-kiosk")?;
        let manager = create_token(&edge, &data, "bed_manager", "bench-bm")?;
        let mllp = app
            .mllp
            .clone()
            .context("the appliance did not open MLLP")?;
        let config_s = config.display().to_string();
        let mci = load(
            &load_bin,
            &app.addr,
            &manager,
            &[
                "--scenario",
                "mass-casualty",
                "--admissions",
                "200",
                "--or-add-ons",
                "5",
                "--mllp",
                &mllp,
                "--config",
                &config_s,
            ],
        )?;
        let paced = ["--clients", &clients, "--seconds", &secs, "--rate", "5000"];
        let floor = load(
            &load_bin,
            &app.addr,
            &viewer,
            &[&["--scenario", "health"][..], &paced].concat(),
        )?;
        let q = load(
            &load_bin,
            &app.addr,
            &viewer,
            &[&["--scenario", "queries"][..], &paced].concat(),
        )?;
        let sat = load(
            &load_bin,
            &app.addr,
            &viewer,
            &[
                "--scenario",
                "queries",
                "--clients",
                &clients,
                "--seconds",
                &secs,
                "--rate",
                "0",
            ],
        )?;
        let asg = load(
            &load_bin,
            &app.addr,
            &manager,
            &[
                "--scenario",
                "assign",
                "--clients",
                "50",
                "--rate",
                "500",
                "--seconds",
                &secs,
            ],
        )?;
        let rss_end = rss_mb(pid);
        drop(app);
        rows.push(row(&[
            ("fsync_p50_ms", fsync_p50),
            ("fsync_p99_ms", fsync_p99),
            ("fsync_500hz_p50_ms", paced_p50),
            ("fsync_500hz_p99_ms", paced_p99),
            ("mci_failures", num(&mci, "/failures")),
            ("mci_double_assignments", num(&mci, "/double_assignments")),
            ("mci_all_done_ms", num(&mci, "/all_done_ms")),
            ("mci_or_add_ons_done_ms", num(&mci, "/or_add_ons_done_ms")),
            ("mci_or_bumped", num(&mci, "/or_bumped")),
            ("mci_or_bumped_expected", num(&mci, "/or_bumped_expected")),
            ("health_rps", num(&floor, "/throughput_rps")),
            ("health_p99_ms", num(&floor, "/latency/p99_ms")),
            ("query_rps", num(&q, "/throughput_rps")),
            ("query_saturation_rps", num(&sat, "/throughput_rps")),
            ("query_saturation_p99_ms", num(&sat, "/latency/p99_ms")),
            ("query_p50_ms", num(&q, "/latency/p50_ms")),
            ("query_p99_ms", num(&q, "/latency/p99_ms")),
            ("query_errors", num(&q, "/errors")),
            ("assign_rps", num(&asg, "/throughput_rps")),
            ("assign_p50_ms", num(&asg, "/latency/p50_ms")),
            ("assign_p99_ms", num(&asg, "/latency/p99_ms")),
            ("assign_errors", num(&asg, "/errors")),
            ("rss_start_mb", rss_start),
            ("rss_end_mb", rss_end),
        ]));
    }
    let summary = medians(&rows);
    let g = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let ratios = serde_json::json!({
        "query_p99_over_health_p99": g("query_p99_ms") / g("health_p99_ms"),
        "assign_p99_over_fsync_p99": g("assign_p99_ms") / g("fsync_p99_ms"),
        "assign_p99_over_fsync_500hz_p99": g("assign_p99_ms") / g("fsync_500hz_p99_ms"),
    });
    let out = serde_json::json!({
        "runs": s.runs,
        "query_clients": s.query_clients,
        "seconds": s.seconds,
        "median": summary,
        "ratios": ratios,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The python-hl7 version of the MLLP peer.
const PYTHON_HL7: &str = "hl7==0.4.5";

/// A Python virtual environment under `target/` with python-hl7 installed
/// (made once); its interpreter.
fn hl7_venv() -> anyhow::Result<std::path::PathBuf> {
    let venv = crate::target_dir().join("bench-venv-hl7");
    let python = venv.join("bin/python");
    let marker = venv.join(PYTHON_HL7);
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        crate::run({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })
        .context("python3 -m venv (python3 with venv is needed for the peer)")?;
        crate::run({
            let mut c = Command::new(&python);
            c.args(["-m", "pip", "install", "--quiet", PYTHON_HL7]);
            c
        })?;
        std::fs::write(&marker, b"")?;
    }
    Ok(python)
}

/// The peer of one-connection MLLP: python-hl7's asyncio server answering
/// `create_ack()` and storing nothing (`xtask/peers/hl7_ack_server.py`).
/// The child and its address.
fn hl7_peer(root: &Path) -> anyhow::Result<(Child, String)> {
    let python = hl7_venv()?;
    let mut child = Command::new(python)
        .arg(root.join("xtask/peers/hl7_ack_server.py"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .context("starting the python-hl7 peer")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(l)) if l.starts_with("port=") => {
            let port = l.trim_start_matches("port=").trim().to_owned();
            Ok((child, format!("127.0.0.1:{port}")))
        }
        _ => {
            let _ = child.kill();
            bail!("the python-hl7 peer did not start")
        }
    }
}

/// One `hms-load --scenario mllp` run to `addr`: `messages` messages of
/// `trigger` numbered from `first`, over `clients` connections, with the
/// appliance's `config` when the trigger needs it (A01, S12).
fn send_mllp(
    load_bin: &Path,
    addr: &str,
    trigger: &str,
    config: Option<&str>,
    first: usize,
    messages: usize,
    clients: usize,
) -> anyhow::Result<serde_json::Value> {
    let (first, messages, clients) = (first.to_string(), messages.to_string(), clients.to_string());
    let mut args = vec![
        "--scenario",
        "mllp",
        "--trigger",
        trigger,
        "--first",
        &first,
        "--messages",
        &messages,
        "--clients",
        &clients,
    ];
    if let Some(config) = config {
        args.extend(["--config", config]);
    }
    load(load_bin, addr, "", &args)
}

/// `cargo xtask bench mllp [--runs N]`: HL7 over MLLP, durable, one
/// connection and 16 connections, against the disk's fsync and, for one
/// connection, python-hl7's MLLP server storing nothing, all measured in
/// the same run.
///
/// Each run starts a fresh appliance on the 2,000-bed hospital and sends it
/// ADT^A01 (2,000 admissions, each into its own bed, one connection); then,
/// for each of ADT^A28 (person add), SIU^S12 (new OR bookings over the 20
/// OR rooms) and DFT^P03 (one charge each), a fresh appliance of its own (an
/// empty data dir: no trigger runs on a log another one grew) takes 10,000
/// at one connection and then 40,000 at 16 connections.
/// Every hms-load run numbers its messages from its own `--first`, so no
/// message of a run repeats one already stored (a duplicate would only get
/// its stored ACK). Then python-hl7's peer takes 10,000 A28 at one
/// connection. Reports, as medians over the runs: per trigger and
/// connection count msg/s, p50 and p99 (`a28_1conn_mps`, `s12_16conn_p99_ms`,
/// …) and errors (anything but AA), and the ratios of SIU and DFT
/// throughput to A28 at the same connection count (target ≥ 1), and of
/// A28 to fsync and to python-hl7.
pub fn mllp(root: &Path, args: &[String]) -> anyhow::Result<()> {
    /// Triggers measured at both connection counts (each numbers its
    /// control ids and record ids in a namespace of its own).
    const TRIGGERS: [&str; 3] = ["A28", "S12", "P03"];
    /// (connections, first message number, messages): the 16-connection
    /// runs start where the one-connection runs ended.
    const LOADS: [(usize, usize, usize); 2] = [(1, 0, 10_000), (16, 10_000, 40_000)];
    let s = parse(args)?;
    let (edge, load_bin) = build_release()?;
    let config = root.join("config/hospital-2000.toml");
    let config_s = config.display().to_string();
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = vec![];
    for run_no in 1..=s.runs {
        eprintln!("xtask: bench mllp run {run_no}/{}", s.runs);
        let data = fresh_data_dir()?;
        let (fsync_p50, fsync_p99) = fsync_peer(&data)?;
        let app = start(&edge, &config, &data, true)?;
        let m = app
            .mllp
            .clone()
            .context("the appliance did not open MLLP")?;
        let a01 = send_mllp(&load_bin, &m, "A01", Some(&config_s), 0, 2000, 1)?;
        drop(app);
        // Each trigger on an appliance of its own, from an empty data dir:
        // none of them runs on a log the others grew.
        let mut measured = vec![];
        for trigger in TRIGGERS {
            let data = fresh_data_dir()?;
            let app = start(&edge, &config, &data, true)?;
            let m = app
                .mllp
                .clone()
                .context("the appliance did not open MLLP")?;
            for (clients, first, messages) in LOADS {
                let config = (trigger == "S12").then_some(config_s.as_str());
                let v = send_mllp(&load_bin, &m, trigger, config, first, messages, clients)?;
                measured.push((trigger.to_ascii_lowercase(), clients, v));
            }
            drop(app);
        }
        let (mut peer, peer_addr) = hl7_peer(root)?;
        let python = send_mllp(&load_bin, &peer_addr, "A28", None, 0, 10_000, 1);
        let _ = peer.kill();
        let _ = peer.wait();
        let python = python?;
        let mut figures: Vec<(String, f64)> = vec![
            ("fsync_p50_ms".into(), fsync_p50),
            ("fsync_p99_ms".into(), fsync_p99),
            ("a01_1conn_mps".into(), num(&a01, "/throughput_mps")),
            ("a01_1conn_p50_ms".into(), num(&a01, "/latency/p50_ms")),
            ("a01_1conn_p99_ms".into(), num(&a01, "/latency/p99_ms")),
            ("a01_errors".into(), num(&a01, "/errors")),
        ];
        for (t, clients, v) in &measured {
            figures.extend([
                (format!("{t}_{clients}conn_mps"), num(v, "/throughput_mps")),
                (
                    format!("{t}_{clients}conn_p50_ms"),
                    num(v, "/latency/p50_ms"),
                ),
                (
                    format!("{t}_{clients}conn_p99_ms"),
                    num(v, "/latency/p99_ms"),
                ),
            ]);
        }
        for trigger in TRIGGERS {
            let t = trigger.to_ascii_lowercase();
            let errors = measured
                .iter()
                .filter(|(u, _, _)| *u == t)
                .map(|(_, _, v)| num(v, "/errors"))
                .sum();
            figures.push((format!("{t}_errors"), errors));
        }
        figures.extend([
            (
                "python_hl7_1conn_mps".into(),
                num(&python, "/throughput_mps"),
            ),
            (
                "python_hl7_1conn_p50_ms".into(),
                num(&python, "/latency/p50_ms"),
            ),
            (
                "python_hl7_1conn_p99_ms".into(),
                num(&python, "/latency/p99_ms"),
            ),
            ("python_hl7_errors".into(), num(&python, "/errors")),
        ]);
        let figures: Vec<(&str, f64)> = figures.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        rows.push(row(&figures));
    }
    let summary = medians(&rows);
    let g = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "runs": s.runs,
        "median": summary,
        "ratios": {
            "a28_1conn_p50_over_fsync_p50": g("a28_1conn_p50_ms") / g("fsync_p50_ms"),
            "a28_1conn_p99_over_fsync_p99": g("a28_1conn_p99_ms") / g("fsync_p99_ms"),
            "a28_1conn_mps_over_python_hl7": g("a28_1conn_mps") / g("python_hl7_1conn_mps"),
            "s12_1conn_mps_over_a28_1conn": g("s12_1conn_mps") / g("a28_1conn_mps"),
            "s12_16conn_mps_over_a28_16conn": g("s12_16conn_mps") / g("a28_16conn_mps"),
            "p03_1conn_mps_over_a28_1conn": g("p03_1conn_mps") / g("a28_1conn_mps"),
            "p03_16conn_mps_over_a28_16conn": g("p03_16conn_mps") / g("a28_16conn_mps"),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `cargo xtask bench or-day [--runs N]`: on the 2,000-bed hospital's
/// 20-room OR suite (release build, a fresh data dir per run): the
/// mass-casualty scenario with 5 emergency OR add-ons beside 200 admissions,
/// a synthetic OR day and its charges checked against the generator's truth,
/// and the coding suggestions' top-5 hit rate on a held-out day after 14
/// days of history, against the fallback's.
pub fn or_day(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let s = parse(args)?;
    let (edge, load_bin) = build_release()?;
    let config = root.join("config/hospital-2000.toml");
    let config_s = config.display().to_string();
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = vec![];
    for run_no in 1..=s.runs {
        eprintln!("xtask: bench or-day run {run_no}/{}", s.runs);
        let data = fresh_data_dir()?;
        let app = start(&edge, &config, &data, true)?;
        let manager = create_token(&edge, &data, "bed_manager", "bench-or")?;
        let mllp = app
            .mllp
            .clone()
            .context("the appliance did not open MLLP")?;
        let with = |extra: &[&str]| -> Vec<String> {
            ["--mllp", mllp.as_str(), "--config", config_s.as_str()]
                .iter()
                .chain(extra)
                .map(|x| (*x).to_owned())
                .collect()
        };
        fn args(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        // The mass-casualty's OR lists are on a day of their own, apart
        // from the synthetic day's.
        let mci = with(&[
            "--scenario",
            "mass-casualty",
            "--admissions",
            "200",
            "--or-add-ons",
            "5",
            "--date",
            "2027-02-15",
        ]);
        let mci = load(&load_bin, &app.addr, &manager, &args(&mci))?;
        let seed = run_no.to_string();
        let day = with(&[
            "--scenario",
            "or-day",
            "--seed",
            &seed,
            "--date",
            "2027-03-01",
        ]);
        let day = load(&load_bin, &app.addr, &manager, &args(&day))?;
        let eval = with(&[
            "--scenario",
            "coding-eval",
            "--seed",
            &seed,
            "--days",
            "15",
            "--date",
            "2027-04-01",
        ]);
        let eval = load(&load_bin, &app.addr, &manager, &args(&eval))?;
        drop(app);
        rows.push(row(&[
            ("mci_all_done_ms", num(&mci, "/all_done_ms")),
            ("mci_failures", num(&mci, "/failures")),
            ("mci_or_add_ons_done_ms", num(&mci, "/or_add_ons_done_ms")),
            ("mci_or_bumped", num(&mci, "/or_bumped")),
            ("mci_or_bumped_expected", num(&mci, "/or_bumped_expected")),
            ("or_day_ok", if day["ok"] == true { 1.0 } else { 0.0 }),
            ("or_day_messages", num(&day, "/messages")),
            ("or_day_cases", num(&day, "/cases")),
            ("or_day_visits", num(&day, "/visits")),
            ("or_day_send_seconds", num(&day, "/send_seconds")),
            ("coding_test_visits", num(&eval, "/test_visits")),
            ("coding_top5_hit_rate", num(&eval, "/top5_hit_rate")),
            (
                "coding_fallback_top5_hit_rate",
                num(&eval, "/fallback_top5_hit_rate"),
            ),
        ]));
    }
    let summary = medians(&rows);
    let g = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "runs": s.runs,
        "median": summary,
        "ratios": {
            "coding_top5_over_fallback": g("coding_top5_hit_rate") / g("coding_fallback_top5_hit_rate"),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
