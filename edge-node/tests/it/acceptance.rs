//! Acceptance corpus: three realistic ADT feeds, each shaped like the feed of
//! a different kind of sending system (`edge-node/test_data/hl7/acceptance/`,
//! see its README and generate.py): an Epic-Bridges-like feed, a
//! Cerner/Oracle-Health-like feed and a MEDITECH-like feed as a test harness
//! replays it (one control id for every message, enhanced-mode ACKs, Latin-1).
//!
//! Each file goes through the corpus test's [`run`](crate::corpus::run) (sent
//! over MLLP to a fresh appliance; the ACKs, the beds that are not plain
//! vacant-clean and the parked count; the store must verify). Here each ACK
//! line is labelled with the number and trigger of the message it answers,
//! and, beyond the `expect!` block, the test asserts what must hold whatever
//! the details: the message count, no AR/CR anywhere, an AE only for the
//! messages made parkable on purpose, as many parked messages as those, and
//! a retransmission answered exactly as its original.

use std::fmt::Write as _;
use std::path::Path;

use edge_node::integration::client::{AckKind, Due, Wanted, header_of};
use edge_node::integration::hl7::split_messages;
use expect_test::{Expect, expect};

use crate::corpus::run;

/// The messages of an acceptance file, as the corpus test sends them.
fn messages(file: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/hl7/acceptance")
        .join(file);
    let mut msgs = split_messages(&std::fs::read(&path).unwrap());
    msgs.retain(|m| !m.is_empty());
    msgs
}

/// One feed's outcome.
struct Feed {
    /// The `expect!` text: `N TRIGGER ACK` lines, then the beds and parked count.
    text: String,
    /// (message number from 1, ACK line) for every ACK, in order.
    acks: Vec<(usize, String)>,
    /// The parked count the appliance reports.
    parked: usize,
}

impl Feed {
    /// The ACK lines of message `n` (from 1).
    fn acks_of(&self, n: usize) -> Vec<&str> {
        self.acks
            .iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    /// What every feed must meet: no AR or CR; AE/CE only for the messages
    /// made parkable on purpose (each of which gets one), and exactly that
    /// many messages parked.
    fn assert_parked_only(&self, parkable: &[usize]) {
        for (n, a) in &self.acks {
            let code = ack_code(a);
            assert!(
                !matches!(code, "AR" | "CR"),
                "message {n}: no message of a feed may be rejected: {a}"
            );
            if matches!(code, "AE" | "CE") {
                assert!(
                    parkable.contains(n),
                    "message {n} was not meant to be parked: {a}"
                );
            }
        }
        assert!(
            !self.text.lines().any(|l| l.split(' ').any(|t| t == "AR")),
            "no AR line:\n{}",
            self.text
        );
        assert_eq!(self.parked, parkable.len(), "parked count:\n{}", self.text);
    }

    fn check(&self, want: Expect) {
        want.assert_eq(&self.text);
    }
}

/// MSA-1 of an ACK line (`CONTROL-ID CODE …`).
fn ack_code(line: &str) -> &str {
    line.split(' ').nth(1).unwrap_or("")
}

/// Whether an ACK that `when` (MSH-15/16: ER, SU) makes conditional was sent
/// as `code`: ER answers errors only, SU successes only.
fn condition_met(when: Option<&str>, code: &str) -> bool {
    let success = matches!(code, "AA" | "CA");
    match when {
        Some("SU") => success,
        _ => !success,
    }
}

/// Sends `file` (which must hold `count` messages) and labels its ACKs.
async fn feed(file: &str, count: usize) -> Feed {
    let msgs = messages(file);
    assert_eq!(msgs.len(), count, "{file}: message count");
    assert!(
        msgs.iter().all(|m| m.starts_with(b"MSH|")),
        "{file}: every message starts with MSH"
    );
    let out = run(&format!("acceptance/{file}"), None).await;
    let mut lines = out.lines().peekable();
    let mut text = String::new();
    let mut acks = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let h = header_of(m);
        for &(kind, due) in Wanted::of(&h).acks() {
            let Some(&line) = lines.peek() else { break };
            let code = ack_code(line);
            let commit = code.starts_with('C');
            let fits = match kind {
                AckKind::Commit => commit,
                AckKind::Original | AckKind::Application => code.starts_with('A'),
            };
            let when = match kind {
                AckKind::Commit => h.accept_ack.as_deref(),
                _ => h.app_ack.as_deref(),
            };
            let sent = match due {
                Due::Always => {
                    assert!(
                        fits,
                        "{file}: message {}: {kind} expected, got {line}",
                        i + 1
                    );
                    true
                }
                Due::Conditional => fits && condition_met(when, code),
                Due::Never => false,
            };
            if sent {
                writeln!(text, "{:02} {} {line}", i + 1, h.trigger).unwrap();
                acks.push((i + 1, line.to_owned()));
                lines.next();
            }
        }
    }
    let mut parked = None;
    for l in lines {
        if let Some(n) = l.strip_prefix("parked: ") {
            parked = Some(n.parse().unwrap());
        }
        text.push_str(l);
        text.push('\n');
    }
    Feed {
        text,
        acks,
        parked: parked.expect("a parked count"),
    }
}

