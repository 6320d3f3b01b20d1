//! `cargo xtask demo [--empty]`: the 40-bed demo hospital, live.
//!
//! Builds the appliance, makes sure its demo tokens exist (reused from
//! `demo-data/demo-tokens.json` while they are live, so restarts do not pile
//! up tokens), issues a kiosk sign-in code, prints where to go, and then
//! **becomes** the appliance (`exec`): Ctrl-C or SIGTERM to the demo stops
//! `hms-edge` itself, cleanly.
//!
//! Unless `--empty`, a simulated day runs beside it (`cargo xtask demo-day`,
//! a child process that ends when the appliance does): on a fresh hospital it
//! first seeds a mid-shift census (two thirds of the beds occupied, some
//! dirty or being cleaned, a few in isolation or expecting a discharge),
//! then every few seconds one gentle change over the real MLLP listener and
//! API: an admission (A01), a transfer (A02), a discharge (A03), a
//! housekeeping step, an expected discharge; now and then a surge of
//! admissions. Each day it also books the OR lists of the demo's operating
//! rooms (SIU S12, three or four cases per room from 08:00). A first-time
//! visitor sees boards change.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hms_domain::empi::model::SplitMix64;
use serde_json::{Value, json};

const HTTP: &str = "127.0.0.1:8080";
const MLLP: &str = "127.0.0.1:2575";
const TOKENS_FILE: &str = "demo-tokens.json";
/// The bed of `config/demo-admit.hl7`, which the simulation leaves alone.
const EXAMPLE_BED: &str = "3W-306-B";
/// The demo's tokens: (role, name).
const TOKENS: [(&str, &str); 3] = [
    ("nurse", "demo-nurse"),
    ("bed_manager", "demo-bed-manager"),
    ("admin", "demo-admin"),
];

