//! Signed bundles through the real `hms-config` binary: `keygen`, `sign` and
//! `verify` of a configuration and of the committed model set (`models/`),
//! and the bundles `verify` refuses (another key, a changed file, a truncated
//! file, an unsafe name), the inputs `sign` refuses (lint errors, symlinks, no
//! manifest) and the files `keygen` and `sign` never replace.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use firmware_config::bundle::{self, BundleError, Hospital, Kind};
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

fn hms_config(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hms-config"))
        .args(args)
        .output()
        .expect("run hms-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hms-config` with string arguments.
fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    hms_config(&args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A temp dir with a key pair made by `hms-config keygen`: (dir, KEY, KEY.pub).
fn keyed() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("bundle.pk8");
    let (code, out, err) = run(&["keygen", "--out", s(&key)]);
    assert_eq!(code, 0, "{out}{err}");
    let public = dir.path().join("bundle.pk8.pub");
    (dir, key, public)
}

fn public_of(path: &Path) -> [u8; 32] {
    std::fs::read(path)
        .expect("read KEY.pub")
        .try_into()
        .expect("32 bytes")
}

/// A clean configuration file in `dir`.
fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("hospital.toml");
    std::fs::write(&path, firmware_config::example(12, "st-mary")).expect("write config");
    path
}

/// A new envelope for `payload`, signed with the PKCS#8 key at `key`.
fn resigned(payload: &str, key: &Path) -> Vec<u8> {
    let pkcs8 = std::fs::read(key).expect("read KEY");
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("PKCS#8");
    let public = bundle::public_key(&pkcs8).expect("public key");
    let envelope = serde_json::json!({
        "payload": payload,
        "signature": STANDARD.encode(pair.sign(payload.as_bytes()).as_ref()),
        "key": bundle::key_id(&public),
    });
    serde_json::to_vec(&envelope).expect("JSON")
}

fn payload_of(bundle: &Path) -> (Value, Value) {
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(bundle).expect("read bundle")).expect("JSON");
    let payload: Value =
        serde_json::from_str(envelope["payload"].as_str().expect("payload")).expect("JSON");
    (envelope, payload)
}

