//! `hms-load`: load generator for the kiosk API. Prints one JSON object.
//!
//! Scenarios (DESIGN.md section 7):
//! - `mllp`: HL7 over MLLP, one message at a time per connection, each
//!   waiting for its ACK (anything but AA counts as an error); `--trigger`
//!   A01 (admit into a configured bed), A28 (person add), S12 (an OR booking
//!   in a configured OR room, [`siu_s12`]) or P03 (one charge, [`dft_p03`]);
//! - `queries`: N keep-alive clients read unit bed lists and single beds as
//!   fast as they can for a fixed time (bed query p99 at ≥ 5,000 req/s);
//! - `assign`: durable bed mutations at a fixed total rate, each client
//!   cycling its own beds through assign → release → clean (assignment p99);
//! - `mass-casualty`: M simultaneous placements of new encounters into units
//!   with free beds; checks failures and double assignments afterwards;
//!   with `--or-add-ons N`, N emergency OR add-on cases leave at the same
//!   moment, each into a room with an elective list, and every elective case
//!   they displace must show as bumped;
//! - `or-day`: a synthetic day of the OR suite and its charges over MLLP,
//!   compared with the generator's truth exactly (`hms_e2e::or_day`);
//! - `coding-eval`: coding suggestions' top-5 hit rate on held-out synthetic
//!   visits against the fallback's;
//! - `fleet`: simulated appliances on the MQTT broker against the cloud's
//!   fleet registry (status change to `GET /api/v1/fleet`, its latency);
//! - `patients`: ranked patient look-ups by name and birth date against an
//!   index the `mllp` scenario filled with `--population` demographics;
//! - `kiosks`: the kiosk web app's unit boards: many open live streams
//!   (`/units/{unit}/live`), bed changes through the API at a fixed rate,
//!   and the time from each change's request to its tile on every stream
//!   showing that unit; the board page against `/health`.
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
    /// The kiosk web app: `--streams` live unit-board streams, bed changes at
    /// `--rate` for `--seconds`, change-to-stream latency, board page vs `/health`.
    Kiosks,
    /// A synthetic day of the configuration's OR suite and its charges
    /// (SIU and DFT over `--mllp`), compared with the generator's truth.
    OrDay,
    /// Coding suggestions: `--days` days of synthetic charges, all but the
    /// last as history; top-5 hit rate on the last day's visits.
    CodingEval,
    /// `--nodes` simulated appliances on the MQTT broker `--mqtt` (retained
    /// status and telemetry every `--telemetry-s`) against the cloud at
    /// `--addr` (operator `--token`): how soon a status change shows in
    /// `GET /api/v1/fleet`, and that endpoint's latency.
    Fleet,
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
    /// mllp: number of the first message (control ids, MRNs, OR case ids
    /// and charge transaction ids count from it), so that successive runs
    /// send new messages rather than duplicates.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// mllp: trigger to send: A01 (admit, each into its own configured bed),
    /// A28 (person add), S12 (SIU new OR booking, spread over the configured
    /// OR rooms and over days) or P03 (DFT posting one charge).
    #[arg(long, default_value = "A28", value_parser = ["A01", "A28", "S12", "P03"])]
    trigger: String,
    /// mllp, A01 and S12: the appliance's configuration, for the beds' (A01)
    /// or the OR rooms' (S12) HL7 locations.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Duration of the queries/assign scenarios (kiosks: of the changes), seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Total target rate, requests per second, spread evenly over the clients
    /// (open loop). For health/queries, 0 means closed loop: every client sends
    /// its next request as soon as the previous answer arrives (saturation).
    /// kiosks: bed changes per second.
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
    /// kiosks: live unit-board streams open at once, spread round-robin over the units.
    #[arg(long, default_value_t = 500)]
    streams: usize,
    /// or-day, coding-eval, mass-casualty with --or-add-ons: the appliance's MLLP address.
    #[arg(long)]
    mllp: Option<SocketAddr>,
    /// or-day, coding-eval: the generator's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// or-day: the day (`YYYY-MM-DD`); coding-eval: the first day.
    #[arg(long, default_value = "2027-03-01")]
    date: String,
    /// mass-casualty: emergency add-on OR cases sent over `--mllp` at the same
    /// moment as the admissions, each into a room of `--config` booked with an
    /// elective list on `--date` beforehand; each add-on displaces two cases.
    #[arg(long, default_value_t = 0)]
    or_add_ons: usize,
    /// fleet: simulated appliances.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// fleet: the MQTT broker (loopback).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// fleet: the region the simulated appliances report in.
    #[arg(long, default_value = "eu-west")]
    region: String,
    /// fleet: seconds between a simulated appliance's telemetry messages.
    #[arg(long, default_value_t = 60)]
    telemetry_s: u64,
    /// coding-eval: days generated (the last is held out).
    #[arg(long, default_value_t = 15)]
    days: usize,
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

/// The first day OR cases are booked on, 2027-01-04 (a Monday), in days
/// since 1970-01-01.
const FIRST_OR_DAY: usize = 20_822;

/// Slots per OR room and day: 07:00, 08:30, … 17:30.
const OR_SLOTS: usize = 8;

/// The civil date (year, month, day) `days` days after 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: usize) -> (usize, usize, usize) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + usize::from(month <= 2);
    (year, month, day)
}

/// The start of OR case `i` with `rooms` rooms, an HL7 time
/// (`YYYYMMDDHHMM`, the hospital's zone): case `i` is in room `i % rooms`,
/// in slot `(i / rooms) % 8` (07:00 + 90 min a slot) of day
/// `i / (rooms * 8)` from 2027-01-04, so no two cases of a room overlap.
fn or_start(i: usize, rooms: usize) -> String {
    let rooms = rooms.max(1);
    let (y, mo, d) = civil_from_days(FIRST_OR_DAY + i / (rooms * OR_SLOTS));
    let minute = 7 * 60 + (i / rooms) % OR_SLOTS * 90;
    format!("{y:04}{mo:02}{d:02}{:02}{:02}", minute / 60, minute % 60)
}

