//! Pre-parse and parse tests: line endings, BOM, MSH-2 forms, charsets,
//! delimiters, nulls, Z-segments, errors, and a never-panics property.

use super::*;
use proptest::prelude::*;

const A01: &str = "MSH|^~\\&|ADT|DGH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
EVN|A01|20261127101500\r\
PID|1||MRN123^^^DGH^MR~NHS987^^^NHS^NH||Müller^Jürgen^^^Dr||19700102|M\r\
PV1|1|I|3W^301^A^DGH||||||||||||||||V100\r\
ZBE|custom|segment\r";

fn parse(s: &[u8]) -> Result<Message, ParseError> {
    Message::parse(s, ParseConfig::default())
}

#[test]
fn reads_fields_components_and_repetitions() {
    let m = parse(A01.as_bytes()).unwrap();
    assert_eq!(m.get("MSH-9.1").as_deref(), Some("ADT"));
    assert_eq!(m.get("MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(m.get("MSH-10").as_deref(), Some("MSG0001"));
    assert_eq!(m.get("MSH-12").as_deref(), Some("2.5.1"));
    assert_eq!(m.get("MSH-1").as_deref(), Some("|"));
    assert_eq!(m.get("PID-5.1").as_deref(), Some("Müller"));
    assert_eq!(m.get("PID-5.2").as_deref(), Some("Jürgen"));
    assert_eq!(m.get("PV1-3.1").as_deref(), Some("3W"));
    assert_eq!(m.get("PV1-3.4").as_deref(), Some("DGH"));
    assert_eq!(m.get("PV1-19").as_deref(), Some("V100"));
    assert_eq!(m.get("PV1-99"), None);
    let ids = m.repetitions("PID", 3);
    assert_eq!(ids.len(), 2);
    assert_eq!(m.component(ids[1], 4, 1).as_deref(), Some("NHS"));
    assert_eq!(m.segment("ZBE", 1).unwrap().raw(2), Some("segment"));
    assert_eq!(m.segments().len(), 5);
    assert_eq!(m.charset, Charset::Utf8);
}

#[test]
fn line_endings_bom_and_blank_lines() {
    let lf = A01.replace('\r', "\n");
    let crlf = A01.replace('\r', "\r\n");
    let bom = format!("\u{feff}{A01}");
    let leading = format!("\r\n{A01}\r\n\r\n");
    for v in [lf, crlf, bom, leading] {
        let m = parse(v.as_bytes()).unwrap();
        assert_eq!(m.segments().len(), 5);
        assert_eq!(m.get("PV1-19").as_deref(), Some("V100"));
    }
}

#[test]
fn v27_msh2_and_custom_delimiters() {
    let v27 = "MSH|^~\\&#|ADT|DGH|||20261127||ADT^A01|X1|P|2.7\rPID|1||M1\r";
    let m = parse(v27.as_bytes()).unwrap();
    assert_eq!(m.delimiters.truncation, Some('#'));
    assert_eq!(m.get("MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(m.get("MSH-2").as_deref(), Some("^~\\&#"));
    let custom = "MSH*:!?$*ADT*DGH*****ADT:A01*X2*P*2.3\rPID*1**M1:::DGH\r";
    let m = parse(custom.as_bytes()).unwrap();
    assert_eq!(m.get("MSH-9.2").as_deref(), Some("A01"));
    assert_eq!(m.get("PID-3.4").as_deref(), Some("DGH"));
}

#[test]
fn latin1_and_ascii_charsets() {
    let mut bytes =
        b"MSH|^~\\&|ADT|DGH|||20261127||ADT^A08|X3|P|2.5|||||DE|8859/1\rPID|1||M1||".to_vec();
    bytes.extend_from_slice(&[b'M', 0xFC, b'l', b'l', b'e', b'r']); // Müller in Latin-1
    bytes.extend_from_slice(b"\\F\\x\r");
    let m = parse(&bytes).unwrap();
    assert_eq!(m.charset, Charset::Latin1);
    assert_eq!(m.get("PID-5").as_deref(), Some("Müller|x"));
    // The same bytes declared ASCII are refused with the location of MSH-18's meaning.
    let ascii = String::from_utf8_lossy(&bytes).replace("8859/1", "ASCII");
    let err = parse(ascii.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::DataType);
    // An unknown charset is a table error at MSH-18.
    let other = A01.replacen("2.5.1", "2.5.1|||||DE|ISO IR87", 1);
    let err = parse(other.as_bytes()).unwrap_err();
    assert_eq!(err.code, ErrorCode::TableValueNotFound);
    assert_eq!(err.location.unwrap().to_string(), "MSH^1^18");
    // Latin-1 bytes in a message without MSH-18 (UTF-8 by default) are refused, not garbled.
    let err = parse(&bytes.replace_seq(b"8859/1", b"")).unwrap_err();
    assert_eq!(err.code, ErrorCode::DataType);
}

trait ReplaceSeq {
    fn replace_seq(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceSeq for Vec<u8> {
    fn replace_seq(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => self.clone(),
        }
    }
}

#[test]
fn nulls_and_empty_values() {
    let m = parse(b"MSH|^~\\&|A|B|||1||ADT^A08|X|P|2.5\rPID|1||M1||\"\"\r").unwrap();
    assert!(m.is_null("PID", 5));
    assert!(!m.is_null("PID", 3));
    assert_eq!(m.get("PID-4"), None);
}

#[test]
fn malformed_messages_are_errors_with_codes() {
    for (input, code) in [
        (&b""[..], ErrorCode::SegmentSequence),
        (b"PID|1\r", ErrorCode::SegmentSequence),
        (b"MSH", ErrorCode::RequiredFieldMissing),
        (b"MSHA^~\\&", ErrorCode::DataType),
        (b"MSH|^~|A\r", ErrorCode::DataType),
        (b"MSH|^^\\&|A\r", ErrorCode::DataType),
        (b"MSH|^~\\&|A\rP1|x\r", ErrorCode::SegmentSequence),
        (b"MSH|^~\\&|A\r\xff\xfe\r", ErrorCode::DataType),
    ] {
        let err = parse(input).unwrap_err();
        assert_eq!(
            err.code,
            code,
            "{:?}: {err}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_byte_lands_in_a_segment() {
    // The measured defect of some parsers: LF-terminated input cut to MSH.
    let lf = A01.replace('\r', "\n");
    let m = parse(lf.as_bytes()).unwrap();
    let rebuilt: usize = m
        .segments()
        .iter()
        .map(|s| {
            (1..=s.len())
                .filter(|&i| !(s.id() == "MSH" && i == 1))
                .map(|i| s.raw(i).unwrap().len() + 1)
                .sum::<usize>()
                + 3
                + 1
        })
        .sum();
    assert_eq!(rebuilt, A01.len());
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let mut with_header = b"MSH|^~\\&|".to_vec();
        with_header.extend_from_slice(&bytes);
        if let Ok(m) = parse(&with_header) {
            for p in ["MSH-9.2", "PID-3.1", "PV1-3.4", "ZZZ-1"] {
                let _ = m.get(p);
            }
        }
    }
}

#[test]
fn files_split_into_messages() {
    let batch = format!(
        "FHS|^~\\&|ADT\r\nBHS|^~\\&|ADT\r\n{}\r\n{}BTS|2\r\nFTS|1\r\n",
        A01.trim_end_matches('\r').replace('\r', "\r\n"),
        A01.replace("MSG0001", "MSG0002")
    );
    let msgs = split_messages(batch.as_bytes());
    assert_eq!(msgs.len(), 2);
    for (m, id) in msgs.iter().zip(["MSG0001", "MSG0002"]) {
        let p = parse(m).unwrap();
        assert_eq!(p.get("MSH-10").as_deref(), Some(id));
        assert_eq!(p.segments().len(), 5);
    }
    assert_eq!(
        split_messages(A01.as_bytes()),
        vec![A01.as_bytes().to_vec()]
    );
    assert!(split_messages(b"\r\n\n").is_empty());
}
