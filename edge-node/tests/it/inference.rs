//! Local inference: the committed models through ONNX Runtime, and every
//! way the fallback answers instead (no model set, no library, a file that
//! does not match its manifest, a model that is too slow).
//!
//! Tests that load models need the ONNX Runtime library (`ORT_DYLIB_PATH`;
//! `cargo xtask ci` installs it). Under `CI=true` they must run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_node::inference::check::Plan;
use edge_node::inference::runtime::Provider;
use edge_node::inference::{BED_DEMAND, OR_DURATION, Reason, Runtime, Settings};
use edge_node::metrics::Metrics;
use serde_json::json;

use crate::support::TestApp;

/// The committed model set.
fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The ONNX Runtime library, or `None` (skipped) outside CI.
fn ort() -> Option<PathBuf> {
    let path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    match path {
        Some(p) if p.is_file() => Some(p),
        _ => {
            hms_e2e::skip::skip(
                "inference (ONNX Runtime)",
                "ORT_DYLIB_PATH names no library; cargo xtask test and ci install it into \
                 target/onnxruntime/",
            );
            None
        }
    }
}

fn settings(dir: &Path, library: Option<PathBuf>, timeout_ms: u64) -> Settings {
    Settings {
        models_dir: dir.to_owned(),
        library,
        cuda: false,
        cuda_tf32: false,
        cuda_min_rows: 4096,
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn start(s: &Settings) -> Runtime {
    Runtime::start(s, Arc::new(Metrics::new()))
}

fn report(rt: &Runtime, name: &str) -> edge_node::inference::ModelReport {
    rt.reports().into_iter().find(|r| r.name == name).unwrap()
}

/// A copy of the committed set in a temporary directory, edited by `edit`.
fn copy_set(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(models()).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    edit(dir.path());
    dir
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "manifest has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_models_give_the_outputs_the_training_script_recorded() {
    let Some(lib) = ort() else { return };
    let rt = start(&settings(&models(), Some(lib), 5_000));
    for name in [BED_DEMAND, OR_DURATION] {
        let r = report(&rt, name);
        assert_eq!(r.state, "ready", "{r:?}");
        assert_eq!(r.provider, Some("cpu"));
    }
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(models().join("testvectors.json")).unwrap())
            .unwrap();
    let tolerance = vectors["tolerance"].as_f64().unwrap();
    assert!(tolerance > 0.0 && tolerance <= 1e-3, "{tolerance}");
    for name in [BED_DEMAND, OR_DURATION] {
        let inputs = vectors[name]["inputs"].as_array().unwrap();
        let want = vectors[name]["outputs"].as_array().unwrap();
        assert!(inputs.len() >= 8);
        let flat: Vec<f32> = inputs
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let got = rt.infer(name, inputs.len(), flat).await.unwrap();
        let want: Vec<f64> = want
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= tolerance,
                "{name} value {i}: got {g}, recorded {w}"
            );
        }
    }
}

#[tokio::test]
async fn without_the_library_every_model_is_disabled_and_says_why() {
    let rt = start(&settings(
        &models(),
        Some(PathBuf::from("/nonexistent/libonnxruntime.so.1.31.0")),
        250,
    ));
    for name in [BED_DEMAND, OR_DURATION] {
        let r = report(&rt, name);
        assert_eq!(
            (r.state, r.reason),
            ("disabled", Some(Reason::LibraryMissing))
        );
        assert!(r.detail.unwrap().contains("does not exist"));
        let u = rt.infer(name, 1, vec![0.0; 10]).await.unwrap_err();
        assert_eq!(u.reason, Reason::LibraryMissing);
    }
}

#[tokio::test]
async fn without_a_model_set_every_model_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let rt = start(&settings(empty.path(), ort(), 250));
    for name in [BED_DEMAND, OR_DURATION] {
        let r = report(&rt, name);
        assert_eq!(
            (r.state, r.reason),
            ("disabled", Some(Reason::ModelMissing))
        );
    }
    assert_eq!(rt.set_version(), None);
}

