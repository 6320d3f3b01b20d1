//! `cargo xtask browser`: the web pages' tests in a real browser (the
//! kiosk app and the fleet console: `edge-node/tests/browser/*.test.mjs`,
//! against debug builds of `hms-edge` and `hms-cloud`; Node's test runner driving
//! Debian's `chromium` through playwright-core, axe-core in every page).
//! `cargo xtask ci` runs them after the Rust tests.
//!
//! Sets up what it needs: Debian's `chromium` package when
//! `/usr/bin/chromium` is missing (`apt-get`, as root), and the pinned npm
//! packages of `package-lock.json` (`npm ci`) when they are not installed.
//! Screenshots of every view are written under `target/screenshots/`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cargo, run, target_dir};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs Debian's chromium when it is missing.
fn chromium() -> anyhow::Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    eprintln!("xtask: {CHROMIUM} is missing; installing Debian's chromium package");
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        c
    };
    run(apt(&["update", "-q"])).context("apt-get update (installing chromium needs root)")?;
    run(apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "chromium",
        "fonts-dejavu-core",
    ]))
    .context("apt-get install chromium")?;
    if !Path::new(CHROMIUM).exists() {
        bail!("chromium was installed but {CHROMIUM} is not there");
    }
    Ok(())
}

/// Installs the locked npm packages when `node_modules` is older than the lock.
fn npm(dir: &Path) -> anyhow::Result<()> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(&dir.join("package-lock.json"));
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_some() && installed >= lock {
        return Ok(());
    }
    let mut c = Command::new("npm");
    c.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    run(c).context("npm ci (Node.js and npm are needed for the browser tests)")
}

/// Runs the browser tests against debug builds of `hms-edge` and `hms-cloud`.
pub fn run_tests(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("edge-node/tests/browser");
    chromium()?;
    npm(&dir)?;
    run({
        let mut c = cargo();
        c.args([
            "build",
            "--locked",
            "-p",
            "edge-node",
            "--bin",
            "hms-edge",
            "-p",
            "cloud-sync",
            "--bin",
            "hms-cloud",
            "-p",
            "firmware-config",
            "--bin",
            "hms-config",
        ]);
        c
    })?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    let shots = target_dir().join("screenshots");
    let mut c = Command::new("node");
    c.args(["--test", "--test-concurrency=1"])
        .args(&files)
        .current_dir(&dir)
        .env("HMS_EDGE_BIN", target_dir().join("debug/hms-edge"))
        .env("HMS_CLOUD_BIN", target_dir().join("debug/hms-cloud"))
        .env("HMS_CONFIG_BIN", target_dir().join("debug/hms-config"))
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOTS", &shots)
        .stdin(std::process::Stdio::null());
    run(c).context("the browser tests failed")?;
    eprintln!(
        "xtask: browser tests passed; screenshots in {}",
        shots.display()
    );
    Ok(())
}
