//! `cargo xtask bench region [--hospitals N] [--events N] [--runs N] [--empi-records N]`:
//! ingest into a region from many hospitals at once, with one cloud
//! instance on SQLite, one on PostgreSQL and two on the same PostgreSQL.
//!
//! Each simulated hospital is an appliance's uplink without the rest of
//! the appliance: a signing key enrolled with `hms-cloud enroll`, the
//! sample hash-chained log of `--events` events (`sample_log`), sent in
//! batches of 100 with the sync client (signed, gzip), the next batch
//! after the previous one's acknowledgement, as the uplink does. Each
//! hospital's first batch goes before the clock starts (on PostgreSQL it
//! creates the hospital's database: a one-time cost). Then all hospitals
//! send the rest at once; with two instances, every other hospital sends
//! to the second. Release build of `hms-cloud`, `empi = false` for the
//! ingest runs, fresh stores per run.
//!
//! Reported per set-up (medians over runs): events stored per second over
//! the whole load, and the acknowledgement time of a batch (p50, p99).
//! Then, on fresh clouds with `empi = true`, `--empi-records` people
//! (4,000) registered through `POST /api/v1/empi/records` by 4 clients at
//! the instance running the EMPI (with two instances the other follows it
//! through the region's database meanwhile): registration time p50, p99.
//! After each run every hospital's position is checked: each holds exactly
//! its log. Both instances share the machine's two cores with the load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloud_sync_client::{Client, Endpoint, Signer};
use hms_domain::sync::SyncBatch;
use hms_domain::{HospitalId, NodeId};

use crate::bench::count_options;
use crate::sync_bench::{Cloud, start_cloud};
use crate::target_dir;

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
const REGION_DB: &str = "hms+bench-region";
const BATCH: usize = 100;

fn hospital(i: usize) -> String {
    format!("bench-region-{i:03}")
}

/// A fresh site `name` under `target/` with the configurations of
/// `instances` instances on `backend` (each with `extra` keys and a port of
/// its own; on PostgreSQL, the region's database and `databases` dropped
/// first): the site, the configuration files and the addresses.
fn set_up(
    name: &str,
    backend: &str,
    instances: usize,
    extra: &str,
    databases: &[String],
) -> anyhow::Result<(PathBuf, Vec<PathBuf>, Vec<std::net::SocketAddr>)> {
    let site = target_dir().join(name);
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site)?;
    if backend == "postgres" {
        let mut c = postgres::Client::connect(PG_ADMIN, postgres::NoTls)
            .context("PostgreSQL at 127.0.0.1:5432")?;
        for db in std::iter::once(REGION_DB).chain(databases.iter().map(String::as_str)) {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))?;
        }
    }
    let (mut configs, mut addrs) = (vec![], vec![]);
    for k in 0..instances {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut text = format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"cloud-data-{k}\"\n\
             {extra}backend = \"{backend}\"\n"
        );
        if backend == "postgres" {
            text.push_str(&format!(
                "postgres = \"{PG_ADMIN}\"\nregion_database = \"{REGION_DB}\"\n"
            ));
        }
        let config = site.join(format!("cloud-{k}.toml"));
        std::fs::write(&config, text)?;
        configs.push(config);
        addrs.push(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Ok((site, configs, addrs))
}

