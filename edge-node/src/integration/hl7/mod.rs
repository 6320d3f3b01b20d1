//! HL7 v2 pre-parse and parse, sans-IO.
//!
//! [`Message::parse`] takes the raw bytes of one message (the content of one
//! MLLP frame, or one message of a batch) and:
//! - strips a UTF-8 byte-order mark;
//! - reads the delimiters from MSH-1 and MSH-2, including the five-character
//!   MSH-2 of v2.7+ (`^~\&#`, the fifth being the truncation character);
//! - decodes the text by MSH-18 (ASCII, 8859/1 to 8859/9, 8859/15, UNICODE
//!   UTF-8, WINDOWS-1250, WINDOWS-1252: see [`Charset`]; a configurable
//!   default when absent), exactly: a byte that is not a character of the
//!   set is an error, never a replacement character. The raw bytes are kept
//!   untouched;
//! - accepts `\r` segment terminators, and normalises `\r\n` and bare `\n`
//!   line endings (files edited on other systems);
//! - splits segments, fields, repetitions, components and subcomponents
//!   itself: every byte of the input belongs to exactly one segment, so
//!   nothing can be silently truncated.
//!
//! Escape sequences are decoded on access by [`escape::decode`], which never
//! panics. Errors carry the HL7 error code and location for the ACK's ERR segment.

pub mod ack;
pub mod escape;
pub mod time;

use std::fmt;

/// Delimiters of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: char,
    /// Component separator, usually `^`.
    pub component: char,
    /// Repetition separator, usually `~`.
    pub repetition: char,
    /// Escape character, usually `\`.
    pub escape: char,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: char,
    /// Truncation character (v2.7+), usually `#`.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

/// Character sets named in MSH-18 (HL7 table 0211, and two Windows code
/// pages real senders use) that the appliance decodes. Every decoder is
/// exact: a byte that is not a character of the set is an error, never a
/// replacement character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `ASCII` (bytes above 0x7F are refused).
    Ascii,
    /// `8859/1` (Latin-1: each byte is the code point of the same value).
    Latin1,
    /// `8859/2` (Latin-2, Central European).
    Latin2,
    /// `8859/3` (Latin-3, South European).
    Latin3,
    /// `8859/4` (Latin-4, North European).
    Latin4,
    /// `8859/5` (Cyrillic).
    Cyrillic,
    /// `8859/6` (Arabic).
    Arabic,
    /// `8859/7` (Greek).
    Greek,
    /// `8859/8` (Hebrew).
    Hebrew,
    /// `8859/9` (Latin-5, Turkish: Latin-1 with six Turkish letters).
    Latin5,
    /// `8859/15` (Latin-9: Latin-1 with €, Š, Ž, Œ, Ÿ…).
    Latin9,
    /// `UNICODE UTF-8`.
    Utf8,
    /// `WINDOWS-1250` (Central European Windows code page).
    Windows1250,
    /// `WINDOWS-1252` (Western European Windows code page).
    Windows1252,
}

impl Charset {
    /// Every character set, in the order of the documentation.
    pub const ALL: [Charset; 14] = [
        Charset::Ascii,
        Charset::Latin1,
        Charset::Latin2,
        Charset::Latin3,
        Charset::Latin4,
        Charset::Cyrillic,
        Charset::Arabic,
        Charset::Greek,
        Charset::Hebrew,
        Charset::Latin5,
        Charset::Latin9,
        Charset::Utf8,
        Charset::Windows1250,
        Charset::Windows1252,
    ];

