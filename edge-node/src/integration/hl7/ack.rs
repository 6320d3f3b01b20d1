//! Acknowledgements: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR
//! commit ACK, plus an application ACK when MSH-16 asks for one).
//!
//! The ACK swaps sender and receiver of the inbound MSH, echoes its version,
//! answers its control id in MSA-2 and, on error, carries an ERR segment with
//! the HL7 error code (table 0357) and location. Built before commit, sent
//! only after it; stored so a duplicate gets the identical bytes again.

use super::{Delimiters, ErrorCode, Location, Message};

/// Outcome of processing a message, before it is expressed as ACK codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and applied.
    Accepted,
    /// Stored but not applied (parked), or refused for its content.
    Error {
        /// HL7 error code.
        code: ErrorCode,
        /// Where.
        location: Option<Location>,
        /// Text for ERR-8 (never PHI).
        reason: String,
    },
    /// Refused without being stored (cannot be processed at all).
    Reject {
        /// HL7 error code.
        code: ErrorCode,
        /// Where.
        location: Option<Location>,
        /// Text for ERR-8 (never PHI).
        reason: String,
    },
}

/// What the inbound header asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// MSH-3 sending application.
    pub sending_app: String,
    /// MSH-4 sending facility.
    pub sending_facility: String,
    /// MSH-5 receiving application.
    pub receiving_app: String,
    /// MSH-6 receiving facility.
    pub receiving_facility: String,
    /// MSH-9.2 trigger event.
    pub trigger: String,
    /// MSH-10 control id.
    pub control_id: String,
    /// MSH-11 processing id.
    pub processing_id: String,
    /// MSH-12 version.
    pub version: String,
    /// MSH-15 accept acknowledgement type (enhanced mode when present).
    pub accept_ack: Option<String>,
    /// MSH-16 application acknowledgement type.
    pub app_ack: Option<String>,
}

impl Header {
    /// Reads the header fields of a parsed message.
    pub fn of(m: &Message) -> Header {
        let g = |p: &str| m.get(p).unwrap_or_default();
        Header {
            sending_app: g("MSH-3"),
            sending_facility: g("MSH-4"),
            receiving_app: g("MSH-5"),
            receiving_facility: g("MSH-6"),
            trigger: g("MSH-9.2"),
            control_id: g("MSH-10"),
            processing_id: m.get("MSH-11").unwrap_or_else(|| "P".into()),
            version: m.get("MSH-12").unwrap_or_else(|| "2.5".into()),
            accept_ack: m.get("MSH-15"),
            app_ack: m.get("MSH-16"),
        }
    }

    /// Best-effort header from bytes that did not parse (for a reject ACK):
    /// splits the first line on `|` without any other interpretation.
    pub fn salvage(raw: &[u8]) -> Header {
        let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        let line_end = raw
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(raw.len());
        let line = String::from_utf8_lossy(&raw[..line_end]);
        if !line.starts_with("MSH|") {
            return Header::default();
        }
        let f: Vec<&str> = line.split('|').collect();
        // f[1] is MSH-2; f[k] is MSH-(k+1).
        let get = |n: usize| f.get(n - 1).map(|s| s.to_string()).unwrap_or_default();
        Header {
            sending_app: get(3),
            sending_facility: get(4),
            receiving_app: get(5),
            receiving_facility: get(6),
            trigger: get(9).split('^').nth(1).unwrap_or("").to_owned(),
            control_id: get(10),
            processing_id: "P".into(),
            version: Some(get(12))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "2.5".into()),
            accept_ack: Some(get(15)).filter(|v| !v.is_empty()),
            app_ack: Some(get(16)).filter(|v| !v.is_empty()),
        }
    }

    /// Enhanced acknowledgement mode (MSH-15 or MSH-16 valued).
    pub fn enhanced(&self) -> bool {
        self.accept_ack.is_some() || self.app_ack.is_some()
    }
}

/// Whether an ACK of condition type `when` (AL, NE, ER, SU) is due.
fn due(when: Option<&str>, success: bool) -> bool {
    match when.unwrap_or("AL") {
        "NE" => false,
        "ER" => !success,
        "SU" => success,
        _ => true,
    }
}

/// Escapes text for a field with the default delimiters.
fn esc(s: &str, d: &Delimiters) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c == d.escape => out.push_str("\\E\\"),
            c if c == d.field => out.push_str("\\F\\"),
            c if c == d.component => out.push_str("\\S\\"),
            c if c == d.subcomponent => out.push_str("\\T\\"),
            c if c == d.repetition => out.push_str("\\R\\"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Builds one ACK message.
fn build(h: &Header, code: &str, outcome: &Outcome, control_id: &str, timestamp: &str) -> Vec<u8> {
    let d = Delimiters::default();
    let e = |s: &str| esc(s, &d);
    let mut s = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}\r",
        e(&h.receiving_app),
        e(&h.receiving_facility),
        e(&h.sending_app),
        e(&h.sending_facility),
        timestamp,
        e(&h.trigger),
        e(control_id),
        e(&h.processing_id),
        e(&h.version),
    );
    s.push_str(&format!("MSA|{code}|{}\r", e(&h.control_id)));
    if let Outcome::Error {
        code,
        location,
        reason,
    }
    | Outcome::Reject {
        code,
        location,
        reason,
    } = outcome
    {
        let loc = location
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let text = match code {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEvent => "Unsupported event code",
            ErrorCode::UnsupportedVersion => "Unsupported version id",
            ErrorCode::UnknownKey => "Unknown key identifier",
            ErrorCode::ApplicationError => "Application error",
            ErrorCode::InternalError => "Application internal error",
        };
        s.push_str(&format!(
            "ERR||{loc}|{}^{text}^HL70357|E||||{}\r",
            code.code(),
            e(reason)
        ));
    }
    s.into_bytes()
}

