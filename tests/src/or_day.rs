//! A synthetic day of an OR suite and its charges, with the truth to check
//! an appliance against, and the evaluation of coding suggestions on such
//! days.
//!
//! [`generate`] is a pure function of its seed: each room's elective list
//! from 07:00 UTC (procedures of the committed model set, 30 min turnover),
//! then modifications (S14), moves to another room (S13), cancellations
//! (S15), no-shows (S26), two emergency add-ons that displace the elective
//! cases they overlap, resent messages (duplicates), and the charges (DFT)
//! of every case that went ahead: OR time per 15 minutes, anaesthesia, the
//! procedure, implants, drugs, some reversals and some charges resent under
//! another control id. The truth follows the documented rules (docs/or.md,
//! docs/revenue.md) message by message.
//!
//! [`check_day`] sends the day over MLLP and compares the OR board and
//! every visit's charges with the truth, exactly. [`coding_eval`] posts the
//! charges of training days, then asks for each held-out visit's codes
//! from its diagnoses, and reports the top-5 hit rate of the suggestions and
//! of the fallback (the unit's most frequent codes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use hms_domain::empi::model::SplitMix64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Conn;

/// A procedure: model code, typical minutes, charge code and price (cents),
/// implant, and the diagnoses it goes with.
struct Procedure {
    code: &'static str,
    minutes: u32,
    cpt: &'static str,
    price: i64,
    implant: bool,
    dx: &'static [&'static str],
}

const PROCEDURES: &[Procedure] = &[
    Procedure {
        code: "laparoscopic_cholecystectomy",
        minutes: 75,
        cpt: "47562",
        price: 180_000,
        implant: false,
        dx: &["K80.20", "K81.0", "R10.9"],
    },
    Procedure {
        code: "inguinal_hernia_repair",
        minutes: 60,
        cpt: "49505",
        price: 120_000,
        implant: false,
        dx: &["K40.90", "K40.20", "R10.9"],
    },
    Procedure {
        code: "total_hip_replacement",
        minutes: 120,
        cpt: "27130",
        price: 420_000,
        implant: true,
        dx: &["M16.11", "M16.12", "M25.50"],
    },
    Procedure {
        code: "total_knee_replacement",
        minutes: 110,
        cpt: "27447",
        price: 400_000,
        implant: true,
        dx: &["M17.11", "M17.12", "M25.50"],
    },
    Procedure {
        code: "knee_arthroscopy",
        minutes: 45,
        cpt: "29881",
        price: 90_000,
        implant: false,
        dx: &["S83.241A", "M23.20", "M25.50"],
    },
    Procedure {
        code: "carpal_tunnel_release",
        minutes: 30,
        cpt: "64721",
        price: 60_000,
        implant: false,
        dx: &["G56.01", "G56.02", "R20.2"],
    },
    Procedure {
        code: "thyroidectomy",
        minutes: 120,
        cpt: "60240",
        price: 260_000,
        implant: false,
        dx: &["E04.2", "C73", "R22.1"],
    },
    Procedure {
        code: "mastectomy",
        minutes: 100,
        cpt: "19303",
        price: 300_000,
        implant: false,
        dx: &["C50.911", "D05.11", "R22.1"],
    },
    Procedure {
        code: "colectomy",
        minutes: 180,
        cpt: "44140",
        price: 520_000,
        implant: false,
        dx: &["C18.7", "K57.32", "R10.9"],
    },
    Procedure {
        code: "spinal_fusion",
        minutes: 210,
        cpt: "22612",
        price: 610_000,
        implant: true,
        dx: &["M43.16", "M48.061", "M25.50"],
    },
];

/// Comorbidities some patients carry.
///
/// Diagnoses are noisy on purpose: a third of a procedure's primary codes
/// are symptom codes other procedures share, some are unspecified (`R69`),
/// and one implant in five is not charged.
const COMORBID: &[&str] = &["I10", "E11.9", "E66.9", "J44.9"];

/// One operating room of the suite: its id and AIL-3 value.
#[derive(Debug, Clone)]
pub struct Room {
    /// `[[or_room]]` id.
    pub id: String,
    /// `POC^ROOM^BED^FACILITY`.
    pub pl: String,
}

