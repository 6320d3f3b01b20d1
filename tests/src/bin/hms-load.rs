//! `hms-load`: load generator for the kiosk API. Prints one JSON object.
//!
//! Scenarios (DESIGN.md section 7):
//! - `queries`: N keep-alive clients read unit bed lists and single beds as
//!   fast as they can for a fixed time (bed query p99 at ≥ 5,000 req/s);
//! - `assign`: durable bed mutations at a fixed total rate, each client
//!   cycling its own beds through assign → release → clean (assignment p99);
//! - `mass-casualty`: M simultaneous placements of new encounters into units
//!   with free beds; checks failures and double assignments afterwards;
//! - `patients`: ranked patient look-ups by name and birth date against an
//!   index the `mllp` scenario filled with `--population` demographics.
//!
//! Only loopback targets are accepted: this is a bench tool for the machine it
//! runs on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hms_e2e::client::Conn;
use serde_json::{Value, json};
use tokio::sync::Barrier;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// HL7 over MLLP: messages sent one at a time per connection, each waiting for its ACK.
    Mllp,
    /// `GET /health` only: the HTTP floor, the peer of `queries`.
    Health,
    Queries,
    /// `GET /api/v1/forecast/units/{unit}` over every unit (served from the forecast cache).
    Forecast,
    /// `POST /api/v1/or/cases/predict`, one case per request (a model call each).
    OrPredict,
    Assign,
    MassCasualty,
    /// `GET /api/v1/patients?family_name=&given_name=&birth_date=` for patients
    /// the `mllp` scenario sent with `--population` (same `--messages`).
    Patients,
}

#[derive(Debug, Parser)]
#[command(name = "hms-load", about = "Load generator for the HMS Edge kiosk API")]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Appliance address (loopback only): HTTP, or MLLP for the mllp scenario.
    #[arg(long)]
    addr: SocketAddr,
    /// Bearer token (viewer for queries, bed_manager for the others; unused by mllp).
    #[arg(long, env = "HMS_TOKEN", default_value = "")]
    token: String,
    /// mllp: total messages.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// mllp: number of the first message (control ids and MRNs count from
    /// it), so that successive runs send new messages rather than duplicates.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// mllp: trigger to send: A01 (admit, each into its own configured bed) or A28 (person add).
    #[arg(long, default_value = "A28")]
    trigger: String,
    /// mllp, A01: the appliance's configuration, for the beds' HL7 locations.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Duration of the queries/assign scenarios, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Total target rate, requests per second, spread evenly over the clients
    /// (open loop). For health/queries, 0 means closed loop: every client sends
    /// its next request as soon as the previous answer arrives (saturation).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Admissions of the mass-casualty scenario.
    #[arg(long, default_value_t = 200)]
    admissions: usize,
    /// Warm-up before measuring (queries/assign), seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// mllp, A28: demographics from the seeded population generator
    /// (names, birth date, sex, address, phone, national id) instead of one
    /// fixed patient.
    #[arg(long)]
    population: bool,
}

/// The first `n` records of the seeded population generator: message `i`
/// of the `mllp` scenario with `--population` describes record `i`.
fn population(n: usize) -> Vec<hms_domain::empi::Record> {
    use hms_domain::empi::synth::{SynthConfig, Vocabulary, generate};
    let mut records: Vec<_> = generate(&SynthConfig {
        people: n * 10 / 17 + 16,
        vocabulary: Vocabulary::Population,
        ..SynthConfig::default()
    })
    .into_iter()
    .map(|l| l.record)
    .collect();
    records.truncate(n);
    records
}