#[tokio::test]
async fn a_missing_model_file_or_a_mismatch_disables_that_model_only() {
    let Some(lib) = ort() else { return };
    // File absent.
    let set = copy_set(|d| std::fs::remove_file(d.join("or_duration.onnx")).unwrap());
    let rt = start(&settings(set.path(), Some(lib.clone()), 5_000));
    assert_eq!(report(&rt, OR_DURATION).reason, Some(Reason::ModelMissing));
    assert_eq!(report(&rt, BED_DEMAND).state, "ready");

    // A file that is not what the manifest says (bytes changed).
    let set = copy_set(|d| {
        let p = d.join("or_duration.onnx");
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
    });
    let rt = start(&settings(set.path(), Some(lib.clone()), 5_000));
    let r = report(&rt, OR_DURATION);
    assert_eq!(r.reason, Some(Reason::ManifestMismatch), "{r:?}");
    assert!(r.detail.unwrap().contains("sha256"));
    assert_eq!(report(&rt, BED_DEMAND).state, "ready");

    // The right file, but the manifest names another input: the session's
    // own signature is checked.
    let set = copy_set(|d| {
        edit_manifest(
            d,
            "input = { name = \"features\"",
            "input = { name = \"features_v2\"",
        )
    });
    let rt = start(&settings(set.path(), Some(lib.clone()), 5_000));
    let r = report(&rt, BED_DEMAND);
    assert_eq!(r.reason, Some(Reason::ManifestMismatch), "{r:?}");
    assert!(r.detail.unwrap().contains("features_v2"));

    // The right names, but another shape.
    let set = copy_set(|d| edit_manifest(d, "shape = [-1, 9]", "shape = [-1, 8]"));
    let rt = start(&settings(set.path(), Some(lib), 5_000));
    let r = report(&rt, BED_DEMAND);
    assert_eq!(r.reason, Some(Reason::ManifestMismatch), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_slower_than_its_timeout_is_answered_by_the_fallback_then_rested() {
    let Some(lib) = ort() else { return };
    let rt = start(&settings(&models().join("test"), Some(lib), 200));
    assert_eq!(report(&rt, OR_DURATION).state, "ready");
    let started = std::time::Instant::now();
    let u = rt
        .infer(OR_DURATION, 1, vec![60.0, 50.0, 2.0, 0.0, 0.0])
        .await
        .unwrap_err();
    assert_eq!(u.reason, Reason::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the caller does not wait for the model"
    );
    // Keep calling: timeouts (and "busy" while the queue is full, which does
    // not count against the model) until the breaker opens.
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let u = rt
            .infer(OR_DURATION, 1, vec![60.0, 50.0, 2.0, 0.0, 0.0])
            .await
            .unwrap_err();
        if seen.last() != Some(&u.reason) {
            seen.push(u.reason);
        }
        if u.reason == Reason::BreakerOpen {
            break;
        }
        if u.reason == Reason::Busy {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(seen.last(), Some(&Reason::BreakerOpen), "{seen:?}");
    assert_eq!(report(&rt, OR_DURATION).breaker, "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_from_the_fallback_without_models_and_says_why() {
    let app = TestApp::start(&[("U", 10, 2)]).await;
    let mut c = app.conn(&app.viewer).await;
    let r = c.get("/api/v1/forecast/units/U").await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["source"], "fallback");
    assert_eq!(v["reason"], "model_missing");
    assert_eq!(v["capacity"], 10);
    let hours: Vec<_> = v["horizons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hours"].clone())
        .collect();
    assert_eq!(hours, [json!(24), json!(48), json!(72)]);
    let r = c.get("/api/v1/forecast").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["capacity"], 10);
    assert_eq!(
        c.get("/api/v1/forecast/units/NOPE").await.unwrap().status,
        404
    );

    let case = json!({"booked_minutes": 100, "age": 60, "asa": 2, "procedure": "lap-chole", "surgeon": "S01"});
    let r = c.post("/api/v1/or/cases/predict", &case).await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["source"], "fallback");
    assert_eq!(v["reason"], "model_missing");
    assert!(
        (v["minutes"].as_f64().unwrap() - 120.0).abs() < 1e-9,
        "booked + 20 %: {v}"
    );
    let r = c
        .post(
            "/api/v1/or/cases/predict",
            &json!({"cases": [case.clone(), case.clone()]}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.json().unwrap()["predictions"].as_array().unwrap().len(),
        2
    );
    for bad in [
        json!({"booked_minutes": 100, "age": 60, "asa": 9, "procedure": "x", "surgeon": "y"}),
        json!({"booked_minutes": -5, "age": 60, "asa": 2, "procedure": "x", "surgeon": "y"}),
        json!({"cases": []}),
    ] {
        let r = c.post("/api/v1/or/cases/predict", &bad).await.unwrap();
        assert_eq!(r.status, 422, "{bad}");
        assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    }
    let r = c
        .post("/api/v1/or/cases/predict", &json!({"surgeon": 1}))
        .await
        .unwrap();
    assert!(r.status == 400 || r.status == 422, "{}", r.status);
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    assert_eq!(anon.get("/api/v1/forecast").await.unwrap().status, 401);

    let h = c.get("/health").await.unwrap().json().unwrap();
    assert_eq!(
        h["status"], "ok",
        "missing models do not degrade the appliance"
    );
    assert_eq!(h["components"]["models"]["status"], "degraded");
    let models = h["components"]["models"]["models"].as_array().unwrap();
    assert!(
        models.iter().all(|m| m["reason"] == "model_missing"),
        "{models:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_from_the_models_when_they_are_there() {
    let Some(lib) = ort() else { return };
    let app = TestApp::start_with(&[("U", 10, 2), ("V", 6, 2)], |cfg| {
        cfg.inference.models = models();
        cfg.inference.library = Some(lib);
        cfg.inference.timeout_ms = 5_000;
    })
    .await;
    let mut c = app.conn(&app.viewer).await;
    let v = c
        .get("/api/v1/forecast/units/U")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["source"], "model", "{v}");
    assert!(v["reason"].is_null());
    for h in v["horizons"].as_array().unwrap() {
        let (lo, mid, hi) = (
            h["low"].as_f64().unwrap(),
            h["mid"].as_f64().unwrap(),
            h["high"].as_f64().unwrap(),
        );
        assert!(0.0 <= lo && lo <= mid && mid <= hi && hi <= 10.0, "{h}");
    }
    let case =
        json!({"booked_minutes": 100, "age": 60, "asa": 2, "procedure": "x", "surgeon": "y"});
    let v = c
        .post("/api/v1/or/cases/predict", &case)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["source"], "model", "{v}");
    assert!(v["minutes"].as_f64().unwrap() > 0.0);
    let h = c.get("/health").await.unwrap().json().unwrap();
    assert_eq!(h["components"]["models"]["status"], "ok", "{h}");
    let m = c.get("/metrics").await.unwrap();
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("hms_model_calls_total{")
            && l.contains("model=\"bed_demand\"")
            && l.contains("outcome=\"model\"")),
        "model calls are counted"
    );
    app.stop().await;
}

