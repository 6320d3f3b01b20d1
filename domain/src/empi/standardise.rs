//! Standardisation: turning a registration record as typed at a desk into
//! comparable values.
//!
//! Text is decomposed (Unicode NFKD), stripped of accents, folded to lower
//! case ASCII and split into tokens on punctuation. Names lose titles and
//! suffixes and null tokens (`UNKNOWN`, `N/A`, `BABY`…); birth dates accept
//! full and partial forms, and a full date that is not a valid date keeps
//! its digits; address lines split into house number and street, a second
//! line is kept whole; postal codes and phone numbers keep only what
//! identifies them. The result, [`Prepared`], also carries the phonetic codes
//! and nickname groups that blocking and comparison need, computed once.

use std::fmt;

use rphonetic::{DoubleMetaphone, Encoder, Nysiis};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone, Sex};

use super::nickname;

/// One patient record as a source (a hospital, a registry) knows it. All
/// demographics are optional; `source` and `local_id` identify the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The source system, e.g. the hospital id. Not PHI.
    pub source: String,
    /// The record's id at that source (the MRN).
    pub local_id: Mrn,
    /// Given names, space separated.
    #[serde(default)]
    pub given_name: Option<PersonName>,
    /// Family name.
    #[serde(default)]
    pub family_name: Option<PersonName>,
    /// Birth date; full or partial (`YYYY`, `YYYY-MM`, `YYYYMMDD`, `DD/MM/YYYY`…).
    #[serde(default)]
    pub birth_date: Option<BirthDate>,
    /// Administrative sex.
    #[serde(default)]
    pub sex: Option<Sex>,
    /// Street address line (`12 Smith St`).
    #[serde(default)]
    pub address_line: Option<Address>,
    /// Second address line: unit, building, estate or locality
    /// (`Flat 3`, `Rose Court`).
    #[serde(default)]
    pub address_line2: Option<Address>,
    /// City or suburb.
    #[serde(default)]
    pub city: Option<Address>,
    /// Postal code.
    #[serde(default)]
    pub postal_code: Option<Address>,
    /// State or region.
    #[serde(default)]
    pub state: Option<String>,
    /// Telephone number.
    #[serde(default)]
    pub phone: Option<Phone>,
    /// Other identifiers (national id, insurance number…) with their
    /// assigning authority; the engine's parameters say which authorities are
    /// trusted for deterministic links.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
}

impl Record {
    /// The record of a hospital's patient as its log describes it: the name
    /// as `Family, Given Middle` (PID-5), the address as `street, city,
    /// postal code, …` (PID-11); identifiers of the hospital's own authority
    /// (its MRNs) are left out, others (national ids) kept.
    pub fn from_patient(
        source: &str,
        patient: &crate::PatientRef,
        address: Option<&Address>,
        phone: Option<&Phone>,
        identifiers: &[Identifier],
    ) -> Record {
        let mut r = Record::new(source, patient.mrn.expose());
        if let Some(n) = &patient.name {
            let (family, given) = n.expose().split_once(',').unwrap_or((n.expose(), ""));
            r.family_name = Some(PersonName::new(family.trim()));
            if !given.trim().is_empty() {
                r.given_name = Some(PersonName::new(given.trim()));
            }
        }
        r.birth_date = patient.birth_date.clone();
        r.sex = patient.sex;
        if let Some(a) = address {
            let parts: Vec<&str> = a.expose().split(',').map(str::trim).collect();
            r.address_line = parts.first().map(|s| Address::new(*s));
            r.city = parts.get(1).map(|s| Address::new(*s));
            r.postal_code = parts.get(2).map(|s| Address::new(*s));
        }
        r.phone = phone.cloned();
        r.identifiers = identifiers
            .iter()
            .filter(|i| i.authority != source)
            .cloned()
            .collect();
        r
    }

    /// A record with identity only; fill in the demographics that are known.
    pub fn new(source: impl Into<String>, local_id: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            local_id: Mrn::new(local_id),
            given_name: None,
            family_name: None,
            birth_date: None,
            sex: None,
            address_line: None,
            address_line2: None,
            city: None,
            postal_code: None,
            state: None,
            phone: None,
            identifiers: vec![],
        }
    }
}

