//! `cargo xtask bench kiosks [--runs N] [--streams N]`: the kiosk web app's
//! unit boards, live.
//!
//! Per run, a fresh appliance (the 2,000-bed hospital, release build) and
//! the `kiosks` scenario of `hms-load` with a bed manager token: it signs
//! in to the pages once and opens N live streams (`/units/{unit}/live`,
//! 500 by default) spread round-robin over the units, each from a loopback
//! source address of its own, as wall kiosks would be. With every stream
//! open it reads the largest unit's board page (server-rendered HTML) 200
//! times on one keep-alive connection, next to `GET /health` 200 times on
//! another (the HTTP floor, the page's peer). Then it changes beds through
//! the API at 50 changes a second for 20 s (housekeeping cycles of beds
//! that were vacant and clean) and measures, at each stream showing the
//! bed's unit, the time from the change request being sent to the arrival
//! of the tile carrying the bed's new version (**change-to-stream**); a
//! tile not there 5 s after the last change is **missed**. The appliance's
//! resident memory is read before the streams open and sampled every
//! 200 ms while `hms-load` runs (the peak is with every stream open); the
//! difference is the streams' extra memory.
//!
//! Targets: change-to-stream p99 ≤ 1,000 ms, board page p99 ≤ 20 ms, extra
//! memory for the streams ≤ 100 MB; no error and nothing missed (the bench
//! fails otherwise, after printing its figures).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;

use crate::bench::{build_release, fresh_data_dir, load, medians, num, row, rss_mb, start};
use crate::create_token;

/// Bed changes per second.
const RATE: &str = "50";
/// How long the changes go on, seconds.
const SECONDS: &str = "20";
/// Change-to-stream p99 target, ms.
const TARGET_CHANGE_P99_MS: f64 = 1000.0;
/// Board page p99 target, ms.
const TARGET_PAGE_P99_MS: f64 = 20.0;
/// Target for the appliance's extra resident memory with the streams open, MB.
const TARGET_EXTRA_RSS_MB: f64 = 100.0;

struct Settings {
    runs: usize,
    streams: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Settings> {
    let [runs, streams] =
        crate::bench::count_options(args, "kiosks", ["--runs", "--streams"], [1, 500])?;
    Ok(Settings { runs, streams })
}

/// Runs `work` while sampling the resident memory of `pid` every 200 ms;
/// its result and the highest sample (NaN when none could be read).
fn with_peak_rss<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = f64::NAN;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        (out, sampler.join().unwrap_or(f64::NAN))
    })
}

/// A target's line of the summary: the median, the target and whether it is met.
fn target(value: f64, at_most: f64) -> serde_json::Value {
    serde_json::json!({ "median": value, "at_most": at_most, "met": value <= at_most })
}

/// Runs the benchmark and prints the medians over the runs.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let s = parse(args)?;
    let (edge, load_bin) = build_release()?;
    let config = root.join("config/hospital-2000.toml");
    let streams = s.streams.to_string();
    let mut rows = vec![];
    for run_no in 1..=s.runs {
        eprintln!("xtask: bench kiosks run {run_no}/{}", s.runs);
        let data = fresh_data_dir()?;
        let manager = create_token(&edge, &data, "bed_manager", "bench-kiosks")?;
        let app = start(&edge, &config, &data, false)?;
        let pid = app.pid();
        let rss_before = rss_mb(pid);
        let (kiosks, rss_peak) = with_peak_rss(pid, || {
            load(
                &load_bin,
                &app.addr,
                &manager,
                &[
                    "--scenario",
                    "kiosks",
                    "--streams",
                    &streams,
                    "--rate",
                    RATE,
                    "--seconds",
                    SECONDS,
                ],
            )
        });
        let kiosks = kiosks?;
        let rss_after = rss_mb(pid);
        drop(app);
        rows.push(row(&[
            ("streams", num(&kiosks, "/streams")),
            ("streams_open_s", num(&kiosks, "/streams_open_s")),
            ("changes", num(&kiosks, "/changes")),
            ("deliveries", num(&kiosks, "/deliveries")),
            ("missed", num(&kiosks, "/missed")),
            ("errors", num(&kiosks, "/errors")),
            (
                "change_to_stream_p50_ms",
                num(&kiosks, "/change_to_stream/p50_ms"),
            ),
            (
                "change_to_stream_p90_ms",
                num(&kiosks, "/change_to_stream/p90_ms"),
            ),
            (
                "change_to_stream_p99_ms",
                num(&kiosks, "/change_to_stream/p99_ms"),
            ),
            (
                "change_to_stream_max_ms",
                num(&kiosks, "/change_to_stream/max_ms"),
            ),
            ("page_p50_ms", num(&kiosks, "/page_p50_ms")),
            ("page_p99_ms", num(&kiosks, "/page_p99_ms")),
            ("health_p50_ms", num(&kiosks, "/health_p50_ms")),
            ("health_p99_ms", num(&kiosks, "/health_p99_ms")),
            ("rss_mb_before_streams", rss_before),
            ("rss_mb_peak_with_streams", rss_peak),
            ("rss_mb_after_streams", rss_after),
            ("streams_extra_rss_mb", rss_peak - rss_before),
        ]));
    }
    let summary = medians(&rows);
    let g = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let out = serde_json::json!({
        "runs": s.runs,
        "streams": s.streams,
        "rate": RATE.parse::<f64>().unwrap_or(f64::NAN),
        "seconds": SECONDS.parse::<f64>().unwrap_or(f64::NAN),
        "median": summary,
        "ratios": {
            "page_p99_over_health_p99": g("page_p99_ms") / g("health_p99_ms"),
            "page_p50_over_health_p50": g("page_p50_ms") / g("health_p50_ms"),
        },
        "targets": {
            "change_to_stream_p99_ms": target(g("change_to_stream_p99_ms"), TARGET_CHANGE_P99_MS),
            "page_p99_ms": target(g("page_p99_ms"), TARGET_PAGE_P99_MS),
            "streams_extra_rss_mb": target(g("streams_extra_rss_mb"), TARGET_EXTRA_RSS_MB),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    let (errors, missed): (f64, f64) = rows.iter().fold((0.0, 0.0), |(e, m), r| {
        (
            e + r["errors"].as_f64().unwrap_or(f64::NAN),
            m + r["missed"].as_f64().unwrap_or(f64::NAN),
        )
    });
    if errors != 0.0 || missed != 0.0 {
        bail!("the kiosk bench had {errors} errors and {missed} missed tiles over its runs");
    }
    Ok(())
}