#[test]
fn a_model_set_is_installed_only_when_it_verifies_and_can_be_rolled_back() {
    use edge_node::inference::models::{current, install, rollback};
    let data = tempfile::tempdir().unwrap();
    assert_eq!(current(data.path()), None);
    assert!(rollback(data.path()).is_err(), "nothing to roll back to");

    // A set whose file does not match its manifest is refused; nothing changes.
    let bad = copy_set(|d| {
        let p = d.join("bed_demand.onnx");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.push(0);
        std::fs::write(&p, bytes).unwrap();
    });
    let e = install(data.path(), bad.path()).unwrap_err();
    assert!(format!("{e:#}").contains("sha256"), "{e:#}");
    assert_eq!(current(data.path()), None);

    let first = install(data.path(), &models()).unwrap();
    assert_eq!(first.previous, None);
    assert_eq!(current(data.path()), Some(first.dir.clone()));
    // The installed copy verifies on its own.
    let m = edge_node::inference::manifest::Manifest::load(&first.dir).unwrap();
    assert!(
        edge_node::inference::manifest::check_files(&first.dir, &m)
            .iter()
            .all(|(_, r)| r.is_ok())
    );
    std::thread::sleep(Duration::from_millis(2));
    let second = install(data.path(), &models()).unwrap();
    assert_ne!(second.dir, first.dir);
    assert!(second.previous.is_some());
    assert_eq!(current(data.path()), Some(second.dir.clone()));
    assert_eq!(rollback(data.path()).unwrap(), first.dir);
    assert_eq!(current(data.path()), Some(first.dir.clone()));
    // Rolling back again returns to the newer set.
    assert_eq!(rollback(data.path()).unwrap(), second.dir);
}