    /// The canonical name: the HL7 table 0211 value (`8859/2`), or
    /// `WINDOWS-1250`/`WINDOWS-1252` for the Windows code pages.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Latin2 => "8859/2",
            Charset::Latin3 => "8859/3",
            Charset::Latin4 => "8859/4",
            Charset::Cyrillic => "8859/5",
            Charset::Arabic => "8859/6",
            Charset::Greek => "8859/7",
            Charset::Hebrew => "8859/8",
            Charset::Latin5 => "8859/9",
            Charset::Latin9 => "8859/15",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Windows1250 => "WINDOWS-1250",
            Charset::Windows1252 => "WINDOWS-1252",
        }
    }

    /// Parses an MSH-18 value (or `mllp.default_charset`): a canonical
    /// [`name`](Charset::name), or `UTF-8`, `CP1250` or `CP1252`; ASCII case
    /// and surrounding spaces are ignored.
    pub fn from_msh18(s: &str) -> Option<Charset> {
        let s = s.trim();
        if let Some(c) = Charset::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
        {
            return Some(c);
        }
        [
            ("UTF-8", Charset::Utf8),
            ("CP1250", Charset::Windows1250),
            ("CP1252", Charset::Windows1252),
        ]
        .into_iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(s))
        .map(|(_, c)| c)
    }

    /// Decodes `bytes`; on malformed input, the offset of the first byte
    /// that is not (or does not start) a character of the set.
    ///
    /// `encoding_rs` (the WHATWG Encoding Standard) decodes the sets whose
    /// tables there are the real ones. Not 8859/1 and 8859/9: the WHATWG
    /// labels `ISO-8859-1` and `ISO-8859-9` mean windows-1252 and
    /// windows-1254, which differ from them in 0x80–0x9F.
    fn decode(self, bytes: &[u8]) -> Result<String, usize> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| e.valid_up_to()),
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(i) => Err(i),
                None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            },
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            // ISO 8859-9 is ISO 8859-1 but for six letters.
            Charset::Latin5 => Ok(bytes
                .iter()
                .map(|&b| match b {
                    0xD0 => 'Ğ',
                    0xDD => 'İ',
                    0xDE => 'Ş',
                    0xF0 => 'ğ',
                    0xFD => 'ı',
                    0xFE => 'ş',
                    b => char::from(b),
                })
                .collect()),
            Charset::Latin2 => single_byte(encoding_rs::ISO_8859_2, bytes),
            Charset::Latin3 => single_byte(encoding_rs::ISO_8859_3, bytes),
            Charset::Latin4 => single_byte(encoding_rs::ISO_8859_4, bytes),
            Charset::Cyrillic => single_byte(encoding_rs::ISO_8859_5, bytes),
            Charset::Arabic => single_byte(encoding_rs::ISO_8859_6, bytes),
            Charset::Greek => single_byte(encoding_rs::ISO_8859_7, bytes),
            Charset::Hebrew => single_byte(encoding_rs::ISO_8859_8, bytes),
            Charset::Latin9 => single_byte(encoding_rs::ISO_8859_15, bytes),
            Charset::Windows1250 => single_byte(encoding_rs::WINDOWS_1250, bytes),
            Charset::Windows1252 => single_byte(encoding_rs::WINDOWS_1252, bytes),
        }
    }
}

/// Decodes with a single-byte `encoding_rs` encoding, without replacement:
/// a byte the table leaves unassigned is an error at its offset.
fn single_byte(enc: &'static encoding_rs::Encoding, bytes: &[u8]) -> Result<String, usize> {
    match enc.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok(text.into_owned()),
        // Each byte is one character, so the first bad one decodes badly alone.
        None => Err(bytes
            .iter()
            .position(|b| {
                enc.decode_without_bom_handling_and_without_replacement(std::slice::from_ref(b))
                    .is_none()
            })
            .unwrap_or(0)),
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// HL7 error codes (table 0357) used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100: segment sequence error.
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error.
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEvent,
    /// 203: unsupported version id.
    UnsupportedVersion,
    /// 204: unknown key identifier.
    UnknownKey,
    /// 206: application record locked / other application error.
    ApplicationError,
    /// 207: application internal error.
    InternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::SegmentSequence => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataType => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEvent => 201,
            Self::UnsupportedVersion => 203,
            Self::UnknownKey => 204,
            Self::ApplicationError => 206,
            Self::InternalError => 207,
        }
    }
}

/// Where in a message an error is (ERR-2: segment id, sequence, field, component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Segment id.
    pub segment: String,
    /// Occurrence of the segment, from 1.
    pub sequence: usize,
    /// Field number, from 1.
    pub field: Option<usize>,
    /// Component number, from 1.
    pub component: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}^{}", self.segment, self.sequence)?;
        if let Some(fl) = self.field {
            write!(f, "^{fl}")?;
            if let Some(c) = self.component {
                write!(f, "^{c}")?;
            }
        }
        Ok(())
    }
}

/// Why a message cannot be read. Never carries message content (PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// HL7 error code.
    pub code: ErrorCode,
    /// Where, when known.
    pub location: Option<Location>,
    /// What is wrong, in words.
    pub reason: String,
}

impl ParseError {
    fn new(code: ErrorCode, location: Option<Location>, reason: impl Into<String>) -> Self {
        Self {
            code,
            location,
            reason: reason.into(),
        }
    }
}

/// A segment: its id and raw (still escaped) fields. `fields[0]` is the id;
/// for MSH, `fields[1]` is MSH-1 (the field separator) so numbering matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    fields: Vec<String>,
}

impl Segment {
    /// The segment id (`MSH`, `PID`, `ZBE`…).
    pub fn id(&self) -> &str {
        &self.fields[0]
    }

    /// Number of fields (without the id).
    pub fn len(&self) -> usize {
        self.fields.len() - 1
    }

    /// Whether the segment has no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw field `n` (1-based), still escaped; `None` when absent.
    pub fn raw(&self, n: usize) -> Option<&str> {
        self.fields.get(n).map(String::as_str)
    }
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Delimiters.
    pub delimiters: Delimiters,
    /// Character set the text was decoded with.
    pub charset: Charset,
    segments: Vec<Segment>,
}

