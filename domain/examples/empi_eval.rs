//! EMPI evaluation on labelled data (run by `cargo xtask empi-eval`).
//!
//! Loads FEBRL3 (dedup), FEBRL4 (two sources) or the seeded synthetic set,
//! trains the model (u by random pairs, m by EM), then reports blocking
//! (candidate pairs, recall), pairwise precision/recall/F1 at the
//! pre-declared link threshold and at the F1-optimal threshold, and the
//! incremental engine's own partition quality and latency. Prints aggregate
//! figures only, never a record.
//!
//! `empi_eval --dataset febrl4|febrl3|synthetic [--data-dir DIR] [--with-ssn] [--no-household-rules] [--people N] [--seed S]`
//! or `empi_eval --dataset csv --records FILE [--peer FILE] [--seed S]`: two
//! sources in one CSV (`source, local_id, person, given, family, dob, sex,
//! address_line, unit, city, state, postcode, national_id`; `person` is the
//! truth) registered one by one in a shuffled order as the regional EMPI's
//! API sees them (hand-set model, trained once at 5,000 records as the cloud
//! does), scored pairwise across and within sources against the peer's
//! clusters (`source, local_id, cluster`) on the same records.

use std::collections::HashMap;
use std::time::Instant;

use hms_domain::empi::model::TermFrequencies;
use hms_domain::empi::synth::{SynthConfig, generate};
use hms_domain::empi::{BlockIndex, Engine, Outcome, Params, Record, TrainConfig, prepare, train};
use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName};

struct Args {
    household_rules: bool,
    dataset: String,
    data_dir: String,
    records: String,
    peer: String,
    with_ssn: bool,
    people: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        household_rules: true,
        dataset: "febrl4".into(),
        data_dir: String::new(),
        records: String::new(),
        peer: String::new(),
        with_ssn: false,
        people: 5000,
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dataset" => a.dataset = it.next().ok_or("--dataset needs a value")?,
            "--data-dir" => a.data_dir = it.next().ok_or("--data-dir needs a value")?,
            "--records" => a.records = it.next().ok_or("--records needs a file")?,
            "--peer" => a.peer = it.next().ok_or("--peer needs a file")?,
            "--with-ssn" => a.with_ssn = true,
            "--no-household-rules" => a.household_rules = false,
            "--people" => a.people = it.next().and_then(|v| v.parse().ok()).ok_or("--people N")?,
            "--seed" => a.seed = it.next().and_then(|v| v.parse().ok()).ok_or("--seed S")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Reads a FEBRL CSV (`rec_id, given_name, surname, street_number,
/// address_1, address_2, suburb, postcode, state, date_of_birth,
/// soc_sec_id`) into records labelled by the number in `rec-N-…`.
fn febrl(path: &str, source: &str, with_ssn: bool) -> Result<Vec<(Record, u32)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut out = vec![];
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 11 {
            return Err(format!("{path}: a line has {} fields", f.len()));
        }
        let person: u32 = f[0]
            .split('-')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{path}: bad rec_id"))?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut r = Record::new(source, f[0]);
        r.given_name = some(f[1]).map(PersonName::new);
        r.family_name = some(f[2]).map(PersonName::new);
        let line1 = [f[3], f[4]]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        r.address_line = some(&line1).map(Address::new);
        r.address_line2 = some(f[5]).map(Address::new);
        r.city = some(f[6]).map(Address::new);
        r.postal_code = some(f[7]).map(Address::new);
        r.state = some(f[8]);
        r.birth_date = some(f[9]).map(BirthDate::new);
        if with_ssn && let Some(ssn) = some(f[10]) {
            r.identifiers.push(Identifier {
                id: Mrn::new(ssn),
                authority: "SSN".into(),
                kind: "SS".into(),
            });
        }
        out.push((r, person));
    }
    Ok(out)
}

