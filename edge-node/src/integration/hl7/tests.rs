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

/// A message whose MSH-18 is `msh18` and whose PID-5.1 is `name` (raw bytes).
fn with_charset(msh18: &[u8], name: &[u8]) -> Vec<u8> {
    let mut bytes = b"MSH|^~\\&|ADT|DGH|||20261127||ADT^A08|X4|P|2.5|||||PL|".to_vec();
    bytes.extend_from_slice(msh18);
    bytes.extend_from_slice(b"\rPID|1||M1||");
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(b"^Anna\r");
    bytes
}

#[test]
fn every_charset_decodes_a_real_name() {
    for (msh18, name, want, charset) in [
        ("ASCII", &b"Smith"[..], "Smith", Charset::Ascii),
        ("8859/1", b"M\xfcller", "Müller", Charset::Latin1),
        ("8859/2", b"\xa3ukasiewicz", "Łukasiewicz", Charset::Latin2),
        ("8859/3", b"\xd5au\xe5i", "Ġauċi", Charset::Latin3),
        ("8859/4", b"B\xbarzi\xf1\xb9", "Bērziņš", Charset::Latin4),
        (
            "8859/5",
            b"\xb8\xd2\xd0\xdd\xde\xd2",
            "Иванов",
            Charset::Cyrillic,
        ),
        ("8859/6", b"\xe5\xcd\xe5\xcf", "محمد", Charset::Arabic),
        (
            "8859/7",
            b"\xc1\xeb\xdd\xee\xe7\xf2",
            "Αλέξης",
            Charset::Greek,
        ),
        ("8859/8", b"\xeb\xe4\xef", "כהן", Charset::Hebrew),
        (
            "8859/9",
            b"\xdeim\xfeek Y\xfdld\xfdz",
            "Şimşek Yıldız",
            Charset::Latin5,
        ),
        ("8859/15", b"\xb4i\xb8ek", "Žižek", Charset::Latin9),
        (
            "UNICODE UTF-8",
            "Jürgen".as_bytes(),
            "Jürgen",
            Charset::Utf8,
        ),
        (
            "WINDOWS-1250",
            b"\x8a\x9dastn\xfd",
            "Šťastný",
            Charset::Windows1250,
        ),
        ("WINDOWS-1252", b"\x8cdipe", "Œdipe", Charset::Windows1252),
    ] {
        let m =
            parse(&with_charset(msh18.as_bytes(), name)).unwrap_or_else(|e| panic!("{msh18}: {e}"));
        assert_eq!(m.charset, charset, "{msh18}");
        assert_eq!(m.charset.name(), msh18);
        assert_eq!(m.get("PID-5.1").as_deref(), Some(want), "{msh18}");
        assert_eq!(m.get("PID-5.2").as_deref(), Some("Anna"), "{msh18}");
    }
}

#[test]
fn single_bytes_that_tell_the_tables_apart() {
    for (charset, byte, want) in [
        // True 8859/1 and 8859/9 keep the C1 controls where windows-1252/1254 have letters.
        (Charset::Latin1, 0x80, '\u{80}'),
        (Charset::Latin1, 0x8A, '\u{8A}'),
        (Charset::Latin1, 0xA4, '¤'),
        (Charset::Latin5, 0x80, '\u{80}'),
        (Charset::Latin5, 0x9F, '\u{9F}'),
        (Charset::Latin5, 0xD0, 'Ğ'),
        (Charset::Latin5, 0xDD, 'İ'),
        (Charset::Latin5, 0xDE, 'Ş'),
        (Charset::Latin5, 0xF0, 'ğ'),
        (Charset::Latin5, 0xFD, 'ı'),
        (Charset::Latin5, 0xFE, 'ş'),
        (Charset::Latin5, 0xFC, 'ü'),
        (Charset::Latin2, 0xA3, 'Ł'),
        (Charset::Latin2, 0x80, '\u{80}'),
        (Charset::Cyrillic, 0xB0, 'А'),
        (Charset::Cyrillic, 0xC0, 'Р'),
        (Charset::Cyrillic, 0xD0, 'а'),
        (Charset::Greek, 0xC1, 'Α'),
        (Charset::Greek, 0xA4, '€'),
        (Charset::Latin9, 0xA4, '€'),
        (Charset::Latin9, 0xBC, 'Œ'),
        (Charset::Windows1250, 0x8A, 'Š'),
        (Charset::Windows1250, 0xA3, 'Ł'),
        (Charset::Windows1252, 0x80, '€'),
        (Charset::Windows1252, 0xA4, '¤'),
    ] {
        let got = charset.decode(&[byte]);
        assert_eq!(got, Ok(want.to_string()), "{charset} {byte:#04x}");
    }
    // 8859/9's upper half is windows-1254's; 8859/1's is windows-1252's.
    for b in 0xA0..=0xFFu8 {
        let one = [b];
        let (w1254, _) = encoding_rs::WINDOWS_1254.decode_without_bom_handling(&one);
        assert_eq!(Charset::Latin5.decode(&one).unwrap(), w1254, "{b:#04x}");
        let (w1252, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&one);
        assert_eq!(Charset::Latin1.decode(&one).unwrap(), w1252, "{b:#04x}");
    }
}

