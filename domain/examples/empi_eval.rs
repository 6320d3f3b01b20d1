//! EMPI evaluation on labelled data (run by `cargo xtask empi-eval`).
//!
//! Loads FEBRL3 (dedup), FEBRL4 (two sources) or the seeded synthetic set,
//! trains the model (u by random pairs, m by EM), then reports blocking
//! (candidate pairs, recall), pairwise precision/recall/F1 at the
//! pre-declared link threshold and at the F1-optimal threshold, and the
//! incremental engine's own partition quality and latency. Prints aggregate
//! figures only, never a record.
//!
//! `empi_eval --dataset febrl4|febrl3|synthetic [--data-dir DIR] [--with-ssn] [--people N] [--seed S]`

use std::collections::HashMap;
use std::time::Instant;

use hms_domain::empi::model::TermFrequencies;
use hms_domain::empi::synth::{SynthConfig, generate};
use hms_domain::empi::{BlockIndex, Engine, Outcome, Params, Record, TrainConfig, prepare, train};
use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName};

struct Args {
    dataset: String,
    data_dir: String,
    with_ssn: bool,
    people: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dataset: "febrl4".into(),
        data_dir: String::new(),
        with_ssn: false,
        people: 5000,
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dataset" => a.dataset = it.next().ok_or("--dataset needs a value")?,
            "--data-dir" => a.data_dir = it.next().ok_or("--data-dir needs a value")?,
            "--with-ssn" => a.with_ssn = true,
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
        "dataset {}{}: {} records",
        args.dataset,
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
    let base = Params::default();
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