/// SIU^S12 number `i`: a new elective booking of case `LC{i}` (patient
/// `LM{i}`) for 60 min, in OR room `i % rooms` (AIL-3 `rooms[i % rooms]`)
/// at [`or_start`]. The start is in SCH-11.4 and AIS-4, the duration in
/// SCH-9/10 and AIS-7/8; procedure (AIS-3) and surgeon (AIP-3) rotate.
fn siu_s12(i: usize, rooms: &[String]) -> String {
    let start = or_start(i, rooms.len());
    let room = &rooms[i % rooms.len()];
    let (procedure, surgeon) = (i % 20, 1 + i % 30);
    format!(
        "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||SIU^S12^SIU_S12|LS{i}|P|2.5.1\r\
         SCH|LC{i}^LOAD||||||ROUTINE||60|min|^^^{start}^^R\r\
         PID|1||LM{i}^^^TH^MR||Load^Patient{i}||19700101|F\r\
         RGS|1\r\
         AIS|1||P{procedure:02}^Procedure {procedure}|{start}|||60|min\r\
         AIL|1||{room}\r\
         AIP|1||S{surgeon:02}^Load^Surgeon{surgeon}|SURG^Surgeon\r"
    )
}

/// The charge codes `dft_p03` rotates through: (code, text, amount, diagnosis).
const CHARGES: [(&str, &str, &str, &str); 5] = [
    ("44970", "Laparoscopic appendectomy", "1250.00", "K35.80"),
    (
        "74177",
        "CT abdomen and pelvis with contrast",
        "310.25",
        "R10.9",
    ),
    ("99223", "Initial hospital care", "225.00", "I10"),
    ("36415", "Venipuncture", "12.50", "E11.9"),
    ("J2270", "Morphine sulfate injection", "14.50", "M54.5"),
];

/// DFT^P03 number `i`: one charge (FT1, type CG, quantity 1), transaction
/// `LT{i}`, on visit `LV{i % 5000}` (PV1-19) of patient `LM{i % 5000}`, with
/// one diagnosis (DG1); the code rotates through [`CHARGES`].
fn dft_p03(i: usize) -> String {
    let v = i % 5000;
    let (code, text, amount, dx) = CHARGES[i % CHARGES.len()];
    format!(
        "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||DFT^P03^DFT_P03|LF{i}|P|2.5.1\r\
         EVN|P03|20261127101500\r\
         PID|1||LM{v}^^^TH^MR||Load^Patient{v}||19700101|F\r\
         PV1|1|I|OR^^^MAIN{}LV{v}\r\
         FT1|1|LT{i}||20261127100000||CG|{code}^{text}^CPT4|||1|{amount}||OR\r\
         DG1|1||{dx}^^I10\r",
        "|".repeat(16)
    )
}

/// Message `i` of the `mllp` scenario for `trigger`: `locations` are the
/// beds' PV1-3 (A01) or the OR rooms' AIL-3 (S12), `people` the population
/// records (A28 with `--population`).
fn mllp_message(
    trigger: &str,
    i: usize,
    locations: &[String],
    people: &[hms_domain::empi::Record],
) -> String {
    match trigger {
        "A01" => format!(
            "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|L{i}|P|2.5.1\r\
             EVN|A01|20261127101500\rPID|1||LM{i}^^^TH^MR||Load^Patient{i}||19700101|F\r\
             PV1|1|I|{}||||||||||||||||LV{i}\r",
            locations[i]
        ),
        "S12" => siu_s12(i, locations),
        "P03" => dft_p03(i),
        _ => format!(
            "MSH|^~\\&|LOAD|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|L{i}|P|2.5.1\r\
             EVN|A28|20261127101500\r{}",
            people.get(i).map_or_else(
                || format!("PID|1||LM{i}^^^TH^MR||Load^Patient{i}||19700101|F\r"),
                |r| population_pid(i, r)
            )
        ),
    }
}