#[derive(Default, Clone, Copy)]
struct Prf {
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Prf {
    fn show(&self) -> String {
        let p = self.tp as f64 / (self.tp + self.fp).max(1) as f64;
        let r = self.tp as f64 / (self.tp + self.fn_).max(1) as f64;
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        format!(
            "precision {p:.4}  recall {r:.4}  F1 {f1:.4}  (tp {} fp {} fn {})",
            self.tp, self.fp, self.fn_
        )
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("empi_eval: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.dataset == "csv" {
        return two_sources(&args);
    }
    let link_only = args.dataset == "febrl4";
    let data: Vec<(Record, u32)> = match args.dataset.as_str() {
        "febrl4" => {
            let mut a = febrl(
                &format!("{}/dataset4a.csv", args.data_dir),
                "A",
                args.with_ssn,
            )?;
            a.extend(febrl(
                &format!("{}/dataset4b.csv", args.data_dir),
                "B",
                args.with_ssn,
            )?);
            a
        }
        "febrl3" => febrl(
            &format!("{}/dataset3.csv", args.data_dir),
            "H",
            args.with_ssn,
        )?,
        "synthetic" => generate(&SynthConfig {
            people: args.people,
            seed: args.seed,
            ..SynthConfig::default()
        })
        .into_iter()
        .map(|l| {
            let mut r = l.record;
            if !args.with_ssn {
                r.identifiers.clear();
            }
            (r, l.person)
        })
        .collect(),
        other => return Err(format!("unknown dataset {other}")),
    };
    println!(
        "dataset {}{}{}: {} records",
        args.dataset,
        if args.household_rules {
            ""
        } else {
            " (household rules off)"
        },
        if args.with_ssn {
            " with identifier"
        } else {
            " without identifier"
        },
        data.len()
    );

    // True pairs.
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (_, person)) in data.iter().enumerate() {
        groups.entry(*person).or_default().push(i);
    }
    let counts_pair = |a: usize, b: usize| !link_only || data[a].0.source != data[b].0.source;
    let mut true_pairs: u64 = 0;
    for members in groups.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                if counts_pair(a, b) {
                    true_pairs += 1;
                }
            }
        }
    }
    let same = |a: usize, b: usize| data[a].1 == data[b].1;

    // Training.
    let prepared: Vec<_> = data.iter().map(|(r, _)| prepare(r)).collect();
    let t = Instant::now();
    // FEBRL3 is one file with duplicates to find: not a register that holds
    // a person once.
    let base = Params {
        source_unique: args.dataset != "febrl3",
        household_rules: args.household_rules,
        ..Params::default()
    };
    let (params, report) = train(
        &prepared,
        &base,
        &TrainConfig {
            seed: args.seed,
            ..TrainConfig::default()
        },
    );
    println!(
        "training: {:.2} s, u from {} random pairs, EM on {} blocked pairs ({} patterns), {} iterations, converged {}, lambda {:.4}",
        t.elapsed().as_secs_f64(),
        report.u_pairs,
        report.em_pairs,
        report.patterns,
        report.iterations,
        report.converged,
        report.lambda
    );
    for fp in &params.fields {
        let m: Vec<String> = fp.m.iter().map(|v| format!("{v:.3}")).collect();
        let u: Vec<String> = fp.u.iter().map(|v| format!("{v:.2e}")).collect();
        println!(
            "  {:<14} m [{}]  u [{}]",
            fp.field.as_str(),
            m.join(" "),
            u.join(" ")
        );
    }

    // Blocking and pairwise scores.
    let mut index = BlockIndex::new(params.block_cap);
    let mut tf = TermFrequencies::default();
    for (i, p) in prepared.iter().enumerate() {
        index.insert(i as u32, p);
        tf.add(p);
    }
    let model = hms_domain::empi::Model::new(params.clone());
    let mut scores: Vec<(f64, bool)> = vec![];
    let mut cands = vec![];
    let (mut capped, mut max_cands) = (0u64, 0usize);
    let t = Instant::now();
    for (i, p) in prepared.iter().enumerate() {
        let stats = index.candidates(p, &mut cands);
        capped += u64::from(stats.capped_keys > 0);
        max_cands = max_cands.max(stats.candidates);
        for &j in cands.iter().filter(|&&j| j as usize > i) {
            let j = j as usize;
            if !counts_pair(i, j) {
                continue;
            }
            let (_, s) = model.compare_score(p, &prepared[j], Some(&tf));
            scores.push((s, same(i, j)));
        }
    }
    let found = scores.iter().filter(|s| s.1).count() as u64;
    let n = data.len() as f64;
    let all_pairs = if link_only {
        (n / 2.0) * (n / 2.0)
    } else {
        n * (n - 1.0) / 2.0
    };
    println!(
        "blocking: {} candidate pairs ({:.4}% of {:.0}), max {} candidates per record, {} records hit a cap; recall {:.5} ({} of {} true pairs); scored in {:.2} s",
        scores.len(),
        100.0 * scores.len() as f64 / all_pairs,
        all_pairs,
        max_cands,
        capped,
        found as f64 / true_pairs.max(1) as f64,
        found,
        true_pairs,
        t.elapsed().as_secs_f64()
    );
    let at = |threshold: f64| {
        let mut prf = Prf::default();
        for &(s, m) in &scores {
            match (s >= threshold, m) {
                (true, true) => prf.tp += 1,
                (true, false) => prf.fp += 1,
                _ => {}
            }
        }
        prf.fn_ = true_pairs - prf.tp;
        prf
    };
    let declared = params.thresholds.link;
    println!(
        "pairwise at the pre-declared link threshold {declared} bits: {}",
        at(declared).show()
    );
    println!(
        "pairwise at the pre-declared review threshold {} bits: {}",
        params.thresholds.review,
        at(params.thresholds.review).show()
    );
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut best) = (0u64, 0u64, (0.0f64, f64::INFINITY));
    for (k, &(s, m)) in sorted.iter().enumerate() {
        if m {
            tp += 1;
        } else {
            fp += 1;
        }
        let next_differs = sorted.get(k + 1).is_none_or(|n| n.0 < s);
        if next_differs {
            let f1 = 2.0 * tp as f64 / (2 * tp + fp + (true_pairs - tp)) as f64;
            if f1 > best.0 {
                best = (f1, s);
            }
        }
    }
    println!(
        "pairwise at the F1-optimal threshold {:.2} bits: {}",
        best.1,
        at(best.1).show()
    );

    // The incremental engine, one record at a time.
    let mut order: Vec<usize> = (0..data.len()).collect();
    if link_only {
        order.sort_by_key(|&i| data[i].0.source != "A");
    }
    let mut engine = Engine::new(params.clone());
    let mut eids = vec![None; data.len()];
    let mut latencies = vec![];
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    for &i in &order {
        let t = Instant::now();
        let r = engine.match_or_create(&data[i].0);
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        eids[i] = Some(r.eid);
        *outcomes
            .entry(match r.decision {
                Outcome::Review(hms_domain::empi::ReviewReason::Margin) => "review_margin",
                Outcome::Review(_) => "review_threshold",
                other => other.as_str(),
            })
            .or_default() += 1;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let mut by_eid: HashMap<_, Vec<usize>> = HashMap::new();
    for (i, e) in eids.iter().enumerate() {
        by_eid.entry(*e).or_default().push(i);
    }
    let mut prf = Prf::default();
    for members in by_eid.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                if same(a, b) {
                    prf.tp += 1;
                } else {
                    prf.fp += 1;
                }
            }
        }
    }
    prf.fn_ = true_pairs - prf.tp.min(true_pairs);
    let mut outcomes: Vec<_> = outcomes.into_iter().collect();
    outcomes.sort();
    println!(
        "engine match_or_create: {} identities for {} people; {}",
        engine.identities(),
        groups.len(),
        prf.show()
    );
    println!(
        "  outcomes {:?}; latency p50 {:.0} µs p99 {:.0} µs max {:.0} µs; capped queries {}",
        outcomes,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        engine.stats().capped_queries
    );
    Ok(())
}