/// The PID segment of population record `r` as patient `LM{i}`.
fn population_pid(i: usize, r: &hms_domain::empi::Record) -> String {
    let v = |x: Option<&str>| x.unwrap_or_default().to_owned();
    let national = r
        .identifiers
        .first()
        .map(|id| format!("~{}^^^NATIONAL^NI", id.id.expose()))
        .unwrap_or_default();
    format!(
        "PID|1||LM{i}^^^TH^MR{national}||{}^{}||{}|{}|||{}^^{}^{}^{}||{}\r",
        v(r.family_name.as_ref().map(|n| n.expose())),
        v(r.given_name.as_ref().map(|n| n.expose())),
        v(r.birth_date.as_ref().map(|d| d.expose())).replace('-', ""),
        match r.sex {
            Some(hms_domain::phi::Sex::Female) => "F",
            Some(hms_domain::phi::Sex::Male) => "M",
            _ => "U",
        },
        v(r.address_line.as_ref().map(|a| a.expose())),
        v(r.city.as_ref().map(|a| a.expose())),
        v(r.state.as_deref()),
        v(r.postal_code.as_ref().map(|a| a.expose())),
        v(r.phone.as_ref().map(|p| p.expose())),
    )
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The look-up a registration clerk would type for record `r`: family
/// name, first given name and birth date as far as known.
fn patient_query(r: &hms_domain::empi::Record) -> String {
    let mut q = vec![];
    if let Some(f) = &r.family_name {
        q.push(format!("family_name={}", encode(f.expose())));
    }
    if let Some(g) = r
        .given_name
        .as_ref()
        .and_then(|g| g.expose().split(' ').next())
    {
        q.push(format!("given_name={}", encode(g)));
    }
    if let Some(d) = &r.birth_date {
        q.push(format!("birth_date={}", encode(d.expose())));
    }
    format!("/api/v1/patients?{}&limit=10", q.join("&"))
}

/// HL7 over MLLP: `clients` connections share `messages`; each connection
/// sends one message, waits for its ACK, and so on.
async fn mllp(a: &Args) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let locations: Vec<String> = match (&a.trigger[..], &a.config) {
        ("A01", Some(cfg)) => firmware_config::load(cfg)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config
            .beds
            .iter()
            .map(|b| {
                format!(
                    "{}^{}^{}^{}",
                    b.hl7.point_of_care, b.hl7.room, b.hl7.bed, b.hl7.facility
                )
            })
            .collect(),
        ("A01", None) => bail!("--trigger A01 needs --config (the beds' HL7 locations)"),
        _ => vec![],
    };
    if a.trigger == "A01" && a.first + a.messages > locations.len() {
        bail!(
            "{} A01 messages need as many beds; the hospital has {}",
            a.messages,
            locations.len()
        );
    }
    let locations = Arc::new(locations);
    let people = Arc::new(if a.population && a.trigger == "A28" {
        population(a.first + a.messages)
    } else {
        vec![]
    });
    let clients = a.clients.max(1);
    let started = Instant::now();
    let mut tasks = vec![];
    for c in 0..clients {
        let (addr, trigger, locations) = (a.addr, a.trigger.clone(), locations.clone());
        let people = people.clone();
        let share: Vec<usize> = (c..a.messages)
            .step_by(clients)
            .map(|i| i + a.first)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut s = hms_e2e::client::connect_tcp(addr, Some(c)).await?;
            s.set_nodelay(true)?;
            let mut h = histogram();
            let mut errors = 0u64;
            let mut buf = vec![0u8; 8192];
            for i in share {
                let body = match trigger.as_str() {
                    "A01" => format!(
                        "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|L{i}|P|2.5.1\r\
                         EVN|A01|20261127101500\rPID|1||LM{i}^^^TH^MR||Load^Patient{i}||19700101|F\r\
                         PV1|1|I|{}||||||||||||||||LV{i}\r",
                        locations[i]
                    ),
                    _ => format!(
                        "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|L{i}|P|2.5.1\r\
                         EVN|A28|20261127101500\r{}",
                        people.get(i).map_or_else(
                            || format!("PID|1||LM{i}^^^TH^MR||Load^Patient{i}||19700101|F\r"),
                            |r| population_pid(i, r)
                        )
                    ),
                };
                let mut frame = vec![0x0b];
                frame.extend_from_slice(body.as_bytes());
                frame.extend_from_slice(&[0x1c, 0x0d]);
                let sent = Instant::now();
                s.write_all(&frame).await?;
                let mut got = Vec::new();
                while !got.ends_with(&[0x1c, 0x0d]) {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        bail!("the appliance closed the connection");
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                if !got.windows(7).any(|w| w == b"\rMSA|AA") {
                    errors += 1;
                }
            }
            anyhow::Ok((h, errors))
        }));
    }
    let (all, errors) = gather(tasks).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "scenario": "mllp",
        "trigger": a.trigger,
        "connections": clients,
        "messages": all.len(),
        "errors": errors,
        "seconds": secs,
        "throughput_mps": all.len() as f64 / secs,
        "latency": summary(&all),
    }))
}

/// One client's latencies (µs) and error count.
type ClientResult = anyhow::Result<(Histogram<u64>, u64)>;

