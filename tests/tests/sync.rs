//! Cloud sync with real processes on loopback: an appliance (`hms-edge run`)
//! with its uplink, the regional cloud (`hms-cloud run`) and ADT traffic
//! from `hms-load` over MLLP.
//!
//! Each case ends by comparing the cloud's copy of the hospital's log with
//! the appliance's own, event by event: the same seqs 1..=N in order (no gap,
//! no duplicate), the same hashes, and an intact chain.
//!
//! What exercises the cloud's store (ingest through an outage, kills in the
//! middle of a batch, a restore, a resync, DR replication, the EMPI reading
//! the logs) runs on both store backends: a case `async fn name(backend)`
//! becomes the tests `name::sqlite` and `name::postgres`. The PostgreSQL
//! cloud keeps each hospital in a database named after it, so each site has
//! a hospital id of its own (tests run side by side) and drops its database
//! when it ends. HTTPS, the outbox alarm and the two-hospital EMPI case do
//! not depend on the store backend and run once, on SQLite.
//!
//! The binaries are the ones built next to this test (`cargo test
//! --workspace` builds them all first).

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hms_e2e::client::Conn;
use hms_e2e::process;
use support::pg::{self, Pg};
use support::proxy::{Proxy, Trapped};

/// Where the cloud keeps the hospital logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each async case `$case(backend)` as two tests, `$case::sqlite` and
/// `$case::postgres`.
macro_rules! on_each_backend {
    ($($case:ident),+ $(,)?) => { $(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(super::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$case(super::Backend::Postgres).await
            }
        }
    )+ };
}

on_each_backend!(
    traffic_flows_while_the_cloud_is_stopped_and_the_cloud_ends_equal,
    the_cloud_killed_mid_batch_loses_and_duplicates_nothing,
    the_appliance_killed_mid_batch_resumes_from_the_clouds_position,
    a_lost_data_dir_is_restored_from_the_cloud_equal_and_verified,
    events_reach_the_dr_replica_through_the_regional_cloud,
    a_cloud_that_lost_its_copy_is_resynced_from_the_start,
    eids_assigned_in_the_cloud_reach_the_appliances_patient_index,
);

/// The directory holding the workspace's binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/sync-<hash> → target/<profile>
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace builds them)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process that is killed when dropped.
struct Proc(process::Proc);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(process::Proc::spawn(cmd.env("HMS_LOG", "error")).unwrap())
    }

    /// Waits for the line starting with `prefix`; returns the rest.
    fn ready(&self, prefix: &str) -> String {
        self.0.line_after(prefix).unwrap()
    }

    /// SIGTERM and wait (a clean stop).
    fn stop(self) {
        let status = self.0.terminate().unwrap();
        assert!(status.success(), "{status}");
    }

    /// SIGKILL and reap.
    fn kill9(self) {
        self.0.kill9().unwrap();
    }
}

/// A free loopback port (the cloud keeps its port across restarts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a site is set up.
struct Options {
    /// The cloud serves HTTPS with a self-signed certificate (`cloud.crt`)
    /// and the appliance trusts what `edge-trust.pem` holds (a copy of it).
    tls: bool,
    /// The cloud runs the regional EMPI (EIDs come back down and add events
    /// to the appliance's log after it caught up).
    empi: bool,
    /// The appliance reaches the cloud through a [`Proxy`] (see [`Site::proxy`]).
    proxied: bool,
    /// The appliance's per-request timeout, seconds.
    timeout_s: u64,
    /// More keys of the appliance's `[uplink]` section.
    uplink: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: false,
            empi: false,
            proxied: false,
            timeout_s: 5,
            uplink: "",
        }
    }
}

/// A site: the cloud's and the appliance's directories and configurations.
struct Site {
    dir: tempfile::TempDir,
    cloud_port: u16,
    /// Where the appliance sends its batches: the cloud's port, or a proxy's.
    uplink_port: u16,
    backend: Backend,
    /// The hospital, of this site alone.
    hospital: String,
}

impl Site {
    /// A site on `backend`, or `None` when PostgreSQL cannot be reached
    /// here (a skip, said so; a failure under `CI=true`).
    fn on(backend: Backend) -> Option<Site> {
        Site::with(backend, Options::default())
    }

    fn with(backend: Backend, o: Options) -> Option<Site> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let hospital = format!(
            "sync-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        if backend == Backend::Postgres {
            // A clean start: a database a crashed run of a process with
            // this id may have left.
            if let Err(e) = drop_database(&hospital) {
                let test = std::thread::current().name().unwrap_or("sync").to_owned();
                hms_e2e::skip::skip(
                    &test,
                    &format!(
                        "PostgreSQL unreachable ({}): {e}; set HMS_TEST_PG or start it",
                        pg::admin()
                    ),
                );
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let cloud_port = free_port();
        let uplink_port = if o.proxied { free_port() } else { cloud_port };
        let cloud = dir.path().join("cloud.toml");
        let mut text = format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:{cloud_port}\"\ndata_dir = \"cloud-data\"\n"
        );
        if !o.empi {
            text.push_str("empi = false\n");
        }
        if backend == Backend::Postgres {
            // The region's own database (leases), of this site alone.
            text.push_str(&format!(
                "backend = \"postgres\"\npostgres = \"{}\"\nregion_database = \"hms+{hospital}\"\n",
                pg::admin()
            ));
        }
        let url = if o.tls {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            std::fs::write(dir.path().join("cloud.crt"), cert.cert.pem()).unwrap();
            std::fs::write(dir.path().join("edge-trust.pem"), cert.cert.pem()).unwrap();
            std::fs::write(
                dir.path().join("cloud.key"),
                cert.signing_key.serialize_pem(),
            )
            .unwrap();
            text.push_str("\n[tls]\ncert = \"cloud.crt\"\nkey = \"cloud.key\"\n");
            format!("https://localhost:{uplink_port}\"\nca = \"edge-trust.pem")
        } else {
            format!("http://127.0.0.1:{uplink_port}")
        };
        std::fs::write(&cloud, text).unwrap();
        let edge = dir.path().join("edge.toml");
        let mut text = firmware_config::example(40, &hospital);
        text.push_str(&format!(
            "\n[uplink]\ncloud = \"{url}\"\npoll_ms = 50\ntimeout_s = {}\nbatch_events = 100\n{}",
            o.timeout_s, o.uplink
        ));
        std::fs::write(&edge, text).unwrap();
        let site = Site {
            dir,
            cloud_port,
            uplink_port,
            backend,
            hospital,
        };
        enrol(&site.cloud_config(), &site.hospital, &site.edge_data());
        Some(site)
    }

    /// The proxy between the appliance and the cloud of a `proxied` site.
    async fn proxy(&self) -> Proxy {
        assert_ne!(self.uplink_port, self.cloud_port, "a proxied site");
        Proxy::start(
            ([127, 0, 0, 1], self.uplink_port).into(),
            ([127, 0, 0, 1], self.cloud_port).into(),
        )
        .await
    }

    fn cloud_config(&self) -> PathBuf {
        self.dir.path().join("cloud.toml")
    }

