//! `hms-edge models check`: loads a model set, runs its recorded test
//! vectors (`testvectors.json`) through each model, compares with the
//! recorded outputs within the tolerance (the model's `tolerance` in the
//! manifest, else the vectors' `tolerance`, else 1e-4), and times single-row
//! calls, on the CPU and, with `--cuda`, on CUDA too. With `--batches`, it
//! times calls of each batch size on each provider and derives the provider
//! policy's threshold ([`threshold`]; `inference.cuda_min_rows`). In
//! process; nothing here serves requests. The runtime is shut down (its
//! sessions closed) before the rows are returned.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use std::collections::BTreeMap;

use super::runtime::Provider;
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

/// Rows timed per batch size and provider, at most: a batch size's runs
/// are cut to this many rows (but never under [`MIN_BATCH_RUNS`] runs).
const BATCH_ROW_BUDGET: usize = 1 << 21;
/// Fewest timed calls per batch size and provider.
const MIN_BATCH_RUNS: usize = 5;
/// Untimed calls before each batch size's timed ones (CUDA's first calls
/// set up kernels and memory).
const WARM_UP: usize = 3;

/// What `models check` does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model set's directory.
    pub dir: PathBuf,
    /// The ONNX Runtime library; none: `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Check and time the CUDA session too (not ready on CUDA: a failure).
    pub cuda: bool,
    /// Let CUDA use TensorFloat-32 (`inference.cuda_tf32`).
    pub tf32: bool,
    /// Timed single-row calls per model and provider.
    pub runs: usize,
    /// Batch sizes to time on each provider (rows per call).
    pub batches: Vec<usize>,
}

/// One batch size's timings on one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Rows per call.
    pub batch: usize,
    /// Median milliseconds per call.
    pub p50_ms: f64,
}

/// The provider policy's threshold from measured timings of one model: the
/// smallest measured batch size from which CUDA's median call is faster
/// than the CPU's at that size and at every larger one measured. `None`
/// when CUDA is not faster at the largest size.
pub fn threshold(cpu: &[Timing], cuda: &[Timing]) -> Option<usize> {
    let mut sizes: Vec<(usize, bool)> = cpu
        .iter()
        .filter_map(|c| {
            let g = cuda.iter().find(|g| g.batch == c.batch)?;
            Some((c.batch, g.p50_ms < c.p50_ms))
        })
        .collect();
    sizes.sort_unstable();
    let mut from = None;
    for (batch, cuda_wins) in sizes.into_iter().rev() {
        if !cuda_wins {
            break;
        }
        from = Some(batch);
    }
    from
}

/// Checks the model set (see the module doc).
pub fn check(plan: &Plan) -> anyhow::Result<Vec<CheckRow>> {
    let settings = Settings {
        models_dir: plan.dir.clone(),
        library: plan.library.clone(),
        cuda: plan.cuda,
        cuda_tf32: plan.tf32,
        cuda_min_rows: usize::MAX,
        timeout: Duration::from_secs(30),
    };
    let rt = Runtime::start(&settings, Arc::new(crate::metrics::Metrics::new()));
    let rows = check_with(&rt, plan);
    // Sessions close here, before the caller releases the environment.
    if !rt.shutdown() {
        tracing::warn!("a model session was still busy when models check ended");
    }
    rows
}

