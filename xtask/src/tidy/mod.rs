//! `cargo xtask tidy`: architecture invariants checked against the source tree.
//!
//! Each check states an absence (ARCHITECTURE.md, "Invariants"), and each
//! problem is reported as `path[:line]: what is wrong`:
//! - `domain` and `firmware-config` depend on no IO crate (tokio, SQLite, HTTP);
//! - `edge-node` and `cloud-sync` never depend on each other;
//! - the appliance's code holds no signing key type (its sync identity key is
//!   used only through `cloud-sync-client`);
//! - every Rust file opens with a `//!` module doc;
//! - no placeholders or debugging leftovers (`todo!`, `unimplemented!`, `dbg!`,
//!   ignored tests);
//! - no sans-IO module (`domain`, `firmware-config`, the appliance's `board`
//!   and `integration` except its MLLP client) names an IO crate
//!   (`tokio`, `rusqlite`, `axum`, ...), tests included ([`sans_io`]);
//! - no SQL string literal and no `Connection::open*` in `edge-node/src` or
//!   `cloud-sync/src` outside their `store/` modules ([`sql`]);
//! - no cycle between the top-level modules of a crate, nor between the
//!   sibling modules of the appliance's `store`, `integration`, `sync`,
//!   `inference` and the cloud's `store` and `http` (the binary and
//!   `#[cfg(test)]` harness modules may use anything; [`cycles`]).
//!
//! The code-reading rules see code through a small Rust [`lexer`], so
//! comments and string literals never count as code, and code never counts
//! as a string.

pub mod cycles;
pub mod lexer;
pub mod sans_io;
pub mod sql;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The problems found so far, one line each.
pub type Problems = Vec<String>;

/// IO crates as manifests name them.
const IO_CRATES: &[&str] = &[
    "tokio",
    "rusqlite",
    "axum",
    "hyper",
    "reqwest",
    "tokio-postgres",
    "postgres",
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

/// The Rust files under `dir` (none if it does not exist), `target/` and
/// hidden folders skipped.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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

/// `path` relative to `base`, with `/` separators.
pub fn rel(base: &Path, path: &Path) -> String {
    let p = path.strip_prefix(base).unwrap_or(path);
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The rules about manifests and whole files.
fn files_and_manifests(root: &Path, problems: &mut Problems) -> anyhow::Result<usize> {
    for krate in ["domain", "firmware-config"] {
        for dep in dependencies(&root.join(krate).join("Cargo.toml"))? {
            if IO_CRATES.contains(&dep.as_str()) {
                problems.push(format!(
                    "{krate}/Cargo.toml: must not depend on the IO crate {dep}"
                ));
            }
        }
    }
    for (krate, forbidden) in [("edge-node", "cloud-sync"), ("cloud-sync", "edge-node")] {
        if dependencies(&root.join(krate).join("Cargo.toml"))?
            .iter()
            .any(|d| d == forbidden)
        {
            problems.push(format!(
                "{krate}/Cargo.toml: must not depend on {forbidden}"
            ));
        }
    }
    let mut files = vec![];
    for dir in [
        "domain",
        "firmware-config",
        "edge-node",
        "cloud-sync",
        "web",
        "tests",
        "xtask",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let placeholders = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
    ];
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let path = rel(root, f);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!("{path}:1: must open with a //! module doc"));
        }
        for (n, line) in text.lines().enumerate() {
            for p in placeholders {
                if line.contains(p) {
                    problems.push(format!("{path}:{}: contains {p}", n + 1));
                }
            }
            if path.starts_with("edge-node/src") && line.contains(concat!("Ed25519", "KeyPair")) {
                problems.push(format!(
                    "{path}:{}: the appliance must not hold signing keys",
                    n + 1
                ));
            }
        }
    }
    Ok(files.len())
}

/// Every problem in the tree at `root`, and how many Rust files were read.
pub fn problems(root: &Path) -> anyhow::Result<(Problems, usize)> {
    let mut problems = vec![];
    let files = files_and_manifests(root, &mut problems)?;
    sans_io::check(root, &mut problems)?;
    sql::check(root, &mut problems)?;
    cycles::check(root, &mut problems)?;
    Ok((problems, files))
}

/// Runs every check; fails listing all violations.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let (problems, files) = problems(root)?;
    if problems.is_empty() {
        eprintln!("xtask: tidy ok ({files} Rust files)");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        bail!("tidy found {} problem(s)", problems.len())
    }
}
