//! `cargo xtask bench models [--runs N]`: local inference on CPU.
//!
//! Per run: in-process latency and throughput of each model
//! (`hms-edge models check`, one row per call); then the 2,000-bed
//! appliance with the committed models: the forecast refresh time of all
//! units, the forecast endpoint (served from the cache) and the OR endpoint
//! (one model call per request, 4 closed-loop clients so the model's queue
//! never overflows into the "busy" fallback; the share of answers the model
//! gave is reported) under load, each next to `/health` (the HTTP floor)
//! measured in the same run, and the appliance's RSS with the
//! models loaded against the same appliance without them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::bench::{build_release, http_get, load, medians, rss_mb, start};
use crate::{create_token, ort_library, target_dir};

fn get(addr: &str, path: &str, token: &str) -> anyhow::Result<String> {
    http_get(addr, path, (!token.is_empty()).then_some(token))
}

fn get_json(addr: &str, path: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&get(addr, path, token)?)?)
}

/// Calls of `model` by outcome, from `/metrics`.
fn outcomes(addr: &str, model: &str) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = get(addr, "/metrics", "")?;
    let mut out = serde_json::Map::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("hms_model_calls_total{"))
    {
        if !l.contains(&format!("model=\"{model}\"")) {
            continue;
        }
        let outcome = l
            .split("outcome=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let n: Option<f64> = l.rsplit(' ').next().and_then(|v| v.parse().ok());
        if let (Some(o), Some(n)) = (outcome, n) {
            out.insert(o.to_owned(), serde_json::json!(n));
        }
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut runs = 1usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n >= 1)
                    .context("--runs needs a number >= 1")?;
            }
            other => bail!("unknown option {other:?}; use --runs N"),
        }
    }
    let ort = ort_library()?;
    let (edge, load_bin) = build_release()?;
    let models = root.join("models");
    let mut rows = vec![];
    for run_no in 1..=runs {
        eprintln!("xtask: bench models run {run_no}/{runs}");
        let mut row = serde_json::Map::new();
        let out = Command::new(&edge)
            .args(["models", "check", "--dir"])
            .arg(&models)
            .arg("--library")
            .arg(&ort)
            .args(["--runs", "5000"])
            .output()?;
        if !out.status.success() {
            bail!(
                "models check failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let m = v["model"].as_str().unwrap_or("?").to_owned();
            for k in ["p50_ms", "p99_ms", "calls_per_s"] {
                row.insert(format!("{m}_inproc_{k}"), v[k].clone());
            }
        }

        // The appliance, with and without the models.
        let site = target_dir().join("bench-models");
        let _ = std::fs::remove_dir_all(&site);
        std::fs::create_dir_all(&site)?;
        let mut text = std::fs::read_to_string(root.join("config/hospital-2000.toml"))?;
        text.push_str(&format!(
            "\n[inference]\nmodels = \"{}\"\nlibrary = \"{}\"\n",
            models.display(),
            ort.display()
        ));
        let with = site.join("with.toml");
        std::fs::write(&with, &text)?;
        let without = site.join("without.toml");
        std::fs::write(
            &without,
            text.replace(
                &format!("models = \"{}\"", models.display()),
                "models = \"no-models-here\"",
            ),
        )?;
        let mut rss = [0.0; 2];
        for (i, cfg) in [&without, &with].iter().enumerate() {
            let data = site.join(format!("data-{i}"));
            let app = start(&edge, cfg, &data, false)?;
            std::thread::sleep(Duration::from_secs(2));
            rss[i] = rss_mb(app.pid());
            if i == 1 {
                let token = create_token(&edge, &data, "viewer", "bench")?;
                let roll = get_json(&app.addr, "/api/v1/forecast", &token)?;
                if roll["units_from_model"].as_u64() != roll["units"].as_u64() {
                    bail!("the forecasts did not come from the model: {roll}");
                }
                row.insert("forecast_refresh_ms".into(), roll["refresh_ms"].clone());
                row.insert("units".into(), roll["units"].clone());
                for (label, scenario, clients, rate) in [
                    ("health", "health", "50", "0"),
                    ("forecast", "forecast", "50", "0"),
                    ("or_predict", "or-predict", "4", "0"),
                ] {
                    let v = load(
                        &load_bin,
                        &app.addr,
                        &token,
                        &[
                            "--scenario",
                            scenario,
                            "--clients",
                            clients,
                            "--rate",
                            rate,
                            "--seconds",
                            "5",
                        ],
                    )?;
                    row.insert(format!("{label}_api_rps"), v["throughput_rps"].clone());
                    row.insert(
                        format!("{label}_api_p50_ms"),
                        v["latency"]["p50_ms"].clone(),
                    );
                    row.insert(
                        format!("{label}_api_p99_ms"),
                        v["latency"]["p99_ms"].clone(),
                    );
                    row.insert(format!("{label}_api_errors"), v["errors"].clone());
                }
                // Every OR answer under load must have come from the model.
                let o = outcomes(&app.addr, "or_duration")?;
                let model = o.get("model").and_then(|v| v.as_f64()).unwrap_or(0.0);
                let all: f64 = o.values().filter_map(|v| v.as_f64()).sum();
                row.insert(
                    "or_predict_model_share".into(),
                    serde_json::json!(model / all),
                );
            }
            drop(app);
        }
        row.insert("rss_without_models_mb".into(), serde_json::json!(rss[0]));
        row.insert("rss_with_models_mb".into(), serde_json::json!(rss[1]));
        row.insert(
            "models_extra_rss_mb".into(),
            serde_json::json!(rss[1] - rss[0]),
        );
        println!("{}", serde_json::Value::Object(row.clone()));
        rows.push(row);
    }
    println!("{}", serde_json::to_string_pretty(&medians(&rows))?);
    Ok(())
}