/// Splits one CSV line (RFC 4180 quoting, no line breaks inside fields).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (vec![], String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Reads a CSV with a header into rows keyed by column name.
fn csv_rows(path: &str) -> Result<Vec<HashMap<String, String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut lines = text.lines();
    let header = csv_fields(lines.next().ok_or_else(|| format!("{path} is empty"))?);
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f = csv_fields(l);
            if f.len() != header.len() {
                return Err(format!(
                    "{path}: a line has {} fields, not {}",
                    f.len(),
                    header.len()
                ));
            }
            Ok(header.iter().cloned().zip(f).collect())
        })
        .collect()
}

/// Pairwise quality of a partition (a cluster label per record) against the
/// truth: across sources, and the false pairs within one source.
fn pairwise(labels: &[String], data: &[(Record, String)]) -> (Prf, u64) {
    let mut clusters: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        clusters.entry(l).or_default().push(i);
    }
    let (mut cross, mut within_false) = (Prf::default(), 0u64);
    for members in clusters.values() {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                let same = data[a].1 == data[b].1;
                match (data[a].0.source == data[b].0.source, same) {
                    (false, true) => cross.tp += 1,
                    (false, false) => cross.fp += 1,
                    (true, false) => within_false += 1,
                    (true, true) => {}
                }
            }
        }
    }
    let mut per_person: HashMap<&str, HashMap<&str, u64>> = HashMap::new();
    for (r, person) in data {
        *per_person
            .entry(person)
            .or_default()
            .entry(&r.source)
            .or_default() += 1;
    }
    let true_cross: u64 = per_person
        .values()
        .map(|by_source| {
            let n: Vec<u64> = by_source.values().copied().collect();
            let total: u64 = n.iter().sum();
            (total * total - n.iter().map(|c| c * c).sum::<u64>()) / 2
        })
        .sum();
    cross.fn_ = true_cross - cross.tp.min(true_cross);
    (cross, within_false)
}