/// Parse settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseConfig {
    /// Charset when MSH-18 is empty.
    pub default_charset: Charset,
}

impl Default for ParseConfig {
    fn default() -> Self {
        Self {
            default_charset: Charset::Utf8,
        }
    }
}

fn loc(segment: &str, sequence: usize, field: usize) -> Option<Location> {
    Some(Location {
        segment: segment.to_owned(),
        sequence,
        field: Some(field),
        component: None,
    })
}

/// Reads MSH-18 from raw bytes, before the text is decoded (its values are
/// ASCII): the first component of the first repetition, which names the
/// message's character set (further repetitions name alternate sets for
/// escape sequences). Bytes that are not UTF-8 come back as U+FFFD, so they
/// name no known set.
fn raw_msh18(bytes: &[u8], field_sep: u8) -> Option<String> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    // Splitting from MSH-1 on: element 0 is empty, element k is MSH-(k+1).
    let header = bytes.get(3..end)?;
    let component = header.get(1).copied().unwrap_or(b'^');
    let repetition = header.get(2).copied().unwrap_or(b'~');
    let field = header.split(|&b| b == field_sep).nth(17)?;
    let first = field.split(|&b| b == repetition).next().unwrap_or(b"");
    let first = first.split(|&b| b == component).next().unwrap_or(b"");
    Some(String::from_utf8_lossy(first).into_owned())
}

impl Message {
    /// Pre-parses and parses one message.
    pub fn parse(raw: &[u8], cfg: ParseConfig) -> Result<Message, ParseError> {
        let bytes = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        // Leading blank lines are tolerated; anything else before MSH is not.
        let start = bytes
            .iter()
            .position(|&b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        if !bytes.starts_with(b"MSH") {
            return Err(ParseError::new(
                ErrorCode::SegmentSequence,
                Some(Location {
                    segment: "MSH".into(),
                    sequence: 1,
                    field: None,
                    component: None,
                }),
                "the message does not start with an MSH segment",
            ));
        }
        let Some(&fsep) = bytes.get(3) else {
            return Err(ParseError::new(
                ErrorCode::RequiredFieldMissing,
                loc("MSH", 1, 1),
                "MSH-1 (field separator) is missing",
            ));
        };
        if fsep.is_ascii_alphanumeric() || matches!(fsep, b'\r' | b'\n') || !fsep.is_ascii() {
            return Err(ParseError::new(
                ErrorCode::DataType,
                loc("MSH", 1, 1),
                "MSH-1 is not a valid field separator",
            ));
        }
        let charset = match raw_msh18(bytes, fsep) {
            Some(s) if !s.trim().is_empty() => Charset::from_msh18(&s).ok_or_else(|| {
                ParseError::new(
                    ErrorCode::TableValueNotFound,
                    loc("MSH", 1, 18),
                    // Quotes nothing of the message, not even the name it gives.
                    "MSH-18 names a character set this appliance does not decode",
                )
            })?,
            _ => cfg.default_charset,
        };
        // Offsets in the reasons count from the first byte after a BOM.
        let text: String = charset.decode(bytes).map_err(|i| {
            let at = i + start;
            let reason = match charset {
                Charset::Utf8 => format!("invalid UTF-8 at byte {at}"),
                Charset::Ascii => format!("non-ASCII byte at {at} in an ASCII message"),
                c => format!("byte {at} is not a character of {c}"),
            };
            ParseError::new(ErrorCode::DataType, None, reason)
        })?;
        // Segment terminators: CR. CRLF and bare LF are normalised.
        let text = if text.contains("\r\n") {
            text.replace("\r\n", "\r")
        } else if !text.contains('\r') {
            text.replace('\n', "\r")
        } else {
            text
        };
        let field = char::from(fsep);
        let enc: Vec<char> = text[4..]
            .chars()
            .take_while(|&c| c != field && c != '\r')
            .collect();
        if !(enc.len() == 4 || enc.len() == 5) {
            return Err(ParseError::new(
                ErrorCode::DataType,
                loc("MSH", 1, 2),
                "MSH-2 must hold 4 encoding characters (5 from v2.7)",
            ));
        }
        let delimiters = Delimiters {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc[2],
            subcomponent: enc[3],
            truncation: enc.get(4).copied(),
        };
        let all = [
            delimiters.field,
            delimiters.component,
            delimiters.repetition,
            delimiters.escape,
            delimiters.subcomponent,
        ];
        for (i, a) in all.iter().enumerate() {
            if all[i + 1..].contains(a) || a.is_alphanumeric() {
                return Err(ParseError::new(
                    ErrorCode::DataType,
                    loc("MSH", 1, 2),
                    "MSH-1/MSH-2 delimiters must be distinct and not letters or digits",
                ));
            }
        }
        let mut segments = vec![];
        for (n, line) in text.split('\r').enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut fields: Vec<String> = line.split(field).map(str::to_owned).collect();
            let id = fields[0].clone();
            let valid_id = id.len() == 3
                && id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && id.chars().next().is_some_and(|c| c.is_ascii_uppercase());
            if !valid_id {
                return Err(ParseError::new(
                    ErrorCode::SegmentSequence,
                    None,
                    format!("segment {} has no valid segment id", n + 1),
                ));
            }
            if id == "MSH" && n == 0 {
                // MSH-1 is the separator itself; MSH-2 follows it.
                fields.insert(1, field.to_string());
            }
            segments.push(Segment { fields });
        }
        Ok(Message {
            delimiters,
            charset,
            segments,
        })
    }