/// The demo's tokens by name, reusing the stored ones that are still live.
fn tokens(bin: &Path, data: &Path) -> anyhow::Result<HashMap<String, String>> {
    let file = data.join(TOKENS_FILE);
    let mut stored: HashMap<String, String> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let out = Command::new(bin)
        .args(["token", "list", "--json", "--data-dir"])
        .arg(data)
        .output()
        .context("running hms-edge token list")?;
    let live: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["status"] == "active")
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let mut changed = false;
    for (role, name) in TOKENS {
        if stored.contains_key(name) && live.iter().any(|l| l == name) {
            continue;
        }
        stored.insert(name.to_owned(), crate::create_token(bin, data, role, name)?);
        changed = true;
    }
    if changed {
        std::fs::write(&file, serde_json::to_vec_pretty(&stored)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(stored)
}

/// `cargo xtask demo [--empty]`.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let empty = match args {
        [] => false,
        [a] if a == "--empty" => true,
        other => bail!(
            "unknown demo option(s) {other:?}; use --empty for a hospital with nothing going on"
        ),
    };
    let bin = crate::build_edge(false)?;
    // The models run on ONNX Runtime; without it every answer is the fallback rule's.
    let ort = match crate::ort_library() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "xtask: no ONNX Runtime ({e:#}); forecasts will come from the fallback rules"
            );
            None
        }
    };
    let config = root.join("config/demo-hospital.toml");
    let data = root.join("demo-data");
    std::fs::create_dir_all(&data)?;
    let tokens = tokens(&bin, &data)?;
    let code = crate::pair_code(&bin, &data, "demo-wall")?;
    let example = root.join("config/demo-admit.hl7");
    println!(
        "HMS Edge demo: Demo General Hospital, 40 beds, data in {}",
        data.display()
    );
    println!();
    println!("  open   http://{HTTP}/   and sign in with the code  {code}");
    println!(
        "         (valid 10 minutes, once; another: {} kiosk pair --name demo-wall --data-dir {})",
        bin.display(),
        data.display()
    );
    println!("  or sign in with a token:");
    println!("    nurse        {}", tokens["demo-nurse"]);
    println!("    bed manager  {}", tokens["demo-bed-manager"]);
    println!("    admin        {}", tokens["demo-admin"]);
    println!(
        "  a token of your own: {} token create --role admin --name YOU --data-dir {}",
        bin.display(),
        data.display()
    );
    println!();
    println!(
        "  HL7 over MLLP on {MLLP}; an admission into bed {EXAMPLE_BED}, which the simulation leaves free:"
    );
    println!(
        "    {} hl7 send --to {MLLP} {}",
        bin.display(),
        example.display()
    );
    println!(
        "  API: http://{HTTP}/api/v1/units (Authorization: Bearer TOKEN); health: http://{HTTP}/health"
    );
    if empty {
        println!("  nothing is simulated (--empty)");
    } else {
        println!("  a simulated day is running: admissions, transfers, discharges, housekeeping");
    }
    println!("  stop with Ctrl-C or SIGTERM");
    println!();
    if !empty {
        Command::new(std::env::current_exe()?)
            .args(["demo-day", "--config"])
            .arg(&config)
            .args([
                "--token",
                &tokens["demo-nurse"],
                "--manager",
                &tokens["demo-bed-manager"],
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("starting the simulated day")?;
    }
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--config"]).arg(&config);
    if let Some(p) = ort {
        cmd.env("ORT_DYLIB_PATH", p);
    }
    // This process becomes the appliance: signals reach it directly.
    let e = cmd.exec();
    Err(e).context("starting hms-edge")
}

/// A bed of the demo hospital as the simulation sees it.
#[derive(Debug, Clone)]
struct SimBed {
    id: String,
    state: String,
    version: u64,
    encounter: Option<String>,
    pending: bool,
    /// Its HL7 location: `POC^ROOM^BED^FACILITY`.
    pl: String,
}

const FAMILY: [&str; 16] = [
    "Kowalski",
    "Nowak",
    "Schmidt",
    "Müller",
    "García",
    "Rossi",
    "Dubois",
    "Novak",
    "Jansen",
    "Silva",
    "Horvat",
    "Popescu",
    "Nielsen",
    "Virtanen",
    "O'Brien",
    "Papadopoulos",
];
/// Procedure codes the committed OR-duration model knows.
const OR_PROCEDURES: [&str; 8] = [
    "laparoscopic_cholecystectomy",
    "inguinal_hernia_repair",
    "total_hip_replacement",
    "total_knee_replacement",
    "knee_arthroscopy",
    "carpal_tunnel_release",
    "thyroidectomy",
    "mastectomy",
];
const GIVEN: [&str; 16] = [
    "Anna", "Jan", "Maria", "Piotr", "Eva", "Luca", "Sofia", "Tomas", "Lena", "Marek", "Ines",
    "Jonas", "Zofia", "Mateo", "Ida", "Oskar",
];

/// The simulated day's connections and state.
struct Day {
    token: String,
    manager: String,
    pl: HashMap<String, String>,
    /// Each operating room's HL7 location.
    or_pl: HashMap<String, String>,
    rng: SplitMix64,
    seq: u64,
    stamp: u64,
    mllp: Option<TcpStream>,
}

fn http(
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut s = TcpStream::connect(HTTP)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {HTTP}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

/// Sends one message over `conn` (opened, or opened again after an error:
/// one connection, as a sending system keeps); its ACK.
fn hl7(conn: &mut Option<TcpStream>, msg: &str) -> anyhow::Result<String> {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(msg.as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    let result = (|| {
        if conn.is_none() {
            let s = TcpStream::connect(MLLP)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            *conn = Some(s);
        }
        let s = conn.as_mut().context("no MLLP connection")?;
        s.write_all(&frame)?;
        let mut ack = Vec::new();
        let mut buf = [0u8; 4096];
        while !ack.ends_with(&[0x1c, 0x0d]) {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("the appliance closed the MLLP connection");
            }
            ack.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&ack).into_owned())
    })();
    if result.is_err() {
        *conn = None;
    }
    result
}

impl Day {
    fn beds(&self) -> anyhow::Result<Vec<SimBed>> {
        let (_, units) = http("GET", "/api/v1/units", &self.token, None)?;
        let mut out = vec![];
        for u in units["units"].as_array().into_iter().flatten() {
            let unit = u["id"].as_str().unwrap_or_default();
            let (_, beds) = http(
                "GET",
                &format!("/api/v1/units/{unit}/beds"),
                &self.token,
                None,
            )?;
            for b in beds["beds"].as_array().into_iter().flatten() {
                let id = b["id"].as_str().unwrap_or_default().to_owned();
                // Left to the visitor: the printed example admits into it.
                if id == EXAMPLE_BED {
                    continue;
                }
                let Some(pl) = self.pl.get(&id).cloned() else {
                    continue;
                };
                out.push(SimBed {
                    id,
                    state: b["state"].as_str().unwrap_or_default().to_owned(),
                    version: b["version"].as_u64().unwrap_or(0),
                    encounter: b["encounter"].as_str().map(str::to_owned),
                    pending: b["pending_discharge"].as_bool().unwrap_or(false),
                    pl,
                });
            }
        }
        Ok(out)
    }

    fn message(&mut self, trigger: &str, pid: &str, pv1: &str) -> anyhow::Result<()> {
        self.seq += 1;
        let now = hms_time();
        let msg = format!(
            "MSH|^~\\&|DEMO-ADT|DGH|HMS|EDGE|{now}||ADT^{trigger}^ADT_A01|DEMO-{}-{}|P|2.5.1\rEVN|{trigger}|{now}\r{pid}\r{pv1}\r",
            self.stamp, self.seq
        );
        hl7(&mut self.mllp, &msg).map(|_| ())
    }

    fn admit(&mut self, bed: &SimBed) -> anyhow::Result<()> {
        self.seq += 1;
        let n = self.seq;
        let family = FAMILY[self.rng.below(FAMILY.len())];
        let given = GIVEN[self.rng.below(GIVEN.len())];
        let sex = if n.is_multiple_of(2) { "F" } else { "M" };
        let year = 1935 + self.rng.below(70);
        let pid = format!(
            "PID|1||DM{}{n}^^^DGH^MR||{family}^{given}||{year}0{}1{}|{sex}",
            self.stamp,
            1 + self.rng.below(9),
            self.rng.below(9)
        );
        let pv1 = format!("PV1|1|I|{}||||||||||||||||DV{}{n}", bed.pl, self.stamp);
        self.message("A01", &pid, &pv1)
    }

    fn discharge(&mut self, bed: &SimBed) -> anyhow::Result<()> {
        let Some(e) = &bed.encounter else {
            return Ok(());
        };
        let pv1 = format!("PV1|1|I|{}||||||||||||||||{e}", bed.pl);
        self.message("A03", "PID|1||DEMO^^^DGH^MR", &pv1)
    }

    fn transfer(&mut self, from: &SimBed, to: &SimBed) -> anyhow::Result<()> {
        let Some(e) = &from.encounter else {
            return Ok(());
        };
        let pv1 = format!("PV1|1|I|{}|||{}|||||||||||||{e}", to.pl, from.pl);
        self.message("A02", "PID|1||DEMO^^^DGH^MR", &pv1)
    }

    fn housekeeping(&self, bed: &SimBed, to: &str) -> anyhow::Result<()> {
        http(
            "POST",
            &format!("/api/v1/beds/{}/status", bed.id),
            &self.token,
            Some(&json!({ "status": to, "version": bed.version })),
        )
        .map(|_| ())
    }

    fn flag(&self, bed: &SimBed, what: &str, body: Value) -> anyhow::Result<()> {
        let token = if what == "reserve" {
            &self.manager
        } else {
            &self.token
        };
        http(
            "POST",
            &format!("/api/v1/beds/{}/{what}", bed.id),
            token,
            Some(&body),
        )
        .map(|_| ())
    }

    /// One SIU message for case `case` (`trigger` S12, S14…) in `room`.
    fn siu(
        &mut self,
        trigger: &str,
        case: &str,
        room: &str,
        start: &str,
        minutes: u32,
        urgent: bool,
    ) -> anyhow::Result<()> {
        let Some(pl) = self.or_pl.get(room).cloned() else {
            return Ok(());
        };
        self.seq += 1;
        let now = hms_time();
        let (surgeon, procedure) = (
            format!("S{:02}", 1 + self.rng.below(30)),
            OR_PROCEDURES[self.rng.below(OR_PROCEDURES.len())],
        );
        let family = FAMILY[self.rng.below(FAMILY.len())];
        let given = GIVEN[self.rng.below(GIVEN.len())];
        let year = 1940 + self.rng.below(65);
        let (reason, prio) = if urgent {
            ("EMERGENCY", "S")
        } else {
            ("ROUTINE", "R")
        };
        let msg = format!(
            "MSH|^~\\&|DEMO-OR|DGH|HMS|EDGE|{now}||SIU^{trigger}^SIU_S12|DEMO-OR-{}-{}|P|2.5.1\r\
             SCH|{case}^DEMO-OR||||||{reason}||{minutes}|min|^^^{start}^^{prio}\r\
             PID|1||DO{}{}^^^DGH^MR||{family}^{given}||{year}0612\r\
             AIS|1||{procedure}|{start}|||{minutes}|min\r\
             AIL|1||{pl}\r\
             AIP|1||{surgeon}|SURG\r",
            self.stamp, self.seq, self.stamp, self.seq
        );
        hl7(&mut self.mllp, &msg).map(|_| ())
    }

    /// Today's OR lists, when none is booked yet: three to four cases per
    /// room from 08:00, the hospital's local time.
    fn seed_or(&mut self) -> anyhow::Result<()> {
        if self.or_pl.is_empty() {
            return Ok(());
        }
        let (_, today) = http("GET", "/api/v1/or/cases", &self.token, None)?;
        let booked = today["cases"].as_array().map_or(0, Vec::len);
        let Some(date) = today["date"].as_str().map(|d| d.replace('-', "")) else {
            return Ok(());
        };
        if booked > 0 {
            return Ok(());
        }
        let mut rooms: Vec<String> = self.or_pl.keys().cloned().collect();
        rooms.sort();
        for room in rooms {
            let mut at = 8 * 60;
            for k in 0..3 + self.rng.below(2) {
                let minutes = [45, 60, 90, 120, 150][self.rng.below(5)];
                let start = format!("{date}{:02}{:02}", at / 60, at % 60);
                let case = format!("{room}-{}-{k}", &date[4..]);
                self.siu("S12", &case, &room, &start, minutes, false)?;
                at += minutes + 30;
            }
        }
        Ok(())
    }

    /// A fresh hospital becomes one in mid-shift.
    fn seed(&mut self) -> anyhow::Result<()> {
        self.seed_or()?;
        let beds = self.beds()?;
        let occupied = beds.iter().filter(|b| b.state == "occupied").count();
        if occupied * 4 >= beds.len() {
            return Ok(());
        }
        for (i, b) in beds.iter().enumerate() {
            match i % 12 {
                0..=7 => self.admit(b)?,
                8 => self.housekeeping(b, "dirty")?,
                _ => {}
            }
        }
        for (i, b) in self.beds()?.iter().enumerate() {
            if b.state == "occupied" && i % 5 == 0 {
                self.flag(
                    b,
                    "pending-discharge",
                    json!({ "pending": true, "version": b.version }),
                )?;
            } else if b.state == "occupied" && i % 7 == 3 {
                self.flag(
                    b,
                    "isolation",
                    json!({ "isolation": true, "version": b.version }),
                )?;
            } else if b.state == "vacant_dirty" && i % 2 == 0 {
                self.housekeeping(b, "cleaning")?;
            }
        }
        Ok(())
    }

    /// One gentle change.
    fn step(&mut self, surge: bool) -> anyhow::Result<()> {
        let beds = self.beds()?;
        let of = |s: &str| {
            beds.iter()
                .filter(|b| b.state == s)
                .cloned()
                .collect::<Vec<_>>()
        };
        let (clean, occupied, dirty, cleaning) = (
            of("vacant_clean"),
            of("occupied"),
            of("vacant_dirty"),
            of("cleaning"),
        );
        if surge {
            for b in clean.iter().take(4) {
                self.admit(b)?;
            }
            return Ok(());
        }
        let pick = |rng: &mut SplitMix64, v: &[SimBed]| v.get(rng.below(v.len())).cloned();
        let full = occupied.len() * 100 / beds.len().max(1);
        match self.rng.below(10) {
            0 | 1 if full < 85 => {
                if let Some(b) = pick(&mut self.rng, &clean) {
                    self.admit(&b)?;
                }
            }
            2 | 3 if full > 45 => {
                let ready: Vec<_> = occupied.iter().filter(|b| b.pending).cloned().collect();
                if let Some(b) = pick(
                    &mut self.rng,
                    if ready.is_empty() { &occupied } else { &ready },
                ) {
                    self.discharge(&b)?;
                }
            }
            4 => {
                if let (Some(from), Some(to)) =
                    (pick(&mut self.rng, &occupied), pick(&mut self.rng, &clean))
                {
                    self.transfer(&from, &to)?;
                }
            }
            5 | 6 => {
                if let Some(b) = pick(&mut self.rng, &dirty) {
                    self.housekeeping(&b, "cleaning")?;
                }
            }
            7 | 8 => {
                if let Some(b) = pick(&mut self.rng, &cleaning) {
                    self.housekeeping(&b, "clean")?;
                }
            }
            _ => {
                let waiting: Vec<_> = occupied.iter().filter(|b| !b.pending).cloned().collect();
                if let Some(b) = pick(&mut self.rng, &waiting) {
                    self.flag(
                        &b,
                        "pending-discharge",
                        json!({ "pending": true, "version": b.version }),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Now as an HL7 DTM in UTC (`YYYYMMDDHHMMSS+0000`).
fn hms_time() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}{mo:02}{d:02}{h:02}{m:02}{s:02}+0000")
}

/// The HL7 location of each `[[kind]]` of the configuration (`hl7 = {…}`):
/// beds, or operating rooms (`or_room`).
fn locations(config: &Path, kind: &str) -> anyhow::Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let mut out = HashMap::new();
    for b in doc
        .get(kind)
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(h)) = (b.get("id").and_then(|v| v.as_str()), b.get("hl7")) else {
            continue;
        };
        let f = |k: &str| {
            h.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        out.insert(
            id.to_owned(),
            format!(
                "{}^{}^{}^{}",
                f("point_of_care"),
                f("room"),
                f("bed"),
                f("facility")
            ),
        );
    }
    Ok(out)
}

/// `cargo xtask demo-day --config FILE --token NURSE --manager BED_MANAGER`:
/// the simulated day (started by `demo`). Ends when the appliance has not
/// answered for 30 s.
pub fn day(args: &[String]) -> anyhow::Result<()> {
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(config), Some(token), Some(manager)) =
        (arg("--config"), arg("--token"), arg("--manager"))
    else {
        bail!(
            "usage: cargo xtask demo-day --config FILE --token NURSE_TOKEN --manager BED_MANAGER_TOKEN"
        );
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut day = Day {
        token,
        manager,
        pl: locations(&PathBuf::from(&config), "bed")?,
        or_pl: locations(&PathBuf::from(&config), "or_room")?,
        rng: SplitMix64::new(stamp),
        seq: 0,
        stamp,
        mllp: None,
    };
    let mut last_ok = Instant::now();
    let mut seeded = false;
    let mut steps = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(if seeded {
            2500 + day.rng.below(3500) as u64
        } else {
            500
        }));
        let done = if seeded {
            steps += 1;
            day.step(steps.is_multiple_of(150))
        } else {
            day.seed()
        };
        match done {
            Ok(()) => {
                seeded = true;
                last_ok = Instant::now();
            }
            Err(_) if last_ok.elapsed() > Duration::from_secs(30) => return Ok(()),
            Err(_) => {}
        }
    }
}
