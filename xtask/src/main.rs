//! Project automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: tidy, `cargo fmt --check`, clippy with
//!   `-D warnings`, and the whole test suite (with `CI=true`, under
//!   `cargo nextest` with per-test time limits).
//! - `test`: the whole test suite as a developer runs it (tests that need a
//!   missing service skip, and are listed at the end).
//! - `demo [--empty]`: builds the appliance and runs the 40-bed demo
//!   hospital with a simulated day (`demo-day`), printing where to sign in.
//! - `bench`: builds in release mode and runs the load generator against the
//!   2,000-bed hospital; prints JSON results (see docs/performance.md).
//! - `browser`: the web pages' tests in a real browser: kiosk app and fleet console (also part of
//!   `ci`; installs chromium and the npm packages they need).
//! - `tidy`: checks the architecture invariants that are about the code itself.

mod bench;
mod browser;
mod demo;
mod empi_eval;
mod fleet_bench;
mod gpu_pack;
mod kiosks_bench;
mod models_bench;
mod patients_bench;
mod region_bench;
mod sync_bench;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, failing with its name if it fails.
fn run(mut cmd: Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: running {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Makes sure the services the tests use are up: PostgreSQL on
/// 127.0.0.1:5432 (started with the machine's cluster tools when it is not)
/// and Mosquitto on 127.0.0.1:1883 (started as a daemon when it is not).
fn services() -> anyhow::Result<()> {
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let wait_for = |addr: SocketAddr, name: &str, start: &str| -> anyhow::Result<()> {
        let up = || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
        if up() {
            return Ok(());
        }
        eprintln!("xtask: {name} is not listening on {addr}; starting it");
        let _ = Command::new("sh").args(["-c", start]).status();
        for _ in 0..60 {
            if up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("{name} is needed by the tests and could not be started on {addr}")
    };
    wait_for(
        ([127, 0, 0, 1], 5432).into(),
        "PostgreSQL",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start",
    )?;
    wait_for(
        ([127, 0, 0, 1], 1883).into(),
        "Mosquitto",
        "(command -v mosquitto >/dev/null || apt-get install -y -q mosquitto >/dev/null) && \
         mosquitto -d -p 1883 2>/dev/null || /usr/sbin/mosquitto -d -p 1883",
    )
}

/// The ONNX Runtime version the appliance is built for (`ort` 2.0 rc.15).
const ORT_VERSION: &str = "1.31.0";

/// Puts the ONNX Runtime shared library in `target/onnxruntime/` (from the
/// `onnxruntime` wheel on PyPI, unpacked; no Python environment is made)
/// and returns its path. Already there: nothing is fetched.
fn ort_library() -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("onnxruntime");
    let lib = dir.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if lib.is_file() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir)?;
    let wheels = dir.join("wheel");
    eprintln!("xtask: fetching the onnxruntime {ORT_VERSION} wheel from PyPI");
    run({
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("-d")
        .arg(&wheels);
        c
    })
    .context("python3 -m pip download onnxruntime (python3 with pip is needed once)")?;
    // Unpack only the shared libraries (a wheel is a zip file).
    run({
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import sys, zipfile, glob, os\n\
             out = sys.argv[1]\n\
             for w in glob.glob(os.path.join(out, 'wheel', 'onnxruntime-*.whl')):\n\
             \x20   z = zipfile.ZipFile(w)\n\
             \x20   for n in z.namelist():\n\
             \x20       if n.startswith('onnxruntime/capi/libonnxruntime'):\n\
             \x20           open(os.path.join(out, os.path.basename(n)), 'wb').write(z.read(n))\n",
        ])
        .arg(&dir);
        c
    })?;
    if !lib.is_file() {
        bail!("the onnxruntime wheel held no {}", lib.display());
    }
    Ok(lib)
}

fn ci() -> anyhow::Result<()> {
    tidy::check(&root())?;
    services()?;
    let ort = ort_library()?;
    run({
        let mut c = cargo();
        c.args(["fmt", "--all", "--check"]);
        c
    })?;
    run({
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]);
        c
    })?;
    // The API docs build without a broken or private link.
    run({
        let mut c = cargo();
        c.args(["doc", "--workspace", "--no-deps", "--locked"])
            .env("RUSTDOCFLAGS", "-D warnings");
        c
    })?;
    test_all(&ort, true)?;
    browser::run_tests(&root())?;
    eprintln!("xtask: ci passed");
    Ok(())
}

/// Makes sure `cargo nextest` is there (it is on the CI machine; installed
/// from crates.io otherwise).
fn nextest() -> anyhow::Result<()> {
    let there = cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !there {
        eprintln!("xtask: cargo-nextest is missing; installing it");
        run({
            let mut c = cargo();
            c.args(["install", "cargo-nextest", "--locked"]);
            c
        })
        .context("installing cargo-nextest")?;
    }
    Ok(())
}

