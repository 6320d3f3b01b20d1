//! Durability proved on a filesystem that loses what was not synced.
//!
//! The appliance runs as a real process with its data dir on
//! [`hms_e2e::lossyfs`], an in-memory FUSE filesystem that keeps only what
//! `fsync`/`fdatasync` made durable when the power is cut. A process kill
//! alone cannot prove the fsync (the page cache survives a kill); a power
//! cut on this filesystem can: with `synchronous=OFF` or `NORMAL` SQLite's
//! committed rows are lost there (its own self-tests show it), so every
//! acknowledged message surviving here means each was on disk before its
//! ACK left.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hms_e2e::lossyfs::{self, LossyFs, Op};

use crate::support::{Proc, hospital_toml, run_cli};

/// A lossy filesystem on a fresh mount point (unmounted before the
/// directory goes), or `None` after recording why it cannot be mounted
/// here (which fails the test under `CI=true`).
struct Mounted {
    fs: LossyFs,
    _dir: tempfile::TempDir,
}

fn mount(test: &str) -> Option<Mounted> {
    if let Err(why) = lossyfs::available() {
        hms_e2e::skip::skip(test, &format!("FUSE cannot be mounted here: {why}"));
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("durability-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let fs = LossyFs::mount(dir.path()).unwrap();
    Some(Mounted { fs, _dir: dir })
}

fn a28(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A28^ADT_A05|{control}|P|2.5.1\r\
         EVN|A28|20261127101500\rPID|1||MRN-{control}^^^TH^MR||Roe^Rick||19800101|M\r"
    )
    .into_bytes()
}

/// Sends one message and reads its ACK (10 s at most); the ACK's text.
fn exchange(s: &mut TcpStream, control: &str) -> std::io::Result<String> {
    s.write_all(&edge_node::integration::mllp::Framer::encode(&a28(control)))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\x1c\r") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// The WAL as the op log names it (relative to the mount root, the data dir).
fn wal() -> PathBuf {
    PathBuf::from("edge.sqlite-wal")
}

/// How many times the message with control id `id` is stored.
fn stored(data: &Path, id: &str) -> i64 {
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM events WHERE kind = 'integration.hl7_message' AND correlation = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn every_acknowledged_message_was_synced_before_its_ack_and_survives_a_power_cut() {
    let test = "every_acknowledged_message_was_synced_before_its_ack_and_survives_a_power_cut";
    let Some(mut m) = mount(test) else { return };
    let data = m.fs.path().to_owned();
    let conf_dir = tempfile::tempdir().unwrap();
    let config = conf_dir.path().join("hospital.toml");
    std::fs::write(&config, hospital_toml(&data, &[("3W", 4, 2)])).unwrap();

    // 1. Each ACK comes after a sync of the WAL that follows the message's
    //    writes: the last thing done to the WAL before the ACK is a sync.
    let proc = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    let mllp = proc.mllp.unwrap();
    let mut s = connect(mllp);
    let wal = wal();
    for i in 0..30 {
        let id = format!("S{i}");
        let mark = m.fs.op_count();
        let ack = exchange(&mut s, &id).unwrap();
        let ops = m.fs.ops_since(mark);
        assert!(ack.contains(&format!("MSA|AA|{id}")), "{ack}");
        let on_wal: Vec<&Op> = ops
            .iter()
            .filter(|op| match op {
                Op::Write { path, .. } | Op::Sync { path } | Op::Truncate { path, .. } => {
                    path == &wal
                }
                _ => false,
            })
            .collect();
        assert!(
            on_wal.iter().any(|op| matches!(op, Op::Write { .. })),
            "message {id}: nothing written to the WAL before its ACK: {ops:?}"
        );
        assert!(
            matches!(on_wal.last(), Some(Op::Sync { .. })),
            "message {id}: the WAL was not synced after the message's writes and before its \
             ACK: {on_wal:?}"
        );
    }
    drop(s);

    // 2. Power cuts with messages in flight: the appliance is killed (and
    //    the disk loses what was not synced) while a sender streams messages
    //    over two connections; every acknowledged message is there exactly
    //    once afterwards, and the store verifies.
    let mut proc = Some(proc);
    let mut acked: Vec<String> = (0..30).map(|i| format!("S{i}")).collect();
    let mut unacked_at_cut: Vec<String> = vec![];
    for round in 0..3 {
        let p = match proc.take() {
            Some(p) => p,
            None => Proc::start(&config, &["--mllp", "127.0.0.1:0"]),
        };
        let mllp = p.mllp.unwrap();
        let round_acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let in_flight = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..2)
            .map(|c| {
                let (round_acked, in_flight, stop) =
                    (round_acked.clone(), in_flight.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut s = connect(mllp);
                    for i in 0.. {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let id = format!("P{round}-{c}-{i}");
                        in_flight.lock().unwrap().push(id.clone());
                        match exchange(&mut s, &id) {
                            Ok(ack) if ack.contains(&format!("MSA|AA|{id}")) => {
                                in_flight.lock().unwrap().retain(|x| x != &id);
                                round_acked.lock().unwrap().push(id);
                            }
                            // The appliance died under it: this one was never acknowledged.
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        // Let traffic run until a round's worth was acknowledged, then cut.
        let want = 40 + round * 25;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while round_acked.lock().unwrap().len() < want {
            assert!(
                std::time::Instant::now() < deadline,
                "traffic did not flow: {} acknowledged",
                round_acked.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        p.kill9();
        stop.store(true, Ordering::Release);
        for t in senders {
            t.join().unwrap();
        }
        m.fs.power_cut().unwrap();
        unacked_at_cut.extend(in_flight.lock().unwrap().drain(..));
        acked.extend(round_acked.lock().unwrap().drain(..));
    }
    // Each cut caught a sender waiting for an ACK (the streams never pause),
    // so messages were really in flight when the power went.
    assert!(
        !unacked_at_cut.is_empty(),
        "no message was in flight at any power cut"
    );
    // After the last cut, start once more (recovery from the WAL) and stop.
    let p = Proc::start(&config, &["--mllp", "127.0.0.1:0"]);
    drop(p);
    for id in &acked {
        assert_eq!(
            stored(&data, id),
            1,
            "{id} (acknowledged) is stored that many times"
        );
    }
    // What was in flight may or may not have been committed, never twice.
    for id in &unacked_at_cut {
        assert!(stored(&data, id) <= 1, "{id} (in flight) is stored twice");
    }
    let (code, out, err) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!(
        "{} acknowledged messages survived 3 power cuts; {} were in flight at a cut; {out}",
        acked.len(),
        unacked_at_cut.len()
    );
}