#[test]
fn models_check_compares_each_model_within_its_manifest_tolerance() {
    let Some(lib) = ort() else { return };
    // One recorded bed_demand value moved by 5e-4: within the manifest's
    // 1e-3, outside a tolerance of 1e-4 stated for bed_demand alone.
    let set = copy_set(|d| {
        let p = d.join("testvectors.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let w = &mut v["bed_demand"]["outputs"][0][1];
        *w = json!(w.as_f64().unwrap() + 5e-4);
        std::fs::write(&p, v.to_string()).unwrap();
    });
    let verdicts = |dir: &Path| -> Vec<(String, bool, f64)> {
        edge_node::inference::check::check(&Plan {
            dir: dir.to_owned(),
            library: Some(lib.clone()),
            cuda: false,
            tf32: false,
            runs: 3,
            batches: vec![],
        })
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.json["model"].as_str().unwrap().to_owned(),
                r.ok,
                r.json["tolerance"].as_f64().unwrap(),
            )
        })
        .collect()
    };
    assert_eq!(
        verdicts(set.path()),
        [
            (BED_DEMAND.to_owned(), true, 1e-3),
            (OR_DURATION.to_owned(), true, 1e-3)
        ]
    );
    edit_manifest(set.path(), "tolerance = 0.001", "tolerance = 1e-4");
    assert_eq!(
        verdicts(set.path()),
        [
            (BED_DEMAND.to_owned(), false, 1e-4),
            (OR_DURATION.to_owned(), true, 1e-3)
        ]
    );
    // Without one, the test vectors' tolerance applies.
    edit_manifest(set.path(), "tolerance = 1e-4\n", "");
    assert_eq!(verdicts(set.path())[0], (BED_DEMAND.to_owned(), true, 1e-3));
}

