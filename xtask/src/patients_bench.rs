//! `cargo xtask bench patients [--patients N] [--runs N]`: the appliance's
//! patient look-up with a large index.
//!
//! A fresh appliance (the 2,000-bed hospital, release build) takes N ADT
//! A28 messages over 16 MLLP connections, each describing a patient of the
//! seeded population generator (`hms-load --population`: names, birth date,
//! sex, address, phone, national id). Once the last one can be looked up by
//! MRN the index is complete; then one keep-alive client sends ranked
//! look-ups by family name, first given name and birth date (`GET
//! /api/v1/patients`, the `patients` scenario) back to back for 20 s, after
//! the same client measured `GET /health` (the HTTP floor, the peer). Each
//! look-up is for a patient sent, and counts as missed when that patient is
//! not among the ten hits. The appliance's resident memory (`VmRSS`) is
//! read before the load, once the index is complete and after the
//! look-ups. Prints each run's figures and the medians over the runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{
    build_release, fresh_data_dir, http_get, load, medians, num, row, rss_mb, start,
};
use crate::create_token;

struct Settings {
    patients: usize,
    runs: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Settings> {
    let [patients, runs] =
        crate::bench::count_options(args, "patients", ["--patients", "--runs"], [1_000_000, 1])?;
    Ok(Settings { patients, runs })
}

/// Waits until patient `mrn` can be looked up (the index is loaded and has
/// followed the feed that far).
fn wait_for_patient(addr: &str, token: &str, mrn: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1800);
    let path = format!("/api/v1/patients?mrn={mrn}");
    while Instant::now() < deadline {
        let body = http_get(addr, &path, Some(token)).unwrap_or_default();
        if body.contains(&format!("\"mrn\":\"{mrn}\"")) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("patient {mrn} was not found within 30 minutes")
}

/// Runs the benchmark and prints the medians over the runs.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let s = parse(args)?;
    let (edge, load_bin) = build_release()?;
    let config = root.join("config/hospital-2000.toml");
    let n = s.patients.to_string();
    let mut rows = vec![];
    for run_no in 1..=s.runs {
        eprintln!("xtask: bench patients run {run_no}/{}", s.runs);
        let data = fresh_data_dir()?;
        let nurse = create_token(&edge, &data, "nurse", "bench-ward")?;
        let app = start(&edge, &config, &data, true)?;
        let pid = app.pid();
        let rss_empty = rss_mb(pid);
        let m = app
            .mllp
            .clone()
            .context("the appliance did not open MLLP")?;
        let fill = load(
            &load_bin,
            &m,
            "",
            &[
                "--scenario",
                "mllp",
                "--trigger",
                "A28",
                "--population",
                "--messages",
                &n,
                "--clients",
                "16",
            ],
        )?;
        let indexed_after = wait_for_patient(&app.addr, &nurse, &format!("LM{}", s.patients - 1))?;
        let rss_filled = rss_mb(pid);
        let read = |scenario: &str, seconds: &str| {
            load(
                &load_bin,
                &app.addr,
                &nurse,
                &[
                    "--scenario",
                    scenario,
                    "--messages",
                    &n,
                    "--clients",
                    "1",
                    "--rate",
                    "0",
                    "--seconds",
                    seconds,
                ],
            )
        };
        let health = read("health", "5")?;
        let search = read("patients", "20")?;
        let rss_full = rss_mb(pid);
        drop(app);
        let requests = num(&search, "/requests");
        let found_pct = 100.0 * (requests - num(&search, "/missed")) / requests;
        rows.push(row(&[
            ("patients", s.patients as f64),
            ("fill_mps", num(&fill, "/throughput_mps")),
            ("fill_errors", num(&fill, "/errors")),
            ("index_complete_after_fill_s", indexed_after.as_secs_f64()),
            ("health_p50_ms", num(&health, "/latency/p50_ms")),
            ("health_p99_ms", num(&health, "/latency/p99_ms")),
            ("search_requests", num(&search, "/requests")),
            ("search_errors", num(&search, "/errors")),
            ("search_own_patient_missed", num(&search, "/missed")),
            ("search_own_patient_in_top10_pct", found_pct),
            ("search_rps", num(&search, "/throughput_rps")),
            ("search_p50_ms", num(&search, "/latency/p50_ms")),
            ("search_p99_ms", num(&search, "/latency/p99_ms")),
            ("search_max_ms", num(&search, "/latency/max_ms")),
            ("rss_mb_before_load", rss_empty),
            ("rss_mb_after_fill", rss_filled),
            ("rss_mb_with_patients", rss_full),
        ]));
        eprintln!(
            "xtask: run {run_no}: {}",
            serde_json::to_string(rows.last().context("a run's figures")?)?
        );
    }
    let summary = medians(&rows);
    let g = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "runs": s.runs,
        "each": rows,
        "median": summary,
        "ratios": {
            "search_p99_over_health_p99": g("search_p99_ms") / g("health_p99_ms"),
            "rss_mb_per_million_patients": (g("rss_mb_with_patients") - g("rss_mb_before_load")) * 1e6 / g("patients"),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
