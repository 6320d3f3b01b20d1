//! Model-set manifests name only plain files inside their set: `hms-edge
//! models install` refuses anything else with exit 64 and follows nothing,
//! and an appliance whose installed set names such a file reports it
//! instead of reading it.

use std::path::{Path, PathBuf};

use edge_node::inference::manifest::sha256_file;

use crate::support::{TestApp, cli_token, run_cli};

/// The committed model set.
fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A copy of the committed set's files in `dir`, with `bed_demand`'s file
/// named `file` and its sha256 that of `target` (what a set that means
/// harm would claim, so that only the name check stands in its way).
fn evil_set(dir: &Path, file: &str, target: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(models()).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let committed = sha256_file(&models().join("bed_demand.onnx")).unwrap();
    let text = std::fs::read_to_string(dir.join("manifest.toml"))
        .unwrap()
        .replacen("file = \"bed_demand.onnx\"", &format!("file = {file:?}"), 1)
        .replacen(&committed, &sha256_file(target).unwrap(), 1);
    assert!(text.contains(&format!("file = {file:?}")));
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
}

#[test]
fn models_install_refuses_a_manifest_naming_files_outside_its_set_with_exit_64() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The appliance's credentials, which the manifests below aim at.
    cli_token(&data, "viewer", "kiosk");
    let auth = data.join("auth.sqlite");
    let auth_before = std::fs::read(&auth).unwrap();
    // `../../auth.sqlite` from the set's directory.
    let outside = tmp.path().join("auth.sqlite");
    std::fs::write(&outside, b"not a model").unwrap();
    let d = data.to_str().unwrap();

    let dotdot = tmp.path().join("a/set");
    evil_set(&dotdot, "../../auth.sqlite", &outside);
    let absolute = tmp.path().join("absolute");
    evil_set(&absolute, auth.to_str().unwrap(), &auth);
    let symlink = tmp.path().join("symlink");
    evil_set(&symlink, "bed_demand.onnx", &outside);
    std::fs::remove_file(symlink.join("bed_demand.onnx")).unwrap();
    std::os::unix::fs::symlink(&outside, symlink.join("bed_demand.onnx")).unwrap();
    let directory = tmp.path().join("directory");
    evil_set(
        &directory,
        "bed_demand.onnx",
        &models().join("bed_demand.onnx"),
    );
    std::fs::remove_file(directory.join("bed_demand.onnx")).unwrap();
    std::fs::create_dir(directory.join("bed_demand.onnx")).unwrap();

    for (set, says) in [
        (
            &dotdot,
            "\"../../auth.sqlite\" leads out of the set with `..`".to_owned(),
        ),
        (&absolute, format!("{auth:?} is an absolute path")),
        (
            &symlink,
            "\"bed_demand.onnx\" is a symlink leading out of the set".to_owned(),
        ),
        (
            &directory,
            "\"bed_demand.onnx\" is not a regular file".to_owned(),
        ),
    ] {
        let (code, out, err) =
            run_cli(&["models", "install", set.to_str().unwrap(), "--data-dir", d]);
        assert_eq!(code, 64, "{}: {out}{err}", set.display());
        assert!(
            err.contains("model bed_demand: file") && err.contains(&says),
            "{}: {err}",
            set.display()
        );
        assert!(
            err.contains("only name plain files inside the set"),
            "{err}"
        );
        assert!(
            !data.join("models").join("CURRENT").exists(),
            "nothing installed"
        );
        assert_eq!(
            std::fs::read(&auth).unwrap(),
            auth_before,
            "auth.sqlite untouched"
        );
    }
    // The committed set still installs.
    let (code, out, err) = run_cli(&[
        "models",
        "install",
        models().to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_manifest_naming_a_file_outside_its_set_is_reported_not_followed() {
    let app = TestApp::start_with(&[("U", 4, 2)], |cfg| {
        // As if an older version had installed it, or someone edited it.
        let set = cfg.store.data_dir.join("models").join("evil-1");
        evil_set(&set, "../../auth.sqlite", &models().join("bed_demand.onnx"));
        std::fs::write(
            cfg.store.data_dir.join("models").join("CURRENT"),
            "evil-1\n",
        )
        .unwrap();
    })
    .await;
    let mut c = app.conn(&app.viewer).await;
    let h = c.get("/health").await.unwrap().json().unwrap();
    assert_eq!(h["status"], "ok", "models never degrade the appliance: {h}");
    let models = &h["components"]["models"];
    assert_eq!(models["status"], "degraded", "{h}");
    for m in models["models"].as_array().unwrap() {
        assert_eq!(m["state"], "disabled", "{m}");
        assert_eq!(m["reason"], "manifest_mismatch", "{m}");
        let detail = m["detail"].as_str().unwrap();
        assert!(
            detail.contains("\"../../auth.sqlite\" leads out of the set"),
            "{detail}"
        );
    }
    // The fallback answers, and says why.
    let v = c
        .get("/api/v1/forecast/units/U")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&v["source"], &v["reason"]),
        (&"fallback".into(), &"manifest_mismatch".into()),
        "{v}"
    );
    app.stop().await;
}