#[test]
fn models_check_times_each_batch_size_on_the_cpu() {
    let Some(lib) = ort() else { return };
    let rows = edge_node::inference::check::check(&Plan {
        dir: models(),
        library: Some(lib),
        cuda: false,
        tf32: false,
        runs: 20,
        batches: vec![1, 64, 512],
    })
    .unwrap();
    let batches: Vec<(String, String, u64, u64)> = rows
        .iter()
        .filter(|r| r.json.get("batch").is_some())
        .map(|r| {
            assert!(r.json["p50_ms"].as_f64().unwrap() > 0.0, "{}", r.json);
            let per_s = r.json["rows_per_s"].as_f64().unwrap();
            let p50 = r.json["p50_ms"].as_f64().unwrap();
            let batch = r.json["batch"].as_u64().unwrap();
            assert!((per_s - batch as f64 * 1000.0 / p50).abs() < 1e-6 * per_s);
            (
                r.json["model"].as_str().unwrap().to_owned(),
                r.json["provider"].as_str().unwrap().to_owned(),
                batch,
                r.json["runs"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, u64, u64)> = [BED_DEMAND, OR_DURATION]
        .iter()
        .flat_map(|m| [1, 64, 512].map(|b| (m.to_string(), "cpu".to_owned(), b, 20)))
        .collect();
    assert_eq!(batches, want);
    assert!(rows.iter().all(|r| r.ok));
    // Without CUDA there is nothing to compare: no threshold is suggested.
    assert!(rows.iter().all(|r| r.json.get("recommended").is_none()));
}

#[tokio::test]
async fn asked_for_cuda_without_it_every_call_runs_on_the_cpu_session() {
    let Some(lib) = ort() else { return };
    let mut s = settings(&models(), Some(lib), 5_000);
    let plain = start(&s);
    s.cuda = true;
    s.cuda_min_rows = 1;
    // The CPU build of ONNX Runtime offers no CUDA: CPU only, as before.
    let rt = start(&s);
    let r = report(&rt, OR_DURATION);
    assert_eq!(
        (r.state, r.provider, r.cuda_min_rows),
        ("ready", Some("cpu"), None)
    );
    let row = vec![120.0, 67.0, 3.0, 6.0, -1.0];
    let many: Vec<f32> = row.iter().copied().cycle().take(5 * 100).collect();
    assert_eq!(
        rt.infer(OR_DURATION, 100, many.clone()).await.unwrap(),
        plain.infer(OR_DURATION, 100, many).await.unwrap()
    );
    let u = rt
        .infer_on(OR_DURATION, Some(Provider::Cuda), 1, row.clone())
        .await
        .unwrap_err();
    assert_eq!(u.reason, Reason::Error);
    assert_eq!(u.detail, "the model has no cuda session");
    assert!(
        rt.infer_on(OR_DURATION, Some(Provider::Cpu), 1, row)
            .await
            .is_ok()
    );
    assert!(
        r.cuda_error.as_deref().unwrap().contains("on cuda"),
        "{:?}",
        r.cuda_error
    );
    let health = serde_json::to_value(&r).unwrap();
    assert!(health.get("cuda_min_rows").is_none(), "{health}");
    assert!(health["cuda_error"].is_string(), "{health}");
    // Not asked for CUDA: nothing about it.
    let health = serde_json::to_value(report(&plain, OR_DURATION)).unwrap();
    assert!(health.get("cuda_error").is_none(), "{health}");
}

#[test]
fn a_tolerance_that_is_not_above_0_disables_the_set_and_names_the_model() {
    let set = copy_set(|d| edit_manifest(d, "tolerance = 0.001", "tolerance = 0.0"));
    // Refused when the manifest loads, before any library is needed.
    let rt = start(&settings(set.path(), None, 250));
    for name in [BED_DEMAND, OR_DURATION] {
        let r = report(&rt, name);
        assert_eq!(r.reason, Some(Reason::ManifestMismatch), "{r:?}");
        assert!(
            r.detail
                .as_deref()
                .unwrap()
                .contains("model bed_demand: tolerance 0 must be a finite number above 0"),
            "{r:?}"
        );
    }
}

/// Set in the process of its own that the shutdown test runs in.
const SHUTDOWN_CHILD: &str = "HMS_TEST_ORT_SHUTDOWN_CHILD";

#[test]
fn sessions_close_before_the_environment_and_a_runtime_opens_again_in_the_same_process() {
    let Some(lib) = ort() else { return };
    if std::env::var_os(SHUTDOWN_CHILD).is_none() {
        // The environment is the process's and is released once, at its
        // end: the sequence runs in a process of its own, which must then
        // exit cleanly (sessions or an environment left open at exit is
        // what crashed after a CUDA run).
        let name = "inference::sessions_close_before_the_environment_and_a_runtime_opens_again_in_the_same_process";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(SHUTDOWN_CHILD, "1")
            .env("ORT_DYLIB_PATH", &lib)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "the process exited with {:?}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains("1 passed"),
            "the test did not run:\n{stdout}"
        );
        return;
    }
    use edge_node::inference::runtime::{open_sessions, release_environment};
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let predict = |rt: &Runtime| {
        tokio
            .block_on(rt.infer(OR_DURATION, 1, vec![120.0, 67.0, 3.0, 6.0, -1.0]))
            .unwrap()
    };
    let s = settings(&models(), Some(lib), 5_000);
    assert_eq!(open_sessions(), 0);
    let rt = start(&s);
    for name in [BED_DEMAND, OR_DURATION] {
        assert_eq!(report(&rt, name).state, "ready");
    }
    assert_eq!(open_sessions(), 2);
    let first = predict(&rt);
    assert!(rt.shutdown(), "every session closed within the wait");
    assert_eq!(open_sessions(), 0, "sessions close before shutdown returns");

    // Open again in the same process: the environment was kept for it.
    let rt = start(&s);
    assert_eq!(report(&rt, OR_DURATION).state, "ready");
    assert_eq!(open_sessions(), 2);
    assert_eq!(predict(&rt), first);
    drop(rt);
    assert_eq!(open_sessions(), 0, "dropping a runtime closes its sessions");

    // Then the environment, last, with no session left.
    assert!(release_environment());
    assert!(!release_environment(), "released once");
    // After it no model loads, and says why.
    let rt = start(&s);
    let r = report(&rt, OR_DURATION);
    assert_eq!(r.reason, Some(Reason::LibraryMissing), "{r:?}");
    assert!(r.detail.unwrap().contains("released"));
    drop(rt);
    // The process exits now, with nothing of ONNX Runtime left open.
}

#[test]
fn models_check_refuses_bad_batch_sizes_and_tf32_without_cuda_with_exit_64() {
    for args in [
        &["models", "check", "--batches", "0"][..],
        &["models", "check", "--batches", "1,x"],
        &["models", "check", "--batches", "2000000"],
        &["models", "check", "--batches", ""],
        &["models", "check", "--tf32"],
    ] {
        let (code, stdout, stderr) = crate::support::run_cli(args);
        assert_eq!(code, 64, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("--batches") || stderr.contains("--cuda"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