/// One set-up's run: (events per second, batch ack times in ms).
fn one_run(
    bin: &Path,
    backend: &str,
    instances: usize,
    hospitals: usize,
    events: u64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let dbs: Vec<String> = (0..hospitals)
        .map(|i| format!("hms_{}", hospital(i)))
        .collect();
    let (site, configs, addrs) = set_up(
        &format!("bench-region-{backend}-{instances}"),
        backend,
        instances,
        "empi = false\n",
        &dbs,
    )?;
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    // Keys, enrolled once (the instances of a PostgreSQL region share the
    // registry; a SQLite one has one instance).
    let mut keys = vec![];
    for i in 0..hospitals {
        let (pkcs8, public) =
            cloud_sync_client::generate_key().map_err(|e| anyhow::anyhow!("key: {e}"))?;
        let pub_file = site.join(format!("{}.pub", hospital(i)));
        std::fs::write(&pub_file, public)?;
        let out = Command::new(bin)
            .args(["enroll", "--config"])
            .arg(&configs[0])
            .args([
                "--hospital",
                &hospital(i),
                "--region",
                "eu-west",
                "--node",
                "edge-1",
            ])
            .arg("--public-key")
            .arg(&pub_file)
            .output()?;
        if !out.status.success() {
            bail!("enroll: {}", String::from_utf8_lossy(&out.stderr));
        }
        keys.push(pkcs8);
    }
    let running: Vec<Cloud> = configs
        .iter()
        .map(|c| start_cloud(bin, c))
        .collect::<anyhow::Result<_>>()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let urls = Arc::new(urls);
    let (rate, latencies) = rt.block_on(async move {
        let ready = Arc::new(tokio::sync::Barrier::new(hospitals));
        let mut tasks = vec![];
        for (i, pkcs8) in keys.into_iter().enumerate() {
            let url = urls[i % urls.len()].clone();
            let ready = ready.clone();
            tasks.push(tokio::spawn(async move {
                let id: HospitalId = hospital(i).parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                let node: NodeId = "edge-1".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                let signer = Signer::new(&pkcs8, id.clone(), node.clone())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let client = Client::new(Endpoint::parse(&url, None).map_err(anyhow::Error::msg)?);
                let log = hms_domain::event::sample_log(&id, events);
                let mut lat = Vec::with_capacity(log.len() / BATCH + 1);
                let mut started = Instant::now();
                for (n, chunk) in log.chunks(BATCH).enumerate() {
                    if n == 1 {
                        // Every hospital's first batch is in: the clock starts.
                        ready.wait().await;
                        started = Instant::now();
                    }
                    let batch = SyncBatch {
                        hospital: id.clone(),
                        node: node.clone(),
                        events: chunk.to_vec(),
                    };
                    let t = Instant::now();
                    let now = hms_domain::Timestamp::now().as_millis();
                    let acked = client
                        .push(&signer, &batch, now, Duration::from_secs(60))
                        .await
                        .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                    if n > 0 {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    let last = chunk.last().map_or(0, |e| e.seq);
                    if acked.acked_seq != last {
                        bail!(
                            "{id}: acknowledged {} after sending up to {last}",
                            acked.acked_seq
                        );
                    }
                }
                // Where the cloud stands now: exactly the log.
                let now = hms_domain::Timestamp::now().as_millis();
                let p = client
                    .position(&signer, now, Duration::from_secs(30))
                    .await
                    .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                if p.acked_seq != events {
                    bail!("{id}: the cloud holds {} of {events}", p.acked_seq);
                }
                Ok::<_, anyhow::Error>((started, Instant::now(), lat))
            }));
        }
        let mut all = vec![];
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for t in tasks {
            let (s, e, lat) = t.await??;
            first = Some(first.map_or(s, |f| f.min(s)));
            last = Some(last.map_or(e, |l| l.max(e)));
            all.extend(lat);
        }
        let secs = match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => f64::NAN,
        };
        let timed = hospitals as u64 * events.saturating_sub(BATCH as u64);
        Ok::<_, anyhow::Error>((timed as f64 / secs, all))
    })?;
    drop(running);
    Ok((rate, latencies))
}

/// Names, dates and places the EMPI registrations are made of.
const GIVEN: [&str; 12] = [
    "Mary", "John", "Aisha", "Wei", "Olga", "Pedro", "Fatima", "Liam", "Noor", "Sven", "Amara",
    "Yuki",
];
const FAMILY: [&str; 12] = [
    "Smith", "Okafor", "Nguyen", "Kowalski", "Garcia", "Haddad", "Jensen", "Murphy", "Patel",
    "Rossi", "Tanaka", "Dubois",
];