    /// A second instance of the site's cloud (PostgreSQL): its
    /// configuration, written beside the first's as it is now, with another
    /// port and data dir, the same PostgreSQL and region database, so the
    /// same registry: the appliance enrolled once serves at both.
    fn second_instance(&self) -> (PathBuf, u16) {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "instances share PostgreSQL"
        );
        let port = free_port();
        let config = self.dir.path().join("cloud-b.toml");
        let text = std::fs::read_to_string(self.cloud_config())
            .unwrap()
            .replace(&format!(":{}\"", self.cloud_port), &format!(":{port}\""))
            .replace("cloud-data", "cloud-data-b");
        std::fs::write(&config, text).unwrap();
        (config, port)
    }

    fn edge_config(&self) -> PathBuf {
        self.dir.path().join("edge.toml")
    }

    fn edge_data(&self) -> PathBuf {
        let loaded = firmware_config::load(&self.edge_config()).unwrap();
        assert_eq!(loaded.config.node.node_id.as_str(), "edge-1");
        loaded.config.store.data_dir
    }

    /// The cloud's SQLite store of the hospital.
    fn cloud_db(&self) -> PathBuf {
        self.dir
            .path()
            .join("cloud-data/hospitals")
            .join(format!("{}.sqlite", self.hospital))
    }

    /// The cloud's PostgreSQL database of the hospital.
    fn cloud_database(&self) -> String {
        format!("hms_{}", self.hospital)
    }

    fn start_cloud(&self) -> Proc {
        let p = Proc::spawn(
            Command::new(bin("hms-cloud"))
                .args(["run", "--config"])
                .arg(self.cloud_config()),
        );
        let rest = p.ready("hms-cloud ready ");
        let addr = rest
            .split_once("://")
            .map(|(_, a)| a)
            .unwrap_or_else(|| panic!("ready line: {rest}"));
        assert_eq!(addr.parse::<SocketAddr>().unwrap().port(), self.cloud_port);
        p
    }

    /// Starts the appliance; returns it with its HTTP and MLLP addresses.
    fn start_edge(&self) -> (Proc, SocketAddr, SocketAddr) {
        start_edge_at(&self.edge_config())
    }

    /// The cloud's copy: (seq, hash, prev_hash) in seq order.
    fn cloud_log(&self) -> Vec<(u64, String, String)> {
        let rows = match self.backend {
            Backend::Sqlite => sqlite_rows(&self.cloud_db()),
            Backend::Postgres => pg_rows(&self.cloud_database(), "events"),
        };
        chain(rows, &self.hospital)
    }

    /// How many events the cloud stores.
    fn cloud_count(&self) -> usize {
        match self.backend {
            Backend::Sqlite => rusqlite::Connection::open(self.cloud_db())
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
                })
                .map_or(0, |n| n as usize),
            Backend::Postgres => Pg::connect(&pg::admin(), &self.cloud_database())
                .and_then(|mut c| c.count("SELECT count(*) FROM events"))
                .map_or(0, |n| n as usize),
        }
    }

    /// Loses the cloud's copy of the hospital (restored from an old backup,
    /// say), the cloud being stopped.
    fn lose_cloud_copy(&self) {
        match self.backend {
            Backend::Sqlite => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = self.cloud_db().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Backend::Postgres => drop_database(&self.hospital).unwrap(),
        }
    }

    /// Holds the cloud's store of the hospital so that no batch can be
    /// committed (a writer's lock: reads go on); returns the lock, released
    /// when dropped, and the number of events stored.
    fn lock_cloud_store(&self) -> (StoreLock, usize) {
        match self.backend {
            Backend::Sqlite => {
                let c = rusqlite::Connection::open(self.cloud_db()).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                let n: i64 = c
                    .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                    .unwrap();
                (StoreLock::Sqlite(c), n as usize)
            }
            Backend::Postgres => {
                let mut c = Pg::connect(&pg::admin(), &self.cloud_database()).unwrap();
                c.query("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
                    .unwrap();
                let n = c.count("SELECT count(*) FROM events").unwrap();
                (StoreLock::Postgres(c), n as usize)
            }
        }
    }

    /// The appliance's log: (seq, hash, prev_hash) in seq order.
    fn edge_log(&self) -> Vec<(u64, String, String)> {
        edge_log_at(&self.edge_data())
    }

    /// The cloud holds exactly the appliance's log: seqs 1..=N, no gap, no
    /// duplicate, the same hashes, and each event chained to the one before.
    /// The appliance may still commit an event of its own after it reported
    /// itself caught up (an EID from the regional EMPI, an audit record):
    /// the counts get up to 30 s to meet, as the uplink ships it.
    async fn assert_cloud_equals_edge(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut edge, mut cloud) = (self.edge_log(), self.cloud_log());
        while cloud.len() != edge.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            edge = self.edge_log();
            cloud = self.cloud_log();
        }
        assert!(!edge.is_empty());
        assert_eq!(cloud.len(), edge.len(), "event counts differ");
        for (i, ((s, h, p), e)) in cloud.iter().zip(&edge).enumerate() {
            assert_eq!(*s, i as u64 + 1, "seqs are dense from 1");
            assert_eq!((s, h, p), (&e.0, &e.1, &e.2), "event {s} differs");
            if i > 0 {
                assert_eq!(p, &cloud[i - 1].1, "event {s} is chained to {}", s - 1);
            }
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if self.backend == Backend::Postgres {
            let _ = drop_database(&self.hospital);
            // The region's database (leases).
            let _ = Pg::connect(&pg::admin(), "postgres").and_then(|mut c| {
                for db in [
                    format!("hms+{}", self.hospital),
                    format!("hms+{}+replica", self.hospital),
                ] {
                    c.query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))?;
                }
                Ok(())
            });
        }
    }
}