/// The board after the first `n` messages of `file`, for each `n` of
/// `points`: the states a final snapshot cannot show (holds, flags, blocks
/// that later messages undo). Each prefix runs on its own fresh appliance.
async fn checkpoints(file: &str, points: &[usize]) -> String {
    let msgs = messages(file);
    let mut text = String::new();
    for &n in points {
        let prefix: Vec<u8> = msgs[..n].concat();
        let trigger = header_of(&msgs[n - 1]).trigger;
        writeln!(text, "after {n:02} {trigger}:").unwrap();
        let out = run(&format!("acceptance/{file}"), Some(prefix)).await;
        for l in out.lines() {
            if !matches!(ack_code(l), "AA" | "AE" | "AR" | "CA" | "CE" | "CR") {
                writeln!(text, "  {l}").unwrap();
            }
        }
    }
    text
}

/// The three feeds hold at least 60 messages, each file a different shape.
#[test]
fn the_feeds_hold_at_least_60_messages_in_their_own_shapes() {
    let epic = messages("epic_style.hl7");
    let cerner = messages("cerner_style.hl7");
    let meditech = messages("meditech_style.hl7");
    assert_eq!((epic.len(), cerner.len(), meditech.len()), (33, 30, 32));
    assert!(epic.len() + cerner.len() + meditech.len() >= 60);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/hl7/acceptance");
    let raw = |f: &str| std::fs::read(dir.join(f)).unwrap();
    // One line ending per file: CR (Epic), CRLF (Cerner), LF (MEDITECH).
    let (e, c, m) = (
        raw("epic_style.hl7"),
        raw("cerner_style.hl7"),
        raw("meditech_style.hl7"),
    );
    assert!(!e.contains(&b'\n'));
    let crs = c.iter().filter(|&&b| b == b'\r').count();
    assert_eq!(crs, c.windows(2).filter(|w| w == b"\r\n").count());
    assert_eq!(crs, c.iter().filter(|&&b| b == b'\n').count());
    assert!(!m.contains(&b'\r'));
    // The MEDITECH-like file is Latin-1 (MSH-18 8859/1), not UTF-8.
    assert!(std::str::from_utf8(&m).is_err());
    assert!(m.windows(2).any(|w| w == b"M\xfc"), "Müller in Latin-1");
    // Every MEDITECH-like message has the same control id.
    for msg in &meditech {
        assert_eq!(header_of(msg).control_id, "MSG00001");
    }
}