/// The rooms of a configuration.
pub fn rooms(config: &std::path::Path) -> anyhow::Result<Vec<Room>> {
    let cfg = firmware_config::load(config)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config;
    if cfg.or_rooms.is_empty() {
        bail!("{} has no [[or_room]]", config.display());
    }
    Ok(cfg
        .or_rooms
        .iter()
        .map(|r| Room {
            id: r.id.to_string(),
            pl: format!(
                "{}^{}^{}^{}",
                r.hl7.point_of_care, r.hl7.room, r.hl7.bed, r.hl7.facility
            ),
        })
        .collect())
}

/// A case as the truth has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthCase {
    /// Room id.
    pub room: String,
    /// Minutes after midnight UTC.
    pub start_min: u32,
    /// Booked minutes.
    pub booked: u32,
    /// `scheduled`, `cancelled`, `no_show`, `bumped`.
    pub status: &'static str,
    /// `elective` or `urgent`.
    pub priority: &'static str,
    /// The add-on that displaced it.
    pub bumped_by: Option<String>,
    /// Its visit.
    pub visit: String,
    /// Procedure (model code).
    proc_ix: usize,
    /// Its diagnoses.
    pub dx: Vec<String>,
}

/// A visit's charges as the truth has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruthVisit {
    /// Posted total, cents (credits negative, reversed left out).
    pub total_cents: i64,
    /// Transactions stored (reversed included).
    pub transactions: usize,
    /// Codes posted and not reversed.
    pub codes: BTreeSet<String>,
    /// Diagnoses.
    pub dx: Vec<String>,
}

/// One SIU message of a case (the layout docs/or.md reads).
#[derive(Debug, Clone, Copy)]
pub struct Booking<'a> {
    /// `S12`, `S13`…
    pub trigger: &'a str,
    /// MSH-10.
    pub control: &'a str,
    /// SCH-1.
    pub case: &'a str,
    /// AIL-3, `POC^ROOM^BED^FACILITY`.
    pub room_pl: &'a str,
    /// HL7 start time.
    pub start: &'a str,
    /// Booked minutes.
    pub minutes: u32,
    /// An emergency (SCH-7 `EMERGENCY`, priority `S`).
    pub urgent: bool,
    /// PV1-19.
    pub visit: &'a str,
    /// AIS-3.
    pub procedure: &'a str,
    /// AIP-3.1.
    pub surgeon: &'a str,
}

impl Booking<'_> {
    /// The message, sent at `sent` (MSH-7).
    pub fn message(&self, sent: &str) -> String {
        let Booking {
            trigger,
            control,
            case,
            room_pl,
            start,
            minutes,
            visit,
            procedure,
            surgeon,
            ..
        } = *self;
        let (reason, prio) = if self.urgent {
            ("EMERGENCY", "S")
        } else {
            ("ROUTINE", "R")
        };
        format!(
            "MSH|^~\\&|ORSCHED|SYN|HMS|EDGE|{sent}||SIU^{trigger}^SIU_S12|{control}|P|2.5.1\r\
             SCH|{case}^ORSCHED||||||{reason}||{minutes}|min|^^^{start}^^{prio}\r\
             PID|1||P{case}^^^SYN^MR||Synthetic^Patient||19600101|F\r\
             PV1|1|O|OR{}{visit}\r\
             AIS|1||{procedure}^{procedure}|{start}|||{minutes}|min\r\
             AIL|1||{room_pl}\r\
             AIP|1||{surgeon}^Surgeon^Synthetic|SURG^Surgeon\r",
            "|".repeat(16),
        )
    }
}

/// A generated day.
#[derive(Debug, Clone)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// HL7 messages in sending order.
    pub messages: Vec<String>,
    /// Case id → truth.
    pub cases: BTreeMap<String, TruthCase>,
    /// Visit id → truth.
    pub visits: BTreeMap<String, TruthVisit>,
}

struct Gen<'a> {
    rng: SplitMix64,
    rooms: &'a [Room],
    ymd: String,
    tag: String,
    seq: u64,
    day: Day,
}

