//! EMPI at scale: `cargo run --release -p hms-domain --example empi_bench -- [PEOPLE] [dense|population]`.
//!
//! Generates a seeded synthetic region (about 1.74 records per person with
//! the default duplicate rate; the population vocabulary by default, see
//! [`Vocabulary`]), trains the model by EM on a sample, then
//! inserts every record with `match_or_create`, timing each call over the
//! last tenth (the index at its largest), times 10,000 searches against the
//! full index, and reports the process's resident memory. Prints one JSON
//! object.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use hms_e2e::bench::{p50_p99, rss_mb};
use std::time::Instant;

use hms_domain::empi::synth::{SynthConfig, Vocabulary, generate};
use hms_domain::empi::{Engine, Model, Params, TrainConfig, prepare, train};

/// CPU time of this thread, in microseconds: the work of a call, without
/// the time another process had the core (the bench machine is shared).
#[expect(unsafe_code, reason = "clock_gettime has no safe std wrapper")]
fn cpu_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

fn main() {
    let people: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(575_000);
    let vocabulary = match std::env::args().nth(2).as_deref() {
        Some("dense") => Vocabulary::Dense,
        _ => Vocabulary::Population,
    };
    let started = Instant::now();
    let data = generate(&SynthConfig {
        people,
        vocabulary,
        ..SynthConfig::default()
    });
    let generate_s = started.elapsed().as_secs_f64();
    let rss_data = rss_mb(std::process::id());

    // EM on a sample of 50,000 records.
    let sample: Vec<_> = data
        .iter()
        .take(50_000)
        .map(|l| prepare(&l.record))
        .collect();
    let t = Instant::now();
    let (params, _) = train(&sample, &Params::default(), &TrainConfig::default());
    let train_s = t.elapsed().as_secs_f64();
    drop(sample);

    let mut engine = Engine::new(params);
    let tail = data.len() - data.len() / 10;
    let mut insert_us = Vec::with_capacity(data.len() / 10 + 1);
    let mut insert_cpu_us = Vec::with_capacity(data.len() / 10 + 1);
    let mut candidates = Vec::with_capacity(data.len() / 10 + 1);
    let mut capped = 0usize;
    let t = Instant::now();
    for (i, l) in data.iter().enumerate() {
        let (s, c) = (Instant::now(), cpu_us());
        let r = engine.match_or_create(&l.record);
        if i >= tail {
            insert_us.push(s.elapsed().as_secs_f64() * 1e6);
            insert_cpu_us.push(cpu_us() - c);
            candidates.push(r.blocking.candidates as f64);
            capped += usize::from(r.blocking.capped_keys > 0);
        }
    }
    let insert_total_s = t.elapsed().as_secs_f64();
    let rss_full = rss_mb(std::process::id());
    let mut search_us = Vec::with_capacity(10_000);
    let mut search_cpu_us = Vec::with_capacity(10_000);
    for l in data
        .iter()
        .step_by((data.len() / 10_000).max(1))
        .take(10_000)
    {
        let (s, c) = (Instant::now(), cpu_us());
        let _ = engine.search(&l.record, 10);
        search_us.push(s.elapsed().as_secs_f64() * 1e6);
        search_cpu_us.push(cpu_us() - c);
    }
    // Peer: one record scored against 5,000 without blocking (the setting
    // of the reference figure for Splink), median of 200 queries.
    let model = Model::new(engine.params().clone());
    let pool: Vec<_> = data
        .iter()
        .take(5_000)
        .map(|l| prepare(&l.record))
        .collect();
    let mut exhaustive_us = Vec::with_capacity(200);
    for l in data.iter().skip(5_000).take(200) {
        let c = cpu_us();
        let q = prepare(&l.record);
        let best = pool
            .iter()
            .map(|p| model.compare_score(&q, p, None).1)
            .fold(f64::NEG_INFINITY, f64::max);
        std::hint::black_box(best);
        exhaustive_us.push(cpu_us() - c);
    }
    let (ep50, _) = p50_p99(exhaustive_us);
    let (ip50, ip99) = p50_p99(insert_us);
    let (sp50, sp99) = p50_p99(search_us);
    let (cp50, cp99) = p50_p99(candidates);
    let (icp50, icp99) = p50_p99(insert_cpu_us);
    let (scp50, scp99) = p50_p99(search_cpu_us);
    println!(
        "{}",
        serde_json::json!({
            "people": people,
            "vocabulary": format!("{vocabulary:?}"),
            "candidates_p50_last_tenth": cp50,
            "candidates_p99_last_tenth": cp99,
            "capped_queries_last_tenth": capped,
            "records": data.len(),
            "identities": engine.identities(),
            "generate_s": generate_s,
            "em_train_s_50k": train_s,
            "insert_total_s": insert_total_s,
            "match_or_create_p50_us_last_tenth": ip50,
            "match_or_create_p99_us_last_tenth": ip99,
            "match_or_create_cpu_p50_us_last_tenth": icp50,
            "match_or_create_cpu_p99_us_last_tenth": icp99,
            "search_cpu_p50_us": scp50,
            "search_cpu_p99_us": scp99,
            "peer_exhaustive_5000_cpu_p50_us": ep50,
            "search_p50_us": sp50,
            "search_p99_us": sp99,
            "rss_mb_records_only": rss_data,
            "rss_mb_with_index": rss_full,
        })
    );
}