/// The log of the appliance with data dir `data`: (seq, hash, prev_hash)
/// in seq order.
fn edge_log_at(data: &Path) -> Vec<(u64, String, String)> {
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, hash, prev_hash FROM events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            hex(&r.get::<_, Vec<u8>>(1)?),
            hex(&r.get::<_, Vec<u8>>(2)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A lock on a cloud's hospital store, released when dropped.
enum StoreLock {
    Sqlite(#[allow(dead_code)] rusqlite::Connection),
    Postgres(#[allow(dead_code)] Pg),
}

/// Drops the PostgreSQL database of `hospital` (and the sessions in it).
fn drop_database(hospital: &str) -> Result<(), String> {
    Pg::connect(&pg::admin(), "postgres")?
        .query(&format!(
            "DROP DATABASE IF EXISTS \"hms_{hospital}\" WITH (FORCE)"
        ))
        .map(drop)
}

/// `(seq, envelope)` of every event of a cloud's SQLite store (none when
/// it does not exist yet).
fn sqlite_rows(path: &Path) -> Vec<(i64, String)> {
    if !path.exists() {
        return vec![];
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, envelope FROM events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `(seq, envelope)` of every event of `table` in the PostgreSQL database
/// `db` (none when the database or the table does not exist yet).
fn pg_rows(db: &str, table: &str) -> Vec<(i64, String)> {
    pg_rows_at(&pg::admin(), db, table)
}

/// As [`pg_rows`], on the server of `admin`.
fn pg_rows_at(admin: &str, db: &str, table: &str) -> Vec<(i64, String)> {
    let rows = Pg::connect(admin, db)
        .and_then(|mut c| c.query(&format!("SELECT seq, envelope FROM {table} ORDER BY seq")));
    match rows {
        Ok(rows) => rows
            .into_iter()
            .map(|r| {
                (
                    r[0].as_deref().unwrap().parse().unwrap(),
                    r[1].clone().unwrap(),
                )
            })
            .collect(),
        Err(e) if e.contains("does not exist") => vec![],
        Err(e) => panic!("reading {db}: {e}"),
    }
}

/// A cloud store's copy of `hospital`'s log: (seq, hash, prev_hash) in seq order.
fn chain(rows: Vec<(i64, String)>, hospital: &str) -> Vec<(u64, String, String)> {
    rows.into_iter()
        .map(|(seq, env)| {
            let v: serde_json::Value = serde_json::from_str(&env).unwrap();
            assert_eq!(v["seq"].as_i64(), Some(seq), "stored under its own seq");
            assert_eq!(v["hospital"].as_str(), Some(hospital));
            (
                seq as u64,
                v["hash"].as_str().unwrap().to_owned(),
                v["prev_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends `n` ADT A28 messages numbered from `first` over MLLP.
fn adt(mllp: SocketAddr, first: usize, n: usize) {
    let out = run(Command::new(bin("hms-load")).args([
        "--scenario",
        "mllp",
        "--addr",
        &mllp.to_string(),
        "--messages",
        &n.to_string(),
        "--first",
        &first.to_string(),
        "--clients",
        "4",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"].as_u64(), Some(0), "{out}");
}

/// A viewer token of each running appliance, by HTTP address: `/health`
/// shows its components only to a token.
static MONITORS: std::sync::Mutex<std::collections::BTreeMap<SocketAddr, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The uplink part of `/health`.
async fn sync_state(http: SocketAddr) -> serde_json::Value {
    let token = MONITORS
        .lock()
        .unwrap()
        .get(&http)
        .cloned()
        .expect("an appliance started by start_edge_at");
    let mut c = Conn::connect(http, Some(&token)).await.unwrap();
    let r = c.get("/health").await.unwrap();
    let v = r.json().unwrap();
    let mut s = v["components"]["uplink"]["sync"].clone();
    s["health"] = v["status"].clone();
    s
}

/// Waits until the cloud acknowledged everything the appliance committed.
async fn caught_up(http: SocketAddr) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = sync_state(http).await;
        if s["state"] == "online" && s["acked_seq"] == s["local_seq"] && s["lag_events"] == 0 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the uplink did not catch up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the uplink talks to `cloud` and has it acknowledge
/// everything committed (a minute at most).
async fn caught_up_on(http: SocketAddr, cloud: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sync_state(http).await;
        if s["cloud"] == cloud && s["state"] == "online" && s["lag_events"] == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "never caught up on {cloud}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `what` holds, checking every 50 ms for at most a minute.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: never");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn traffic_flows_while_the_cloud_is_stopped_and_the_cloud_ends_equal(backend: Backend) {
    let Some(site) = Site::on(backend) else {
        return;
    };
    let cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 300);
    let s = caught_up(http).await;
    assert_eq!(s["health"], "ok", "{s}");
    cloud.stop();
    let acked = site.cloud_count();
    // The appliance may have committed and shipped an event of its own
    // after it reported itself caught up (the monitoring token's audit
    // record): its acknowledged position, now that the cloud is gone, is
    // what the cloud holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = sync_state(http).await;
    while s["acked_seq"] != acked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = sync_state(http).await;
    }
    assert_eq!(s["acked_seq"], acked, "{s}");

    // WAN loss: the feed goes on, every message is acknowledged locally.
    adt(mllp, 300, 700);
    let deadline = Instant::now() + Duration::from_secs(60);
    let offline = loop {
        let s = sync_state(http).await;
        if s["state"] == "offline" {
            break s;
        }
        assert!(Instant::now() < deadline, "never reported offline: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        offline["health"], "degraded",
        "offline degrades, never fails"
    );
    // The lag is what the appliance holds beyond what the cloud stored.
    let local = offline["local_seq"].as_u64().unwrap();
    assert!(local >= acked as u64 + 700, "{offline}");
    assert_eq!(offline["acked_seq"], acked, "{offline}");
    assert_eq!(offline["lag_events"], local - acked as u64, "{offline}");
    assert!(offline["last_error"].is_string(), "{offline}");

    let _cloud = site.start_cloud();
    let s = caught_up(http).await;
    assert_eq!(s["health"], "ok", "{s}");
    site.assert_cloud_equals_edge().await;
    edge.stop();
}

/// A region of two cloud instances on one PostgreSQL, the appliance given
/// both addresses (`uplink.cloud` as a list): the first is SIGKILLed under
/// load, with the uplink behind, and the uplink fails over to the second, which carries on from the same shared
/// log; the first comes back and, `failback_s` later, the uplink returns to
/// it. `/health` names the address in use and counts both moves, and the
/// shared log ends equal to the appliance's, each event stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_fails_over_to_a_second_instance_and_comes_back() {
    let Some(site) = Site::with(
        Backend::Postgres,
        Options {
            uplink: "failback_s = 3\n",
            ..Options::default()
        },
    ) else {
        return;
    };
    let (config_b, port_b) = site.second_instance();
    let (a_url, b_url) = (
        format!("http://127.0.0.1:{}", site.cloud_port),
        format!("http://127.0.0.1:{port_b}"),
    );
    let edge_text = std::fs::read_to_string(site.edge_config())
        .unwrap()
        .replace(
            &format!("cloud = \"{a_url}\""),
            &format!("cloud = [\"{a_url}\", \"{b_url}\"]"),
        );
    assert!(edge_text.contains(&b_url));
    std::fs::write(site.edge_config(), edge_text).unwrap();
    let a = site.start_cloud();
    let _b = start_cloud_at(&config_b);
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 200);
    let s = caught_up(http).await;
    assert_eq!(
        (s["cloud"].as_str(), s["failovers"].as_u64()),
        (Some(a_url.as_str()), Some(0)),
        "{s}"
    );
    assert_eq!(s["clouds"], serde_json::json!([a_url, b_url]), "{s}");

    // The first instance dies under load, batches in flight (the feed
    // goes on meanwhile); everything reaches the second.
    let feed = tokio::task::spawn_blocking(move || adt(mllp, 200, 1_500));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sync_state(http).await["lag_events"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the uplink never had a backlog");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    feed.await.unwrap();
    let s = caught_up_on(http, &b_url).await;
    assert_eq!(s["failovers"], 1, "{s}");
    assert_eq!(s["health"], "ok", "{s}");
    site.assert_cloud_equals_edge().await;

    // Back: the first instance restarts, and the uplink returns to it.
    let _a = site.start_cloud();
    adt(mllp, 1_700, 100);
    let s = caught_up_on(http, &a_url).await;
    assert_eq!(s["failovers"], 2, "{s}");
    adt(mllp, 1_800, 100);
    let s = caught_up(http).await;
    assert_eq!(s["cloud"], a_url.as_str(), "{s}");
    site.assert_cloud_equals_edge().await;
    let metrics = {
        let token = MONITORS.lock().unwrap().get(&http).cloned().unwrap();
        let mut c = Conn::connect(http, Some(&token)).await.unwrap();
        String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap()
    };
    assert!(
        metrics.contains("hms_uplink_failovers_total 2"),
        "{metrics}"
    );
    edge.stop();
}

/// Two instances of a primary on one PostgreSQL, both with the same DR
/// peer: one holds the region's DR lease and replicates, the other does
/// not (`GET /api/v1/replication` says which). The replicating one is
/// SIGKILLed; the other takes the lease over and the replica ends with
/// exactly the appliance's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_replicates_and_the_other_takes_over_when_it_dies() {
    let Some(site) = Site::with(
        Backend::Postgres,
        Options {
            uplink: "failback_s = 3600\n",
            ..Options::default()
        },
    ) else {
        return;
    };
    let dir = site.dir.path();
    // The replica: SQLite, in a region that may hold eu-west's data.
    let (replica, _) = pair_with_replica(&site, "");
    let (config_b, port_b) = site.second_instance();
    let a_url = format!("http://127.0.0.1:{}", site.cloud_port);
    let edge_text = std::fs::read_to_string(site.edge_config())
        .unwrap()
        .replace(
            &format!("cloud = \"{a_url}\""),
            &format!("cloud = [\"{a_url}\", \"http://127.0.0.1:{port_b}\"]"),
        );
    std::fs::write(site.edge_config(), edge_text).unwrap();
    // One registry: a token made through one instance works at both.
    let token = run(Command::new(bin("hms-cloud"))
        .args(["token", "create", "--config"])
        .arg(&config_b)
        .args(["--name", "ops"]))
    .trim()
    .to_owned();
    let instances = [(site.cloud_port, token.clone()), (port_b, token)];
    let replicating = |i: usize| {
        let (port, token) = instances[i].clone();
        async move {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut c = Conn::connect(addr, Some(&token)).await.unwrap();
            let v = c.get("/api/v1/replication").await.unwrap().json().unwrap();
            v["replicating"].as_bool().unwrap()
        }
    };
    let replica_log = || {
        chain(
            sqlite_rows(
                &dir.join("replica-data/hospitals")
                    .join(format!("{}.sqlite", site.hospital)),
            ),
            &site.hospital,
        )
    };
    let replicated = || replica_holds_the_log(&site, &replica_log);

    let mut clouds = vec![Some(site.start_cloud()), Some(start_cloud_at(&config_b))];
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 200);
    caught_up(http).await;
    replicated().await;
    // Exactly one of them replicates (the lease is taken within 2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        match (replicating(0).await, replicating(1).await) {
            (true, false) => break 0,
            (false, true) => break 1,
            (true, true) => panic!("both instances replicate"),
            (false, false) => {}
        }
        assert!(Instant::now() < deadline, "no instance replicates");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - leader;

    // The replicating instance dies: the other takes the lease over.
    clouds[leader].take().unwrap().kill9();
    adt(mllp, 200, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !replicating(other).await {
        assert!(
            Instant::now() < deadline,
            "the lease was not taken over within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caught_up(http).await;
    replicated().await;
    site.assert_cloud_equals_edge().await;
    edge.stop();
    replica.stop();
    drop(clouds);
}

/// PostgreSQL itself restarts under load (the seed's database failover
/// test), on a server of the test's own: two instances started at the same
/// moment on its empty databases both come up and migrate the registry
/// once; an appliance given both streams ADT; the server restarts in the
/// middle. The appliance queues, the instances reconnect, and the cloud's
/// log ends equal to the appliance's: nothing lost, nothing duplicated.
/// Afterwards an operator token made through the registry works at both
/// instances at the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_nothing() {
    let test = "postgres_restarting_under_load_loses_nothing";
    let cluster = match support::cluster::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            hms_e2e::skip::skip(test, &format!("no private PostgreSQL server: {e}"));
            return;
        }
    };
    let admin = cluster.admin();
    let dir = cluster.path().join("site");
    std::fs::create_dir_all(&dir).unwrap();
    let hospital = format!("restart-{}", std::process::id());
    let ports = [free_port(), free_port()];
    let configs: Vec<PathBuf> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let p = dir.join(format!("cloud-{i}.toml"));
            std::fs::write(
                &p,
                format!(
                    "region = \"eu-west\"\nlisten = \"127.0.0.1:{port}\"\n\
                     data_dir = \"cloud-data-{i}\"\nempi = false\n\
                     backend = \"postgres\"\npostgres = \"{admin}\"\n"
                ),
            )
            .unwrap();
            p
        })
        .collect();
    // Both at the same moment, on a server with nothing of ours yet.
    let clouds: Vec<Proc> = configs
        .iter()
        .map(|c| {
            Proc::spawn(
                Command::new(bin("hms-cloud"))
                    .args(["run", "--config"])
                    .arg(c),
            )
        })
        .collect();
    for c in &clouds {
        c.ready("hms-cloud ready ");
    }
    let versions = Pg::connect(&admin, "hms+eu-west")
        .unwrap()
        .query("SELECT version FROM registry_migrations ORDER BY version")
        .unwrap();
    let want: Vec<Vec<Option<String>>> = (1..=versions.len().max(2))
        .map(|v| vec![Some(v.to_string())])
        .collect();
    assert_eq!(versions, want, "the registry migrated once, each step");

    // The appliance, enrolled once (through the command line: the running
    // instances learn of it from the shared registry), given both.
    let edge = dir.join("edge.toml");
    let mut text = firmware_config::example(40, &hospital);
    text.push_str(&format!(
        "\n[uplink]\ncloud = [\"http://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]\n\
         poll_ms = 50\ntimeout_s = 5\nbatch_events = 100\n",
        ports[0], ports[1]
    ));
    std::fs::write(&edge, text).unwrap();
    let data = firmware_config::load(&edge).unwrap().config.store.data_dir;
    enrol(&configs[0], &hospital, &data);
    let (appliance, http, mllp) = start_edge_at(&edge);
    adt(mllp, 0, 300);
    caught_up(http).await;

    // The server restarts while 1,000 more messages come in.
    let feed = tokio::task::spawn_blocking(move || adt(mllp, 300, 1_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart = {
        let started = Instant::now();
        tokio::task::block_in_place(|| cluster.restart()).unwrap();
        started.elapsed()
    };
    feed.await.unwrap();
    let s = caught_up(http).await;
    assert_eq!(s["health"], "ok", "{s}");
    let cloud = chain(
        pg_rows_at(&admin, &format!("hms_{hospital}"), "events"),
        &hospital,
    );
    let log = edge_log_at(&data);
    assert!(log.len() >= 1_300, "{} events", log.len());
    assert_eq!(
        cloud, log,
        "the cloud holds exactly the log, restart {restart:?}"
    );
    // Both instances are still up, and their registry sessions came back
    // with the server: a token made now works at both, first time.
    let token = run(Command::new(bin("hms-cloud"))
        .args(["token", "create", "--config"])
        .arg(&configs[0])
        .args(["--name", "ops"]))
    .trim()
    .to_owned();
    for port in ports {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut c = Conn::connect(addr, Some(&token)).await.unwrap();
        let r = c.get("/api/v1/hospitals").await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert!(
            r.json().unwrap().to_string().contains(&hospital),
            "{:?}",
            r.json()
        );
    }
    appliance.stop();
    drop(clouds);
    let _ = std::fs::read_to_string(cluster.log());
}

/// The cloud dies with a batch in flight: the relay in front of it holds
/// the third batch of a backlog until the cloud's store is locked (the
/// cloud can take the batch in but commit nothing), lets it go whole, and
/// the cloud is killed before it could answer. Restarted, it ends with
/// exactly the appliance's log.
async fn the_cloud_killed_mid_batch_loses_and_duplicates_nothing(backend: Backend) {
    let Some(site) = Site::with(
        backend,
        Options {
            proxied: true,
            // Longer than the trapped batch is held.
            timeout_s: 30,
            ..Options::default()
        },
    ) else {
        return;
    };
    let proxy = site.proxy().await;
    let (edge, http, mllp) = site.start_edge();
    // A backlog queued while the cloud is away.
    adt(mllp, 0, 3_000);
    let local = site.edge_log().len();
    let mut trap = proxy.trap_batch(2);
    let cloud = site.start_cloud();
    assert_eq!(trap.next().await, Trapped::Held);
    // Two batches stored, the third held at the relay: lock the store, then
    // let the third go.
    let (lock, before) = site.lock_cloud_store();
    assert!(0 < before && before < local, "{before} of {local} stored");
    trap.forward();
    assert_eq!(trap.next().await, Trapped::Forwarded);
    if backend == Backend::Postgres {
        // The cloud is inside its ingest: its INSERT waits for the lock.
        let db = site.cloud_database();
        eventually("the cloud's INSERT waits for the lock", || {
            Pg::connect(&pg::admin(), "postgres")
                .and_then(|mut c| {
                    c.count(&format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                         AND wait_event_type = 'Lock' AND query LIKE 'INSERT%'"
                    ))
                })
                .unwrap()
                > 0
        })
        .await;
    }
    cloud.kill9();
    // The cloud died without answering, and nothing of that batch was stored.
    assert_eq!(trap.next().await, Trapped::HungUp);
    assert_eq!(site.cloud_count(), before);
    let s = sync_state(http).await;
    assert!(s["acked_seq"].as_u64().unwrap() <= before as u64, "{s}");
    drop(lock);

    let _cloud = site.start_cloud();
    caught_up(http).await;
    site.assert_cloud_equals_edge().await;
    edge.stop();
}

/// The appliance dies with a batch in flight: the relay withholds the
/// cloud's answer to the third batch of a backlog, so the cloud has stored
/// it and the appliance has not seen it acknowledged (its own figures say
/// so) when it is killed. Restarted, it asks the cloud where it stands and
/// sends only what follows: no duplicate reaches the cloud.
async fn the_appliance_killed_mid_batch_resumes_from_the_clouds_position(backend: Backend) {
    let Some(site) = Site::with(
        backend,
        Options {
            proxied: true,
            timeout_s: 30,
            ..Options::default()
        },
    ) else {
        return;
    };
    // A backlog queued while nothing answers at the cloud's address (the
    // relay is not there yet: the appliance stops at once).
    let (edge, _, mllp) = site.start_edge();
    adt(mllp, 0, 3_000);
    edge.stop();
    let local = site.edge_log().len();
    let proxy = site.proxy().await;
    let _cloud = site.start_cloud();
    let mut trap = proxy.trap_batch(2);
    let (edge, http, _) = site.start_edge();
    assert_eq!(trap.next().await, Trapped::Held);
    trap.forward();
    assert_eq!(trap.next().await, Trapped::Forwarded);
    let Trapped::Answered { status, body } = trap.next().await else {
        panic!("the cloud did not answer the batch");
    };
    assert_eq!(status, 200, "{body}");
    let stored = serde_json::from_str::<serde_json::Value>(&body).unwrap()["acked_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(site.cloud_count() as u64, stored);
    assert!(stored < local as u64, "{stored} of {local}: mid-backlog");
    // Sent and stored, not acknowledged to the appliance.
    let s = sync_state(http).await;
    let acked = s["acked_seq"].as_u64().unwrap();
    assert!(acked < stored, "the appliance saw the answer: {s}");
    edge.kill9();

    let before_restart = proxy.exchanges().len();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 3_000, 100);
    caught_up(http).await;
    site.assert_cloud_equals_edge().await;
    edge.stop();
    let after: Vec<_> = proxy.exchanges().split_off(before_restart);
    let first = after
        .first()
        .expect("the restarted appliance talked to the cloud");
    assert_eq!(
        (first.method.as_str(), first.path.as_str(), first.status),
        ("GET", "/sync/v1/position", 200),
        "{first:?}"
    );
    let pos: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(pos["acked_seq"], stored, "{first:?}");
    let batches: Vec<_> = after
        .iter()
        .filter(|x| x.path == "/sync/v1/batches")
        .collect();
    assert!(!batches.is_empty());
    for b in batches {
        let v: serde_json::Value = serde_json::from_str(&b.body).unwrap();
        assert_eq!(
            (b.status, &v["duplicates"]),
            (200, &serde_json::json!(0)),
            "{b:?}"
        );
    }
}

/// Every row of the projections, in key order, as text.
fn projections(data: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    let mut out = vec![];
    for (table, key) in [
        ("beds", "bed_id"),
        ("encounters", "encounter_id"),
        ("patients", "mrn"),
        ("hl7_messages", "control_id"),
        ("parked", "seq"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect();
                Ok(format!("{table}: {}", cols.join(" | ")))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

async fn a_lost_data_dir_is_restored_from_the_cloud_equal_and_verified(backend: Backend) {
    let Some(site) = Site::on(backend) else {
        return;
    };
    let _cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 500);
    caught_up(http).await;
    edge.stop();
    let data = site.edge_data();
    let before = projections(&data);
    let log_before = site.edge_log();
    assert!(before.len() > 500, "{}", before.len());

    // The disk is lost; the sync key comes back from escrow.
    for f in [
        "edge.sqlite",
        "edge.sqlite-wal",
        "edge.sqlite-shm",
        "auth.sqlite",
    ] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let out = run(Command::new(bin("hms-edge"))
        .args(["restore", "--from-cloud", "--config"])
        .arg(site.edge_config()));
    assert!(out.contains("restore: ok"), "{out}");
    assert_eq!(
        projections(&data),
        before,
        "the board and projections are equal"
    );
    assert_eq!(site.edge_log(), log_before, "the same log, hash for hash");
    let out = run(Command::new(bin("hms-edge"))
        .args(["verify", "--config"])
        .arg(site.edge_config()));
    assert!(out.contains("verify: ok"), "{out}");

    // A second restore into the now full data dir is refused.
    let out = Command::new(bin("hms-edge"))
        .args(["restore", "--from-cloud", "--config"])
        .arg(site.edge_config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty data dir"));

    // The restored appliance resumes syncing where the cloud is.
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 500, 50);
    caught_up(http).await;
    site.assert_cloud_equals_edge().await;
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_ships_over_https_and_an_untrusted_cloud_gets_nothing() {
    let site = Site::with(
        Backend::Sqlite,
        Options {
            tls: true,
            ..Options::default()
        },
    )
    .unwrap();
    let _cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 200);
    let s = caught_up(http).await;
    assert!(s["cloud"].as_str().unwrap().starts_with("https://"), "{s}");
    site.assert_cloud_equals_edge().await;
    edge.stop();

    // The appliance now trusts another CA: the cloud's certificate is refused
    // and nothing more is sent, while the appliance carries on.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(site.dir.path().join("edge-trust.pem"), other.cert.pem()).unwrap();
    let before = site.cloud_log().len();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 200, 50);
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = sync_state(http).await;
        if s["state"] == "offline" {
            break s;
        }
        assert!(Instant::now() < deadline, "never offline: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = s["last_error"].as_str().unwrap().to_lowercase();
    assert!(err.contains("certificate"), "{s}");
    assert_eq!(s["health"], "degraded");
    assert_eq!(
        site.cloud_log().len(),
        before,
        "nothing reached an untrusted cloud"
    );
    edge.stop();
}

async fn events_reach_the_dr_replica_through_the_regional_cloud(backend: Backend) {
    let Some(site) = Site::on(backend) else {
        return;
    };
    let dir = site.dir.path();
    // The replica, in another region that may hold eu-west's data. On
    // PostgreSQL it shares the server with the primary, and a hospital's
    // database is named after the hospital: the replica keeps its tables in
    // a schema of their own in that database.
    let mut replica_config = "region = \"eu-central\"\nlisten = \"127.0.0.1:0\"\n\
         data_dir = \"replica-data\"\nmode = \"replica\"\nallowed_dr_regions = [\"eu-west\"]\n"
        .to_owned();
    if backend == Backend::Postgres {
        Pg::connect(&pg::admin(), "postgres")
            .unwrap()
            .query(&format!("CREATE DATABASE \"{}\"", site.cloud_database()))
            .unwrap();
        Pg::connect(&pg::admin(), &site.cloud_database())
            .unwrap()
            .query("CREATE SCHEMA dr")
            .unwrap();
        // Its region's database (registry) too: the replica's tables are
        // in the schema `dr` wherever it connects.
        let region_db = format!("hms+{}+replica", site.hospital);
        Pg::connect(&pg::admin(), "postgres")
            .unwrap()
            .query(&format!("CREATE DATABASE \"{region_db}\""))
            .unwrap();
        Pg::connect(&pg::admin(), &region_db)
            .unwrap()
            .query("CREATE SCHEMA dr")
            .unwrap();
        replica_config.push_str(&format!(
            "backend = \"postgres\"\npostgres = \"{} options=-csearch_path=dr\"\n\
             region_database = \"{region_db}\"\n",
            pg::admin()
        ));
    }
    std::fs::write(dir.join("replica.toml"), replica_config).unwrap();
    let (replica, replica_addr) = start_replica(dir);
    // The regional cloud replicates to it.
    let mut cloud = std::fs::read_to_string(site.cloud_config()).unwrap();
    cloud.push_str(&format!(
        "allowed_dr_regions = [\"eu-central\"]\n\n[dr]\npeer = \"http://{replica_addr}\"\n\
         peer_region = \"eu-central\"\nkey_file = \"primary.pk8\"\n"
    ));
    std::fs::write(site.cloud_config(), cloud).unwrap();
    let _cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 300);
    caught_up(http).await;
    site.assert_cloud_equals_edge().await;

    let replica_log = || {
        let rows = match backend {
            Backend::Sqlite => sqlite_rows(
                &dir.join("replica-data/hospitals")
                    .join(format!("{}.sqlite", site.hospital)),
            ),
            Backend::Postgres => pg_rows(&site.cloud_database(), "dr.events"),
        };
        chain(rows, &site.hospital)
    };
    // The appliance may still append (the audit event of the monitoring
    // token is recorded within a second of its creation): wait until the
    // replica holds exactly the log as it is then.
    let want = replica_holds_the_log(&site, &replica_log).await;
    assert_eq!(replica_log(), want, "the replica holds exactly the log");
    if backend == Backend::Postgres {
        assert_eq!(site.cloud_log(), want, "the primary's tables are its own");
    }
    edge.stop();
    replica.stop();
}

async fn a_cloud_that_lost_its_copy_is_resynced_from_the_start(backend: Backend) {
    let Some(site) = Site::on(backend) else {
        return;
    };
    let cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 200);
    caught_up(http).await;
    cloud.stop();
    // The cloud's copy is lost (restored from an old backup, say): it now
    // expects seq 1 while the appliance's cursor is far ahead.
    site.lose_cloud_copy();
    assert_eq!(site.cloud_count(), 0);
    adt(mllp, 200, 100);
    let _cloud = site.start_cloud();
    caught_up(http).await;
    site.assert_cloud_equals_edge().await;
    let metrics = {
        let mut c = Conn::connect(http, None).await.unwrap();
        String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap()
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hms_uplink_batches_total{kind=\"gap\"}") && !l.ends_with(" 0")),
        "the resync went through a gap answer"
    );
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_alarm_fires_past_its_share_of_the_budget_and_clears() {
    // 5 % of 1 MiB (52,428 bytes): the commissioned beds' events stay below
    // it, a few hundred queued ADT events pass it.
    const SHARE: u64 = 52_428;
    let site = Site::with(
        Backend::Sqlite,
        Options {
            uplink: "outbox_budget_mb = 1\noutbox_alarm_percent = 5\n",
            // The uplink's requests wait at the relay for the cloud, rather
            // than failing until its breaker opens.
            proxied: true,
            ..Options::default()
        },
    )
    .unwrap();
    let _proxy = site.proxy().await;
    let (edge, http, mllp) = site.start_edge();
    // Measured below its share: no alarm.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = sync_state(http).await;
        if s["outbox_bytes"].as_u64().unwrap() > 0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox was never measured: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(s["outbox_bytes"].as_u64().unwrap() < SHARE, "{s}");
    assert_eq!(s["outbox_alarm"], false, "{s}");
    adt(mllp, 0, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = sync_state(http).await;
        if s["outbox_alarm"] == true {
            break s;
        }
        assert!(Instant::now() < deadline, "no alarm: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(s["outbox_bytes"].as_u64().unwrap() >= SHARE, "{s}");
    assert_eq!(s["health"], "degraded");
    // Nothing was dropped: once the cloud is there, everything arrives and the alarm clears.
    let _cloud = site.start_cloud();
    caught_up(http).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sync_state(http).await;
        if s["outbox_alarm"] == false && s["health"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "the alarm did not clear: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    site.assert_cloud_equals_edge().await;
    edge.stop();
}

async fn eids_assigned_in_the_cloud_reach_the_appliances_patient_index(backend: Backend) {
    let Some(site) = Site::with(
        backend,
        Options {
            empi: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let _cloud = site.start_cloud();
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 0, 3);
    caught_up(http).await;
    let nurse = nurse_token(&site.edge_data());
    // The regional EMPI matches the synced records and sends their EIDs down.
    let mut eids = vec![];
    for mrn in ["LM0", "LM1", "LM2"] {
        eids.push(eid_arrives(http, &nurse, mrn).await);
    }
    assert_eq!(eids.len(), 3);
    let assigned = |site: &Site| -> (i64, i64) {
        // The downlink: downlink.sqlite, or on PostgreSQL the region's
        // database, shared by its instances.
        let cloud_side = match site.backend {
            Backend::Sqlite => {
                rusqlite::Connection::open(site.dir.path().join("cloud-data/downlink.sqlite"))
                    .unwrap()
                    .query_row(
                        "SELECT count(*) FROM eid_assignments WHERE hospital = ?1",
                        [&site.hospital],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
            }
            Backend::Postgres => Pg::connect(&pg::admin(), &format!("hms+{}", site.hospital))
                .unwrap()
                .count(&format!(
                    "SELECT count(*) FROM eid_assignments WHERE hospital = '{}'",
                    site.hospital
                ))
                .unwrap() as i64,
        };
        // Recorded in the appliance's own log (and so shipped back and kept by restores).
        let edge_side = rusqlite::Connection::open(site.edge_data().join("edge.sqlite"))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM events WHERE kind = 'empi.eid_assigned'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        (cloud_side, edge_side)
    };
    let (cloud_side, edge_side) = assigned(&site);
    assert_eq!(cloud_side, 3);
    assert_eq!(edge_side, cloud_side, "each assignment recorded once");
    edge.stop();
    // After a restart nothing is fetched twice: the position is in the
    // store. A new patient's EID arriving shows the downlink was read since
    // (in order, after the three it already had).
    let (edge, http, mllp) = site.start_edge();
    adt(mllp, 3, 1);
    eid_arrives(http, &nurse, "LM3").await;
    assert_eq!(assigned(&site), (4, 4), "each assignment recorded once");
    let out = run(Command::new(bin("hms-edge"))
        .args(["verify", "--data-dir"])
        .arg(site.edge_data()));
    assert!(out.contains("verify: ok"), "{out}");
    edge.stop();
}

/// Waits until the appliance knows the EID of `mrn`; returns it.
async fn eid_arrives(http: SocketAddr, token: &str, mrn: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = eid_at(http, token, mrn).await;
        if e != "pending" {
            assert!(e.starts_with('E'), "{mrn}: {e}");
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no EID reached the appliance for {mrn}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A second hospital's appliance beside the site's, enrolled in the same cloud.
fn second_appliance(site: &Site, hospital: &str) -> PathBuf {
    let dir = site.dir.path().join(hospital);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("edge.toml");
    let mut text = firmware_config::example(20, hospital);
    text.push_str(&format!(
        "\n[uplink]\ncloud = \"http://127.0.0.1:{}\"\npoll_ms = 50\ntimeout_s = 5\n",
        site.cloud_port
    ));
    std::fs::write(&config, text).unwrap();
    let data = firmware_config::load(&config)
        .unwrap()
        .config
        .store
        .data_dir;
    enrol(&site.cloud_config(), hospital, &data);
    config
}

/// Makes the sync key of the appliance whose data dir is `data` and enrols
/// it (node `edge-1`) for `hospital` in the cloud of `cloud_config`.
fn enrol(cloud_config: &Path, hospital: &str, data: &Path) {
    run(Command::new(bin("hms-edge"))
        .args(["sync", "keygen", "--data-dir"])
        .arg(data));
    run(Command::new(bin("hms-cloud"))
        .args(["enroll", "--config"])
        .arg(cloud_config)
        .args([
            "--hospital",
            hospital,
            "--region",
            "eu-west",
            "--node",
            "edge-1",
            "--public-key",
        ])
        .arg(data.join("sync-key.pub")));
}

/// Waits (up to a minute) until the replica's copy, as `replica_log` reads
/// it, is the appliance's log as it is then; returns that log.
async fn replica_holds_the_log(
    site: &Site,
    replica_log: &dyn Fn() -> Vec<(u64, String, String)>,
) -> Vec<(u64, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut want = site.edge_log();
    while replica_log() != want {
        assert!(
            Instant::now() < deadline,
            "replication did not complete: the replica holds {} events, the log {}",
            replica_log().len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        want = site.edge_log();
    }
    want
}

/// Starts the DR replica whose configuration is `dir/replica.toml`, after
/// making the primary's key (`dir/primary.pk8`) and enrolling it there as
/// eu-west's primary; the replica and its address.
fn start_replica(dir: &Path) -> (Proc, SocketAddr) {
    run(Command::new(bin("hms-cloud"))
        .args(["keygen", "--out"])
        .arg(dir.join("primary.pk8")));
    run(Command::new(bin("hms-cloud"))
        .args(["enroll-primary", "--config"])
        .arg(dir.join("replica.toml"))
        .args(["--region", "eu-west", "--public-key"])
        .arg(dir.join("primary.pk8.pub")));
    let replica = Proc::spawn(
        Command::new(bin("hms-cloud"))
            .args(["run", "--config"])
            .arg(dir.join("replica.toml")),
    );
    let addr = replica
        .ready("hms-cloud ready http=http://")
        .trim()
        .parse()
        .unwrap();
    (replica, addr)
}

/// Makes the appliance of `config`, whose `uplink.cloud` names `urls[0]`,
/// list every one of `urls`, in order, with `more` keys after the list.
fn list_clouds(config: &Path, urls: &[String], more: &str) {
    let list = format!(
        "cloud = [{}]",
        urls.iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let text = std::fs::read_to_string(config).unwrap().replace(
        &format!("cloud = \"{}\"", urls[0]),
        &format!("{list}\n{more}"),
    );
    assert!(text.contains(&list), "{}: {text}", config.display());
    std::fs::write(config, text).unwrap();
}

/// Gives `site`'s cloud a DR replica: a SQLite cloud of eu-central (with
/// `extra` keys) in `replica.toml` beside it, started, and `[dr]` in the
/// site's configuration naming it (the site's cloud is not started here).
/// The replica and its URL.
fn pair_with_replica(site: &Site, extra: &str) -> (Proc, String) {
    let dir = site.dir.path();
    std::fs::write(
        dir.join("replica.toml"),
        format!(
            "region = \"eu-central\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"replica-data\"\n\
             mode = \"replica\"\nallowed_dr_regions = [\"eu-west\"]\n{extra}"
        ),
    )
    .unwrap();
    let (replica, addr) = start_replica(dir);
    let url = format!("http://{addr}");
    let mut text = std::fs::read_to_string(site.cloud_config()).unwrap();
    text.push_str(&format!(
        "allowed_dr_regions = [\"eu-central\"]\n\n[dr]\npeer = \"{url}\"\n\
         peer_region = \"eu-central\"\nkey_file = \"primary.pk8\"\n"
    ));
    std::fs::write(site.cloud_config(), text).unwrap();
    (replica, url)
}

/// Starts the cloud of `config` and waits for its ready line.
fn start_cloud_at(config: &Path) -> Proc {
    let p = Proc::spawn(
        Command::new(bin("hms-cloud"))
            .args(["run", "--config"])
            .arg(config),
    );
    p.ready("hms-cloud ready ");
    p
}

/// Starts the appliance of `config`; returns it with its HTTP and MLLP
/// addresses (and gives it a monitoring token, see [`MONITORS`]).
fn start_edge_at(config: &Path) -> (Proc, SocketAddr, SocketAddr) {
    let (p, http, mllp) = process::start_edge(
        Command::new(bin("hms-edge"))
            .args(["run", "--config"])
            .arg(config)
            .args(["--http", "127.0.0.1:0", "--mllp", "127.0.0.1:0"])
            .env("HMS_LOG", "error"),
    )
    .unwrap();
    let data = firmware_config::load(config).unwrap().config.store.data_dir;
    // Token names are never reused: one per start.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "monitor-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let token = run(Command::new(bin("hms-edge"))
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            &name,
            "--data-dir",
        ])
        .arg(data))
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_owned();
    MONITORS.lock().unwrap().insert(http, token);
    (Proc(p), http, mllp.unwrap())
}

/// Sends one HL7 message over MLLP with the CLI.
fn send_hl7(dir: &Path, mllp: SocketAddr, name: &str, text: &str) {
    let file = dir.join(name);
    std::fs::write(&file, text.replace('\n', "\r")).unwrap();
    let out = run(Command::new(bin("hms-edge"))
        .args(["hl7", "send", "--to", &mllp.to_string()])
        .arg(&file));
    assert!(out.contains("AA"), "{out}");
}

fn nurse_token(data: &Path) -> String {
    run(Command::new(bin("hms-edge"))
        .args([
            "token",
            "create",
            "--role",
            "nurse",
            "--name",
            "n",
            "--data-dir",
        ])
        .arg(data))
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_owned()
}

async fn eid_at(http: SocketAddr, token: &str, mrn: &str) -> String {
    let mut c = Conn::connect(http, Some(token)).await.unwrap();
    let r = c.get(&format!("/api/v1/patients?mrn={mrn}")).await.unwrap();
    r.json().unwrap()["patients"][0]["eid"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_person_at_two_hospitals_gets_one_eid_from_the_regional_empi() {
    let site = Site::with(
        Backend::Sqlite,
        Options {
            empi: true,
            ..Options::default()
        },
    )
    .unwrap();
    let second = second_appliance(&site, "sync-second");
    let _cloud = site.start_cloud();
    let (a, http_a, mllp_a) = site.start_edge();
    let (b, http_b, mllp_b) = start_edge_at(&second);
    let dir = site.dir.path();
    // The same woman, registered at each hospital under its own MRN, with a
    // typo in the family name at the second; and someone else.
    send_hl7(
        dir,
        mllp_a,
        "a.hl7",
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|EA1|P|2.5.1\n\
         EVN|A28|20261127101500\n\
         PID|1||A-100^^^TH^MR||Nightingale^Florence||19800512|F|||1 High Street^^Leeds^^LS1 4AB^GB||+44 113 496 0001\n",
    );
    send_hl7(
        dir,
        mllp_b,
        "b.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127101600||ADT^A28^ADT_A05|EB1|P|2.5.1\n\
         EVN|A28|20261127101600\n\
         PID|1||B-777^^^TB^MR||Nightingal^Florence||19800512|F|||1 High St^^Leeds^^LS1 4AB^GB||+44 113 496 0001\n",
    );
    send_hl7(
        dir,
        mllp_b,
        "c.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127101700||ADT^A28^ADT_A05|EB2|P|2.5.1\n\
         EVN|A28|20261127101700\n\
         PID|1||B-778^^^TB^MR||Seacole^Mary||19650123|F|||9 Low Road^^York^^YO1 7HH^GB\n",
    );
    let (ta, tb) = (
        nurse_token(&site.edge_data()),
        nurse_token(&dir.join("sync-second/data")),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ea, eb) = loop {
        let (ea, eb) = (
            eid_at(http_a, &ta, "A-100").await,
            eid_at(http_b, &tb, "B-777").await,
        );
        if ea != "pending" && eb != "pending" {
            break (ea, eb);
        }
        assert!(Instant::now() < deadline, "EIDs never arrived: {ea} {eb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ea.starts_with('E'), "{ea}");
    assert_eq!(ea, eb, "one person, one enterprise id");
    let deadline = Instant::now() + Duration::from_secs(30);
    let other = loop {
        let e = eid_at(http_b, &tb, "B-778").await;
        if e != "pending" {
            break e;
        }
        assert!(Instant::now() < deadline, "no EID for the other patient");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(other, ea, "someone else keeps an identity of her own");

    // An operator unlinks the two records: they split, both appliances
    // follow, and a later update of the record does not join them again.
    let token = run(Command::new(bin("hms-cloud"))
        .args(["token", "create", "--config"])
        .arg(site.cloud_config())
        .args(["--name", "ops"]))
    .trim()
    .to_owned();
    let cloud: SocketAddr = format!("127.0.0.1:{}", site.cloud_port).parse().unwrap();
    let mut ops = Conn::connect(cloud, Some(&token)).await.unwrap();
    let r = ops
        .post(
            "/api/v1/empi/decisions",
            &serde_json::json!({
                "action": "unlink",
                "a": { "source": site.hospital, "local_id": "A-100" },
                "b": { "source": "sync-second", "local_id": "B-777" },
            }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json().unwrap()["change"], "split");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ea2, eb2) = loop {
        let (x, y) = (
            eid_at(http_a, &ta, "A-100").await,
            eid_at(http_b, &tb, "B-777").await,
        );
        if x != y {
            break (x, y);
        }
        assert!(
            Instant::now() < deadline,
            "the split never reached the appliances"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    send_hl7(
        dir,
        mllp_b,
        "b2.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127111600||ADT^A28^ADT_A05|EB3|P|2.5.1\n\
         EVN|A28|20261127111600\n\
         PID|1||B-777^^^TB^MR||Nightingal^Florence||19800512|F|||1 High St^^Leeds^^LS1 4AB^GB||+44 113 496 0001\n",
    );
    // The EMPI reads each hospital's log in order: once a patient admitted
    // after that update has an EID, the update was matched.
    send_hl7(
        dir,
        mllp_b,
        "d.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127111700||ADT^A28^ADT_A05|EB4|P|2.5.1\n\
         EVN|A28|20261127111700\n\
         PID|1||B-779^^^TB^MR||Fry^Elizabeth||19720314|F|||2 Mill Lane^^Norwich^^NR1 1AA^GB\n",
    );
    let later = eid_arrives(http_b, &tb, "B-779").await;
    assert_ne!(later, eb2);
    let r = ops
        .get("/api/v1/empi/records/sync-second/B-777")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["eid"], eb2.as_str(), "the unlink is sticky");
    assert_eq!(eid_at(http_a, &ta, "A-100").await, ea2);
    a.stop();
    b.stop();
}

/// The region failover drill, with real processes: a primary (SQLite) with
/// its DR replica, two appliances listing both (`uplink.cloud`, the
/// replica second) and streaming ADT. The primary is SIGKILLed mid-stream;
/// until the replica is promoted it answers the appliances 421, so they
/// queue. `hms-cloud promote` (forced if the replica was behind, as after a
/// crash it may be) makes the replica serve them; both end with exactly
/// their log at the replica, nothing lost or duplicated. The old primary,
/// restarted, fences itself from both hospitals at its replicator's first
/// report (its `/health` says so), takes nothing when the appliances try
/// it again at failback (421, they move on), and keeps taking nothing.
/// The recovery time is printed (`DRILL:` lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_fails_over_to_its_promoted_dr_peer_and_the_old_primary_is_fenced() {
    let Some(site) = Site::with(
        Backend::Sqlite,
        Options {
            uplink: "failback_s = 4\n",
            ..Options::default()
        },
    ) else {
        return;
    };
    let dir = site.dir.path();
    let (replica, replica_url) = pair_with_replica(&site, "empi = false\n");
    let primary_url = format!("http://127.0.0.1:{}", site.cloud_port);
    let second = second_appliance(&site, &format!("{}-b", site.hospital));
    let urls = [primary_url.clone(), replica_url.clone()];
    list_clouds(&site.edge_config(), &urls, "");
    list_clouds(&second, &urls, "failback_s = 4");
    let hospitals = [site.hospital.clone(), format!("{}-b", site.hospital)];
    let datas = [
        site.edge_data(),
        firmware_config::load(&second)
            .unwrap()
            .config
            .store
            .data_dir,
    ];
    let replica_log = |h: &str| {
        chain(
            sqlite_rows(
                &dir.join("replica-data/hospitals")
                    .join(format!("{h}.sqlite")),
            ),
            h,
        )
    };
    let primary_count =
        |h: &str| sqlite_rows(&dir.join("cloud-data/hospitals").join(format!("{h}.sqlite"))).len();

    let primary = site.start_cloud();
    let (edge_a, http_a, mllp_a) = site.start_edge();
    let (edge_b, http_b, mllp_b) = start_edge_at(&second);
    adt(mllp_a, 0, 200);
    adt(mllp_b, 0, 200);
    caught_up(http_a).await;
    caught_up(http_b).await;
    for (h, data) in hospitals.iter().zip(&datas) {
        eventually("replicated before the outage", || {
            replica_log(h) == edge_log_at(data)
        })
        .await;
    }

    // The region goes down mid-stream.
    let feed_a = tokio::task::spawn_blocking(move || adt(mllp_a, 200, 1_500));
    let feed_b = tokio::task::spawn_blocking(move || adt(mllp_b, 200, 1_500));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sync_state(http_a).await["lag_events"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the uplink never had a backlog");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    primary.kill9();
    let killed = Instant::now();
    feed_a.await.unwrap();
    feed_b.await.unwrap();
    let held_by_primary: Vec<usize> = hospitals.iter().map(|h| primary_count(h)).collect();
    // Not promoted: the replica takes nothing from the appliances.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (h, data) in hospitals.iter().zip(&datas) {
        assert!(replica_log(h).len() < edge_log_at(data).len(), "{h}");
    }

    // The operator's one action.
    let promote = |force: bool| {
        let mut cmd = Command::new(bin("hms-cloud"));
        cmd.args(["promote", "--config"])
            .arg(dir.join("replica.toml"))
            .stdin(Stdio::null());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let acted = Instant::now();
    let out = promote(false);
    let forced = !out.status.success();
    let out = if !forced {
        out
    } else {
        // Replication is asynchronous: after a crash the replica may hold
        // less than the primary last reported. Refused, nothing promoted,
        // and said why; the appliances still hold what it lacks.
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("behind") && err.contains("--force"), "{err}");
        promote(true)
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for h in &hospitals {
        assert!(stdout.contains(&format!("{h}: promoted")), "{stdout}");
    }
    let promoted = Instant::now();
    for http in [http_a, http_b] {
        caught_up_on(http, &replica_url).await;
    }
    let recovered = Instant::now();
    for (h, data) in hospitals.iter().zip(&datas) {
        let (log, replica) = (edge_log_at(data), replica_log(h));
        assert_eq!(replica.len(), log.len(), "{h}: nothing lost, nothing twice");
        assert_eq!(replica, log, "{h}: the appliance's own log");
    }
    eprintln!(
        "DRILL: promote ran {} ms{}; appliances caught up on the replica {:.1} s after it, {:.1} s \
         after the kill (of which {:.1} s waiting for the operator)",
        promoted.duration_since(acted).as_millis(),
        if forced {
            " (refused as behind, then forced)"
        } else {
            ""
        },
        recovered.duration_since(promoted).as_secs_f64(),
        recovered.duration_since(killed).as_secs_f64(),
        acted.duration_since(killed).as_secs_f64(),
    );

    // The old primary comes back: fenced from both at its first report.
    let token = run(Command::new(bin("hms-cloud"))
        .args(["token", "create", "--config"])
        .arg(site.cloud_config())
        .args(["--name", "ops"]))
    .trim()
    .to_owned();
    let _primary = site.start_cloud();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let mut c = Conn::connect(([127, 0, 0, 1], site.cloud_port).into(), Some(&token))
            .await
            .unwrap();
        let v = c.get("/health").await.unwrap().json().unwrap();
        if v["fenced"].as_array().is_some_and(|f| f.len() == 2) {
            break v;
        }
        assert!(Instant::now() < deadline, "never fenced: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["fenced"], serde_json::json!(hospitals), "{health}");
    // At failback the appliances try it, are sent on, and keep syncing
    // with the replica; the old primary takes nothing.
    let before: Vec<u64> = {
        let mut v = vec![];
        for http in [http_a, http_b] {
            v.push(sync_state(http).await["failovers"].as_u64().unwrap());
        }
        v
    };
    adt(mllp_a, 1_700, 100);
    adt(mllp_b, 1_700, 100);
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (i, http) in [http_a, http_b].into_iter().enumerate() {
        let s = caught_up_on(http, &replica_url).await;
        assert!(
            s["failovers"].as_u64().unwrap() >= before[i] + 2,
            "tried the old primary at failback and moved on: {s}"
        );
    }
    for ((h, data), held) in hospitals.iter().zip(&datas).zip(&held_by_primary) {
        assert_eq!(
            primary_count(h),
            *held,
            "{h}: the fenced primary took nothing"
        );
        assert_eq!(replica_log(h), edge_log_at(data), "{h}");
    }
    edge_a.stop();
    edge_b.stop();
    replica.stop();
}

/// Two instances of a region on one PostgreSQL, both with `empi = true`,
/// three appliances listing both: exactly one instance runs the EMPI (the
/// holder of the region's EMPI lease), and the same woman registered at
/// both hospitals gets one EID, which reaches both appliances; the other
/// instance follows it: it reads the EID, and relays a registration to the
/// one running it (a claimed relayed operator from outside is refused). That
/// instance is SIGKILLed while the three stream, batches in flight: the
/// other takes the EMPI over within 10 s, from
/// the region's database, and goes on from the stored cursors: a patient
/// registered afterwards gets a new EID (never one handed out before), the
/// earlier EIDs read the same at the new holder, and each hospital's log in
/// the cloud ends equal to the appliance's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empi_goes_on_at_the_other_instance_when_the_one_running_it_dies() {
    let Some(site) = Site::with(
        Backend::Postgres,
        Options {
            empi: true,
            uplink: "failback_s = 3600\n",
            ..Options::default()
        },
    ) else {
        return;
    };
    let dir = site.dir.path();
    let (config_b, port_b) = site.second_instance();
    let urls = [
        format!("http://127.0.0.1:{}", site.cloud_port),
        format!("http://127.0.0.1:{port_b}"),
    ];
    let hospital_b = format!("{}-b", site.hospital);
    let hospital_c = format!("{}-c", site.hospital);
    let _ = drop_database(&hospital_b);
    let _ = drop_database(&hospital_c);
    let second = second_appliance(&site, &hospital_b);
    let third = second_appliance(&site, &hospital_c);
    for config in [site.edge_config(), second.clone(), third.clone()] {
        list_clouds(&config, &urls, "");
    }
    let token = run(Command::new(bin("hms-cloud"))
        .args(["token", "create", "--config"])
        .arg(site.cloud_config())
        .args(["--name", "ops"]))
    .trim()
    .to_owned();
    let ports = [site.cloud_port, port_b];
    let runs_empi = |i: usize| {
        let token = token.clone();
        async move {
            let addr: SocketAddr = ([127, 0, 0, 1], ports[i]).into();
            let Ok(mut c) = Conn::connect(addr, Some(&token)).await else {
                return false;
            };
            let Ok(r) = c.get("/health").await else {
                return false;
            };
            r.json().is_ok_and(|v| v["empi_role"] == "running")
        }
    };
    let mut clouds = vec![Some(site.start_cloud()), Some(start_cloud_at(&config_b))];
    let (a, http_a, mllp_a) = site.start_edge();
    let (b, http_b, mllp_b) = start_edge_at(&second);
    let (c, http_c, mllp_c) = start_edge_at(&third);
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        match (runs_empi(0).await, runs_empi(1).await) {
            (true, false) => break 0,
            (false, true) => break 1,
            (true, true) => panic!("both instances run the EMPI"),
            (false, false) => {}
        }
        assert!(Instant::now() < deadline, "no instance runs the EMPI");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - holder;
    send_hl7(
        dir,
        mllp_a,
        "a.hl7",
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|EA1|P|2.5.1\n\
         EVN|A28|20261127101500\n\
         PID|1||A-100^^^TH^MR||Nightingale^Florence||19800512|F|||1 High Street^^Leeds^^LS1 4AB^GB||+44 113 496 0001\n",
    );
    send_hl7(
        dir,
        mllp_b,
        "b.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127101600||ADT^A28^ADT_A05|EB1|P|2.5.1\n\
         EVN|A28|20261127101600\n\
         PID|1||B-777^^^TB^MR||Nightingal^Florence||19800512|F|||1 High St^^Leeds^^LS1 4AB^GB||+44 113 496 0001\n",
    );
    let (ta, tb) = (
        nurse_token(&site.edge_data()),
        nurse_token(
            &firmware_config::load(&second)
                .unwrap()
                .config
                .store
                .data_dir,
        ),
    );
    let ea = eid_arrives(http_a, &ta, "A-100").await;
    assert_eq!(
        eid_arrives(http_b, &tb, "B-777").await,
        ea,
        "one person, one EID"
    );
    // The other instance follows the EMPI: it reads what the first one
    // assigned (within its half-second step), and sends changes there.
    let follower: SocketAddr = ([127, 0, 0, 1], ports[other]).into();
    let mut at_follower = Conn::connect(follower, Some(&token)).await.unwrap();
    let path = format!("/api/v1/empi/records/{}/A-100", site.hospital);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = at_follower.get(&path).await.unwrap();
        if r.status == 200 && r.json().unwrap()["eid"] == ea.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never read it: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h: serde_json::Value = at_follower.get("/health").await.unwrap().json().unwrap();
    assert_eq!(h["empi_role"], "following", "{h}");
    // A change asked there is relayed to the instance running the EMPI and
    // answered with its answer.
    let person = serde_json::json!({
        "source": "relayed", "local_id": "R-1", "given_name": "Elizabeth",
        "family_name": "Fry", "birth_date": "1972-03-14", "sex": "F",
    });
    let r = at_follower
        .post("/api/v1/empi/records", &person)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let relayed_eid = r.json().unwrap()["eid"].as_str().unwrap().to_owned();
    let holder_addr: SocketAddr = ([127, 0, 0, 1], ports[holder]).into();
    let mut at_holder = Conn::connect(holder_addr, Some(&token)).await.unwrap();
    let v = at_holder
        .get("/api/v1/empi/records/relayed/R-1")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["eid"], relayed_eid.as_str(), "{v}");
    // Nobody can pass for a relayed operator from outside.
    let mut anonymous = Conn::connect(follower, None).await.unwrap();
    let r = anonymous
        .request_with(
            hyper::Method::POST,
            "/api/v1/empi/records",
            &[("x-hms-relayed-operator", "intruder".to_owned())],
            Some(serde_json::to_vec(&person).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    // All three appliances stream; the instance running the EMPI dies with
    // batches in flight; the other takes the EMPI over.
    let feeds: Vec<_> = [mllp_a, mllp_b, mllp_c]
        .into_iter()
        .map(|m| tokio::task::spawn_blocking(move || adt(m, 0, 800)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sync_state(http_c).await["lag_events"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the uplink never had a backlog");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clouds[holder].take().unwrap().kill9();
    let killed = Instant::now();
    while !runs_empi(other).await {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the EMPI was not taken over within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    for f in feeds {
        f.await.unwrap();
    }
    send_hl7(
        dir,
        mllp_b,
        "c.hl7",
        "MSH|^~\\&|PAS|TB|HMS|EDGE|20261127101700||ADT^A28^ADT_A05|EB2|P|2.5.1\n\
         EVN|A28|20261127101700\n\
         PID|1||B-778^^^TB^MR||Seacole^Mary||19650123|F|||9 Low Road^^York^^YO1 7HH^GB\n",
    );
    let later = eid_arrives(http_b, &tb, "B-778").await;
    assert_ne!(later, ea, "someone else");
    let number = |e: &str| e.trim_start_matches('E').parse::<u64>().unwrap();
    assert!(
        number(&later) > number(&ea),
        "{later} after {ea}: never one handed out before"
    );
    // The new holder reads what the first one assigned.
    let addr: SocketAddr = ([127, 0, 0, 1], ports[other]).into();
    let mut ops = Conn::connect(addr, Some(&token)).await.unwrap();
    let r = ops
        .get(&format!("/api/v1/empi/records/{}/A-100", site.hospital))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["eid"], ea.as_str(), "{r}");
    eprintln!("EMPI TAKEOVER: {} ms after the kill", took.as_millis());
    // Nothing lost, nothing twice: each hospital's log in the cloud is
    // exactly its appliance's.
    for http in [http_a, http_b, http_c] {
        caught_up_on(http, &urls[other]).await;
    }
    site.assert_cloud_equals_edge().await;
    for (h, config) in [(&hospital_b, &second), (&hospital_c, &third)] {
        let data = firmware_config::load(config).unwrap().config.store.data_dir;
        eventually(
            &format!("{h}: the cloud holds exactly the appliance's log"),
            || chain(pg_rows(&format!("hms_{h}"), "events"), h) == edge_log_at(&data),
        )
        .await;
    }
    a.stop();
    b.stop();
    c.stop();
    drop(clouds);
    let _ = drop_database(&hospital_b);
    let _ = drop_database(&hospital_c);
}