/// Waits for every client task and merges their latencies and error counts.
async fn gather(tasks: Vec<tokio::task::JoinHandle<ClientResult>>) -> ClientResult {
    let mut all = histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(&h).ok();
        errors += e;
    }
    Ok((all, errors))
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A ticker for client `i` of `n`, each firing every `every`, with the
/// clients' phases spread evenly so that the total load is smooth, not bursts.
fn paced(every: Duration, i: usize, n: usize) -> tokio::time::Interval {
    let offset = every.mul_f64(i as f64 / n.max(1) as f64);
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

async fn units(addr: SocketAddr, token: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut c = Conn::connect(addr, Some(token)).await?;
    let r = c.get("/api/v1/units").await?;
    if r.status != 200 {
        bail!("GET /api/v1/units answered {}", r.status);
    }
    let v = r.json()?;
    Ok(v["units"]
        .as_array()
        .context("no units")?
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap_or_default().to_owned(),
                u["census"]["available"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

async fn unit_beds(c: &mut Conn, unit: &str) -> anyhow::Result<Vec<Value>> {
    let v = c.get(&format!("/api/v1/units/{unit}/beds")).await?.json()?;
    Ok(v["beds"].as_array().cloned().unwrap_or_default())
}

/// Which requests the read scenarios send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Health,
    Queries,
    Forecast,
    OrPredict,
    Patients,
}

/// The OR case of request `k` (surgeons and procedures rotate).
fn or_case(k: usize) -> Value {
    json!({
        "booked_minutes": 60 + (k % 7) * 20,
        "age": 30 + (k % 50),
        "asa": 1 + (k % 4),
        "procedure": format!("P{:02}", k % 20),
        "surgeon": format!("S{:02}", 1 + k % 30),
    })
}

async fn queries(a: &Args, kind: Reads) -> anyhow::Result<Value> {
    let floor = kind == Reads::Health;
    // Per path, a text the answer must contain (patients: the MRN of the
    // patient looked up, among the ranked hits).
    let mut expected: Arc<Vec<String>> = Arc::new(vec![]);
    let paths: Arc<Vec<String>> = if floor {
        Arc::new(vec!["/health".to_owned()])
    } else if kind == Reads::OrPredict {
        Arc::new(vec!["/api/v1/or/cases/predict".to_owned()])
    } else if kind == Reads::Patients {
        let people = population(a.first + a.messages);
        let step = (people.len() / 20_000).max(1);
        let (paths, mrns) = people
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, r)| (patient_query(r), format!("\"mrn\":\"LM{i}\"")))
            .unzip();
        expected = Arc::new(mrns);
        Arc::new(paths)
    } else if kind == Reads::Forecast {
        let units = units(a.addr, &a.token).await?;
        Arc::new(
            units
                .iter()
                .map(|(u, _)| format!("/api/v1/forecast/units/{u}"))
                .collect(),
        )
    } else {
        let units = units(a.addr, &a.token).await?;
        let mut probe = Conn::connect(a.addr, Some(&a.token)).await?;
        let mut bed_ids = vec![];
        for (u, _) in &units {
            for b in unit_beds(&mut probe, u).await? {
                bed_ids.push(b["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        // Kiosk mix: one unit board read for every bed read.
        let unit_paths: Vec<String> = units
            .iter()
            .map(|(u, _)| format!("/api/v1/units/{u}/beds"))
            .collect();
        let bed_paths: Vec<String> = bed_ids
            .iter()
            .map(|b| format!("/api/v1/beds/{b}"))
            .collect();
        Arc::new(
            (0..unit_paths.len().max(bed_paths.len()))
                .flat_map(|i| {
                    [
                        unit_paths[i % unit_paths.len()].clone(),
                        bed_paths[i % bed_paths.len()].clone(),
                    ]
                })
                .collect(),
        )
    };
    let barrier = Arc::new(Barrier::new(a.clients));
    let warmup = Duration::from_secs_f64(a.warmup);
    let run = Duration::from_secs_f64(a.seconds);
    let interval = (a.rate > 0.0).then(|| Duration::from_secs_f64(a.clients as f64 / a.rate));
    let mut tasks = vec![];
    let n = a.clients;
    for i in 0..a.clients {
        let paths = paths.clone();
        let expected = expected.clone();
        let barrier = barrier.clone();
        let (addr, token) = (a.addr, a.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            let mut missed = 0u64;
            let mut c = Conn::connect_as(addr, Some(&token), Some(i)).await?;
            barrier.wait().await;
            let start = Instant::now();
            let mut k = i;
            let mut tick = interval.map(|iv| paced(iv, i, n));
            loop {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let now = Instant::now();
                let elapsed = now - start;
                if elapsed >= warmup + run {
                    break;
                }
                let path = &paths[k % paths.len()];
                let expect = expected.get(k % paths.len());
                k += 7;
                let reply = if kind == Reads::OrPredict {
                    c.post(path, &or_case(k)).await
                } else {
                    c.get(path).await
                };
                let ok = matches!(&reply, Ok(r) if r.status == 200);
                if elapsed >= warmup {
                    let _ = h.record(now.elapsed().as_micros().max(1) as u64);
                    if !ok {
                        errors += 1;
                    }
                    if let (Some(e), Ok(r)) = (expect, &reply)
                        && ok
                        && !String::from_utf8_lossy(&r.body).contains(e.as_str())
                    {
                        missed += 1;
                    }
                }
                if !ok {
                    c = Conn::connect_as(addr, Some(&token), Some(i)).await?;
                }
            }
            anyhow::Ok((h, errors, missed))
        }));
    }
    let mut all = histogram();
    let (mut errors, mut missed) = (0, 0);
    for t in tasks {
        let (h, e, m) = t.await??;
        all.add(&h).ok();
        errors += e;
        missed += m;
    }
    Ok(json!({
        "missed": missed,
        "scenario": match kind {
            Reads::Health => "health",
            Reads::Queries => "queries",
            Reads::Forecast => "forecast",
            Reads::OrPredict => "or-predict",
            Reads::Patients => "patients",
        },
        "clients": a.clients,
        "target_rps": if a.rate > 0.0 { json!(a.rate) } else { json!("closed-loop") },
        "seconds": a.seconds,
        "requests": all.len(),
        "errors": errors,
        "throughput_rps": all.len() as f64 / a.seconds,
        "latency": summary(&all),
    }))
}

async fn post(c: &mut Conn, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let r = c.post(path, &body).await?;
    Ok((r.status, r.json().unwrap_or(Value::Null)))
}

async fn assign(a: &Args) -> anyhow::Result<Value> {
    // Each client owns a disjoint set of vacant-clean beds.
    let units = units(a.addr, &a.token).await?;
    let mut probe = Conn::connect(a.addr, Some(&a.token)).await?;
    let mut free = vec![];
    for (u, _) in &units {
        for b in unit_beds(&mut probe, u).await? {
            if b["state"] == "vacant_clean" {
                free.push((
                    b["id"].as_str().unwrap_or_default().to_owned(),
                    b["version"].as_u64().unwrap_or(1),
                ));
            }
        }
    }
    let clients = a.clients.min(free.len()).max(1);
    let per_client_rate = a.rate / clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client_rate);
    let warmup = Duration::from_secs_f64(a.warmup);
    let run = Duration::from_secs_f64(a.seconds);
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = vec![];
    for i in 0..clients {
        let beds: Vec<(String, u64)> = free.iter().skip(i).step_by(clients).cloned().collect();
        let barrier = barrier.clone();
        let (addr, token) = (a.addr, a.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            let mut c = Conn::connect_as(addr, Some(&token), Some(i)).await?;
            barrier.wait().await;
            let start = Instant::now();
            let mut tick = paced(interval, i, clients);
            let mut beds = beds;
            let mut step = 0usize;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let elapsed = start.elapsed();
                if elapsed >= warmup + run {
                    break;
                }
                let slot = step % beds.len();
                let (bed, version) = beds[slot].clone();
                // Cycle: assign, release, mark clean (three durable writes per bed).
                let (path, body) = match (step / beds.len()) % 3 {
                    0 => {
                        n += 1;
                        (
                            format!("/api/v1/beds/{bed}/assign"),
                            json!({ "encounter": format!("LOAD-{i}-{n}"), "version": version }),
                        )
                    }
                    1 => (
                        format!("/api/v1/beds/{bed}/release"),
                        json!({ "version": version }),
                    ),
                    _ => (
                        format!("/api/v1/beds/{bed}/status"),
                        json!({ "status": "clean", "version": version }),
                    ),
                };
                let sent = Instant::now();
                let (status, v) = post(&mut c, &path, body).await?;
                let took = sent.elapsed();
                if status == 200 {
                    beds[slot].1 = v["bed"]["version"].as_u64().unwrap_or(version + 1);
                } else if let Ok(r) = c.get(&format!("/api/v1/beds/{bed}")).await
                    && let Ok(v) = r.json()
                {
                    // Re-read the bed to resynchronise.
                    beds[slot].1 = v["bed"]["version"].as_u64().unwrap_or(version);
                }
                if elapsed >= warmup {
                    let _ = h.record(took.as_micros().max(1) as u64);
                    if status != 200 {
                        errors += 1;
                    }
                }
                step += 1;
            }
            anyhow::Ok((h, errors))
        }));
    }
    let (all, errors) = gather(tasks).await?;
    Ok(json!({
        "scenario": "assign",
        "clients": clients,
        "target_rps": a.rate,
        "seconds": a.seconds,
        "requests": all.len(),
        "errors": errors,
        "throughput_rps": all.len() as f64 / a.seconds,
        "latency": summary(&all),
    }))
}