    /// All segments in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The `occurrence`-th (from 1) segment with id `id`.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<&Segment> {
        self.segments
            .iter()
            .filter(|s| s.id() == id)
            .nth(occurrence.checked_sub(1)?)
    }

    /// The value at `SEG-field[.component[.subcomponent]]` of the first
    /// segment `SEG`, first repetition, escapes decoded. `None` when absent or
    /// empty; `Some("")` never occurs. The HL7 null `""` is returned as `""`
    /// explicitly via [`Message::is_null`].
    pub fn get(&self, path: &str) -> Option<String> {
        let (seg, field, comp, sub) = parse_path(path)?;
        let raw = self.segment(seg, 1)?.raw(field)?;
        if seg == "MSH" && field <= 2 {
            // MSH-1 and MSH-2 hold the delimiters themselves: never split or unescaped.
            return (!raw.is_empty()).then(|| raw.to_owned());
        }
        let value = self.pick(raw, 1, comp, sub)?;
        (!value.is_empty()).then_some(value)
    }

    /// Repetitions of `SEG-field` (raw), for fields such as PID-3.
    pub fn repetitions(&self, seg: &str, field: usize) -> Vec<&str> {
        match self.segment(seg, 1).and_then(|s| s.raw(field)) {
            Some(raw) if !raw.is_empty() => {
                if seg == "MSH" && field == 2 {
                    vec![raw]
                } else {
                    raw.split(self.delimiters.repetition).collect()
                }
            }
            _ => vec![],
        }
    }

    /// Component `comp` (and subcomponent `sub`) of a raw field value, escapes decoded.
    pub fn component(&self, raw_field: &str, comp: usize, sub: usize) -> Option<String> {
        self.pick(raw_field, 1, comp, sub)
    }

    fn pick(&self, raw: &str, rep: usize, comp: usize, sub: usize) -> Option<String> {
        let d = &self.delimiters;
        let r = raw.split(d.repetition).nth(rep - 1)?;
        let c = r.split(d.component).nth(comp.checked_sub(1)?)?;
        let s = c.split(d.subcomponent).nth(sub.checked_sub(1)?)?;
        Some(escape::decode(s, d))
    }

    /// Whether `SEG-field` holds the HL7 null `""` (delete the value).
    pub fn is_null(&self, seg: &str, field: usize) -> bool {
        self.segment(seg, 1).and_then(|s| s.raw(field)) == Some("\"\"")
    }
}

/// Splits a file into messages: single messages, header-less runs of
/// messages (each starting at an `MSH` line) and FHS/BHS batches (whose
/// FHS, BHS, BTS and FTS lines are envelope, not content). Segments are
/// re-joined with `\r`; any line ending is accepted.
pub fn split_messages(raw: &[u8]) -> Vec<Vec<u8>> {
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    let mut out: Vec<Vec<u8>> = vec![];
    for line in raw.split(|&b| b == b'\r' || b == b'\n') {
        if line.is_empty()
            || [&b"FHS"[..], b"BHS", b"BTS", b"FTS"]
                .iter()
                .any(|p| line.starts_with(p))
        {
            continue;
        }
        if line.starts_with(b"MSH") || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(m) = out.last_mut() {
            m.extend_from_slice(line);
            m.push(b'\r');
        }
    }
    out
}

/// Parses `PID-3`, `PV1-3.1`, `PID-5.1.1` or `PID.3.1`.
fn parse_path(path: &str) -> Option<(&str, usize, usize, usize)> {
    let (seg, rest) = path.split_at_checked(3)?;
    let rest = rest.strip_prefix(['-', '.'])?;
    let mut nums = rest
        .split('.')
        .map(|n| n.parse::<usize>().ok().filter(|&v| v > 0));
    let field = nums.next()??;
    let comp = nums.next().unwrap_or(Some(1))?;
    let sub = nums.next().unwrap_or(Some(1))?;
    Some((seg, field, comp, sub))
}

#[cfg(test)]
mod tests;