impl Gen<'_> {
    fn time(&self, min: u32) -> String {
        format!("{}{:02}{:02}00+0000", self.ymd, min / 60, min % 60)
    }

    fn control(&mut self) -> String {
        self.seq += 1;
        format!("OD{}-{}", self.tag, self.seq)
    }

    fn siu(&mut self, trigger: &str, id: &str, urgent: bool) -> String {
        let c = self.day.cases[id].clone();
        let p = &PROCEDURES[c.proc_ix];
        let room_pl = self
            .rooms
            .iter()
            .find(|r| r.id == c.room)
            .map_or("", |r| r.pl.as_str())
            .to_owned();
        let booking = Booking {
            trigger,
            control: &self.control(),
            case: id,
            room_pl: &room_pl,
            start: &self.time(c.start_min),
            minutes: c.booked,
            urgent,
            visit: &c.visit,
            procedure: p.code,
            surgeon: &format!("S{:02}", 1 + (c.proc_ix * 3) % 30),
        };
        booking.message(&self.time(6 * 60))
    }

    /// Whether booked times overlap.
    fn overlaps(a: &TruthCase, b: &TruthCase) -> bool {
        a.start_min < b.start_min + b.booked && b.start_min < a.start_min + a.booked
    }

    /// The bumping rule for `id` just scheduled (docs/or.md).
    fn bump(&mut self, id: &str) {
        let u = self.day.cases[id].clone();
        if u.priority != "urgent" || u.status != "scheduled" {
            return;
        }
        for (other, c) in self.day.cases.iter_mut() {
            if other != id
                && c.room == u.room
                && c.priority == "elective"
                && c.status == "scheduled"
                && Self::overlaps(c, &u)
            {
                c.status = "bumped";
                c.bumped_by = Some(id.to_owned());
            }
        }
    }

    /// One DFT message with `ft1` lines for `visit`.
    fn dft(
        &mut self,
        visit: &str,
        dx: &[String],
        ft1: &[(String, &str, &str, i64, i64)],
    ) -> String {
        let control = self.control();
        let mut s = format!(
            "MSH|^~\\&|FIN|SYN|HMS|EDGE|{}||DFT^P03^DFT_P03|{control}|P|2.5.1\r\
             EVN|P03|{}\r\
             PID|1||P{visit}^^^SYN^MR||Synthetic^Patient||19600101|F\r\
             PV1|1|I|OR{}{visit}\r",
            self.time(20 * 60),
            self.time(20 * 60),
            "|".repeat(16)
        );
        for (i, (txn, ty, code, qty, cents)) in ft1.iter().enumerate() {
            s.push_str(&format!(
                "FT1|{}|{txn}||{}||{ty}|{code}^{code}^CPT4|||{qty}|{}||OR\r",
                i + 1,
                self.time(18 * 60),
                hms_domain::charge::format_cents(*cents)
            ));
        }
        for (i, d) in dx.iter().enumerate() {
            s.push_str(&format!("DG1|{}||{d}^^I10\r", i + 1));
        }
        s
    }
}

