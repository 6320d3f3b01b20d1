//! `cargo xtask tidy`: architecture invariants checked against the source tree.
//!
//! Each check states an absence (ARCHITECTURE.md, "Invariants"):
//! - `domain` and `firmware-config` depend on no IO crate (tokio, SQLite, HTTP);
//! - `edge-node` and `cloud-sync` never depend on each other;
//! - the appliance's code holds no signing key type (its sync identity key is
//!   used only through `cloud-sync-client`);
//! - every Rust file opens with a `//!` module doc;
//! - no placeholders or debugging leftovers (`todo!`, `unimplemented!`, `dbg!`,
//!   ignored tests).

use std::path::{Path, PathBuf};

use anyhow::bail;

const IO_CRATES: &[&str] = &[
    "tokio",
    "rusqlite",
    "axum",
    "hyper",
    "reqwest",
    "tokio-postgres",
    "sqlx",
    "rumqttc",
    "ort",
];

/// Names of the `[dependencies]` of a manifest (not dev-dependencies).
fn dependencies(manifest: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)?;
    let mut out = vec![];
    let mut in_deps = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = t.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").to_owned();
            if !name.is_empty() && !name.starts_with('#') {
                out.push(name);
            }
        }
    }
    Ok(out)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Runs every check; fails listing all violations.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut problems = vec![];
    for krate in ["domain", "firmware-config"] {
        for dep in dependencies(&root.join(krate).join("Cargo.toml"))? {
            if IO_CRATES.contains(&dep.as_str()) {
                problems.push(format!("{krate} must not depend on the IO crate {dep}"));
            }
        }
    }
    for (krate, forbidden) in [("edge-node", "cloud-sync"), ("cloud-sync", "edge-node")] {
        if dependencies(&root.join(krate).join("Cargo.toml"))?
            .iter()
            .any(|d| d == forbidden)
        {
            problems.push(format!("{krate} must not depend on {forbidden}"));
        }
    }
    let mut files = vec![];
    for dir in [
        "domain",
        "firmware-config",
        "edge-node",
        "cloud-sync",
        "tests",
        "xtask",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let placeholders = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
    ];
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!("{rel}: must open with a //! module doc"));
        }
        for p in placeholders {
            if text.contains(p) {
                problems.push(format!("{rel}: contains {p}"));
            }
        }
        if rel.starts_with("edge-node/src") && text.contains(concat!("Ed25519", "KeyPair")) {
            problems.push(format!("{rel}: the appliance must not hold signing keys"));
        }
    }
    if problems.is_empty() {
        eprintln!("xtask: tidy ok ({} Rust files)", files.len());
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        bail!("tidy found {} problem(s)", problems.len())
    }
}