#[test]
fn malformed_bytes_for_the_charset_are_errors_not_replacements() {
    for (msh18, name, reason) in [
        (
            "ASCII",
            &b"Jos\xe9"[..],
            "non-ASCII byte at 73 in an ASCII message",
        ),
        ("UNICODE UTF-8", b"Jos\xc3(", "invalid UTF-8 at byte 81"),
        ("UTF-8", b"\xed\xa0\x80", "invalid UTF-8 at byte 70"),
        // Unassigned positions of 8859/3, 8859/6, 8859/8 and 8859/7.
        ("8859/3", b"x\xa5", "byte 72 is not a character of 8859/3"),
        ("8859/6", b"\xa1", "byte 71 is not a character of 8859/6"),
        ("8859/8", b"\xbf", "byte 71 is not a character of 8859/8"),
        ("8859/7", b"\xd2", "byte 71 is not a character of 8859/7"),
    ] {
        let bytes = with_charset(msh18.as_bytes(), name);
        let err = parse(&bytes).unwrap_err();
        assert_eq!(err.code, ErrorCode::DataType, "{msh18}");
        assert_eq!(err.reason, reason, "{msh18}");
        assert!(!err.reason.contains('\u{fffd}'));
    }
}

#[test]
fn msh18_spellings_repetitions_and_unknown_names() {
    for (msh18, charset) in [
        ("windows-1250", Charset::Windows1250),
        ("Windows-1252", Charset::Windows1252),
        ("CP1250", Charset::Windows1250),
        ("cp1252", Charset::Windows1252),
        ("unicode utf-8", Charset::Utf8),
        ("UTF-8", Charset::Utf8),
        (" 8859/2 ", Charset::Latin2),
        // The first repetition is the message's set; its first component counts.
        ("8859/2~ISO IR87", Charset::Latin2),
        ("8859/2^x~UNICODE UTF-8", Charset::Latin2),
        // An empty first repetition is an empty MSH-18: the default.
        ("~8859/2", Charset::Utf8),
    ] {
        let m = parse(&with_charset(msh18.as_bytes(), b"Nowak")).unwrap();
        assert_eq!(m.charset, charset, "{msh18}");
    }
    for msh18 in [
        &b"ISO IR87"[..],
        b"UNICODE",
        b"UNICODE UTF-16",
        b"ISO-8859-2",
        b"CP1251",
        b"\xa3\xff",
        b"Smith^John",
    ] {
        let err = parse(&with_charset(msh18, b"x")).unwrap_err();
        assert_eq!(err.code, ErrorCode::TableValueNotFound);
        assert_eq!(err.location.unwrap().to_string(), "MSH^1^18");
        assert_eq!(
            err.reason,
            "MSH-18 names a character set this appliance does not decode"
        );
    }
    // An empty MSH-18 takes the configured default.
    let cfg = ParseConfig {
        default_charset: Charset::Windows1250,
    };
    let m = Message::parse(&with_charset(b"", b"\x8a"), cfg).unwrap();
    assert_eq!(m.get("PID-5.1").as_deref(), Some("Š"));
}

#[test]
fn names_agree_with_the_configuration() {
    // Every `mllp.default_charset` value the loader accepts decodes, in any case.
    for name in firmware_config::CHARSETS {
        assert!(Charset::from_msh18(name).is_some(), "{name}");
        assert!(
            Charset::from_msh18(&name.to_lowercase()).is_some(),
            "{name}"
        );
    }
    for c in Charset::ALL {
        assert!(firmware_config::CHARSETS.contains(&c.name()), "{c}");
        assert_eq!(Charset::from_msh18(c.name()), Some(c));
    }
    assert_eq!(
        Charset::from_msh18(firmware_config::DEFAULT_CHARSET),
        Some(ParseConfig::default().default_charset)
    );
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