/// A synthetic day for `rooms` on `date` (`YYYY-MM-DD`), from `seed`.
pub fn generate(seed: u64, rooms: &[Room], date: &str) -> Day {
    let ymd = date.replace('-', "");
    let mut g = Gen {
        rng: SplitMix64::new(seed),
        rooms,
        tag: format!("{ymd}-{seed}"),
        ymd,
        seq: 0,
        day: Day {
            date: date.to_owned(),
            messages: vec![],
            cases: BTreeMap::new(),
            visits: BTreeMap::new(),
        },
    };
    // Elective lists.
    let mut order = vec![];
    for (r, room) in rooms.iter().enumerate() {
        let mut at = 7 * 60;
        let mut k = 0;
        while at < 15 * 60 {
            let proc_ix = g.rng.below(PROCEDURES.len());
            let booked = PROCEDURES[proc_ix].minutes + 15 * g.rng.below(3) as u32;
            let id = format!("C{}-{r:02}-{k}", g.tag);
            // The procedure's own codes, a symptom code several procedures
            // share, and now and then an unspecified one.
            let primary = match g.rng.below(20) {
                0..=2 => "R69",
                k => PROCEDURES[proc_ix].dx[k % 3],
            };
            let mut dx = vec![primary.to_owned()];
            if g.rng.below(3) == 0 {
                dx.push(COMORBID[g.rng.below(COMORBID.len())].to_owned());
            }
            g.day.cases.insert(
                id.clone(),
                TruthCase {
                    room: room.id.clone(),
                    start_min: at,
                    booked,
                    status: "scheduled",
                    priority: "elective",
                    bumped_by: None,
                    visit: format!("V{}-{r:02}-{k}", g.tag),
                    proc_ix,
                    dx,
                },
            );
            order.push(id);
            at += booked + 30;
            k += 1;
        }
    }
    for id in &order {
        let m = g.siu("S12", id, false);
        g.day.messages.push(m);
    }
    // Changes, in a seeded order.
    let mut resend = vec![];
    for id in &order {
        match g.rng.below(40) {
            0..=3 => {
                // S14: 15 or 30 minutes longer.
                let more = 15 * (1 + g.rng.below(2) as u32);
                if let Some(c) = g.day.cases.get_mut(id) {
                    c.booked += more;
                }
                let m = g.siu("S14", id, false);
                g.day.messages.push(m);
            }
            4 | 5 => {
                // S13: to the end of another room's list.
                let to = rooms[g.rng.below(rooms.len())].id.clone();
                let end = g
                    .day
                    .cases
                    .values()
                    .filter(|c| c.room == to)
                    .map(|c| c.start_min + c.booked)
                    .max()
                    .unwrap_or(7 * 60);
                if let Some(c) = g.day.cases.get_mut(id) {
                    c.room = to;
                    c.start_min = (end + 30).min(23 * 60);
                    c.booked = c.booked.min(24 * 60 - 1 - c.start_min).max(1);
                    c.status = "scheduled";
                    c.bumped_by = None;
                }
                let m = g.siu("S13", id, false);
                g.day.messages.push(m);
            }
            6 | 7 => {
                if let Some(c) = g.day.cases.get_mut(id) {
                    c.status = "cancelled";
                }
                let m = g.siu("S15", id, false);
                g.day.messages.push(m);
            }
            8 => {
                if let Some(c) = g.day.cases.get_mut(id) {
                    c.status = "no_show";
                }
                let m = g.siu("S26", id, false);
                g.day.messages.push(m);
            }
            9 => {
                resend.push(g.day.messages[order.iter().position(|o| o == id).unwrap_or(0)].clone())
            }
            _ => {}
        }
    }
    // Two emergency add-ons, each over the middle of a room's morning.
    for n in 0..2 {
        let r = g.rng.below(rooms.len());
        let id = format!("E{}-{n}", g.tag);
        let proc_ix = g.rng.below(PROCEDURES.len());
        g.day.cases.insert(
            id.clone(),
            TruthCase {
                room: rooms[r].id.clone(),
                start_min: 8 * 60 + 30 + 60 * n as u32,
                booked: 120,
                status: "scheduled",
                priority: "urgent",
                bumped_by: None,
                visit: format!("VE{}-{n}", g.tag),
                proc_ix,
                dx: vec![PROCEDURES[proc_ix].dx[0].to_owned()],
            },
        );
        let m = g.siu("S12", &id, true);
        g.day.messages.push(m);
        g.bump(&id);
    }
    // Resent messages: duplicates, no effect.
    g.day.messages.extend(resend);
    // Charges of the cases that went ahead.
    let went: Vec<(String, TruthCase)> = g
        .day
        .cases
        .iter()
        .filter(|(_, c)| c.status == "scheduled")
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
    for (id, c) in went {
        let p = &PROCEDURES[c.proc_ix];
        let t = |k: &str| format!("T{id}-{k}");
        let quarter = i64::from(c.booked.div_ceil(15));
        let mut lines: Vec<(String, &str, &str, i64, i64)> = vec![
            (t("or"), "CG", "OR-TIME", quarter, quarter * 25_000),
            (t("anes"), "CG", "00840", 1, 80_000),
            (t("proc"), "CG", p.cpt, 1, p.price),
        ];
        if p.implant && g.rng.below(5) != 0 {
            lines.push((t("impl"), "CG", "L8699", 1, 240_000));
        }
        if g.rng.below(2) == 0 {
            lines.push((t("drug"), "CG", "J2270", 2, 1_450));
        }
        let m = g.dft(&c.visit, &c.dx, &lines);
        g.day.messages.push(m);
        let mut v = TruthVisit {
            dx: c.dx.clone(),
            ..TruthVisit::default()
        };
        for (_, _, code, _, cents) in &lines {
            v.total_cents += cents;
            v.transactions += 1;
            v.codes.insert((*code).to_owned());
        }
        match g.rng.below(10) {
            // The anaesthesia charge reversed.
            0 => {
                let m = g.dft(&c.visit, &[], &[(t("anes"), "CD", "00840", 1, 80_000)]);
                g.day.messages.push(m);
                v.total_cents -= 80_000;
                v.codes.remove("00840");
            }
            // A credit of its own.
            1 => {
                let m = g.dft(&c.visit, &[], &[(t("credit"), "CD", "ADJ-01", 1, 5_000)]);
                g.day.messages.push(m);
                v.total_cents -= 5_000;
                v.transactions += 1;
            }
            // The procedure charge resent under another control id.
            2 => {
                let m = g.dft(&c.visit, &c.dx, &[(t("proc"), "CG", p.cpt, 1, p.price)]);
                g.day.messages.push(m);
            }
            _ => {}
        }
        g.day.visits.insert(c.visit.clone(), v);
    }
    g.day
}

