//! Mutation fuzzer for the HL7 path: `cargo xtask fuzz [SECONDS] [SEED]`
//! (or `cargo run --release -p edge-node --example fuzz_hl7 -- SECONDS SEED`).
//!
//! Seeds are the HL7 corpus (`test_data/hl7`) and the kept inputs
//! (`test_data/fuzz`). Each round mutates a seed (bit flips, byte inserts and
//! deletes, delimiter and MLLP control bytes, spliced chunks of other seeds)
//! and runs it through `edge_node::fuzz::{framing, message}`. An input that
//! panics is written to `test_data/fuzz/crash-<hash>.bin`, which the ordinary
//! test suite then replays for ever.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds(root: &Path) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for dir in ["test_data/hl7", "test_data/fuzz"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "hl7" || x == "bin")
                && let Ok(b) = std::fs::read(&p)
            {
                out.push(b);
            }
        }
    }
    out
}

const SPECIAL: &[u8] = b"|^~\\&#\r\n\x0b\x1c\"";

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            2 if at < v.len() => {
                let n = rng.below(16).min(v.len() - at);
                v.drain(at..at + n);
            }
            3 => {
                let other = &pool[rng.below(pool.len())];
                let s = rng.below(other.len() + 1);
                let e = (s + rng.below(64)).min(other.len());
                v.splice(at..at, other[s..e].iter().copied());
            }
            4 => v.insert(at, (rng.next() & 0xff) as u8),
            5 => {
                // Non-ASCII text (UTF-8 or Latin-1) next to an escape.
                let t: &[u8] = if rng.below(2) == 0 {
                    "ü\\F\\é".as_bytes()
                } else {
                    b"\xfc\\S\\\xe9"
                };
                v.splice(at..at, t.iter().copied());
            }
            _ if at < v.len() => {
                let e = (at + rng.below(32)).min(v.len());
                let chunk = v[at..e].to_vec();
                v.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1e55);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pool = seeds(&root);
    if pool.is_empty() {
        eprintln!("fuzz_hl7: no seeds found under {}", root.display());
        std::process::exit(1);
    }
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut crashes) = (0u64, 0u64);
    while Instant::now() < deadline {
        let base = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, &pool);
        let r = std::panic::catch_unwind(|| {
            edge_node::fuzz::framing(&input);
            edge_node::fuzz::message(&input);
        });
        runs += 1;
        if r.is_err() {
            crashes += 1;
            let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            let path = root.join(format!("test_data/fuzz/crash-{h:016x}.bin"));
            let _ = std::fs::write(&path, &input);
            eprintln!("fuzz_hl7: panic kept as {}", path.display());
        }
    }
    println!("fuzz_hl7: {runs} inputs in {seconds} s (seed {seed}), {crashes} panics");
    if crashes > 0 {
        std::process::exit(1);
    }
}