/// The EMPI run of a set-up: `records` people registered through `POST
/// /api/v1/empi/records` by 4 clients at the instance running the EMPI
/// (with two instances, the other following it); the registration times,
/// ms.
fn empi_run(
    bin: &Path,
    backend: &str,
    instances: usize,
    records: usize,
) -> anyhow::Result<Vec<f64>> {
    let (_site, configs, addrs) = set_up(
        &format!("bench-region-empi-{backend}-{instances}"),
        backend,
        instances,
        "empi = true\nempi_auto_train_records = 0\n",
        &[],
    )?;
    let out = Command::new(bin)
        .args(["token", "create", "--name", "bench", "--config"])
        .arg(&configs[0])
        .output()?;
    if !out.status.success() {
        bail!("token: {}", String::from_utf8_lossy(&out.stderr));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let running: Vec<Cloud> = configs
        .iter()
        .map(|c| start_cloud(bin, c))
        .collect::<anyhow::Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lat = rt.block_on(async move {
        use hms_e2e::client::Conn;
        // The instance running the EMPI (with two, the lease decides).
        let deadline = Instant::now() + Duration::from_secs(30);
        let at = loop {
            let mut found = None;
            for a in &addrs {
                let mut c = Conn::connect(*a, Some(&token)).await?;
                let h = c.get("/health").await?.json()?;
                if h["empi_role"] == "running" {
                    found = Some(*a);
                }
            }
            if let Some(a) = found {
                break a;
            }
            if Instant::now() > deadline {
                bail!("no instance runs the EMPI");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut tasks = vec![];
        for client in 0..4usize {
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::connect(at, Some(&token)).await?;
                let mut lat = vec![];
                for i in (client..records).step_by(4) {
                    let body = serde_json::json!({
                        "source": format!("bench-h{client}"),
                        "local_id": format!("P{i}"),
                        "given_name": GIVEN[i % GIVEN.len()],
                        "family_name": format!("{}{}", FAMILY[(i / 12) % FAMILY.len()], i / 144),
                        "birth_date": format!("19{:02}-{:02}-{:02}", 30 + i % 70, 1 + i % 12, 1 + i % 28),
                        "sex": if i % 2 == 0 { "F" } else { "M" },
                        "postal_code": format!("LS{} {}AB", i % 30, i % 9),
                    });
                    let t = Instant::now();
                    let r = c.post("/api/v1/empi/records", &body).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    if r.status != 200 && r.status != 201 {
                        bail!("registration {i}: {} {}", r.status, String::from_utf8_lossy(&r.body));
                    }
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    drop(running);
    Ok(lat)
}

/// Runs the bench (see the module doc).
pub fn run(_root: &Path, args: &[String]) -> anyhow::Result<()> {
    let [hospitals, events, runs, records] = count_options(
        args,
        "region",
        ["--hospitals", "--events", "--runs", "--empi-records"],
        [50, 2_000, 3, 4_000],
    )?;
    if events <= BATCH || hospitals == 0 {
        bail!("bench region needs --hospitals of at least 1 and --events above {BATCH}");
    }
    let bin: PathBuf = crate::bench::build_cloud_release()?;
    let mut summary = vec![];
    for (backend, instances) in [("sqlite", 1), ("postgres", 1), ("postgres", 2)] {
        let (mut rates, mut p50s, mut p99s) = (vec![], vec![], vec![]);
        let (mut e50s, mut e99s) = (vec![], vec![]);
        for r in 0..runs {
            eprintln!(
                "xtask: bench region: {backend}, {instances} instance(s), run {}/{runs}",
                r + 1
            );
            let (rate, lat) = one_run(&bin, backend, instances, hospitals, events as u64)?;
            let (p50, p99) = hms_e2e::bench::p50_p99(lat);
            println!(
                "{}",
                serde_json::json!({
                    "backend": backend, "instances": instances, "run": r + 1,
                    "hospitals": hospitals, "events_per_hospital": events,
                    "events_per_s": rate, "ack_p50_ms": p50, "ack_p99_ms": p99,
                })
            );
            rates.push(rate);
            p50s.push(p50);
            p99s.push(p99);
            let (e50, e99) = hms_e2e::bench::p50_p99(empi_run(&bin, backend, instances, records)?);
            println!(
                "{}",
                serde_json::json!({
                    "backend": backend, "instances": instances, "run": r + 1,
                    "empi_records": records, "empi_register_p50_ms": e50,
                    "empi_register_p99_ms": e99,
                })
            );
            e50s.push(e50);
            e99s.push(e99);
        }
        summary.push((
            backend,
            instances,
            hms_e2e::bench::median(rates),
            hms_e2e::bench::median(p50s),
            hms_e2e::bench::median(p99s),
            hms_e2e::bench::median(e50s),
            hms_e2e::bench::median(e99s),
        ));
    }
    println!(
        "\n| Set-up | events/s | batch ack p50 | batch ack p99 | EMPI registration p50 | p99 |\n\
         |---|---|---|---|---|---|"
    );
    for (backend, instances, rate, p50, p99, e50, e99) in summary {
        println!(
            "| {backend}, {instances} instance{} | {rate:.0} | {p50:.2} ms | {p99:.2} ms | {e50:.2} ms | {e99:.2} ms |",
            if instances > 1 { "s" } else { "" }
        );
    }
    Ok(())
}