/// Sends `messages` over one MLLP connection; the ACK codes (MSA-1).
pub async fn send(mllp: SocketAddr, messages: &[String]) -> anyhow::Result<Vec<String>> {
    let mut s = crate::client::connect_tcp(mllp, None).await?;
    s.set_nodelay(true)?;
    let mut out = Vec::with_capacity(messages.len());
    let mut buf = vec![0u8; 8192];
    for m in messages {
        let mut frame = vec![0x0b];
        frame.extend_from_slice(m.as_bytes());
        frame.extend_from_slice(&[0x1c, 0x0d]);
        s.write_all(&frame).await?;
        let mut got = Vec::new();
        while !got.ends_with(&[0x1c, 0x0d]) {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("the appliance closed the MLLP connection");
            }
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        out.push(
            text.split("\rMSA|")
                .nth(1)
                .map(|r| r.chars().take(2).collect())
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

fn start_of(date: &str, min: u32) -> String {
    format!("{date}T{:02}:{:02}:00.000Z", min / 60, min % 60)
}

/// Sends `day` and compares the OR board and the charges with its truth.
/// `token`: bed manager or above.
pub async fn check_day(
    http: SocketAddr,
    mllp: SocketAddr,
    token: &str,
    day: &Day,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let acks = send(mllp, &day.messages).await?;
    let sent_s = started.elapsed().as_secs_f64();
    let not_aa = acks.iter().filter(|a| *a != "AA").count();
    let mut c = Conn::connect(http, Some(token)).await?;
    let r = c
        .get(&format!("/api/v1/or/cases?date={}", day.date))
        .await?;
    if r.status != 200 {
        bail!("GET /api/v1/or/cases answered {}", r.status);
    }
    let board = r.json()?;
    let listed: BTreeMap<String, Value> = board["cases"]
        .as_array()
        .context("no cases")?
        .iter()
        .map(|v| {
            (
                v["case_id"].as_str().unwrap_or_default().to_owned(),
                v.clone(),
            )
        })
        .collect();
    let mut case_mismatches = vec![];
    for (id, t) in &day.cases {
        let Some(v) = listed.get(id) else {
            case_mismatches.push(json!({ "case": id, "problem": "missing" }));
            continue;
        };
        let want = json!({
            "room": t.room, "start": start_of(&day.date, t.start_min), "booked_minutes": t.booked,
            "status": t.status, "priority": t.priority, "bumped_by": t.bumped_by,
        });
        let got = json!({
            "room": v["room"], "start": v["start"], "booked_minutes": v["booked_minutes"],
            "status": v["status"], "priority": v["priority"], "bumped_by": v["bumped_by"],
        });
        if want != got {
            case_mismatches.push(json!({ "case": id, "want": want, "got": got }));
        }
    }
    let extra: Vec<&String> = listed
        .keys()
        .filter(|k| !day.cases.contains_key(*k))
        .collect();
    let mut visit_mismatches = vec![];
    for (visit, t) in &day.visits {
        let v = c
            .get(&format!("/api/v1/charges?visit={visit}"))
            .await?
            .json()?;
        let got = (v["total_cents"].as_i64(), v["count"].as_u64());
        if got != (Some(t.total_cents), Some(t.transactions as u64)) {
            visit_mismatches.push(json!({
                "visit": visit, "want": [t.total_cents, t.transactions], "got": [got.0, got.1],
            }));
        }
    }
    let bumped = day.cases.values().filter(|c| c.status == "bumped").count();
    Ok(json!({
        "date": day.date,
        "messages": day.messages.len(),
        "not_aa": not_aa,
        "send_seconds": sent_s,
        "cases": day.cases.len(),
        "bumped": bumped,
        "case_mismatches": case_mismatches,
        "extra_cases": extra,
        "visits": day.visits.len(),
        "total_cents": day.visits.values().map(|v| v.total_cents).sum::<i64>(),
        "visit_mismatches": visit_mismatches,
        "ok": not_aa == 0 && case_mismatches.is_empty() && extra.is_empty() && visit_mismatches.is_empty(),
    }))
}

/// Posts the days before the last as history, then asks for each visit of
/// the last day: the share of its posted codes found in the top 5 of the
/// suggestions, and of the fallback (the unit's most frequent codes).
pub async fn coding_eval(
    http: SocketAddr,
    mllp: SocketAddr,
    token: &str,
    days: &[Day],
) -> anyhow::Result<Value> {
    let (test, train) = days.split_last().context("no days")?;
    for d in train {
        let dft: Vec<String> = d
            .messages
            .iter()
            .filter(|m| m.contains("|DFT^"))
            .cloned()
            .collect();
        let acks = send(mllp, &dft).await?;
        if acks.iter().any(|a| a != "AA") {
            bail!("a training charge was not accepted");
        }
    }
    let mut c = Conn::connect(http, Some(token)).await?;
    let (mut codes, mut hist_hits, mut fb_hits, mut from_history) =
        (0usize, 0usize, 0usize, 0usize);
    for v in test.visits.values() {
        let a = c
            .post(
                "/api/v1/coding/suggest",
                &json!({ "diagnoses": v.dx, "unit": "OR" }),
            )
            .await?
            .json()?;
        // No diagnoses: the fallback's answer, the unit's most frequent codes.
        let fb = c
            .post(
                "/api/v1/coding/suggest",
                &json!({ "diagnoses": [], "unit": "OR" }),
            )
            .await?
            .json()?;
        if a["source"] == "history" {
            from_history += 1;
        }
        let top = |x: &Value| -> BTreeSet<String> {
            x["suggestions"]
                .as_array()
                .into_iter()
                .flatten()
                .take(5)
                .filter_map(|s| s["code"].as_str().map(str::to_owned))
                .collect()
        };
        let (h, f) = (top(&a), top(&fb));
        for code in &v.codes {
            codes += 1;
            hist_hits += usize::from(h.contains(code));
            fb_hits += usize::from(f.contains(code));
        }
    }
    let rate = |n: usize| {
        if codes == 0 {
            0.0
        } else {
            n as f64 / codes as f64
        }
    };
    Ok(json!({
        "train_days": train.len(),
        "train_visits": train.iter().map(|d| d.visits.len()).sum::<usize>(),
        "test_visits": test.visits.len(),
        "test_codes": codes,
        "answered_from_history": from_history,
        "top5_hit_rate": rate(hist_hits),
        "fallback_top5_hit_rate": rate(fb_hits),
    }))
}

/// The `YYYY-MM-DD` `n` days after `date`.
pub fn add_days(date: &str, n: i64) -> String {
    let t = hms_domain::Timestamp::parse_rfc3339(&format!("{date}T00:00:00Z"))
        .map(|t| t.as_millis())
        .unwrap_or(0);
    hms_domain::Timestamp::from_millis(t + n * 86_400_000).to_rfc3339()[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(n: usize) -> Vec<Room> {
        (1..=n)
            .map(|i| Room {
                id: format!("OR-{i:02}"),
                pl: format!("OR^OR-{i:02}^^MAIN"),
            })
            .collect()
    }

    #[test]
    fn a_day_is_a_pure_function_of_its_seed_and_follows_the_bumping_rule() {
        let rooms = suite(20);
        let a = generate(7, &rooms, "2027-01-04");
        let b = generate(7, &rooms, "2027-01-04");
        assert_eq!(a.messages, b.messages);
        assert!(a.cases.len() > 60, "{} cases", a.cases.len());
        let bumped: Vec<&TruthCase> = a.cases.values().filter(|c| c.status == "bumped").collect();
        assert!(!bumped.is_empty(), "the add-ons displace someone");
        for c in bumped {
            let by = &a.cases[c.bumped_by.as_ref().expect("named")];
            assert_eq!((by.priority, &by.room), ("urgent", &c.room));
            assert!(Gen::overlaps(c, by));
        }
        assert_eq!(add_days("2027-01-31", 1), "2027-02-01");
        assert!(
            a.messages.iter().any(|m| m.contains("|CD|")),
            "some credits"
        );
    }
}
