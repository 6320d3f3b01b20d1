//! The regional EMPI's match-or-create at scale:
//! `cargo run --release -p cloud-sync --example empi_register_bench -- [RECORDS] [DIR]`.
//!
//! Fills `empi.sqlite` in a fresh directory (a temporary one unless `DIR` is
//! given) with `RECORDS` records of the seeded population generator, each
//! filed under its true person as EID (a region whose identities are
//! settled), opens the EMPI as the cloud does (the engine rebuilt from the
//! stored records), then registers 10,000 further records one at a time
//! through `RegionalEmpi::register`: standardise, block, score, decide, and
//! commit the record, its audit row and its downlink entry (SQLite WAL,
//! `synchronous=FULL`). The peer, measured in the same run on the same
//! disk, is a one-row SQLite commit with the same settings. Prints one JSON
//! object: open time, registration p50/p99 (wall and CPU), the peer, and the
//! resident memory before and after the open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use hms_e2e::bench::{p50_p99, rss_mb};
use std::sync::Arc;
use std::time::Instant;

use cloud_sync::downlink::Downlink;
use cloud_sync::empi::RegionalEmpi;
use cloud_sync::store::empi::EmpiDb;
use cloud_sync::store::sqlite::CommitProbe;
use hms_domain::empi::Eid;
use hms_domain::empi::synth::{SynthConfig, Vocabulary, generate};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(2)
        .map_or_else(|| tmp.path().to_owned(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let extra = 10_000;
    let data = generate(&SynthConfig {
        people: (n + extra) * 10 / 17 + 100,
        vocabulary: Vocabulary::Population,
        ..SynthConfig::default()
    });
    assert!(
        data.len() >= n + extra,
        "the generator made too few records"
    );

    // The schema, then the settled region in one transaction.
    drop(RegionalEmpi::open(&dir, Arc::new(Downlink::in_memory().unwrap())).unwrap());
    let t = Instant::now();
    {
        let mut db = EmpiDb::open(&dir).unwrap();
        let tx = db.transaction().unwrap();
        for l in &data[..n] {
            tx.put_record(&l.record, Eid(u64::from(l.person) + 1))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let fill_s = t.elapsed().as_secs_f64();
    let rss_before = rss_mb(std::process::id());
    let t = Instant::now();
    let empi = RegionalEmpi::open(&dir, Arc::new(Downlink::in_memory().unwrap())).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let rss_open = rss_mb(std::process::id());

    let mut wall = Vec::with_capacity(extra);
    let mut decisions = std::collections::BTreeMap::<&str, usize>::new();
    for l in &data[n..n + extra] {
        let t = Instant::now();
        let r = empi.register(&l.record, "bench").unwrap();
        wall.push(t.elapsed().as_secs_f64() * 1e6);
        *decisions.entry(r.decision).or_default() += 1;
    }

    // Peer: a one-row commit on the same disk with the same settings.
    let peer = CommitProbe::create(&dir.join("peer.sqlite")).unwrap();
    let mut commit = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let t = Instant::now();
        peer.commit(i).unwrap();
        commit.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p50, p99) = p50_p99(wall);
    let (c50, c99) = p50_p99(commit);
    println!(
        "{}",
        serde_json::json!({
            "records": n,
            "registrations": extra,
            "decisions": decisions,
            "fill_s": fill_s,
            "open_s": open_s,
            "register_p50_us": p50,
            "register_p99_us": p99,
            "peer_commit_p50_us": c50,
            "peer_commit_p99_us": c99,
            "register_p99_over_commit_p99": p99 / c99,
            "rss_mb_before_open": rss_before,
            "rss_mb_after_open": rss_open,
            "rss_mb_after_registrations": rss_mb(std::process::id()),
        })
    );
}
