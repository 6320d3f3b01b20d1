//! Real processes in tests and benchmarks: `hms-edge` and `hms-cloud`
//! started as a user would, waited for on their ready line, stopped with
//! SIGTERM or SIGKILL, and never left behind (killed when dropped).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process gets to print its ready line.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// A child process whose stdout lines are read on a thread of their own;
/// SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` (stdin closed, stdout read here, stderr inherited).
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, lines })
    }

    /// Waits (up to [`READY_WITHIN`]) for a line starting with `prefix`
    /// and returns the rest of it; an error when the process ends or stays
    /// silent.
    pub fn line_after(&self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no line starting with {prefix:?} within {READY_WITHIN:?}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the process ended before printing {prefix:?}"));
                }
            }
        }
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (how a service manager stops it) and wait for the exit.
    pub fn terminate(mut self) -> std::io::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other("kill -TERM failed"));
        }
        self.child.wait()
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses of an `hms-edge ready http=http://HTTP [mllp=MLLP]` line
/// (`https=https://HTTP` with TLS)
/// (given without its `hms-edge ready ` prefix).
pub fn edge_addresses(rest: &str) -> Result<(SocketAddr, Option<SocketAddr>), String> {
    let mut parts = rest.split_whitespace();
    let http = parts
        .next()
        .and_then(|h| {
            h.strip_prefix("http=http://")
                .or_else(|| h.strip_prefix("https=https://"))
        })
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| format!("no HTTP address in {rest:?}"))?;
    let mllp = match parts.next() {
        Some(m) => Some(
            m.strip_prefix("mllp=")
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| format!("bad MLLP address in {rest:?}"))?,
        ),
        None => None,
    };
    Ok((http, mllp))
}

/// An `hms-edge run` started with `cmd` and ready: its HTTP and MLLP addresses.
pub fn start_edge(cmd: &mut Command) -> Result<(Proc, SocketAddr, Option<SocketAddr>), String> {
    let proc = Proc::spawn(cmd).map_err(|e| format!("starting hms-edge: {e}"))?;
    let rest = proc.line_after("hms-edge ready ")?;
    let (http, mllp) = edge_addresses(&rest)?;
    Ok((proc, http, mllp))
}

/// The workspace's binary `name`, beside the running test's executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). Panics
/// (a test failure) when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's executable: {e}"));
    let p = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_else(|| panic!("no target dir above {}", exe.display()));
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace builds them)",
        p.display()
    );
    p
}

/// Runs `cmd` (no standard input) to success; its standard output. Panics
/// (a test failure) with both outputs when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new appliance API token (`hms-edge token create`) of `role` named
/// `name` in the data dir `data`: the last line the command prints.
pub fn edge_token(data: &Path, role: &str, name: &str) -> String {
    run_ok(
        Command::new(bin("hms-edge"))
            .args([
                "token",
                "create",
                "--role",
                role,
                "--name",
                name,
                "--data-dir",
            ])
            .arg(data),
    )
    .lines()
    .last()
    .unwrap_or_default()
    .trim()
    .to_owned()
}

/// The demo hospital's configuration (`config/demo-hospital.toml`) with
/// its model set named by an absolute path, to be written anywhere.
pub fn demo_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("config/demo-hospital.toml"))
        .unwrap_or_else(|e| panic!("config/demo-hospital.toml: {e}"))
        .replace(
            "models = \"../models\"",
            &format!("models = \"{}\"", root.join("models").display()),
        )
}

/// Polls `f` every 100 ms until it gives a value, for up to `secs`; panics
/// (a test failure) naming `what` otherwise.
pub async fn until<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_name_the_addresses() {
        assert_eq!(
            edge_addresses("http=http://127.0.0.1:8080 mllp=127.0.0.1:2575"),
            Ok((
                "127.0.0.1:8080".parse().expect("addr"),
                Some("127.0.0.1:2575".parse().expect("addr"))
            ))
        );
        assert_eq!(
            edge_addresses("http=http://127.0.0.1:8080"),
            Ok(("127.0.0.1:8080".parse().expect("addr"), None))
        );
        assert_eq!(
            edge_addresses("https=https://127.0.0.1:1"),
            Ok(("127.0.0.1:1".parse().expect("addr"), None))
        );
        assert!(edge_addresses("https=http://127.0.0.1:1").is_err());
        assert!(edge_addresses("http=http://127.0.0.1:8080 mllp=nope").is_err());
    }

    #[test]
    fn a_process_that_ends_without_its_line_is_an_error_not_a_hang() {
        let p = Proc::spawn(Command::new("sh").args(["-c", "echo starting; exit 3"])).expect("sh");
        let e = p.line_after("ready").expect_err("no ready line");
        assert!(e.contains("ended"), "{e}");
        let p = Proc::spawn(
            Command::new("sh").args(["-c", "echo 'hms-edge ready http=http://127.0.0.1:9'"]),
        )
        .expect("sh");
        assert_eq!(
            p.line_after("hms-edge ready ").as_deref(),
            Ok("http=http://127.0.0.1:9")
        );
    }
}