/// HL7 over MLLP: `clients` connections share `messages` (numbered from
/// `--first`); each connection sends one message, waits for its ACK, and so
/// on. Anything but an AA counts as an error.
async fn mllp(a: &Args) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let load = |cfg: &std::path::Path| {
        firmware_config::load(cfg)
            .map(|l| l.config)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let pl = |h: &firmware_config::Hl7Location| {
        format!("{}^{}^{}^{}", h.point_of_care, h.room, h.bed, h.facility)
    };
    let locations: Vec<String> = match (&a.trigger[..], &a.config) {
        ("A01", Some(cfg)) => load(cfg)?.beds.iter().map(|b| pl(&b.hl7)).collect(),
        ("A01", None) => bail!("--trigger A01 needs --config (the beds' HL7 locations)"),
        ("S12", Some(cfg)) => load(cfg)?.or_rooms.iter().map(|r| pl(&r.hl7)).collect(),
        ("S12", None) => bail!("--trigger S12 needs --config (the OR rooms' HL7 locations)"),
        _ => vec![],
    };
    if a.trigger == "A01" && a.first + a.messages > locations.len() {
        bail!(
            "{} A01 messages need as many beds; the hospital has {}",
            a.messages,
            locations.len()
        );
    }
    if a.trigger == "S12" && locations.is_empty() {
        bail!("--trigger S12 needs OR rooms; the configuration has no [[or_room]]");
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
                let body = mllp_message(&trigger, i, &locations, &people);
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
                    if errors == 0 {
                        eprintln!(
                            "hms-load: mllp: message {i} answered: {}",
                            String::from_utf8_lossy(&got)
                                .trim_matches(['\x0b', '\x1c', '\r'])
                                .replace('\r', " | ")
                        );
                    }
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
        "first": a.first,
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

/// For `--or-add-ons N`: books an elective list in each of N rooms on
/// `--date` (07:00, 08:30, 10:00 and 11:30 UTC, an hour each) and returns
/// the N emergency add-ons (08:00 UTC for 150 minutes: each overlaps the
/// 08:30 and 10:00 cases of its room) to send with the admissions.
async fn or_lists(a: &Args) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    use hms_e2e::or_day::{Booking, rooms, send};
    if a.or_add_ons == 0 {
        return Ok(vec![]);
    }
    let mllp = a.mllp.context("--or-add-ons needs --mllp")?;
    let cfg = a
        .config
        .as_ref()
        .context("--or-add-ons needs --config (the OR rooms)")?;
    let rooms = rooms(cfg)?;
    if rooms.len() < a.or_add_ons {
        bail!(
            "{} add-ons need as many OR rooms; the hospital has {}",
            a.or_add_ons,
            rooms.len()
        );
    }
    let ymd = a.date.replace('-', "");
    let at = |h: u32, m: u32| format!("{ymd}{h:02}{m:02}00+0000");
    let mut electives = vec![];
    let mut add_ons = vec![];
    for (r, room) in rooms.iter().take(a.or_add_ons).enumerate() {
        for (k, (h, m)) in [(7, 0), (8, 30), (10, 0), (11, 30)].into_iter().enumerate() {
            let case = format!("MCE-{ymd}-{r}-{k}");
            electives.push(
                Booking {
                    trigger: "S12",
                    control: &format!("MCE-{ymd}-{r}-{k}"),
                    case: &case,
                    room_pl: &room.pl,
                    start: &at(h, m),
                    minutes: 60,
                    urgent: false,
                    visit: &format!("MCEV-{r}-{k}"),
                    procedure: "knee_arthroscopy",
                    surgeon: "S05",
                }
                .message(&at(6, 0)),
            );
        }
        add_ons.push((
            Booking {
                trigger: "S12",
                control: &format!("MCU-{ymd}-{r}"),
                case: &format!("MCU-{ymd}-{r}"),
                room_pl: &room.pl,
                start: &at(8, 0),
                minutes: 150,
                urgent: true,
                visit: &format!("MCUV-{r}"),
                procedure: "colectomy",
                surgeon: "S11",
            }
            .message(&at(7, 55)),
            mllp,
        ));
    }
    let acks = send(mllp, &electives).await?;
    if acks.iter().any(|a| a != "AA") {
        bail!("the elective lists were not all accepted: {acks:?}");
    }
    Ok(add_ons)
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
    let add_ons = or_lists(a).await?;
    let unit_ids: Arc<Vec<String>> = Arc::new(units.iter().map(|(u, _)| u.clone()).collect());
    let barrier = Arc::new(Barrier::new(a.admissions + add_ons.len() + 1));
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
    // The add-ons leave at the same moment as the admissions, one
    // connection each.
    let mut or_tasks = vec![];
    for (msg, mllp) in add_ons.iter().cloned() {
        let barrier = barrier.clone();
        or_tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let acks = hms_e2e::or_day::send(mllp, &[msg]).await;
            (acks, Instant::now())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut or_done = start;
    let mut or_errors = 0;
    for t in or_tasks {
        let (acks, at) = t.await?;
        or_done = or_done.max(at);
        if !acks.is_ok_and(|a| a == ["AA"]) {
            or_errors += 1;
        }
    }
    let or_ms = or_done.duration_since(start).as_secs_f64() * 1000.0;
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
    let (mut bumped_found, mut elective_cases) = (0usize, 0usize);
    if !add_ons.is_empty() {
        let day = probe
            .get(&format!("/api/v1/or/cases?date={}", a.date))
            .await?
            .json()?;
        for c in day["cases"].as_array().into_iter().flatten() {
            if c["case_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("MCE-"))
            {
                elective_cases += 1;
                if c["status"] == "bumped"
                    && c["bumped_by"]
                        .as_str()
                        .is_some_and(|b| b.starts_with("MCU-"))
                {
                    bumped_found += 1;
                }
            }
        }
    }
    Ok(json!({
        "scenario": "mass-casualty",
        "or_add_ons": add_ons.len(),
        "or_add_on_errors": or_errors,
        "or_elective_cases": elective_cases,
        "or_bumped_expected": 2 * add_ons.len(),
        "or_bumped": bumped_found,
        "or_add_ons_done_ms": or_ms,
        "admissions": a.admissions,
        "placed": beds.len(),
        "failures": failures,
        "double_assignments": double,
        "encounters_on_board": holders.len(),
        "all_done_ms": wall.as_secs_f64() * 1000.0,
        "latency": summary(&h),
    }))
}

/// The `fleet` scenario: `--nodes` appliances, each an MQTT client of its
/// own (hospital `load-h{i / 4}`, node `load-n{i}`), publish a retained
/// `status` (`online: true`) and telemetry every `--telemetry-s`. Once the
/// cloud lists them all, 200 status changes (a new `lag_seconds` each, one
/// every 20 ms) are timed from publish to their showing in
/// `GET /api/v1/fleet`, which is read back to back meanwhile (its latency
/// measured too). Then every simulated appliance clears its retained status.
async fn fleet(a: &Args) -> anyhow::Result<Value> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    if !a.mqtt.ip().is_loopback() {
        bail!("hms-load only targets loopback addresses");
    }
    let topic =
        |i: usize, leaf: &str| format!("hms/v1/{}/load-h{}/load-n{i}/{leaf}", a.region, i / 4);
    let status = |i: usize, lag: f64| {
        json!({
            "online": true, "region": a.region, "hospital": format!("load-h{}", i / 4),
            "node": format!("load-n{i}"), "version": "0.1.0", "build": "load",
            "uptime_s": 1, "health": {"status": "ok", "components": {}},
            "acked_seq": 100, "local_seq": 100, "lag_seconds": lag, "outbox_bytes": 0,
            "model_set": null, "config_version": null,
        })
        .to_string()
    };
    let mut clients = Vec::with_capacity(a.nodes);
    for i in 0..a.nodes {
        let mut opts =
            MqttOptions::new(format!("load-n{i}"), a.mqtt.ip().to_string(), a.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 16);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        client
            .publish(topic(i, "status"), QoS::AtLeastOnce, true, status(i, 0.0))
            .await?;
        clients.push(client);
    }
    // Telemetry at the default rate, spread over the period.
    let every = Duration::from_secs(a.telemetry_s.max(1));
    for (i, c) in clients.iter().enumerate() {
        let (c, t) = (c.clone(), topic(i, "telemetry"));
        let mut tick = paced(every, i, a.nodes);
        tokio::spawn(async move {
            loop {
                tick.tick().await;
                let body =
                    json!({"at": "", "census": {"occupied": 10}, "adt_messages_per_min": 3.0});
                if c.publish(&t, QoS::AtMostOnce, false, body.to_string())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let mut http = Conn::connect(a.addr, Some(&a.token)).await?;
    let listed = |v: &Value| -> HashMap<String, f64> {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["node"].as_str().is_some_and(|s| s.starts_with("load-n")))
            .map(|n| {
                (
                    n["node"].as_str().unwrap_or_default().to_owned(),
                    n["lag_seconds"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect()
    };
    let start = Instant::now();
    loop {
        let v = http.get("/api/v1/fleet").await?.json()?;
        if listed(&v).len() >= a.nodes {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the cloud lists {} of {} simulated appliances after 120 s",
                listed(&v).len(),
                a.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_listed_s = start.elapsed().as_secs_f64();
    // The peer: the broker's own delivery of the same changes to a plain
    // subscriber (the floor under any registry).
    let delivered: Arc<std::sync::Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
    {
        let mut opts = MqttOptions::new("load-peer", a.mqtt.ip().to_string(), a.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (peer, mut events) = AsyncClient::new(opts, 64);
        peer.subscribe(format!("hms/v1/{}/+/+/status", a.region), QoS::AtLeastOnce)
            .await?;
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let _keep = peer;
            while let Ok(ev) = events.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev
                    && let Ok(v) = serde_json::from_slice::<Value>(&p.payload)
                    && let (Some(node), Some(lag)) = (v["node"].as_str(), v["lag_seconds"].as_f64())
                {
                    delivered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((node.to_owned(), lag as u64), Instant::now());
                }
            }
        });
    }
    // Status changes, one every 20 ms from a task of their own, timed to
    // their showing; the endpoint is read back to back meanwhile.
    let changes = 200.min(a.nodes);
    let sent: Arc<std::sync::Mutex<Vec<(String, u64, Instant)>>> = Arc::default();
    let pending: Arc<std::sync::Mutex<HashMap<String, (f64, Instant)>>> = Arc::default();
    let publisher = {
        let (clients, pending, sent) = (clients.clone(), pending.clone(), sent.clone());
        let topics: Vec<String> = (0..a.nodes).map(|i| topic(i, "status")).collect();
        let bodies: Vec<(usize, f64, String)> = (0..changes)
            .map(|k| {
                let i = (k * 7919) % a.nodes;
                let lag = 1000.0 + k as f64;
                (i, lag, status(i, lag))
            })
            .collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for (i, lag, body) in bodies {
                tick.tick().await;
                let at = Instant::now();
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(format!("load-n{i}"), (lag, at));
                sent.lock().unwrap_or_else(|p| p.into_inner()).push((
                    format!("load-n{i}"),
                    lag as u64,
                    at,
                ));
                clients[i]
                    .publish(&topics[i], QoS::AtLeastOnce, true, body)
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    let mut visible = histogram();
    let mut reads = histogram();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = publisher.is_finished();
        let t = Instant::now();
        let v = http.get("/api/v1/fleet").await?.json()?;
        let _ = reads.record(t.elapsed().as_micros().max(1) as u64);
        let now = listed(&v);
        let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|node, (lag, at)| {
            if now.get(node).is_some_and(|l| (l - *lag).abs() < 1e-9) {
                let _ = visible.record(at.elapsed().as_micros().max(1) as u64);
                false
            } else {
                true
            }
        });
        if (done && p.is_empty()) || Instant::now() > deadline {
            break;
        }
    }
    publisher.await??;
    let not_seen = pending.lock().unwrap_or_else(|p| p.into_inner()).len();
    let mut broker = histogram();
    {
        let d = delivered.lock().unwrap_or_else(|p| p.into_inner());
        for (node, lag, at) in sent.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(got) = d.get(&(node.clone(), *lag)) {
                let _ = broker.record(got.duration_since(*at).as_micros().max(1) as u64);
            }
        }
    }
    for (i, c) in clients.iter().enumerate() {
        let _ = c
            .publish(topic(i, "status"), QoS::AtLeastOnce, true, Vec::new())
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(json!({
        "scenario": "fleet",
        "nodes": a.nodes,
        "all_listed_seconds": all_listed_s,
        "status_changes": changes,
        "not_seen": not_seen,
        "status_visible": summary(&visible),
        "peer_broker_delivery": summary(&broker),
        "fleet_get": summary(&reads),
    }))
}

/// The `or-day` and `coding-eval` scenarios ([`hms_e2e::or_day`]).
async fn or_day(a: &Args) -> anyhow::Result<Value> {
    use hms_e2e::or_day::{add_days, check_day, coding_eval, generate, rooms};
    let mllp = a
        .mllp
        .context("--mllp (the appliance's MLLP address) is needed")?;
    if !mllp.ip().is_loopback() {
        bail!("hms-load only targets loopback addresses");
    }
    let cfg = a
        .config
        .as_ref()
        .context("--config (the appliance's configuration, for its OR rooms) is needed")?;
    let rooms = rooms(cfg)?;
    Ok(match a.scenario {
        Scenario::OrDay => {
            let day = generate(a.seed, &rooms, &a.date);
            let mut v = check_day(a.addr, mllp, &a.token, &day).await?;
            v["scenario"] = json!("or-day");
            v["rooms"] = json!(rooms.len());
            v
        }
        _ => {
            let days: Vec<_> = (0..a.days.max(2))
                .map(|i| generate(a.seed + i as u64, &rooms, &add_days(&a.date, i as i64)))
                .collect();
            let mut v = coding_eval(a.addr, mllp, &a.token, &days).await?;
            v["scenario"] = json!("coding-eval");
            v
        }
    })
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
        Scenario::Kiosks => kiosks::run(&a).await?,
        Scenario::OrDay | Scenario::CodingEval => or_day(&a).await?,
        Scenario::Fleet => fleet(&a).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

mod kiosks {
    //! The `kiosks` scenario: the kiosk web app's unit boards under load.
    //!
    //! Signs in once (`POST /login` with the bed manager token, from the
    //! appliance's own origin) and opens `--streams` live streams (`GET
    //! /units/{unit}/live` with the session cookie), spread round-robin over
    //! the units, each from a loopback source address of its own. Once every
    //! stream has had its `snapshot`, one keep-alive connection reads the
    //! largest unit's board page and another `/health` (its peer),
    //! alternately, [`PAGE_REQUESTS`] times each. Then bed changes go through
    //! the API at `--rate` per second for `--seconds`: housekeeping cycles
    //! (dirty → cleaning → clean) of beds that were vacant and clean at the
    //! start, taken round-robin over the units, over [`WRITERS`] connections.
    //! Each change is known by its bed and the version it committed; it has
    //! reached a stream when a `tile` event of that bed with that
    //! `data-version` (or a later one: a stream that fell behind sends its
    //! whole unit again) arrives there. Change-to-stream latency runs from
    //! the change request being sent to that arrival, measured at the stream,
    //! for every stream showing the bed's unit; a delivery not there
    //! [`GRACE`] after the last change is missed.

    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use hms_e2e::client::{Conn, connect_tcp};
    use hyper::Method;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{mpsc, watch};

    use super::{Args, encode, histogram, paced, summary};

    /// Connections the changes go over, paced together at `--rate` (so
    /// that one slow durable write does not hold up the next change).
    const WRITERS: usize = 8;
    /// How long after the last change the tiles still on their way may take.
    const GRACE: Duration = Duration::from_secs(5);
    /// Board page and `/health` requests measured, each.
    const PAGE_REQUESTS: usize = 200;
    /// Unmeasured board page and `/health` requests before those.
    const PAGE_WARMUP: usize = 10;
    /// How long the streams may take to all have had their snapshot.
    const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
    /// Longest wait for a response head.
    const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
    /// The session cookie's name.
    const COOKIE: &str = "hms_session";

    /// A bed the changes cycle.
    #[derive(Debug, Clone)]
    struct Bed {
        id: String,
        unit: String,
        version: u64,
        /// Changes made to it so far (the next status follows from it).
        step: usize,
    }

    /// A committed change: the bed, the version it committed and when its
    /// request was sent.
    #[derive(Debug)]
    struct Change {
        bed: String,
        unit: String,
        version: u64,
        sent: Instant,
    }

    /// A stream's tiles after its snapshot: per bed, (data-version, arrival).
    type Arrivals = HashMap<String, Vec<(u64, Instant)>>;
    /// Per bed, the highest data-version a stream has shown since its snapshot.
    type Seen = Arc<Mutex<HashMap<String, u64>>>;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads a response head from `s`: the head as text, and the bytes of
    /// the body that came with it.
    async fn read_head(s: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let body = got.split_off(end + 4);
                return Ok((String::from_utf8_lossy(&got).into_owned(), body));
            }
            if got.len() > 64 * 1024 {
                bail!("a response head over 64 KiB");
            }
            let n = tokio::time::timeout(HEAD_TIMEOUT, s.read(&mut buf))
                .await
                .context("no response head within 30 s")??;
            if n == 0 {
                bail!("the appliance closed the connection before answering");
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// The status code of response head `head` (0 when unreadable).
    fn status(head: &str) -> u16 {
        head.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The values of header `name` in response head `head`.
    fn headers<'h>(head: &'h str, name: &str) -> impl Iterator<Item = &'h str> {
        head.lines().skip(1).filter_map(move |l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Signs in to the pages with `token`; the session cookie's value.
    async fn sign_in(addr: SocketAddr, token: &str) -> anyhow::Result<String> {
        let mut s = connect_tcp(addr, None)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let form = format!("token={}", encode(token));
        let req = format!(
            "POST /login HTTP/1.1\r\nhost: {addr}\r\norigin: http://{addr}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{form}",
            form.len()
        );
        s.write_all(req.as_bytes()).await?;
        let (head, _) = read_head(&mut s).await?;
        if status(&head) != 303 {
            bail!(
                "POST /login answered {} rather than 303 (is the token live?)",
                status(&head)
            );
        }
        headers(&head, "set-cookie")
            .find_map(|c| c.strip_prefix("hms_session=")?.split(';').next())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .context("POST /login set no session cookie")
    }

    /// Where [`Sse`] is in the chunked transfer coding.
    #[derive(Debug, Clone, Copy)]
    enum Chunk {
        /// Waiting for a chunk-size line.
        Size,
        /// Inside a chunk, this many bytes left.
        Data(usize),
        /// After a chunk's data: its CRLF.
        End,
        /// The last chunk came: the body is over.
        Done,
    }

    /// An incremental reader of a `text/event-stream` body: bytes in as
    /// they arrive (the chunked transfer coding undone when the response
    /// uses it), whole events (name, data) out.
    #[derive(Debug)]
    struct Sse {
        chunked: bool,
        state: Chunk,
        /// Bytes of the chunked coding not decoded yet.
        raw: Vec<u8>,
        /// Decoded body not split into lines yet.
        body: Vec<u8>,
        event: String,
        data: String,
    }

    impl Sse {
        fn new(chunked: bool) -> Sse {
            Sse {
                chunked,
                state: Chunk::Size,
                raw: Vec::new(),
                body: Vec::new(),
                event: String::new(),
                data: String::new(),
            }
        }

        /// Whether the body is over (its last chunk came).
        fn done(&self) -> bool {
            matches!(self.state, Chunk::Done)
        }

        /// Takes `bytes`; pushes the events they complete onto `out`.
        fn feed(&mut self, bytes: &[u8], out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
            if self.chunked {
                self.raw.extend_from_slice(bytes);
                self.dechunk()?;
            } else {
                self.body.extend_from_slice(bytes);
            }
            self.events(out);
            Ok(())
        }

        /// Moves the data of the complete parts of `raw` to `body`.
        fn dechunk(&mut self) -> anyhow::Result<()> {
            let mut at = 0;
            loop {
                let rest = &self.raw[at..];
                match self.state {
                    Chunk::Size => {
                        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                            break;
                        };
                        let line =
                            std::str::from_utf8(&rest[..eol]).context("a chunk size line")?;
                        let size = line.split(';').next().unwrap_or_default().trim();
                        let size = usize::from_str_radix(size, 16)
                            .with_context(|| format!("chunk size {size:?}"))?;
                        at += eol + 2;
                        self.state = if size == 0 {
                            Chunk::Done
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        if rest.is_empty() {
                            break;
                        }
                        let n = left.min(rest.len());
                        self.body.extend_from_slice(&rest[..n]);
                        at += n;
                        self.state = if n == left {
                            Chunk::End
                        } else {
                            Chunk::Data(left - n)
                        };
                    }
                    Chunk::End => {
                        if rest.len() < 2 {
                            break;
                        }
                        if !rest.starts_with(b"\r\n") {
                            bail!("a chunk's data not followed by CRLF");
                        }
                        at += 2;
                        self.state = Chunk::Size;
                    }
                    Chunk::Done => break,
                }
            }
            self.raw.drain(..at);
            Ok(())
        }

        /// Splits the complete lines of `body` into events.
        fn events(&mut self, out: &mut Vec<(String, String)>) {
            let mut at = 0;
            while let Some(nl) = self.body[at..].iter().position(|&b| b == b'\n') {
                let line = &self.body[at..at + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                at += nl + 1;
                if line.is_empty() {
                    if !self.event.is_empty() || !self.data.is_empty() {
                        out.push((
                            std::mem::take(&mut self.event),
                            std::mem::take(&mut self.data),
                        ));
                    }
                    continue;
                }
                let line = String::from_utf8_lossy(line);
                let (field, value) = line
                    .split_once(':')
                    .map_or((&*line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                match field {
                    "event" => value.clone_into(&mut self.event),
                    "data" => {
                        if !self.data.is_empty() {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                    }
                    // Comments (the keep-alives), `id`, `retry`.
                    _ => {}
                }
            }
            self.body.drain(..at);
        }
    }

    /// The bed and data-version of a `tile` event's data.
    fn tile(data: &str) -> Option<(String, u64)> {
        const ATTR: &str = "data-version=\"";
        let v: Value = serde_json::from_str(data).ok()?;
        let html = v["html"].as_str()?;
        let at = html.find(ATTR)? + ATTR.len();
        let digits = &html[at..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        Some((v["bed"].as_str()?.to_owned(), digits[..end].parse().ok()?))
    }

    /// One kiosk, stream number `i` showing `unit`: says on `ready` when
    /// its snapshot came (or why it failed before that), then records the
    /// tiles that arrive until `stop`. Its arrivals, and whether it broke
    /// before `stop`.
    async fn stream(
        addr: SocketAddr,
        i: usize,
        unit: String,
        cookie: Arc<str>,
        ready: mpsc::UnboundedSender<Result<(), String>>,
        mut stop: watch::Receiver<bool>,
        seen: Seen,
    ) -> (Arrivals, bool) {
        let mut arrivals = Arrivals::new();
        let followed = follow(
            addr,
            i,
            &unit,
            &cookie,
            &ready,
            &mut stop,
            &seen,
            &mut arrivals,
        )
        .await;
        match followed {
            Ok(()) => (arrivals, false),
            Err(e) => {
                let e = format!("stream {i} of unit {unit}: {e:#}");
                eprintln!("hms-load: kiosks: {e}");
                let _ = ready.send(Err(e));
                (arrivals, true)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn follow(
        addr: SocketAddr,
        i: usize,
        unit: &str,
        cookie: &str,
        ready: &mpsc::UnboundedSender<Result<(), String>>,
        stop: &mut watch::Receiver<bool>,
        seen: &Mutex<HashMap<String, u64>>,
        arrivals: &mut Arrivals,
    ) -> anyhow::Result<()> {
        let mut s = connect_tcp(addr, Some(i))
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let req = format!(
            "GET /units/{unit}/live HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\
             cookie: {COOKIE}={cookie}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let (head, rest) = read_head(&mut s).await?;
        if status(&head) != 200 {
            bail!("GET /units/{unit}/live answered {}", status(&head));
        }
        let chunked =
            headers(&head, "transfer-encoding").any(|v| v.eq_ignore_ascii_case("chunked"));
        let mut sse = Sse::new(chunked);
        let mut events = Vec::new();
        let mut live = false;
        let mut buf = vec![0u8; 16 * 1024];
        let mut now = Instant::now();
        sse.feed(&rest, &mut events)?;
        loop {
            for (name, data) in events.drain(..) {
                match name.as_str() {
                    "snapshot" if !live => {
                        live = true;
                        let _ = ready.send(Ok(()));
                    }
                    "tile" if live => {
                        let (bed, version) = tile(&data).with_context(|| {
                            format!("a tile event without a bed or data-version: {data:.200}")
                        })?;
                        {
                            let mut seen = lock(seen);
                            let top = seen.entry(bed.clone()).or_insert(0);
                            *top = (*top).max(version);
                        }
                        arrivals.entry(bed).or_default().push((version, now));
                    }
                    _ => {}
                }
            }
            if sse.done() {
                bail!("the stream ended");
            }
            let n = tokio::select! {
                _ = stop.changed() => return Ok(()),
                r = s.read(&mut buf) => r?,
            };
            now = Instant::now();
            if n == 0 {
                bail!("the appliance closed the stream");
            }
            sse.feed(&buf[..n], &mut events)?;
        }
    }

    /// One writer: cycles the housekeeping status of `beds`, one change per
    /// tick, for `run`. The committed changes and the number refused or failed.
    async fn writer(
        addr: SocketAddr,
        token: String,
        client: usize,
        mut beds: Vec<Bed>,
        mut tick: tokio::time::Interval,
        run: Duration,
    ) -> anyhow::Result<(Vec<Change>, u64)> {
        let mut c = Conn::connect_as(addr, Some(&token), Some(client)).await?;
        let start = Instant::now();
        let (mut done, mut errors) = (vec![], 0u64);
        for k in 0.. {
            tick.tick().await;
            if start.elapsed() >= run {
                break;
            }
            let slot = k % beds.len();
            let b = &mut beds[slot];
            let path = format!("/api/v1/beds/{}/status", b.id);
            let next = ["dirty", "cleaning", "clean"][b.step % 3];
            let body = json!({
                "status": next,
                "version": b.version,
            });
            let sent = Instant::now();
            let reply = c.post(&path, &body).await;
            let committed = match &reply {
                Ok(r) if r.status == 200 => {
                    r.json().ok().and_then(|v| v["bed"]["version"].as_u64())
                }
                _ => None,
            };
            match committed {
                Some(version) => {
                    b.version = version;
                    b.step += 1;
                    done.push(Change {
                        bed: b.id.clone(),
                        unit: b.unit.clone(),
                        version,
                        sent,
                    });
                }
                None => {
                    errors += 1;
                    match &reply {
                        Ok(r) => eprintln!(
                            "hms-load: kiosks: POST {path} answered {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(e) => eprintln!("hms-load: kiosks: POST {path}: {e:#}"),
                    }
                    if reply.is_err() {
                        c = Conn::connect_as(addr, Some(&token), Some(client)).await?;
                    }
                    // Re-read the bed to resynchronise.
                    if let Ok(r) = c.get(&format!("/api/v1/beds/{}", b.id)).await
                        && let Ok(v) = r.json()
                        && let Some(version) = v["bed"]["version"].as_u64()
                    {
                        b.version = version;
                    }
                }
            }
        }
        Ok((done, errors))
    }

    /// The units (id, beds) and, round-robin over the units, the beds that
    /// are vacant and clean now.
    async fn plan(c: &mut Conn) -> anyhow::Result<(Vec<(String, u64)>, Vec<Bed>)> {
        let r = c.get("/api/v1/units").await?;
        if r.status != 200 {
            bail!("GET /api/v1/units answered {}", r.status);
        }
        let units: Vec<(String, u64)> = r.json()?["units"]
            .as_array()
            .context("GET /api/v1/units: no units")?
            .iter()
            .filter_map(|u| {
                let id = u["id"].as_str()?.to_owned();
                Some((id, u["census"]["total"].as_u64().unwrap_or(0)))
            })
            .collect();
        let mut per_unit = vec![];
        for (u, _) in &units {
            let r = c.get(&format!("/api/v1/units/{u}/beds")).await?;
            if r.status != 200 {
                bail!("GET /api/v1/units/{u}/beds answered {}", r.status);
            }
            let beds: Vec<Bed> = r.json()?["beds"]
                .as_array()
                .context("no beds")?
                .iter()
                .filter(|b| b["state"] == "vacant_clean")
                .filter_map(|b| {
                    Some(Bed {
                        id: b["id"].as_str()?.to_owned(),
                        unit: u.clone(),
                        version: b["version"].as_u64()?,
                        step: 0,
                    })
                })
                .collect();
            per_unit.push(beds);
        }
        let longest = per_unit.iter().map(Vec::len).max().unwrap_or(0);
        let free = (0..longest)
            .flat_map(|k| per_unit.iter().filter_map(move |beds| beds.get(k)))
            .cloned()
            .collect();
        Ok((units, free))
    }

    fn ms(us: u64) -> f64 {
        us as f64 / 1000.0
    }

    /// Runs the scenario.
    pub(super) async fn run(a: &Args) -> anyhow::Result<Value> {
        if a.rate <= 0.0 || a.streams == 0 {
            bail!("kiosks needs --rate > 0 and --streams >= 1");
        }
        let streams = a.streams;
        let mut api = Conn::connect(a.addr, Some(&a.token)).await?;
        let (units, free) = plan(&mut api).await?;
        drop(api);
        let largest = units
            .iter()
            .max_by_key(|(_, beds)| *beds)
            .map(|(u, _)| u.clone())
            .context("the appliance has no units")?;
        if free.is_empty() {
            bail!("no bed is vacant and clean: nothing to change");
        }
        let cookie: Arc<str> = sign_in(a.addr, &a.token).await?.into();

        // The kiosks.
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut shows: HashMap<String, Vec<usize>> = HashMap::new();
        let mut seen: Vec<Seen> = vec![];
        let mut tasks = vec![];
        for i in 0..streams {
            let unit = units[i % units.len()].0.clone();
            shows.entry(unit.clone()).or_default().push(i);
            let s = Seen::default();
            seen.push(s.clone());
            tasks.push(tokio::spawn(stream(
                a.addr,
                i,
                unit,
                cookie.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
                s,
            )));
        }
        drop(ready_tx);
        let opening = Instant::now();
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        let mut ready = 0;
        while ready < streams {
            match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
                Ok(Some(Ok(()))) => ready += 1,
                Ok(Some(Err(e))) => bail!("{e}"),
                Ok(None) => bail!("the streams ended before all had their snapshot"),
                Err(_) => bail!(
                    "{ready} of {streams} streams had their snapshot after {} s",
                    OPEN_TIMEOUT.as_secs()
                ),
            }
        }
        let open_s = opening.elapsed().as_secs_f64();
        eprintln!(
            "hms-load: kiosks: {streams} streams open over {} units in {open_s:.1} s",
            units.len()
        );

        // The board page and its peer, with every stream open.
        let cookie_header = [("cookie", format!("{COOKIE}={cookie}"))];
        let page_path = format!("/units/{largest}");
        let mut page_conn = Conn::connect_as(a.addr, None, Some(streams)).await?;
        let mut health_conn = Conn::connect_as(a.addr, None, Some(streams + 1)).await?;
        let (mut page_h, mut health_h) = (histogram(), histogram());
        let mut page_errors = 0u64;
        for k in 0..PAGE_WARMUP + PAGE_REQUESTS {
            let t = Instant::now();
            let page = page_conn
                .request_with(Method::GET, &page_path, &cookie_header, None)
                .await;
            let page_took = t.elapsed();
            let t = Instant::now();
            let health = health_conn.get("/health").await;
            let health_took = t.elapsed();
            if k < PAGE_WARMUP {
                continue;
            }
            let _ = page_h.record(page_took.as_micros().max(1) as u64);
            let _ = health_h.record(health_took.as_micros().max(1) as u64);
            let page_ok = matches!(&page, Ok(r) if r.status == 200
                && r.content_type.as_deref().is_some_and(|t| t.starts_with("text/html")));
            page_errors +=
                u64::from(!page_ok) + u64::from(!matches!(&health, Ok(r) if r.status == 200));
        }
        drop((page_conn, health_conn));

        // The changes.
        let writers = WRITERS.min(free.len());
        let every = Duration::from_secs_f64(writers as f64 / a.rate);
        let run = Duration::from_secs_f64(a.seconds);
        let mut writer_tasks = vec![];
        for w in 0..writers {
            let beds: Vec<Bed> = free.iter().skip(w).step_by(writers).cloned().collect();
            writer_tasks.push(tokio::spawn(writer(
                a.addr,
                a.token.clone(),
                streams + 2 + w,
                beds,
                paced(every, w, writers),
                run,
            )));
        }
        let mut changes = vec![];
        let mut change_errors = 0;
        for t in writer_tasks {
            let (done, errors) = t.await??;
            changes.extend(done);
            change_errors += errors;
        }

        // What every stream of the changed beds' units should show, waited for.
        let ended = Instant::now();
        let mut pending: Vec<(usize, &str, u64)> = changes
            .iter()
            .flat_map(|c| {
                shows
                    .get(&c.unit)
                    .into_iter()
                    .flatten()
                    .map(move |&s| (s, c.bed.as_str(), c.version))
            })
            .collect();
        let deliveries = pending.len();
        loop {
            pending.retain(|(s, bed, v)| lock(&seen[*s]).get(*bed).is_none_or(|top| top < v));
            if pending.is_empty() || ended.elapsed() >= GRACE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let grace_end = ended + GRACE;
        let _ = stop_tx.send(true);
        let mut shown = vec![];
        let mut stream_errors = 0u64;
        for t in tasks {
            let (arrivals, broke) = t.await?;
            stream_errors += u64::from(broke);
            shown.push(arrivals);
        }

        let mut h = histogram();
        let mut missed = 0u64;
        for c in &changes {
            for &s in shows.get(&c.unit).into_iter().flatten() {
                let first = shown[s]
                    .get(&c.bed)
                    .into_iter()
                    .flatten()
                    .filter(|(v, at)| *v >= c.version && *at <= grace_end)
                    .map(|(_, at)| *at)
                    .min();
                match first {
                    Some(at) => {
                        let _ = h
                            .record(at.saturating_duration_since(c.sent).as_micros().max(1) as u64);
                    }
                    None => missed += 1,
                }
            }
        }
        Ok(json!({
            "scenario": "kiosks",
            "streams": streams,
            "units": units.len(),
            "streams_open_s": open_s,
            "rate": a.rate,
            "seconds": a.seconds,
            "writers": writers,
            "changes": changes.len(),
            "deliveries": deliveries,
            "change_to_stream": summary(&h),
            "missed": missed,
            "errors": change_errors + stream_errors + page_errors,
            "change_errors": change_errors,
            "stream_errors": stream_errors,
            "page_errors": page_errors,
            "page_unit": largest,
            "page_p50_ms": ms(page_h.value_at_quantile(0.50)),
            "page_p99_ms": ms(page_h.value_at_quantile(0.99)),
            "health_p50_ms": ms(health_h.value_at_quantile(0.50)),
            "health_p99_ms": ms(health_h.value_at_quantile(0.99)),
            "page": summary(&page_h),
            "health": summary(&health_h),
        }))
    }

    #[cfg(test)]
    mod tests {
        //! The stream reader and the response-head helpers.

        use super::*;

        #[test]
        fn chunked_event_stream_split_anywhere() {
            let body = "event: tile\ndata: {\"bed\":\"B1\",\"html\":\"<li data-version=\\\"7\\\">\"}\n\n\
                        : keep-alive\n\nevent: snapshot\r\ndata: {}\r\n\r\n";
            let mut coded = Vec::new();
            for part in body.as_bytes().chunks(9) {
                coded.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
                coded.extend_from_slice(part);
                coded.extend_from_slice(b"\r\n");
            }
            coded.extend_from_slice(b"0\r\n\r\n");
            for step in [1, 2, 5, 64, coded.len()] {
                let mut sse = Sse::new(true);
                let mut out = vec![];
                for piece in coded.chunks(step) {
                    sse.feed(piece, &mut out).expect("well-formed");
                }
                assert!(sse.done());
                assert_eq!(out.len(), 2, "{out:?}");
                assert_eq!(out[0].0, "tile");
                assert_eq!(tile(&out[0].1), Some(("B1".to_owned(), 7)));
                assert_eq!(out[1], ("snapshot".to_owned(), "{}".to_owned()));
            }
        }

        #[test]
        fn response_heads() {
            let head =
                "HTTP/1.1 303 See Other\r\nSet-Cookie: hms_session=abc; HttpOnly\r\nlocation: /";
            assert_eq!(status(head), 303);
            assert_eq!(
                headers(head, "set-cookie").collect::<Vec<_>>(),
                ["hms_session=abc; HttpOnly"]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The `mllp` scenario's SIU and DFT messages.

    use super::*;

    /// Field `n` of the segment `seg` of `msg` (MSH counted as HL7 does).
    fn field<'a>(msg: &'a str, seg: &str, n: usize) -> &'a str {
        let s = msg
            .split('\r')
            .find(|s| s.starts_with(seg))
            .unwrap_or_else(|| panic!("no {seg} in {msg:?}"));
        let n = if seg == "MSH" { n - 1 } else { n };
        s.split('|').nth(n).unwrap_or_default()
    }

    #[test]
    fn or_cases_spread_over_rooms_slots_and_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(FIRST_OR_DAY), (2027, 1, 4));
        assert_eq!(civil_from_days(FIRST_OR_DAY + 56), (2027, 3, 1));
        assert_eq!(or_start(0, 20), "202701040700");
        assert_eq!(or_start(19, 20), "202701040700");
        assert_eq!(or_start(20, 20), "202701040830");
        assert_eq!(or_start(159, 20), "202701041730");
        assert_eq!(or_start(160, 20), "202701050700");
        assert_eq!(or_start(160 * 28, 20), "202702010700");
    }

    #[test]
    fn siu_and_dft_fields_sit_where_the_appliance_reads_them() {
        let rooms = vec!["OR^OR-01^^MAIN".to_owned(), "OR^OR-02^^MAIN".to_owned()];
        let m = siu_s12(3, &rooms);
        assert_eq!(field(&m, "MSH", 9), "SIU^S12^SIU_S12");
        assert_eq!(field(&m, "MSH", 10), "LS3");
        assert_eq!(field(&m, "SCH", 1), "LC3^LOAD");
        assert_eq!(field(&m, "SCH", 7), "ROUTINE");
        assert_eq!(field(&m, "SCH", 9), "60");
        assert_eq!(field(&m, "SCH", 10), "min");
        assert_eq!(field(&m, "SCH", 11), "^^^202701040830^^R");
        assert_eq!(field(&m, "AIS", 4), "202701040830");
        assert_eq!(field(&m, "AIS", 7), "60");
        assert_eq!(field(&m, "AIL", 3), "OR^OR-02^^MAIN");
        assert_eq!(field(&m, "AIP", 4), "SURG^Surgeon");

        let m = dft_p03(5007);
        assert_eq!(field(&m, "MSH", 9), "DFT^P03^DFT_P03");
        assert_eq!(field(&m, "MSH", 10), "LF5007");
        assert_eq!(field(&m, "PV1", 19), "LV7");
        assert_eq!(field(&m, "FT1", 2), "LT5007");
        assert_eq!(field(&m, "FT1", 6), "CG");
        assert_eq!(field(&m, "FT1", 7), "99223^Initial hospital care^CPT4");
        assert_eq!(field(&m, "FT1", 10), "1");
        assert_eq!(field(&m, "FT1", 11), "225.00");
        assert_eq!(field(&m, "FT1", 13), "OR");
    }
}