/// A standardised name: tokens joined by one space, plus the codes that
/// comparison and blocking use.
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    /// Tokens joined by single spaces (`mary ann`).
    pub text: String,
    /// Tokens concatenated (`maryann`), compared by Jaro–Winkler.
    pub squashed: String,
    /// Double Metaphone primary code of the squashed form.
    pub metaphone: String,
    /// Double Metaphone alternate code.
    pub metaphone_alt: String,
    /// NYSIIS code.
    pub nysiis: String,
    /// Nickname groups of the first token.
    pub nick: &'static [u16],
}

/// A partial or full date. Month and day are absent for partial dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartialDate {
    /// Year, 1800–2999.
    pub year: u16,
    /// Month 1–12.
    pub month: Option<u8>,
    /// Day 1–31 (only with a month).
    pub day: Option<u8>,
}

impl PartialDate {
    /// Whether year, month and day are all known.
    pub fn is_full(&self) -> bool {
        self.month.is_some() && self.day.is_some()
    }

    /// `YYYYMMDD` digits of a full date, for edit-distance comparison.
    pub fn digits(&self) -> Option<[u8; 8]> {
        let (m, d) = (self.month?, self.day?);
        let mut out = [0u8; 8];
        let y = self.year;
        for (i, v) in [
            y / 1000,
            y / 100 % 10,
            y / 10 % 10,
            y % 10,
            u16::from(m / 10),
            u16::from(m % 10),
            u16::from(d / 10),
            u16::from(d % 10),
        ]
        .into_iter()
        .enumerate()
        {
            out[i] = b'0' + (v as u8);
        }
        Some(out)
    }
}

/// A record after standardisation. Values are PHI; `Debug` shows only which
/// fields are present.
#[derive(Clone, Default)]
pub struct Prepared {
    /// Given name.
    pub given: Option<Name>,
    /// Family name.
    pub family: Option<Name>,
    /// Birth date.
    pub birth: Option<PartialDate>,
    /// `YYYYMMDD` digits of a birth date that is not a valid date (a typing
    /// error such as month 21), kept for edit-distance comparison only.
    pub birth_typo: Option<[u8; 8]>,
    /// Sex, when female or male.
    pub sex: Option<Sex>,
    /// House number (first numeric token of the address line).
    pub street_number: Option<String>,
    /// The rest of the address line with street types expanded.
    pub street: Option<String>,
    /// The second address line with street types expanded.
    pub line2: Option<String>,
    /// City or suburb.
    pub city: Option<String>,
    /// Postal code, upper-case alphanumerics.
    pub postal_code: Option<String>,
    /// State.
    pub state: Option<String>,
    /// Phone, the last nine digits.
    pub phone: Option<String>,
    /// Identifiers as (authority, value), both upper-case alphanumerics.
    pub identifiers: Vec<(String, String)>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut present = vec![];
        for (name, yes) in [
            ("given", self.given.is_some()),
            ("family", self.family.is_some()),
            ("birth", self.birth.is_some() || self.birth_typo.is_some()),
            ("sex", self.sex.is_some()),
            ("street_number", self.street_number.is_some()),
            ("street", self.street.is_some()),
            ("line2", self.line2.is_some()),
            ("city", self.city.is_some()),
            ("postal_code", self.postal_code.is_some()),
            ("state", self.state.is_some()),
            ("phone", self.phone.is_some()),
            ("identifiers", !self.identifiers.is_empty()),
        ] {
            if yes {
                present.push(name);
            }
        }
        write!(f, "Prepared[PHI: {}]", present.join(","))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[PHI]")
    }
}

/// Standardises a whole record.
pub fn prepare(r: &Record) -> Prepared {
    let (street_number, street) = r
        .address_line
        .as_ref()
        .map(|a| address_line(a.expose()))
        .unwrap_or((None, None));
    let mut identifiers: Vec<(String, String)> = r
        .identifiers
        .iter()
        .filter_map(|i| {
            let value = identifier(i.id.expose())?;
            let authority = identifier(&i.authority).unwrap_or_default();
            Some((authority, value))
        })
        .collect();
    identifiers.sort();
    identifiers.dedup();
    let birth = r.birth_date.as_ref().and_then(|d| date(d.expose()));
    let birth_typo = match birth {
        Some(_) => None,
        None => r.birth_date.as_ref().and_then(|d| date_digits(d.expose())),
    };
    Prepared {
        given: r
            .given_name
            .as_ref()
            .and_then(|n| given_name_parts(n.expose())),
        family: r.family_name.as_ref().and_then(|n| name_parts(n.expose())),
        birth,
        birth_typo,
        sex: r.sex.filter(|s| *s != Sex::Other),
        street_number,
        street,
        line2: r
            .address_line2
            .as_ref()
            .and_then(|a| address_line2(a.expose())),
        city: r.city.as_ref().and_then(|c| words(c.expose())),
        postal_code: r.postal_code.as_ref().and_then(|p| postal_code(p.expose())),
        state: r.state.as_deref().and_then(words),
        phone: r.phone.as_ref().and_then(|p| phone(p.expose())),
        identifiers,
    }
}