/// Runs every test of the workspace with `cargo nextest` (each test under
/// the time limits of `.config/nextest.toml`) and the doc tests, with
/// `--locked`, `ORT_DYLIB_PATH` naming the ONNX Runtime library, and
/// `UPDATE_EXPECT` and `PROPTEST_CASES` cleared so that no run rewrites an
/// expectation or shrinks a property test. `ci`: with `CI=true`, where a
/// test that needs a missing service fails instead of skipping. Otherwise
/// skipped tests are listed after the run.
fn test_all(ort: &Path, ci: bool) -> anyhow::Result<()> {
    nextest()?;
    let skipped = target_dir().join("skipped-tests.txt");
    let _ = std::fs::remove_file(&skipped);
    let setup = |c: &mut Command| {
        c.env("ORT_DYLIB_PATH", ort)
            .env("HMS_SKIPPED_LOG", &skipped)
            .env_remove("UPDATE_EXPECT")
            .env_remove("PROPTEST_CASES");
        if ci {
            c.env("CI", "true");
        }
    };
    let tests = run({
        let mut c = cargo();
        c.args([
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--locked",
            "--no-fail-fast",
            "--profile",
            "ci",
        ]);
        setup(&mut c);
        c
    });
    let docs = run({
        let mut c = cargo();
        c.args(["test", "--doc", "--workspace", "--locked"]);
        setup(&mut c);
        c
    });
    let skips = std::fs::read_to_string(&skipped).unwrap_or_default();
    let skips: Vec<&str> = skips.lines().filter(|l| !l.is_empty()).collect();
    if skips.is_empty() {
        eprintln!("xtask: no test skipped");
    } else {
        eprintln!("xtask: {} test(s) skipped:", skips.len());
        for s in &skips {
            eprintln!("  SKIPPED {s}");
        }
    }
    tests?;
    docs?;
    if ci && !skips.is_empty() {
        bail!("tests skipped under CI=true");
    }
    Ok(())
}

fn build_edge(release: bool) -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "edge-node", "--bin", "hms-edge"]);
    if release {
        c.arg("--release");
    }
    run(c)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("hms-edge"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Creates a token with the appliance's CLI; the token is its last stdout
/// line. A live token of that name (an earlier run on the same data dir,
/// like the demo's) is revoked first: no two live tokens share a name.
fn create_token(bin: &Path, data_dir: &Path, role: &str, name: &str) -> anyhow::Result<String> {
    // Exit 64 (no such token) on a fresh data dir: nothing to revoke.
    Command::new(bin)
        .args(["token", "revoke", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .context("running hms-edge token revoke")?;
    let out = Command::new(bin)
        .args([
            "token",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .context("running hms-edge token create")?;
    if !out.status.success() {
        bail!(
            "hms-edge token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    stdout
        .lines()
        .last()
        .map(|l| l.trim().to_owned())
        .context("no token printed")
}

/// A kiosk sign-in code for the token `name` (`hms-edge kiosk pair`; the
/// code is its last stdout line).
fn pair_code(bin: &Path, data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["kiosk", "pair", "--name", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .context("running hms-edge kiosk pair")?;
    if !out.status.success() {
        bail!(
            "hms-edge kiosk pair failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| l.trim().to_owned())
        .context("hms-edge kiosk pair printed no code")
}

/// `cargo xtask models-train`: makes the pinned training environment
/// (`target/models-venv`, from `models/train/requirements.txt`), runs the
/// training script into `target/models-retrained/`, and checks that every
/// model file comes out byte for byte as committed (same sha256).
fn models_train() -> anyhow::Result<()> {
    let venv = target_dir().join("models-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        run({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
    }
    run({
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(root().join("models/train/requirements.txt"));
        c
    })?;
    let out = target_dir().join("models-retrained");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    run({
        let mut c = Command::new(&python);
        c.arg(root().join("models/train/train.py"))
            .arg("--out")
            .arg(&out);
        c
    })?;
    let mut differ = vec![];
    for f in [
        "bed_demand.onnx",
        "or_duration.onnx",
        "manifest.toml",
        "testvectors.json",
    ] {
        let a = std::fs::read(root().join("models").join(f))?;
        let b = std::fs::read(out.join(f)).with_context(|| format!("{f} was not written"))?;
        println!("{f}: {}", if a == b { "identical" } else { "DIFFERS" });
        if a != b {
            differ.push(f);
        }
    }
    if !differ.is_empty() {
        bail!("retrained files differ from the committed ones: {differ:?}");
    }
    Ok(())
}

/// Runs the HL7 mutation fuzzer (release build) for a while; findings are
/// kept under edge-node/test_data/fuzz/ and replayed by the test suite.
fn fuzz(args: &[String]) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "edge-node",
        "--example",
        "fuzz_hl7",
        "--",
    ])
    .args(args);
    run(c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => ort_library().and_then(|ort| test_all(&ort, false)),
        Some("demo") => demo::run(&root(), &args[1..]),
        Some("demo-day") => demo::day(&args[1..]),
        Some("bench") if args.get(1).map(String::as_str) == Some("or-day") => {
            bench::or_day(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("mllp") => {
            bench::mllp(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("kiosks") => {
            kiosks_bench::run(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("models") => {
            models_bench::run(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("patients") => {
            patients_bench::run(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("fleet-outage") => {
            fleet_bench::run(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("region") => {
            region_bench::run(&root(), &args[2..])
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("sync") => {
            sync_bench::run(&root(), &args[2..])
        }
        Some("bench") => bench::run(&root(), &args[1..]),
        Some("tidy") => tidy::check(&root()),
        Some("browser") => browser::run_tests(&root()),
        Some("empi-eval") => empi_eval::run(&root(), &args[1..]),
        Some("gpu-check") => gpu_pack::check(&root()),
        Some("gpu-pack") => gpu_pack::pack(&root()).map(|_| ()),
        Some("models-train") => models_train(),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test | browser | demo [--empty] | bench [--quick] [--runs N] | bench mllp [--runs N] | bench or-day [--runs N] | bench fleet-outage [--runs N] | bench sync [--events N] [--runs N] [--backend B] | bench region [--hospitals N] [--events N] [--runs N] | bench models [--runs N] | bench patients [--patients N] [--runs N] | bench kiosks [--runs N] [--streams N] | fuzz [SECONDS] [SEED] | empi-eval [--dataset febrl4|febrl3|synthetic|pseudopeople] [--with-ssn] [--pairs A-B,…] [--seeds 1,2,3] | gpu-pack | gpu-check | models-train | tidy>"
            );
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
