//! Shared test support: hospital configs, in-process appliances, child processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edge_node::appliance::Appliance;
use edge_node::auth::Role;
use hms_e2e::client::Conn;
use tokio_util::sync::CancellationToken;

/// A TOML hospital with the given units `(id, beds, rooms_of)`: beds are put
/// in rooms (`{unit}-R{n}`) of `rooms_of` beds each.
pub fn hospital_toml(data_dir: &Path, units: &[(&str, usize, usize)]) -> String {
    let mut s = format!(
        r#"[node]
hospital_id = "test-hospital"
region = "eu-west"
node_id = "edge-test"
timezone = "UTC"

[listen]
http = "127.0.0.1:0"

[store]
data_dir = "{}"
checkpoint_interval_s = 1

[http]
shutdown_grace_s = 5

[[facility]]
id = "TH"
name = "Test Hospital"

[[building]]
id = "main"
facility = "TH"
name = "Main"

[[floor]]
id = "f1"
building = "main"
name = "Floor 1"
"#,
        data_dir.display()
    );
    for (unit, beds, rooms_of) in units {
        s.push_str(&format!(
            "\n[[unit]]\nid = \"{unit}\"\nfloor = \"f1\"\nname = \"Unit {unit}\"\nlevel_of_care = \"acute\"\n"
        ));
        let per_room = (*rooms_of).max(1);
        for room in 0..beds.div_ceil(per_room) {
            s.push_str(&format!(
                "\n[[room]]\nid = \"{unit}-R{room}\"\nunit = \"{unit}\"\n"
            ));
        }
        for i in 0..*beds {
            let room = i / per_room;
            s.push_str(&format!(
                "\n[[bed]]\nid = \"{unit}-{i:03}\"\nroom = \"{unit}-R{room}\"\nunit = \"{unit}\"\ngender = \"any\"\n\
                 hl7 = {{ facility = \"TH\", point_of_care = \"{unit}\", room = \"{room}\", bed = \"{i}\" }}\n"
            ));
        }
    }
    s
}

/// `[[or_room]]` tables for rooms `OR-1`…`OR-{rooms}` of suite `MAIN-OR`,
/// at HL7 location `OR^OR-n^^TH`.
pub fn or_suite_toml(rooms: usize) -> String {
    (1..=rooms)
        .map(|i| {
            format!(
                "\n[[or_room]]\nid = \"OR-{i}\"\nname = \"Theatre {i}\"\nsuite = \"MAIN-OR\"\n\
                 hl7 = {{ facility = \"TH\", point_of_care = \"OR\", room = \"OR-{i}\", bed = \"\" }}\n"
            )
        })
        .collect()
}

/// An appliance running in this process on an ephemeral port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub mllp: SocketAddr,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub join: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub viewer: String,
    pub nurse: String,
    pub manager: String,
    pub admin: String,
}

impl TestApp {
    /// Starts an appliance with `units` (see [`hospital_toml`]).
    pub async fn start(units: &[(&str, usize, usize)]) -> TestApp {
        Self::start_with(units, |_| {}).await
    }

    /// Starts an appliance, letting `tweak` adjust the loaded configuration.
    pub async fn start_with(
        units: &[(&str, usize, usize)],
        tweak: impl FnOnce(&mut firmware_config::Config),
    ) -> TestApp {
        Self::start_text(units, "", tweak).await
    }

    /// Starts an appliance with `units` and an OR suite of `rooms` rooms,
    /// `OR-1`…, HL7 `TH^OR^OR-n` with an empty bed component.
    pub async fn start_with_or(units: &[(&str, usize, usize)], rooms: usize) -> TestApp {
        Self::start_text(units, &or_suite_toml(rooms), |_| {}).await
    }

    /// Starts an appliance with `units` and `extra` TOML after them.
    pub async fn start_text(
        units: &[(&str, usize, usize)],
        extra: &str,
        tweak: impl FnOnce(&mut firmware_config::Config),
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let text = hospital_toml(&dir.path().join("data"), units) + extra;
        let file = dir.path().join("hospital.toml");
        std::fs::write(&file, &text).unwrap();
        let mut cfg = firmware_config::load(&file).unwrap().config;
        tweak(&mut cfg);
        let (app, _) = Appliance::open(&cfg).await.unwrap();
        let tok = |name: &str, role| app.tokens.create(name, role).unwrap();
        let viewer = tok("kiosk", Role::Viewer);
        let nurse = tok("nurse-ann", Role::Nurse);
        let manager = tok("bm-bob", Role::BedManager);
        let admin = tok("admin", Role::Admin);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mllp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mllp = mllp_listener.local_addr().unwrap();
        let join = tokio::spawn(app.serve(listener, Some(mllp_listener), shutdown.clone()));
        TestApp {
            addr,
            mllp,
            dir,
            shutdown,
            join,
            viewer,
            nurse,
            manager,
            admin,
        }
    }

    /// A connection with `token`.
    pub async fn conn(&self, token: &str) -> Conn {
        Conn::connect(self.addr, Some(token)).await.unwrap()
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the appliance and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.join.await.unwrap().unwrap();
        self.dir
    }
}

/// Path of the `hms-edge` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hms-edge")
}

/// A child `hms-edge run` process (killed when dropped).
pub struct Proc {
    pub inner: hms_e2e::process::Proc,
    pub addr: SocketAddr,
    pub mllp: Option<SocketAddr>,
}

impl Proc {
    /// Starts `hms-edge run --config FILE --http 127.0.0.1:0` and waits for its ready line.
    pub fn start(config: &Path, extra: &[&str]) -> Proc {
        let (inner, addr, mllp) = hms_e2e::process::start_edge(
            Command::new(bin())
                .args(["run", "--config"])
                .arg(config)
                .args(["--http", "127.0.0.1:0"])
                .args(extra)
                .env("HMS_LOG", "warn"),
        )
        .unwrap();
        Proc { inner, addr, mllp }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// SIGKILL, and reap.
    pub fn kill9(self) {
        self.inner.kill9().unwrap();
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.inner.terminate().unwrap()
    }
}

/// Runs `hms-edge ARGS…` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates a token with the CLI; it is the last line of stdout.
pub fn cli_token(data_dir: &Path, role: &str, name: &str) -> String {
    let dir = data_dir.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "token",
        "create",
        "--role",
        role,
        "--name",
        name,
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 0, "token create failed: {err}");
    out.lines().last().unwrap().trim().to_owned()
}