/// NFKD, accents removed, a few letters that do not decompose spelled out,
/// lower case; every other non-alphanumeric becomes a space and runs of
/// spaces collapse. Apostrophes vanish (`O'Brien` → `obrien`).
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = true;
    for c in s.nfkd() {
        if is_combining_mark(c) || matches!(c, '\'' | '’' | '`' | 'ʼ') {
            continue;
        }
        let spelled: Option<&str> = match c {
            'ß' => Some("ss"),
            'æ' | 'Æ' => Some("ae"),
            'œ' | 'Œ' => Some("oe"),
            'ø' | 'Ø' => Some("o"),
            'ł' | 'Ł' => Some("l"),
            'đ' | 'Đ' | 'ð' | 'Ð' => Some("d"),
            'þ' | 'Þ' => Some("th"),
            'ı' => Some("i"),
            _ => None,
        };
        if let Some(s) = spelled {
            out.push_str(s);
            space = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Whole-field values that mean "not known".
const NULL_VALUES: &[&str] = &[
    "",
    "unknown",
    "unk",
    "unkn",
    "nk",
    "not known",
    "n a",
    "na",
    "none",
    "null",
    "nil",
    "not stated",
    "not given",
    "x",
    "xx",
    "xxx",
    "xxxx",
    "test",
    "0",
    "00",
    "000",
];

/// Name tokens that carry no identity: placeholders for newborns and unknown
/// patients, a relation written where the name belongs (`Wife`, `Grandson`,
/// `Hijo`), titles and suffixes.
const NAME_NOISE: &[&str] = &[
    "baby",
    "babe",
    "boy",
    "girl",
    "infant",
    "newborn",
    "nb",
    "twin",
    "unknown",
    "unk",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mister",
    "mx",
    "dr",
    "prof",
    "rev",
    "sir",
    "jr",
    "snr",
    "sr",
    "jnr",
    "ii",
    "iii",
    "iv",
    "wife",
    "husband",
    "daughter",
    "child",
    "kid",
    "grandson",
    "granddaughter",
    "grandchild",
    "hijo",
    "hija",
    "respondent",
    "anonymous",
];

/// Words that are no given name where a given name belongs: a relation or a
/// role written instead of it (`Son`, `Nephew`, `Lady of House`, `Male
/// Child`, `Inmate`). Some are family names (`House`, `Man`), so only given
/// names lose them.
const GIVEN_NOISE: &[&str] = &[
    "son",
    "brother",
    "sister",
    "nephew",
    "niece",
    "mother",
    "father",
    "aunt",
    "uncle",
    "cousin",
    "youngest",
    "oldest",
    "eldest",
    "person",
    "adult",
    "woman",
    "man",
    "male",
    "female",
    "inmate",
    "resident",
    "roommate",
    "lady",
    "gentleman",
    "house",
    "of",
    "the",
    "one",
    "householder",
    "spouse",
    "partner",
    "patient",
];

/// Whether a folded field value means "not known".
pub fn is_null(folded: &str) -> bool {
    NULL_VALUES.contains(&folded)
}

/// Folded words, or `None` when empty or a null value.
pub fn words(s: &str) -> Option<String> {
    let f = fold(s);
    (!is_null(&f)).then_some(f)
}

/// Standardises a name field: folded tokens without titles, suffixes and
/// placeholders; `None` when nothing identifying is left.
pub fn name(s: &str) -> Option<String> {
    name_parts(s).map(|n| n.text)
}

/// Standardises a name field and computes its codes.
pub fn name_parts(s: &str) -> Option<Name> {
    parts(s, &[])
}

/// [`name_parts`] for a given name, which also loses the relation and role words
/// written where a given name belongs (`Son`, `Nephew`, `Lady of House`).
pub fn given_name_parts(s: &str) -> Option<Name> {
    parts(s, GIVEN_NOISE)
}

fn parts(s: &str, noise: &[&str]) -> Option<Name> {
    let folded = fold(s);
    if is_null(&folded) {
        return None;
    }
    let tokens: Vec<&str> = folded
        .split(' ')
        .filter(|t| {
            !t.is_empty()
                && !NAME_NOISE.contains(t)
                && !noise.contains(t)
                && !t.bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    let first = tokens.first()?;
    let text = tokens.join(" ");
    let squashed: String = tokens.concat();
    let dm = DoubleMetaphone::default().double_metaphone(&squashed);
    Some(Name {
        nick: nickname::groups(first),
        metaphone: dm.primary(),
        metaphone_alt: dm.alternate(),
        nysiis: Nysiis::new(true).encode(&squashed),
        squashed,
        text,
    })
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn checked(year: u32, month: Option<u32>, day: Option<u32>) -> Option<PartialDate> {
    if !(1800..=2999).contains(&year) {
        return None;
    }
    let year = year as u16;
    let month = match month {
        None => {
            return Some(PartialDate {
                year,
                month: None,
                day: None,
            });
        }
        Some(m @ 1..=12) => m as u8,
        Some(_) => return None,
    };
    let day = match day {
        None => None,
        Some(d) if d >= 1 && d <= u32::from(days_in_month(year, month)) => Some(d as u8),
        Some(_) => return None,
    };
    Some(PartialDate {
        year,
        month: Some(month),
        day,
    })
}

/// Parses a birth date: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYYMM`,
/// `YYYYMMDD`, `DD/MM/YYYY`, `MM/YYYY` (separators `/`, `-`, `.`, space).
/// Day-first is assumed for `NN/NN/YYYY` unless only month-first is valid.
/// Unknown markers (`0000`, `UNKNOWN`) and impossible dates give `None`.
pub fn date(s: &str) -> Option<PartialDate> {
    let t = s.trim();
    let parts: Vec<&str> = t
        .split(['-', '/', '.', ' '])
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() || parts.iter().any(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let num = |p: &str| p.parse::<u32>().ok();
    match parts.as_slice() {
        [one] => match one.len() {
            4 => checked(num(one)?, None, None),
            6 => checked(num(&one[..4])?, Some(num(&one[4..])?), None),
            8 => checked(
                num(&one[..4])?,
                Some(num(&one[4..6])?),
                Some(num(&one[6..])?),
            ),
            _ => None,
        },
        [a, b] if a.len() == 4 => checked(num(a)?, Some(num(b)?), None),
        [a, b] if b.len() == 4 => checked(num(b)?, Some(num(a)?), None),
        [a, b, c] if a.len() == 4 => checked(num(a)?, Some(num(b)?), Some(num(c)?)),
        [a, b, c] if c.len() == 4 => {
            let (x, y, year) = (num(a)?, num(b)?, num(c)?);
            checked(year, Some(y), Some(x)).or_else(|| checked(year, Some(x), Some(y)))
        }
        _ => None,
    }
}

/// The `YYYYMMDD` digits of a full birth date in one of [`date`]'s forms
/// whatever their values (`19142122`, `31/02/1970` → `19700231`): the
/// comparable remains of a mistyped date. `None` for partial dates, a year
/// outside 1000–2999 or a single repeated digit.
pub fn date_digits(s: &str) -> Option<[u8; 8]> {
    let parts: Vec<&str> = s
        .trim()
        .split(['-', '/', '.', ' '])
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().any(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let two = |p: &str| (1..=2).contains(&p.len()).then(|| format!("{p:0>2}"));
    let ymd = match parts.as_slice() {
        [one] if one.len() == 8 => (*one).to_owned(),
        [y, m, d] if y.len() == 4 => format!("{y}{}{}", two(m)?, two(d)?),
        [d, m, y] if y.len() == 4 => format!("{y}{}{}", two(m)?, two(d)?),
        _ => return None,
    };
    let year: u32 = ymd[..4].parse().ok()?;
    let b = ymd.as_bytes();
    if !(1000..=2999).contains(&year) || b.iter().all(|x| *x == b[0]) {
        return None;
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(b);
    Some(out)
}

/// Upper-case alphanumerics of a postal code; `None` when empty or all zeros.
pub fn postal_code(s: &str) -> Option<String> {
    let p: String = fold(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    (!p.is_empty() && !p.bytes().all(|b| b == b'0') && !is_null(&p)).then(|| p.to_ascii_uppercase())
}

/// The last nine digits of a phone number (drops country and trunk
/// prefixes); `None` with fewer than six digits or a single repeated digit.
pub fn phone(s: &str) -> Option<String> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).collect();
    if digits.len() < 6 || digits.iter().all(|d| *d == digits[0]) {
        return None;
    }
    let tail = &digits[digits.len().saturating_sub(9)..];
    Some(tail.iter().map(|b| *b as char).collect())
}

/// Upper-case alphanumerics of an identifier; `None` when empty, a null
/// value or a single repeated character (`000000`, `999999999`).
pub fn identifier(s: &str) -> Option<String> {
    let v: String = fold(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if v.is_empty() || is_null(&v) || v.bytes().all(|b| b == v.as_bytes()[0]) {
        return None;
    }
    Some(v.to_ascii_uppercase())
}

/// Street type abbreviations and their expansions.
const STREET_TYPES: &[(&str, &str)] = &[
    ("st", "street"),
    ("str", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("cres", "crescent"),
    ("cr", "crescent"),
    ("pl", "place"),
    ("dr", "drive"),
    ("ct", "court"),
    ("crt", "court"),
    ("ln", "lane"),
    ("hwy", "highway"),
    ("cct", "circuit"),
    ("pde", "parade"),
    ("tce", "terrace"),
    ("blvd", "boulevard"),
    ("cl", "close"),
    ("sq", "square"),
    ("gr", "grove"),
    ("mt", "mount"),
    ("apt", "unit"),
    ("flat", "unit"),
];

/// Splits an address line into house number (first numeric token) and the
/// street with abbreviations expanded.
pub fn address_line(s: &str) -> (Option<String>, Option<String>) {
    let f = fold(s);
    if is_null(&f) {
        return (None, None);
    }
    let mut number = None;
    let mut rest: Vec<&str> = vec![];
    for t in f.split(' ') {
        if number.is_none() && t.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            number = Some(t.to_owned());
            continue;
        }
        let t = STREET_TYPES
            .iter()
            .find(|(abbr, _)| *abbr == t)
            .map_or(t, |(_, full)| full);
        rest.push(t);
    }
    let street = (!rest.is_empty()).then(|| rest.join(" "));
    (number, street)
}

/// Standardises a second address line: folded, street types expanded,
/// numbers kept (`Apt 27` → `unit 27`); `None` when empty or a null value.
pub fn address_line2(s: &str) -> Option<String> {
    let f = fold(s);
    if is_null(&f) {
        return None;
    }
    let tokens: Vec<&str> = f
        .split(' ')
        .map(|t| {
            STREET_TYPES
                .iter()
                .find(|(abbr, _)| *abbr == t)
                .map_or(t, |(_, full)| full)
        })
        .collect();
    Some(tokens.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        let cases = [
            ("José Müller", "jose muller"),
            ("O'Brien", "obrien"),
            ("SMITH-JONES", "smith jones"),
            ("  Łukasz   Żółć ", "lukasz zolc"),
            ("Strauß", "strauss"),
            ("ﬁnn", "finn"),
            ("N/A", "n a"),
            ("Æsa Ørsted", "aesa orsted"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(fold(input), want, "{input}");
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("Dr. John  SMITH jr", Some("john smith")),
            ("UNKNOWN", None),
            ("N/A", None),
            ("Baby Girl", None),
            ("BABY", None),
            ("baby boy 2", None),
            ("Mary-Ann", Some("mary ann")),
            ("Zoë", Some("zoe")),
            ("", None),
            ("xxx", None),
        ];
        for (input, want) in cases {
            assert_eq!(name(input).as_deref(), want, "{input}");
        }
        let n = name_parts("Catherine").expect("a name");
        assert_eq!(
            (n.metaphone.as_str(), n.nysiis.as_str()),
            ("K0RN", "CATARA")
        );
        assert!(!n.nick.is_empty());
        assert_eq!(format!("{n:?}"), "[PHI]");
    }

    #[test]
    fn dates() {
        let d = |y, m, d| {
            Some(PartialDate {
                year: y,
                month: m,
                day: d,
            })
        };
        let cases = [
            ("1970-01-02", d(1970, Some(1), Some(2))),
            ("19700102", d(1970, Some(1), Some(2))),
            ("02/01/1970", d(1970, Some(1), Some(2))),
            ("2.1.1970", d(1970, Some(1), Some(2))),
            ("12/31/1970", d(1970, Some(12), Some(31))),
            ("1970", d(1970, None, None)),
            ("1970-07", d(1970, Some(7), None)),
            ("197007", d(1970, Some(7), None)),
            ("07/1970", d(1970, Some(7), None)),
            ("2000-02-29", d(2000, Some(2), Some(29))),
            ("1900-02-29", None),
            ("1970-13-01", None),
            ("19701301", None),
            ("0000", None),
            ("unknown", None),
            ("", None),
            ("1970-01-02T00:00", None),
        ];
        for (input, want) in cases {
            assert_eq!(date(input), want, "{input}");
        }
        assert_eq!(
            date("19700102").and_then(|d| d.digits()),
            Some(*b"19700102")
        );
        assert_eq!(date("1970").and_then(|d| d.digits()), None);
    }

    #[test]
    fn mistyped_dates_keep_their_digits() {
        let cases = [
            ("19142122", Some(*b"19142122")),
            ("1970-13-01", Some(*b"19701301")),
            ("31/02/1970", Some(*b"19700231")),
            ("1970-2-5", Some(*b"19700205")),
            ("1970", None),
            ("1970-07", None),
            ("00000000", None),
            ("99999999", None),
            ("05421915", None),
            ("1970-01-02T00:00", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(date_digits(input), want, "{input}");
        }
        let with_date = |d: &str| {
            let mut r = Record::new("h", "1");
            r.birth_date = Some(BirthDate::new(d));
            prepare(&r)
        };
        let valid = with_date("19700102");
        assert!(valid.birth.is_some() && valid.birth_typo.is_none());
        let typo = with_date("19702102");
        assert_eq!((typo.birth, typo.birth_typo), (None, Some(*b"19702102")));
        assert_eq!(format!("{typo:?}"), "Prepared[PHI: birth]");
    }

    #[test]
    fn second_address_line() {
        let cases = [
            ("Apt 27", Some("unit 27")),
            ("Rose Vale", Some("rose vale")),
            ("Oxley's Way", Some("oxleys way")),
            ("  ", None),
            ("N/A", None),
        ];
        for (input, want) in cases {
            assert_eq!(address_line2(input).as_deref(), want, "{input}");
        }
        let mut r = Record::new("h", "1");
        r.address_line2 = Some(Address::new("Willow Lodge"));
        let p = prepare(&r);
        assert_eq!(p.line2.as_deref(), Some("willow lodge"));
        assert_eq!(format!("{p:?}"), "Prepared[PHI: line2]");
    }

    #[test]
    fn postal_phone_identifier_address() {
        assert_eq!(postal_code("sw1a 1aa").as_deref(), Some("SW1A1AA"));
        assert_eq!(postal_code("2600").as_deref(), Some("2600"));
        assert_eq!(postal_code("0000"), None);
        assert_eq!(phone("+61 (2) 9876-5432").as_deref(), Some("298765432"));
        assert_eq!(phone("02 9876 5432").as_deref(), Some("298765432"));
        assert_eq!(phone("12345"), None);
        assert_eq!(phone("0000000000"), None);
        assert_eq!(identifier("123-45-6789").as_deref(), Some("123456789"));
        assert_eq!(identifier("000000000"), None);
        assert_eq!(identifier("unknown"), None);
        let cases = [
            ("12 Smith St", (Some("12"), Some("smith street"))),
            ("12/4 Long Rd.", (Some("12"), Some("4 long road"))),
            ("Pinkerton Cct", (None, Some("pinkerton circuit"))),
            ("UNKNOWN", (None, None)),
        ];
        for (input, (n, s)) in cases {
            let (gn, gs) = address_line(input);
            assert_eq!((gn.as_deref(), gs.as_deref()), (n, s), "{input}");
        }
    }
}