/// Epic-Bridges-like: v2.5.1, CSNs in PV1-19, EVN-6, many PID-3
/// identifiers, Z-segments, escapes, offsets in the times; original mode.
///
/// Parkable on purpose: message 32, an A03 for a visit admitted before the
/// interface went live (CSN 699900001): it holds no bed while PV1-3 names
/// ICU^0^0, a managed bed, so the appliance parks it ("holds no bed").
/// Message 12 resends message 10 (same MSH-10 and content, later MSH-7): it
/// gets the same ACK and changes nothing (3W-001 must not be pending
/// discharge again after the A25 of message 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_style_feed() {
    let f = feed("epic_style.hl7", 33).await;
    f.assert_parked_only(&[32]);
    assert_eq!(f.acks_of(12), f.acks_of(10), "a resend gets the same ACK");
    assert!(
        !f.text.contains("pending-discharge"),
        "the resent A16 was not applied again"
    );
    // Pending discharge set (10); pending admits held (13: PV1-42, 15: PV1-3);
    // a pending transfer held while the visit keeps its bed (17); the
    // transfer to 4E, off the board, released the bed (24).
    expect![[r#"
        after 10 A16:
          3W-000 occupied 700100011 [E1000101 QUILL, HARRIET]
          3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND] pending-discharge
          3W-002 occupied 700100012 [E1000102 OKONJO, MARCUS]
          ICU-000 vacant_dirty
          parked: 0
        after 13 A14:
          3W-000 occupied 700100011 [E1000101 QUILL, HARRIET]
          3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND]
          3W-002 occupied 700100012 [E1000102 OKONJO, MARCUS]
          3W-003 reserved 700100014 [E1000104 LINDGREN, OSKAR]
          ICU-000 vacant_dirty
          parked: 0
        after 15 A14:
          3W-000 occupied 700100011 [E1000101 QUILL, HARRIET]
          3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND]
          3W-002 occupied 700100012 [E1000102 OKONJO, MARCUS]
          3W-003 reserved 700100015 [E1000105 HADDAD, LAYLA]
          ICU-000 vacant_dirty
          parked: 0
        after 17 A15:
          3W-000 occupied 700100011 [E1000101 QUILL, HARRIET]
          3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND]
          3W-002 occupied 700100012 [E1000102 OKONJO, MARCUS]
          3W-003 reserved 700100015 [E1000105 HADDAD, LAYLA]
          ICU-000 vacant_dirty
          ICU-001 reserved 700100011 [E1000101 QUILL, HARRIET]
          parked: 0
        after 24 A02:
          3W-000 occupied 700100012 [E1000102 OKONJO, MARCUS]
          3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND]
          3W-002 occupied 700100011 [E1000101 QUILL, HARRIET]
          ICU-000 vacant_dirty
          ICU-001 occupied 700100017 [E1000107 FERREIRA, TOMAS]
          parked: 0
    "#]]
    .assert_eq(&checkpoints("epic_style.hl7", &[10, 13, 15, 17, 24]).await);
    f.check(expect![[r#"
        01 A04 3100417 AA
        02 A08 3100434 AA
        03 A04 3100451 AA
        04 A01 3100468 AA
        05 A01 3100485 AA
        06 A06 3100502 AA
        07 A02 3100519 AA
        08 A08 3100536 AA
        09 A02 3100553 AA
        10 A16 3100570 AA
        11 A25 3100587 AA
        12 A16 3100570 AA
        13 A14 3100604 AA
        14 A27 3100621 AA
        15 A14 3100638 AA
        16 A01 3100655 AA
        17 A15 3100672 AA
        18 A26 3100689 AA
        19 A21 3100706 AA
        20 A22 3100723 AA
        21 A17 3100740 AA
        22 A01 3100757 AA
        23 A40 3100774 AA
        24 A02 3100791 AA
        25 A12 3100808 AA
        26 A03 3100825 AA
        27 A13 3100842 AA
        28 A03 3100859 AA
        29 A54 3100876 AA
        30 A31 3100893 AA
        31 A01 3100910 AA
        32 A03 3100927 AE @PV1^1^19 visit 699900001 holds no bed; message parked
        33 A03 3100944 AA
        3W-000 occupied 700100012 [E1000102 OKONJO, MARCUS]
        3W-001 occupied 700100013 [E1000103 ST&CLAIR, ROSALIND]
        3W-002 occupied 700100011 [E1000101 QUILL, HARRIET]
        3W-003 vacant_dirty
        ICU-000 vacant_dirty
        ICU-001 occupied 700100017 [E1000107 FERREIRA, TOMAS]
        parked: 1
    "#]]);
}

/// Cerner/Oracle-Health-like: v2.3, HNAM, facility and building/floor in
/// PV1-3, A08 storms, A28/A31, clinic A04s, one visit without PV1-19 (PID-3
/// with PV1-44), EVN without EVN-6, CRLF; after message 22 the engine
/// restarts its MSH-10 counter (messages 23-30 reuse the control ids of 1-8
/// for other content: each is processed as its own message).
///
/// Parkable on purpose: message 25, an A02 into 3W^1^3, which is still dirty
/// after the A11 of message 20 (this feed sends no bed status, housekeeping
/// has not reported it clean): the bed is not free, so the transfer parks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerner_style_feed() {
    let f = feed("cerner_style.hl7", 30).await;
    f.assert_parked_only(&[25]);
    // Control-id reuse: the same MSH-10 answered for each message's own content.
    let msgs = messages("cerner_style.hl7");
    for (later, earlier) in (23..=30).zip(1..=8) {
        assert_eq!(
            header_of(&msgs[later - 1]).control_id,
            header_of(&msgs[earlier - 1]).control_id
        );
    }
    assert_eq!(ack_code(f.acks_of(23)[0]), "AA");
    // A08 correction move (11); the visit without PV1-19 in its bed (13) and
    // found again by PID-3 + PV1-44 (16, pending discharge); the pre-admit
    // hold (17); the wrongly admitted patient in 3W-003 before the A11 (19).
    expect![[r#"
        after 11 A08:
          3W-000 vacant_dirty
          3W-001 occupied F500112 [C200112 MARQUEZ, TEODORO]
          parked: 0
        after 13 A01:
          3W-000 vacant_dirty
          3W-001 occupied F500112 [C200112 MARQUEZ, TEODORO]
          3W-002 occupied pv44-7c9f79c8197800d3c979 [C200113 ASHBY, WREN]
          parked: 0
        after 16 A16:
          3W-000 vacant_dirty
          3W-001 occupied F500112 [C200112 MARQUEZ, TEODORO]
          3W-002 occupied pv44-7c9f79c8197800d3c979 [C200113 ASHBY, WREN] pending-discharge
          parked: 0
        after 17 A05:
          3W-000 vacant_dirty
          3W-001 occupied F500112 [C200112 MARQUEZ, TEODORO]
          3W-002 occupied pv44-7c9f79c8197800d3c979 [C200113 ASHBY, WREN] pending-discharge
          3W-003 reserved F500114 [C200114 KOWALCZYK, EZRA]
          parked: 0
        after 19 A01:
          3W-000 vacant_dirty
          3W-001 occupied F500112 [C200112 MARQUEZ, TEODORO]
          3W-002 occupied pv44-7c9f79c8197800d3c979 [C200113 ASHBY, WREN] pending-discharge
          3W-003 occupied F500115 [C200115 RAGHAVAN, PRIYA]
          parked: 0
    "#]]
    .assert_eq(&checkpoints("cerner_style.hl7", &[11, 13, 16, 17, 19]).await);
    f.check(expect![[r#"
        01 A28 Q63800001T63800002 AA
        02 A31 Q63800002T63800003 AA
        03 A04 Q63800003T63800004 AA
        04 A08 Q63800004T63800005 AA
        05 A08 Q63800005T63800006 AA
        06 A03 Q63800006T63800007 AA
        07 A04 Q63800007T63800008 AA
        08 A02 Q63800008T63800009 AA
        09 A08 Q63800009T63800010 AA
        10 A08 Q63800010T63800011 AA
        11 A08 Q63800011T63800012 AA
        12 A08 Q63800012T63800013 AA
        13 A01 Q63800013T63800014 AA
        14 A08 Q63800014T63800015 AA
        15 A08 Q63800015T63800016 AA
        16 A16 Q63800016T63800017 AA
        17 A05 Q63800017T63800018 AA
        18 A38 Q63800018T63800019 AA
        19 A01 Q63800019T63800020 AA
        20 A11 Q63800020T63800021 AA
        21 A03 Q63800021T63800022 AA
        22 A07 Q63800022T63800023 AA
        23 A01 Q63800001T63800002 AA
        24 A02 Q63800002T63800003 AA
        25 A02 Q63800003T63800004 AE bed 3W-003 is vacant_dirty: cannot transfer into; message parked
        26 A31 Q63800004T63800005 AA
        27 A04 Q63800005T63800006 AA
        28 A08 Q63800006T63800007 AA
        29 A28 Q63800007T63800008 AA
        30 A03 Q63800008T63800009 AA
        3W-000 vacant_dirty
        3W-001 vacant_dirty
        3W-002 vacant_dirty
        3W-003 vacant_dirty
        ICU-000 occupied F500112 [C200112 MARQUEZ, TEODORO]
        ICU-001 vacant_dirty
        parked: 1
    "#]]);
}

/// MEDITECH-like as a test harness replays it: v2.4, MSG00001 for every
/// message (each one control-id reuse, processed for its own content), MSH-15
/// AL with MSH-16 NE (a commit ACK only), AL (both ACKs) or ER (an
/// application ACK on error only), Latin-1 names, LF; A60, identifier moves
/// and changes with MRG, A20 on and off the map.
///
/// Parkable on purpose: message 28, an A02 into 3W^1^OF, an overflow bed
/// inside the managed 3W that is not configured: an unknown room/bed, parked
/// (MSH-16 ER: CA, then AE). Message 27 resends message 13 (the A50, same
/// content, later MSH-7): the same two ACKs, nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meditech_style_feed() {
    let f = feed("meditech_style.hl7", 32).await;
    f.assert_parked_only(&[28]);
    assert_eq!(f.acks_of(27), f.acks_of(13), "a resend gets the same ACKs");
    assert_eq!(f.acks_of(13).len(), 2, "AL|AL: commit and application ACK");
    // A20 K blocks (5), the first U unblocks to dirty (7); Müller in 3W-000
    // and the A47's new MRN on 3W-001 (10); Østergaard's visit before the
    // A45 (11); Ibáñez moved onto the board before the A12 (19); Müller still
    // in 3W-000 after the parked A02 (28), dirty after his discharge (29).
    expect![[r#"
        after 05 A20:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000022 [M000022 Gonçalves, Inês]
          3W-002 blocked contaminated (A20)
          parked: 0
        after 07 A20:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000022 [M000022 Gonçalves, Inês]
          3W-002 vacant_dirty
          parked: 0
        after 10 A47:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000022 [M000122 Gonçalves, Inês]
          parked: 0
        after 11 A01:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000022 [M000122 Gonçalves, Inês]
          3W-002 occupied V0000023 [M000023 Østergaard, Søren]
          parked: 0
        after 19 A02:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000122 [M000122 Gonçalves, Inês]
          3W-002 occupied V0000023 [M000024 Lefèvre, Renée]
          3W-003 occupied V0000025 [M000025 Ibáñez, José]
          parked: 0
        after 28 A02:
          3W-000 occupied V0000021 [M000021 Müller, Jürgen]
          3W-001 occupied V0000122 [M000122 Gonçalves, Inês]
          3W-002 occupied V0000023 [M000024 Lefèvre, Renée]
          3W-003 vacant_dirty
          parked: 1
        after 29 A03:
          3W-000 vacant_dirty
          3W-001 occupied V0000122 [M000122 Gonçalves, Inês]
          3W-002 occupied V0000023 [M000024 Lefèvre, Renée]
          3W-003 vacant_dirty
          parked: 1
    "#]]
    .assert_eq(&checkpoints("meditech_style.hl7", &[5, 7, 10, 11, 19, 28, 29]).await);
    f.check(expect![[r#"
        01 A04 MSG00001 CA
        02 A01 MSG00001 CA
        03 A01 MSG00001 CA
        04 A60 MSG00001 CA
        05 A20 MSG00001 CA
        06 A20 MSG00001 CA
        07 A20 MSG00001 CA
        08 A20 MSG00001 CA
        09 A44 MSG00001 CA
        10 A47 MSG00001 CA
        10 A47 MSG00001 AA
        11 A01 MSG00001 CA
        12 A45 MSG00001 CA
        12 A45 MSG00001 AA
        13 A50 MSG00001 CA
        13 A50 MSG00001 AA
        14 A51 MSG00001 CA
        15 A37 MSG00001 CA
        16 A09 MSG00001 CA
        17 A10 MSG00001 CA
        18 A04 MSG00001 CA
        19 A02 MSG00001 CA
        20 A12 MSG00001 CA
        21 A04 MSG00001 CA
        22 A17 MSG00001 CA
        23 A16 MSG00001 CA
        24 A03 MSG00001 CA
        25 A13 MSG00001 CA
        26 A23 MSG00001 CA
        27 A50 MSG00001 CA
        27 A50 MSG00001 AA
        28 A02 MSG00001 CA
        28 A02 MSG00001 AE @PV1^1^3 PV1-3 is in a managed point of care but names no configured room/bed; message parked
        29 A03 MSG00001 CA
        30 A20 MSG00001 CA
        31 A08 MSG00001 CA
        32 A40 MSG00001 CA
        32 A40 MSG00001 AA
        3W-001 occupied V0000122 [M000122 Gonçalves, Inês]
        3W-002 occupied V0000023 [M000024 Lefèvre, Renée]
        3W-003 vacant_dirty
        parked: 1
    "#]]);
}