/// Times `runs` calls of `batch` rows (cycled from `inputs`) on `provider`.
fn time_calls(
    runtime: &tokio::runtime::Runtime,
    rt: &Runtime,
    name: &str,
    provider: Provider,
    inputs: &[Vec<f32>],
    batch: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let flat: Vec<f32> = inputs
        .iter()
        .cycle()
        .take(batch)
        .flatten()
        .copied()
        .collect();
    for _ in 0..WARM_UP {
        runtime
            .block_on(rt.infer_on(name, Some(provider), batch, flat.clone()))
            .map_err(|u| anyhow::anyhow!("{name} on {}: {}", provider.as_str(), u.detail))?;
    }
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let input = flat.clone();
        let t = Instant::now();
        runtime
            .block_on(rt.infer_on(name, Some(provider), batch, input))
            .map_err(|u| anyhow::anyhow!("{name} on {}: {}", provider.as_str(), u.detail))?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

fn check_with(rt: &Runtime, plan: &Plan) -> anyhow::Result<Vec<CheckRow>> {
    let path = plan.dir.join("testvectors.json");
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )
    .context("testvectors.json")?;
    let recorded = vectors["tolerance"].as_f64().unwrap_or(DEFAULT_TOLERANCE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let providers: &[Provider] = if plan.cuda {
        &[Provider::Cpu, Provider::Cuda]
    } else {
        &[Provider::Cpu]
    };
    let mut out = vec![];
    let mut thresholds = vec![];
    for report in rt.reports() {
        let name = report.name.clone();
        if report.state != "ready" || (plan.cuda && report.provider != Some("cuda")) {
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
        let mut medians: BTreeMap<Provider, Vec<Timing>> = BTreeMap::new();
        for &provider in providers {
            let got =
                runtime.block_on(rt.infer_on(&name, Some(provider), inputs.len(), flat.clone()));
            let max_diff = match &got {
                Ok(g) if g.len() == want.len() && !want.is_empty() => g
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (f64::from(*g) - w).abs())
                    .fold(0.0, f64::max),
                _ => f64::INFINITY,
            };
            let lat = if inputs.is_empty() {
                vec![]
            } else {
                time_calls(&runtime, rt, &name, provider, &inputs, 1, plan.runs)?
            };
            let ok = max_diff <= tolerance;
            out.push(CheckRow {
                ok,
                json: json!({
                    "model": name,
                    "ok": ok,
                    "provider": provider.as_str(),
                    "max_abs_diff": max_diff,
                    "tolerance": tolerance,
                    "p50_ms": quantile(&lat, 0.5),
                    "p99_ms": quantile(&lat, 0.99),
                    "calls_per_s": if lat.is_empty() { 0.0 } else { lat.len() as f64 / (lat.iter().sum::<f64>() / 1000.0) },
                }),
            });
            if inputs.is_empty() {
                continue;
            }
            for &batch in &plan.batches {
                let runs = (BATCH_ROW_BUDGET / batch.max(1))
                    .clamp(MIN_BATCH_RUNS, plan.runs.max(MIN_BATCH_RUNS));
                let lat = time_calls(&runtime, rt, &name, provider, &inputs, batch, runs)?;
                let p50 = quantile(&lat, 0.5);
                medians
                    .entry(provider)
                    .or_default()
                    .push(Timing { batch, p50_ms: p50 });
                out.push(CheckRow {
                    ok: true,
                    json: json!({
                        "model": name,
                        "provider": provider.as_str(),
                        "batch": batch,
                        "runs": runs,
                        "p50_ms": p50,
                        "p99_ms": quantile(&lat, 0.99),
                        "rows_per_s": batch as f64 / (p50 / 1000.0),
                    }),
                });
            }
        }
        if plan.cuda && !plan.batches.is_empty() {
            let none = vec![];
            let t = threshold(
                medians.get(&Provider::Cpu).unwrap_or(&none),
                medians.get(&Provider::Cuda).unwrap_or(&none),
            );
            thresholds.push(t);
            out.push(CheckRow {
                ok: true,
                json: json!({ "model": name, "cuda_faster_from_rows": t }),
            });
        }
    }
    if !thresholds.is_empty() {
        // One setting for every model: the GPU only where it wins for all.
        let largest = plan.batches.iter().copied().max().unwrap_or(1);
        let pick = thresholds
            .iter()
            .map(|t| t.unwrap_or(largest.saturating_mul(2)))
            .max()
            .unwrap_or(largest);
        out.push(CheckRow {
            ok: true,
            json: json!({ "recommended": { "inference.cuda_min_rows": pick } }),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(batch: usize, p50_ms: f64) -> Timing {
        Timing { batch, p50_ms }
    }

    #[test]
    fn the_threshold_is_where_cuda_starts_winning_for_good() {
        let cpu = [t(1, 0.05), t(64, 0.3), t(4096, 12.0), t(65536, 190.0)];
        // Slower for one row and 64, faster from 4,096.
        let cuda = [t(1, 0.35), t(64, 0.4), t(4096, 1.2), t(65536, 9.0)];
        assert_eq!(threshold(&cpu, &cuda), Some(4096));
        // Faster at 64 by chance but slower at 4,096: only 65,536 counts.
        let cuda = [t(1, 0.35), t(64, 0.2), t(4096, 13.0), t(65536, 9.0)];
        assert_eq!(threshold(&cpu, &cuda), Some(65536));
        // Never faster.
        let cuda = [t(1, 0.35), t(64, 0.4), t(4096, 13.0), t(65536, 200.0)];
        assert_eq!(threshold(&cpu, &cuda), None);
        // Faster everywhere; sizes measured in any order.
        let cuda = [t(65536, 1.0), t(1, 0.01), t(4096, 1.0), t(64, 0.1)];
        assert_eq!(threshold(&cpu, &cuda), Some(1));
        // A size measured on one side only is not judged.
        assert_eq!(threshold(&cpu[..2], &[t(64, 0.1)]), Some(64));
        assert_eq!(threshold(&[], &cuda), None);
    }
}