/// The acknowledgements to send for `outcome`, in order: in original mode one
/// ACK (AA/AE/AR); in enhanced mode the commit ACK (CA/CE/CR) when MSH-15
/// asks, then the application ACK (AA/AE/AR) when MSH-16 asks.
pub fn acks(h: &Header, outcome: &Outcome, control_id: &str, timestamp: &str) -> Vec<Vec<u8>> {
    let success = matches!(outcome, Outcome::Accepted);
    let (orig, commit) = match outcome {
        Outcome::Accepted => ("AA", "CA"),
        Outcome::Error { .. } => ("AE", "CE"),
        Outcome::Reject { .. } => ("AR", "CR"),
    };
    if !h.enhanced() {
        return vec![build(h, orig, outcome, control_id, timestamp)];
    }
    let mut out = vec![];
    // The commit ACK says whether the message was safely received and stored.
    let stored = !matches!(outcome, Outcome::Reject { .. });
    if due(h.accept_ack.as_deref(), stored) {
        let commit_outcome = if stored { &Outcome::Accepted } else { outcome };
        let code = if stored { "CA" } else { commit };
        out.push(build(h, code, commit_outcome, control_id, timestamp));
    }
    if h.app_ack.is_some() && due(h.app_ack.as_deref(), success) {
        out.push(build(
            h,
            orig,
            outcome,
            &format!("{control_id}-A"),
            timestamp,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration::hl7::ParseConfig;

    fn header(extra: &str) -> Header {
        let raw = format!(
            "MSH|^~\\&|ADT|DGH|HMS|EDGE|20261127||ADT^A01^ADT_A01|C42|P|2.5.1{extra}\rPID|1||M1\r"
        );
        Header::of(&Message::parse(raw.as_bytes(), ParseConfig::default()).unwrap())
    }

    fn text(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    #[test]
    fn original_mode_accept_and_error() {
        let h = header("");
        let ok = text(&acks(&h, &Outcome::Accepted, "A7", "20261127120000"));
        expect_test::expect![[r#"
            [
                "MSH|^~\\&|HMS|EDGE|ADT|DGH|20261127120000||ACK^A01^ACK|A7|P|2.5.1\rMSA|AA|C42\r",
            ]
        "#]]
        .assert_debug_eq(&ok);
        let err = Outcome::Error {
            code: ErrorCode::UnknownKey,
            location: Some(Location {
                segment: "PV1".into(),
                sequence: 1,
                field: Some(3),
                component: None,
            }),
            reason: "unknown location 3W^999^Z; message parked".into(),
        };
        let ae = text(&acks(&h, &err, "A8", "20261127120000"));
        expect_test::expect![[r#"
            [
                "MSH|^~\\&|HMS|EDGE|ADT|DGH|20261127120000||ACK^A01^ACK|A8|P|2.5.1\rMSA|AE|C42\rERR||PV1^1^3|204^Unknown key identifier^HL70357|E||||unknown location 3W\\S\\999\\S\\Z; message parked\r",
            ]
        "#]]
        .assert_debug_eq(&ae);
    }

    #[test]
    fn enhanced_mode_commit_and_application_acks() {
        let h = header("|||AL|AL");
        assert!(h.enhanced());
        let v = text(&acks(&h, &Outcome::Accepted, "A9", "1"));
        assert_eq!(v.len(), 2);
        assert!(v[0].contains("\rMSA|CA|C42\r"));
        assert!(v[1].contains("\rMSA|AA|C42\r") && v[1].contains("|A9-A|"));
        // Application ACK on errors only.
        let h = header("|||AL|ER");
        assert_eq!(acks(&h, &Outcome::Accepted, "A", "1").len(), 1);
        let err = Outcome::Error {
            code: ErrorCode::UnsupportedEvent,
            location: None,
            reason: "x".into(),
        };
        let v = text(&acks(&h, &err, "A", "1"));
        assert!(v[0].contains("MSA|CA|") && v[1].contains("MSA|AE|"));
        // Commit ACK never, application ACK always.
        let h = header("|||NE|AL");
        let v = text(&acks(&h, &Outcome::Accepted, "A", "1"));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("MSA|AA|"));
        let rej = Outcome::Reject {
            code: ErrorCode::DataType,
            location: None,
            reason: "bad".into(),
        };
        let v = text(&acks(&header("|||AL|NE"), &rej, "A", "1"));
        assert!(v[0].contains("MSA|CR|") && v[0].contains("ERR||"));
    }

    #[test]
    fn salvaged_headers_from_unparseable_bytes() {
        let h = Header::salvage(b"MSH|^~\\&|ADT|DGH|HMS|EDGE|x||ADT^A02|C9|P|2.4\r\xff\xfe junk");
        assert_eq!(h.control_id, "C9");
        assert_eq!(h.trigger, "A02");
        assert_eq!(h.version, "2.4");
        assert_eq!(Header::salvage(b"garbage"), Header::default());
    }
}
