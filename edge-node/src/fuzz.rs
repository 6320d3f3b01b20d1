//! Entry points for fuzzing the HL7 path (`cargo xtask fuzz`) and for
//! replaying the inputs it found (`test_data/fuzz/`, run by an ordinary test).
//!
//! Each entry point must return for every input without panicking; the
//! fuzzer treats a panic as a finding and keeps the input.

use hms_domain::{BedAttributes, BedId, LevelOfCare, OrRoomId, RoomId, Timestamp, UnitId};

use crate::board::{Board, Command};
use crate::integration::adt::{self, Locations};
use crate::integration::dft;
use crate::integration::hl7::ack::{self, Header, Outcome};
use crate::integration::hl7::time::HospitalTime;
use crate::integration::hl7::{Message, ParseConfig};
use crate::integration::mllp::{FrameEvent, Framer, FramerConfig};
use crate::integration::siu::{self, OrLocations};
use crate::or_board::OrBoard;

/// A small hospital for the ADT step: unit `3W`, beds `3W-000`..`3W-003`
/// at HL7 locations `3W^0^0^TH`..`3W^1^3^TH`.
pub fn board_and_locations() -> (Board, Locations) {
    let mut board = Board::new();
    let mut map = vec![];
    for i in 0..4usize {
        let Ok(bed) = BedId::new(format!("3W-{i:03}")) else {
            continue;
        };
        let (Ok(unit), Ok(room)) = (UnitId::new("3W"), RoomId::new(format!("R{}", i / 2))) else {
            continue;
        };
        let _ = board.apply(
            Command::Commission {
                bed: bed.clone(),
                unit,
                attributes: BedAttributes {
                    gender: Default::default(),
                    isolation_capable: i == 0,
                    telemetry: false,
                    bariatric: false,
                    level_of_care: LevelOfCare::Acute,
                    room: Some(room),
                    tags: vec![],
                },
            },
            Timestamp::from_millis(0),
        );
        map.push((
            (
                "TH".to_owned(),
                "3W".to_owned(),
                (i / 2).to_string(),
                i.to_string(),
            ),
            bed,
        ));
    }
    (board, Locations::from_pairs(map))
}

/// Framing: the events must not depend on how the bytes are split.
pub fn framing(bytes: &[u8]) {
    for tolerant in [false, true] {
        let cfg = FramerConfig {
            max_frame: 512,
            tolerate_missing_cr: tolerant,
        };
        let whole = events(cfg, &[bytes]);
        let mid = bytes.len() / 2;
        let halves = events(cfg, &[&bytes[..mid], &bytes[mid..]]);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        let single = events(cfg, &bytewise);
        assert_eq!(whole, halves, "framing depends on read boundaries");
        assert_eq!(whole, single, "framing depends on read boundaries");
    }
}

fn events(cfg: FramerConfig, chunks: &[&[u8]]) -> Vec<FrameEvent> {
    let mut f = Framer::new(cfg);
    let mut out: Vec<FrameEvent> = vec![];
    for c in chunks {
        f.push(c);
        while let Some(e) = f.next_event() {
            match (out.last_mut(), &e) {
                (Some(FrameEvent::Skipped(a)), FrameEvent::Skipped(b)) => *a += b,
                _ => out.push(e),
            }
        }
    }
    out
}

/// Two operating rooms for the SIU step: `OR-1` and `OR-2` at HL7
/// locations `OR^OR-1^^TH` and `OR^OR-2^^TH`.
pub fn or_locations() -> OrLocations {
    OrLocations::from_pairs(["OR-1", "OR-2"].into_iter().filter_map(|r| {
        let id = OrRoomId::new(r).ok()?;
        Some((
            (
                "TH".to_owned(),
                "OR".to_owned(),
                r.to_owned(),
                String::new(),
            ),
            id,
        ))
    }))
}

/// Pre-parse, parse, ACK building, and ADT, SIU or DFT planning and application
/// on a small board and OR board: never a panic, the board keeps its
/// invariants, and every SIU plan fits the OR board it was made from.
pub fn message(bytes: &[u8]) {
    let (mut board, locations) = board_and_locations();
    let (mut or_board, or_locations) = (OrBoard::new(), or_locations());
    let clock = HospitalTime::utc();
    for raw in std::iter::once(bytes.to_vec()).chain(crate::integration::hl7::split_messages(bytes))
    {
        let parsed = Message::parse(&raw, ParseConfig::default());
        let header = match &parsed {
            Ok(m) => Header::of(m),
            Err(_) => Header::salvage(&raw),
        };
        let outcome = match &parsed {
            Ok(m) => {
                for p in [
                    "MSH-9.2", "PID-3.1", "PID-5.1", "PV1-3.4", "PV1-19", "NPU-2",
                ] {
                    let _ = m.get(p);
                }
                let kind = m.get("MSH-9.1");
                let planned = if kind.as_deref() == Some("DFT") {
                    dft::plan(m, &|_| None, &clock, Timestamp::from_millis(1)).map(|_| ())
                } else if kind.as_deref() == Some("SIU") {
                    siu::plan(m, &or_board, &or_locations, &clock).map(|events| {
                        for e in &events {
                            assert_eq!(or_board.apply_change(e), Ok(()), "an SIU plan must fit");
                        }
                    })
                } else {
                    adt::plan(m, &board, &locations, &|_| None).map(|plan| {
                        for cmd in plan.commands {
                            let _ = board.apply(cmd, Timestamp::from_millis(1));
                        }
                    })
                };
                match planned {
                    Ok(()) => Outcome::Accepted,
                    Err(r) => Outcome::Error {
                        code: r.code,
                        location: r.location,
                        reason: r.reason,
                    },
                }
            }
            Err(e) => Outcome::Reject {
                code: e.code,
                location: e.location.clone(),
                reason: e.reason.clone(),
            },
        };
        for a in ack::acks(&header, &outcome, "F", "20260101000000") {
            // Our own ACKs must parse.
            assert!(
                Message::parse(&a, ParseConfig::default()).is_ok(),
                "unparseable ACK"
            );
        }
        assert_eq!(board.check_invariants(), Ok(()));
    }
}

#[cfg(test)]
mod tests {
    /// Every input kept under `test_data/fuzz/` (findings and hostile seeds)
    /// goes through both entry points.
    #[test]
    fn fuzz_regressions_replay() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/fuzz");
        let mut n = 0;
        let mut failed = vec![];
        for e in std::fs::read_dir(&dir).expect("test_data/fuzz exists") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "bin") {
                let bytes = std::fs::read(&p).expect("readable");
                let r = std::panic::catch_unwind(|| {
                    super::framing(&bytes);
                    super::message(&bytes);
                });
                if r.is_err() {
                    failed.push(p.display().to_string());
                }
                n += 1;
            }
        }
        assert!(n > 0, "no regression inputs found in {}", dir.display());
        assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
    }
}