async fn mass_casualty(a: &Args) -> anyhow::Result<Value> {
    let units = units(a.addr, &a.token).await?;
    // Spread the admissions over units in proportion to their free beds.
    let total_free: u64 = units.iter().map(|(_, f)| f).sum();
    if total_free == 0 {
        bail!("no free beds");
    }
    let mut plan = vec![];
    let mut left = a.admissions;
    for (u, f) in &units {
        let share = ((a.admissions as u64 * f) / total_free) as usize;
        let share = share.min(*f as usize).min(left);
        plan.extend(std::iter::repeat_n(u.clone(), share));
        left -= share;
    }
    for (u, f) in &units {
        let used = plan.iter().filter(|p| *p == u).count();
        let extra = (*f as usize - used).min(left);
        plan.extend(std::iter::repeat_n(u.clone(), extra));
        left -= extra;
    }
    let mut conns = vec![];
    for i in 0..a.admissions {
        conns.push(Conn::connect_as(a.addr, Some(&a.token), Some(i)).await?);
    }
    let unit_ids: Arc<Vec<String>> = Arc::new(units.iter().map(|(u, _)| u.clone()).collect());
    let barrier = Arc::new(Barrier::new(a.admissions + 1));
    let mut tasks = vec![];
    for (i, mut c) in conns.into_iter().enumerate() {
        let first = plan.get(i).cloned().unwrap_or_else(|| units[0].0.clone());
        let (barrier, unit_ids) = (barrier.clone(), unit_ids.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let sex = if i % 2 == 0 { "female" } else { "male" };
            let body = json!({
                "encounter": format!("MCI-{i:04}"),
                "patient": { "mrn": format!("MCI-MRN-{i:04}"), "sex": sex },
            });
            // Planned unit first; when it has no suitable bed left (gender,
            // same-sex rooms), try the others, as a bed manager would.
            let start_at = unit_ids.iter().position(|u| *u == first).unwrap_or(0);
            let mut result = Err(anyhow::anyhow!("no unit tried"));
            for k in 0..unit_ids.len() {
                let unit = &unit_ids[(start_at + k) % unit_ids.len()];
                result = post(&mut c, &format!("/api/v1/units/{unit}/placements"), body.clone()).await;
                if !matches!(&result, Ok((409, v)) if v["type"] == "urn:hms:problem:no-bed-available") {
                    break;
                }
            }
            (result, sent.elapsed())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut h = histogram();
    let mut failures = 0;
    let mut beds = vec![];
    for t in tasks {
        let (r, took) = t.await?;
        let _ = h.record(took.as_micros().max(1) as u64);
        match r {
            Ok((201, v)) => beds.push(v["bed"]["id"].as_str().unwrap_or_default().to_owned()),
            _ => failures += 1,
        }
    }
    let wall = start.elapsed();
    // Check the board: every placed encounter in exactly one bed, no bed twice.
    let mut probe = Conn::connect(a.addr, Some(&a.token)).await?;
    let mut holders: HashMap<String, Vec<String>> = HashMap::new();
    for (u, _) in &units {
        for b in unit_beds(&mut probe, u).await? {
            if let Some(e) = b["encounter"].as_str()
                && e.starts_with("MCI-")
            {
                holders
                    .entry(e.to_owned())
                    .or_default()
                    .push(b["id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let distinct: HashSet<_> = beds.iter().collect();
    let double = (beds.len() - distinct.len()) + holders.values().filter(|v| v.len() > 1).count();
    Ok(json!({
        "scenario": "mass-casualty",
        "admissions": a.admissions,
        "placed": beds.len(),
        "failures": failures,
        "double_assignments": double,
        "encounters_on_board": holders.len(),
        "all_done_ms": wall.as_secs_f64() * 1000.0,
        "latency": summary(&h),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !a.addr.ip().is_loopback() {
        bail!("hms-load only targets loopback addresses");
    }
    let out = match a.scenario {
        Scenario::Mllp => mllp(&a).await?,
        Scenario::Health => queries(&a, Reads::Health).await?,
        Scenario::Queries => queries(&a, Reads::Queries).await?,
        Scenario::Forecast => queries(&a, Reads::Forecast).await?,
        Scenario::OrPredict => queries(&a, Reads::OrPredict).await?,
        Scenario::Assign => assign(&a).await?,
        Scenario::MassCasualty => mass_casualty(&a).await?,
        Scenario::Patients => queries(&a, Reads::Patients).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