#[test]
fn keygen_writes_a_private_pkcs8_key_and_the_raw_public_key() {
    let (_dir, key, public) = keyed();
    let pkcs8 = std::fs::read(&key).unwrap();
    assert_eq!(bundle::public_key(&pkcs8).unwrap(), public_of(&public));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn keygen_never_replaces_a_key() {
    let (dir, key, public) = keyed();
    let before = (
        std::fs::read(&key).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    let (code, out, err) = run(&["keygen", "--out", s(&key)]);
    assert_eq!(code, 73, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "hms-config: {} exists; a key is never replaced\n",
            key.display()
        )
    );
    assert_eq!(
        before,
        (
            std::fs::read(&key).unwrap(),
            std::fs::read(&public).unwrap()
        )
    );
    // Only the public key left behind: still refused, and no private key made.
    let other = dir.path().join("other.pk8");
    std::fs::write(dir.path().join("other.pk8.pub"), [0u8; 32]).unwrap();
    let (code, _, err) = run(&["keygen", "--out", s(&other)]);
    assert_eq!(code, 73);
    assert!(err.contains("other.pk8.pub exists"), "{err}");
    assert!(!other.exists());
}

#[test]
fn a_config_bundle_round_trips() {
    let (dir, key, public) = keyed();
    let config = config_file(dir.path());
    let out_path = dir.path().join("config.bundle");
    let (code, out, err) = run(&[
        "sign",
        "--key",
        s(&key),
        "--version",
        "7",
        "--out",
        s(&out_path),
        s(&config),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let id = bundle::key_id(&public_of(&public));
    assert_eq!(
        out,
        format!(
            "{}: config version 7 for *, 1 file, signed by {id}\n",
            out_path.display()
        )
    );
    let (code, out, err) = run(&["verify", "--key", s(&public), s(&out_path)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("ok: config version 7 for *, 1 file, signed by {id}\n")
    );
    assert_eq!(err, "");

    let b = bundle::verify(&std::fs::read(&out_path).unwrap(), &[public_of(&public)]).unwrap();
    assert_eq!(b.kind, Kind::Config);
    assert_eq!(b.hospital, Hospital::Any);
    assert_eq!(b.files.len(), 1);
    assert_eq!(b.files[0].name, "hospital.toml");
    assert_eq!(b.files[0].bytes, std::fs::read(&config).unwrap());
    let age = jiff::Timestamp::now().duration_since(b.created_at);
    assert!(age.as_secs() < 600, "created_at is now: {}", b.created_at);
}

#[test]
fn the_committed_model_set_round_trips_without_its_subdirectories() {
    let (dir, key, public) = keyed();
    let out_path = dir.path().join("models.bundle");
    let models = models_dir();
    let (code, out, err) = run(&[
        "sign",
        "--key",
        s(&key),
        "--version",
        "2026",
        "--out",
        s(&out_path),
        s(&models),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for sub in ["cards", "test", "train"] {
        assert!(
            err.contains(&format!("note: {sub}/ is a subdirectory")),
            "{err}"
        );
    }
    let (code, out, _) = run(&["verify", "--key", s(&public), s(&out_path)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: model_set version 2026 for *, "),
        "{out}"
    );

    let b = bundle::verify(&std::fs::read(&out_path).unwrap(), &[public_of(&public)]).unwrap();
    assert_eq!(b.kind, Kind::ModelSet);
    let mut expected: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    expected.sort();
    assert!(expected.contains(&"manifest.toml".to_owned()));
    let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, expected);
    assert!(
        out.contains(&format!(", {} files, ", expected.len())),
        "{out}"
    );
    for f in &b.files {
        assert_eq!(
            f.bytes,
            std::fs::read(models.join(&f.name)).unwrap(),
            "{}",
            f.name
        );
    }
}

/// A signed config bundle in `dir`: its path.
fn signed_config(dir: &Path, key: &Path, hospital: &str) -> PathBuf {
    let config = config_file(dir);
    let out_path = dir.join(format!("{}.bundle", hospital.replace('*', "all")));
    let (code, out, err) = run(&[
        "sign",
        "--key",
        s(key),
        "--version",
        "1",
        "--hospital",
        hospital,
        "--out",
        s(&out_path),
        s(&config),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    out_path
}

#[test]
fn another_hospitals_id_is_carried_through() {
    let (dir, key, public) = keyed();
    let path = signed_config(dir.path(), &key, "other-hospital");
    let (code, out, _) = run(&["verify", "--key", s(&public), s(&path)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: config version 1 for other-hospital, "),
        "{out}"
    );
    let (_, payload) = payload_of(&path);
    assert_eq!(payload["hospital"], "other-hospital");
}

#[test]
fn a_bundle_signed_with_another_key_is_refused() {
    let (dir, key, public) = keyed();
    let (_other_dir, _, other_public) = keyed();
    let path = signed_config(dir.path(), &key, "*");
    let (code, out, _) = run(&["verify", "--key", s(&other_public), s(&path)]);
    assert_eq!(code, 1);
    let (envelope, _) = payload_of(&path);
    assert_eq!(
        out,
        format!(
            "refused: the bundle is signed by key \"{}\", which is not a trusted key\n",
            envelope["key"].as_str().unwrap()
        )
    );
    // Trusting both keys, it verifies.
    let (code, out, _) = run(&[
        "verify",
        "--key",
        s(&other_public),
        "--key",
        s(&public),
        s(&path),
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_changed_file_is_refused() {
    let (dir, key, public) = keyed();
    let path = signed_config(dir.path(), &key, "*");
    let (mut envelope, mut payload) = payload_of(&path);
    let tampered = firmware_config::example(13, "st-mary");
    payload["files"][0]["content"] = STANDARD.encode(&tampered).into();
    envelope["payload"] = payload.to_string().into();

    // The payload changed under its signature.
    let changed = dir.path().join("changed.bundle");
    std::fs::write(&changed, serde_json::to_vec(&envelope).unwrap()).unwrap();
    let (code, out, _) = run(&["verify", "--key", s(&public), s(&changed)]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("refused: the signature does not verify with trusted key "),
        "{out}"
    );

    // Signed again by the trusted key, the file still does not match its size
    // and digest; the contents are not quoted.
    let resigned_path = dir.path().join("resigned.bundle");
    payload["files"][0]["size"] = tampered.len().into();
    std::fs::write(&resigned_path, resigned(&payload.to_string(), &key)).unwrap();
    let (code, out, _) = run(&["verify", "--key", s(&public), s(&resigned_path)]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "refused: file \"hospital.toml\" does not match its SHA-256 (the bundle was altered?)\n"
    );
}

#[test]
fn a_truncated_bundle_is_refused_as_truncated() {
    let (dir, key, public) = keyed();
    let path = signed_config(dir.path(), &key, "*");
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.bundle");
    for len in [0, 1, bytes.len() / 2, bytes.len() - 2] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let (code, out, _) = run(&["verify", "--key", s(&public), s(&cut)]);
        assert_eq!(code, 1);
        assert_eq!(
            out,
            format!(
                "refused: the bundle is truncated: its JSON ends early after {len} bytes (an incomplete copy?)\n"
            )
        );
    }
}

#[test]
fn an_unsafe_file_name_is_refused_by_verify() {
    let (dir, key, public) = keyed();
    let content = b"version = \"1\"\n";
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    for name in ["../manifest.toml", "sub/manifest.toml", ".manifest.toml"] {
        let payload = serde_json::json!({
            "kind": "model_set", "version": 1, "hospital": "*",
            "created_at": "2026-12-05T15:00:00Z",
            "files": [
                {"name": "manifest.toml", "sha256": sha256, "size": content.len(),
                 "content": STANDARD.encode(content)},
                {"name": name, "sha256": sha256, "size": content.len(),
                 "content": STANDARD.encode(content)},
            ],
        });
        let path = dir.path().join("unsafe.bundle");
        std::fs::write(&path, resigned(&payload.to_string(), &key)).unwrap();
        let (code, out, _) = run(&["verify", "--key", s(&public), s(&path)]);
        assert_eq!(code, 1, "{name}");
        assert!(
            out.starts_with(&format!("refused: file name {name:?} ")),
            "{name}: {out}"
        );
        assert!(
            out.ends_with("; a bundle holds only plain file names\n"),
            "{out}"
        );
        let e = bundle::verify(&std::fs::read(&path).unwrap(), &[public_of(&public)]);
        assert!(matches!(e, Err(BundleError::UnsafeName { .. })), "{e:?}");
    }
}

#[test]
fn a_config_with_a_lint_error_is_not_signed() {
    let (dir, key, _) = keyed();
    let config = dir.path().join("broken.toml");
    let text =
        firmware_config::example(12, "st-mary").replace("[listen]", "[listen]\nhttp_port = 1");
    std::fs::write(&config, text).unwrap();
    let out_path = dir.path().join("broken.bundle");
    let (code, out, err) = run(&[
        "sign",
        "--key",
        s(&key),
        "--version",
        "1",
        "--out",
        s(&out_path),
        s(&config),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{}:", config.display()))
            && err.contains(": error: unknown key `http_port`"),
        "{err}"
    );
    assert!(
        err.ends_with("it does not pass `hms-config lint`\n"),
        "{err}"
    );
    assert_eq!(out, format!("{}: 1 error, 0 warnings\n", config.display()));
    assert!(!out_path.exists());
}

#[test]
fn a_model_set_with_a_symlink_or_without_a_manifest_is_not_signed() {
    let (dir, key, _) = keyed();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    std::fs::write(set.join("model.onnx"), b"onnx").unwrap();
    let out_path = dir.path().join("set.bundle");
    let sign = || {
        run(&[
            "sign",
            "--key",
            s(&key),
            "--version",
            "1",
            "--out",
            s(&out_path),
            s(&set),
        ])
    };
    let (code, _, err) = sign();
    assert_eq!(code, 1);
    assert!(err.ends_with("a model set needs manifest.toml\n"), "{err}");

    std::fs::write(set.join("manifest.toml"), b"version = \"1\"\n").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("bundle.pk8"), set.join("key.onnx")).unwrap();
        let (code, _, err) = sign();
        assert_eq!(code, 1);
        assert!(err.contains("key.onnx is a symbolic link"), "{err}");
        assert!(!out_path.exists());
        std::fs::remove_file(set.join("key.onnx")).unwrap();
    }
    let (code, out, err) = sign();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("model_set version 1 for *, 2 files"), "{out}");
}

#[test]
fn sign_never_replaces_a_bundle() {
    let (dir, key, _) = keyed();
    let config = config_file(dir.path());
    let out_path = dir.path().join("config.bundle");
    std::fs::write(&out_path, b"earlier").unwrap();
    let (code, _, err) = run(&[
        "sign",
        "--key",
        s(&key),
        "--version",
        "1",
        "--out",
        s(&out_path),
        s(&config),
    ]);
    assert_eq!(code, 73);
    assert!(err.contains("exists; a bundle is never replaced"), "{err}");
    assert_eq!(std::fs::read(&out_path).unwrap(), b"earlier");
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["keygen"][..],
        &["sign", "--key", "k", "--version", "0", "--out", "b", "f"],
        &[
            "sign",
            "--key",
            "k",
            "--version",
            "1",
            "--hospital",
            "bad id",
            "--out",
            "b",
            "f",
        ],
        &["sign", "--key", "k", "--version", "1", "f"],
        &["verify", "bundle"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 64, "{args:?}: {out}{err}");
    }
}

#[test]
fn a_public_key_that_is_not_32_bytes_is_an_error() {
    let (dir, key, _) = keyed();
    let path = signed_config(dir.path(), &key, "*");
    let (code, out, err) = run(&["verify", "--key", s(&key), s(&path)]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains("is not a public key"), "{err}");
}
