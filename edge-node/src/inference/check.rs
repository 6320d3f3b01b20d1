//! `hms-edge models check`: loads a model set, runs its recorded test
//! vectors (`testvectors.json`) through each model, compares with the
//! recorded outputs within the tolerance (the model's `tolerance` in the
//! manifest, else the vectors' `tolerance`, else 1e-4), and times single-row
//! calls. In process; nothing here serves requests. The runtime is shut down
//! (its sessions closed) before the rows are returned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{Runtime, Settings};

/// One model's result.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// Whether the model was ready (on CUDA when asked) and matched the vectors.
    pub ok: bool,
    /// The line printed for it.
    pub json: Value,
}

/// Rows of numbers from a JSON array of arrays.
fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(Value::as_f64)
                                .map(|v| v as f32)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value at quantile `q` of sorted samples (NaN when there are none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The tolerance when neither the manifest nor the vectors state one.
const DEFAULT_TOLERANCE: f64 = 1e-4;

/// Checks the model set in `dir` (see the module doc); `runs` timed calls
/// per model; `tf32`: let CUDA use TensorFloat-32 (`inference.cuda_tf32`).
pub fn check(
    dir: &Path,
    library: Option<PathBuf>,
    cuda: bool,
    tf32: bool,
    runs: usize,
) -> anyhow::Result<Vec<CheckRow>> {
    let settings = Settings {
        models_dir: dir.to_owned(),
        library,
        cuda,
        cuda_tf32: tf32,
        timeout: Duration::from_secs(30),
    };
    let rt = Runtime::start(&settings, Arc::new(crate::metrics::Metrics::new()));
    let rows = check_with(&rt, dir, cuda, runs);
    // Sessions close here, before the caller releases the environment.
    if !rt.shutdown() {
        tracing::warn!("a model session was still busy when models check ended");
    }
    rows
}

fn check_with(rt: &Runtime, dir: &Path, cuda: bool, runs: usize) -> anyhow::Result<Vec<CheckRow>> {
    let path = dir.join("testvectors.json");
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )
    .context("testvectors.json")?;
    let recorded = vectors["tolerance"].as_f64().unwrap_or(DEFAULT_TOLERANCE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut out = vec![];
    for report in rt.reports() {
        let name = report.name.clone();
        if report.state != "ready" || (cuda && report.provider != Some("cuda")) {
            out.push(CheckRow {
                ok: false,
                json: json!({ "model": name, "ok": false, "state": report }),
            });
            continue;
        }
        let tolerance = rt.spec(&name).and_then(|s| s.tolerance).unwrap_or(recorded);
        let inputs = rows(&vectors[&name]["inputs"]);
        let want: Vec<f64> = vectors[&name]["outputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                    .filter_map(|v| v.as_f64())
                    .collect()
            })
            .unwrap_or_default();
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let got = runtime.block_on(rt.infer(&name, inputs.len(), flat));
        let max_diff = match &got {
            Ok(g) if g.len() == want.len() && !want.is_empty() => g
                .iter()
                .zip(&want)
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max),
            _ => f64::INFINITY,
        };
        let mut lat = Vec::with_capacity(runs);
        for row in inputs.iter().cycle().take(runs) {
            let row = row.clone();
            let t = Instant::now();
            let _ = runtime.block_on(rt.infer(&name, 1, row));
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let ok = max_diff <= tolerance;
        out.push(CheckRow {
            ok,
            json: json!({
                "model": name,
                "ok": ok,
                "provider": report.provider,
                "max_abs_diff": max_diff,
                "tolerance": tolerance,
                "p50_ms": quantile(&lat, 0.5),
                "p99_ms": quantile(&lat, 0.99),
                "calls_per_s": if lat.is_empty() { 0.0 } else { lat.len() as f64 / (lat.iter().sum::<f64>() / 1000.0) },
            }),
        });
    }
    Ok(out)
}