impl Prf {
    fn f1(&self) -> f64 {
        2.0 * self.tp as f64 / (2 * self.tp + self.fp + self.fn_).max(1) as f64
    }

    fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
}

/// The two-source evaluation (see the module doc).
fn two_sources(args: &Args) -> Result<(), String> {
    let mut data: Vec<(Record, String)> = vec![];
    for row in csv_rows(&args.records)? {
        let get = |k: &str| {
            row.get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut r = Record::new(
            get("source").ok_or("a record without a source")?,
            get("local_id").ok_or("a record without a local id")?,
        );
        r.given_name = get("given").map(PersonName::new);
        r.family_name = get("family").map(PersonName::new);
        r.birth_date = get("dob").map(BirthDate::new);
        r.sex = get("sex")
            .as_deref()
            .and_then(hms_domain::phi::Sex::from_code);
        r.address_line = get("address_line").map(Address::new);
        r.address_line2 = get("unit").map(Address::new);
        r.city = get("city").map(Address::new);
        r.state = get("state");
        r.postal_code = get("postcode").map(Address::new);
        if let Some(n) = get("national_id") {
            r.identifiers.push(Identifier {
                id: Mrn::new(n),
                authority: "national".into(),
                kind: "NI".into(),
            });
        }
        data.push((r, get("person").ok_or("a record without its truth")?));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = hms_domain::empi::model::SplitMix64::new(args.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    // As the regional EMPI: the hand-set model, trained once on what it
    // holds at 5,000 records, then matching goes on with the trained model
    // (identities already handed out stay).
    const AUTO_TRAIN: usize = 5_000;
    let mut engine = Engine::new(Params::default());
    let mut eids = vec![None; data.len()];
    let mut latencies = vec![];
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    for (n, &i) in order.iter().enumerate() {
        if n == AUTO_TRAIN {
            let held: Vec<_> = order[..n].iter().map(|&j| prepare(&data[j].0)).collect();
            let mut numbers: HashMap<&str, u32> = HashMap::new();
            let sources: Vec<u32> = order[..n]
                .iter()
                .map(|&j| {
                    let next = numbers.len() as u32;
                    *numbers.entry(data[j].0.source.as_str()).or_insert(next)
                })
                .collect();
            let (learned, _) = hms_domain::empi::train_sourced(
                &held,
                &sources,
                &Params::default(),
                &TrainConfig::default(),
            );
            let params = Params {
                fields: learned.fields,
                lambda: learned.lambda,
                ..Params::default()
            };
            let mut next = Engine::new(params);
            for &j in &order[..n] {
                if let Some(eid) = eids[j] {
                    next.restore(&data[j].0, eid);
                }
            }
            engine = next;
        }
        let t = Instant::now();
        let r = engine.match_or_create(&data[i].0);
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        eids[i] = Some(r.eid);
        *outcomes
            .entry(match r.decision {
                Outcome::Review(hms_domain::empi::ReviewReason::Margin) => "review_margin",
                Outcome::Review(hms_domain::empi::ReviewReason::CannotLink) => "review_cannot_link",
                Outcome::Review(_) => "review_threshold",
                other => other.as_str(),
            })
            .or_default() += 1;
    }
    latencies.sort_by(f64::total_cmp);
    let labels: Vec<String> = eids
        .iter()
        .map(|e| e.map(|e| e.to_string()).unwrap_or_default())
        .collect();
    let (ours, ours_within) = pairwise(&labels, &data);
    let mut outcomes: Vec<_> = outcomes.into_iter().collect();
    outcomes.sort();
    println!(
        "records {} ({} people); engine: cross-source {}; within-source false pairs {}",
        data.len(),
        data.iter()
            .map(|d| &d.1)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        ours.show(),
        ours_within
    );
    println!(
        "  outcomes {:?}; latency p50 {:.0} µs p99 {:.0} µs",
        outcomes,
        latencies[latencies.len() / 2],
        latencies[(latencies.len() - 1) * 99 / 100]
    );
    let mut summary = serde_json::json!({
        "records": data.len(),
        "engine": {"precision": ours.precision(), "recall": ours.tp as f64 / (ours.tp + ours.fn_).max(1) as f64, "f1": ours.f1(), "within_source_false_pairs": ours_within},
    });
    if !args.peer.is_empty() {
        let by_key: HashMap<(String, String), String> = csv_rows(&args.peer)?
            .into_iter()
            .map(|r| {
                let g = |k: &str| r.get(k).cloned().unwrap_or_default();
                ((g("source"), g("local_id")), g("cluster"))
            })
            .collect();
        let labels: Vec<String> = data
            .iter()
            .map(|(r, _)| {
                by_key
                    .get(&(r.source.clone(), r.local_id.expose().to_owned()))
                    .cloned()
                    .unwrap_or_else(|| format!("alone-{}-{}", r.source, r.local_id.expose()))
            })
            .collect();
        let (peer, peer_within) = pairwise(&labels, &data);
        println!(
            "peer:   cross-source {}; within-source false pairs {}",
            peer.show(),
            peer_within
        );
        summary["peer"] = serde_json::json!({"precision": peer.precision(), "recall": peer.tp as f64 / (peer.tp + peer.fn_).max(1) as f64, "f1": peer.f1(), "within_source_false_pairs": peer_within});
        let met = ours.precision() >= 0.995 && ours.f1() >= peer.f1();
        summary["targets_met"] = serde_json::json!(met);
        println!(
            "targets (precision ≥ 0.995, F1 ≥ the peer's): {}",
            if met { "met" } else { "NOT met" }
        );
    }
    println!("summary {summary}");
    Ok(())
}
