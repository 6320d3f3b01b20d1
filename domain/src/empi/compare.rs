//! Multi-level field comparisons: the comparison vector of a record pair.
//!
//! Each [`Field`] has a fixed list of agreement levels, best first, and an
//! explicit null level ([`NULL`]) when either side lacks the value; the null
//! level carries no evidence. Names are compared under both alignments
//! (given↔given, family↔family, and swapped) and the better one is kept; a
//! swap counts when both names are close under it, or when one name is
//! found exactly in the other field. A birth date that is not a valid date
//! is compared by its digits only.
//! Comparisons allocate nothing except inside the `strsim` metrics, and
//! those run only for pairs that can reach a level: a cheap bound from
//! shared characters ([`jaro_winkler_bound`], [`edit_distance_floor`]) turns
//! away the rest, with the same levels as computing the metric every time.

use serde::{Deserialize, Serialize};

use super::nickname;
use super::standardise::{Name, PartialDate, Prepared};

/// A compared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Given names.
    GivenName,
    /// Family name.
    FamilyName,
    /// Birth date.
    BirthDate,
    /// Sex.
    Sex,
    /// House number.
    StreetNumber,
    /// Street (address line without the number).
    Street,
    /// City or suburb.
    City,
    /// Postal code.
    PostalCode,
    /// State.
    State,
    /// Phone.
    Phone,
    /// Identifiers sharing an authority.
    Identifier,
}

/// Number of fields.
pub const FIELDS: usize = 11;

/// The null level: a side lacks the value; weight 0.
pub const NULL: u8 = u8::MAX;

const NAME_LEVELS: &[&str] = &[
    "exact",
    "jaro_winkler>=0.94",
    "jaro_winkler>=0.88",
    "nickname",
    "phonetic",
    "else",
];
const DATE_LEVELS: &[&str] = &[
    "exact",
    "day_month_transposed",
    "one_edit",
    "partial_agrees",
    "else",
];
const BINARY_LEVELS: &[&str] = &["exact", "else"];
const TEXT_LEVELS: &[&str] = &["exact", "jaro_winkler>=0.90", "else"];
const CODE_LEVELS: &[&str] = &["exact", "one_edit", "two_edits", "else"];

impl Field {
    /// Every field, in comparison-vector order.
    pub const ALL: [Field; FIELDS] = [
        Field::GivenName,
        Field::FamilyName,
        Field::BirthDate,
        Field::Sex,
        Field::StreetNumber,
        Field::Street,
        Field::City,
        Field::PostalCode,
        Field::State,
        Field::Phone,
        Field::Identifier,
    ];

    /// Names of the non-null levels, best first.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::GivenName | Field::FamilyName => NAME_LEVELS,
            Field::BirthDate => DATE_LEVELS,
            Field::Sex | Field::StreetNumber | Field::State => BINARY_LEVELS,
            Field::Street | Field::City => TEXT_LEVELS,
            Field::PostalCode | Field::Phone | Field::Identifier => CODE_LEVELS,
        }
    }

    /// Name of a level (`null` for [`NULL`]).
    pub fn level_name(self, level: u8) -> &'static str {
        self.levels()
            .get(usize::from(level))
            .copied()
            .unwrap_or("null")
    }

    /// Whether the field describes where someone lives, shared by a
    /// household (address, postal code, state, phone).
    pub fn is_household(self) -> bool {
        matches!(
            self,
            Field::StreetNumber
                | Field::Street
                | Field::City
                | Field::PostalCode
                | Field::State
                | Field::Phone
        )
    }

    /// Stable snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::StreetNumber => "street_number",
            Field::Street => "street",
            Field::City => "city",
            Field::PostalCode => "postal_code",
            Field::State => "state",
            Field::Phone => "phone",
            Field::Identifier => "identifier",
        }
    }
}

/// The comparison vector of a pair: one level per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comparison {
    /// Level per field, indexed by `Field as usize`.
    pub levels: [u8; FIELDS],
    /// Whether the names agreed better with given and family swapped.
    pub swapped: bool,
}

impl Comparison {
    /// The level of one field.
    pub fn level(&self, f: Field) -> u8 {
        self.levels[f as usize]
    }
}

/// Whether `a` and `b` differ by at most one substitution, insertion,
/// deletion or adjacent transposition. No allocation.
pub fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => {
            let mut diffs = short
                .iter()
                .zip(long)
                .enumerate()
                .filter(|(_, (x, y))| x != y);
            match (diffs.next(), diffs.next(), diffs.next()) {
                (None, _, _) | (Some(_), None, _) => true,
                (Some((i, _)), Some((j, _)), None) => {
                    j == i + 1 && short[i] == long[j] && short[j] == long[i]
                }
                _ => false,
            }
        }
        1 => {
            let mut i = 0;
            while i < short.len() && short[i] == long[i] {
                i += 1;
            }
            short[i..] == long[i + 1..]
        }
        _ => false,
    }
}

/// Small per-character counts (bytes folded to 64 classes) of a string
/// shorter than 256 bytes, or `None` for a longer one.
fn histogram(s: &[u8]) -> Option<[u8; 64]> {
    if s.len() > 255 {
        return None;
    }
    let mut h = [0u8; 64];
    for &x in s {
        h[usize::from(x & 63)] += 1;
    }
    Some(h)
}

/// An upper bound of `strsim::jaro_winkler(a, b)`, cheap and
/// allocation-free. Jaro counts matching characters, and a character can
/// only match an equal one, so the characters the strings share (counted
/// with multiplicity, over 64 byte classes, which can only overcount) bound
/// the matches; transpositions are bounded by none, and the Winkler boost
/// uses the real common prefix (at most four). A pair whose bound is under
/// a level's threshold cannot reach that level, so the metric itself is
/// computed only for pairs that might.
pub fn jaro_winkler_bound(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return if a.is_empty() && b.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    if !a.is_ascii() || !b.is_ascii() {
        return 1.0;
    }
    let Some(mut h) = histogram(a) else {
        return 1.0;
    };
    let mut common = 0usize;
    for &x in b {
        let c = &mut h[usize::from(x & 63)];
        if *c > 0 {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let m = common as f64;
    let jaro = (m / a.len() as f64 + m / b.len() as f64 + 1.0) / 3.0;
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
    // A hair above, so rounding never puts the bound under the metric.
    jaro + 0.1 * prefix as f64 * (1.0 - jaro) + 1e-9
}

/// `strsim::jaro_winkler(a, b)` when it can reach `floor`, else `None`.
fn jaro_winkler_from(a: &str, b: &str, floor: f64) -> Option<f64> {
    (jaro_winkler_bound(a, b) >= floor).then(|| strsim::jaro_winkler(a, b))
}

/// A lower bound of the optimal-string-alignment distance: a substitution
/// changes the character counts by at most two, an insertion or deletion
/// by one, a transposition not at all, so half the difference of the counts
/// (over 64 byte classes, which can only undercount) never exceeds it.
pub fn edit_distance_floor(a: &str, b: &str) -> usize {
    let (Some(ha), Some(hb)) = (histogram(a.as_bytes()), histogram(b.as_bytes())) else {
        return 0;
    };
    let diff: usize = ha
        .iter()
        .zip(&hb)
        .map(|(x, y)| usize::from(x.abs_diff(*y)))
        .sum();
    diff.div_ceil(2)
}

fn name_level(a: &Name, b: &Name) -> u8 {
    if a.squashed == b.squashed {
        return 0;
    }
    // An initial against a name: its first letter agreeing is weak
    // agreement (counted as a nickname); another letter is no evidence, as
    // an initial is often the middle name's.
    if a.squashed.len() == 1 || b.squashed.len() == 1 {
        return if a.squashed.chars().next() == b.squashed.chars().next() {
            3
        } else {
            NULL
        };
    }
    let jw = jaro_winkler_from(&a.squashed, &b.squashed, 0.88).unwrap_or(0.0);
    if jw >= 0.94 {
        1
    } else if jw >= 0.88 {
        2
    } else if nickname::intersects(a.nick, b.nick) {
        3
    } else if a.metaphone == b.metaphone
        || (!a.metaphone_alt.is_empty() && a.metaphone_alt == b.metaphone_alt)
        || a.nysiis == b.nysiis
    {
        4
    } else {
        5
    }
}

fn opt<T>(a: Option<&T>, b: Option<&T>, f: impl Fn(&T, &T) -> u8) -> u8 {
    match (a, b) {
        (Some(a), Some(b)) => f(a, b),
        _ => NULL,
    }
}

fn names(a: &Prepared, b: &Prepared) -> (u8, u8, bool) {
    let given = opt(a.given.as_ref(), b.given.as_ref(), name_level);
    let family = opt(a.family.as_ref(), b.family.as_ref(), name_level);
    // Only consider a swap when the straight alignment is poor on both.
    let poor = |l: u8| l == NULL || l >= 3;
    if !(poor(given) && poor(family)) {
        return (given, family, false);
    }
    let g_swapped = opt(a.given.as_ref(), b.family.as_ref(), name_level);
    let f_swapped = opt(a.family.as_ref(), b.given.as_ref(), name_level);
    let rank = |l: u8| if l == NULL { 4 } else { u32::from(l) };
    let close = |l: u8| l != NULL && l <= 2;
    // Both names close under the swap, or one name exactly in the other
    // field (a family name typed as the given name, the other name lost).
    if ((close(g_swapped) && close(f_swapped)) || g_swapped == 0 || f_swapped == 0)
        && rank(g_swapped) + rank(f_swapped) < rank(given) + rank(family)
    {
        (g_swapped, f_swapped, true)
    } else {
        (given, family, false)
    }
}

/// Birth-date level.
pub fn date_level(a: &PartialDate, b: &PartialDate) -> u8 {
    if a.is_full() && b.is_full() {
        if a == b {
            return 0;
        }
        if a.year == b.year && a.month == b.day && a.day == b.month {
            return 1;
        }
        if let (Some(x), Some(y)) = (a.digits(), b.digits())
            && within_one_edit(&x, &y)
        {
            return 2;
        }
        return 4;
    }
    let agree = |x: Option<u8>, y: Option<u8>| x.is_none() || y.is_none() || x == y;
    if a.year == b.year
        && agree(a.month, b.month)
        && (a.month.is_none() || b.month.is_none() || agree(a.day, b.day))
    {
        3
    } else {
        4
    }
}

/// Birth-date level when a side has only the digits of a mistyped date
/// ([`Prepared::birth_typo`]): the same digits are `exact`, month and day
/// exchanged (`1945-29-05`) `day_month_transposed`, one edit apart
/// `one_edit`; anything else is no evidence (null), as the date is known to
/// be wrong.
fn birth_level(a: &Prepared, b: &Prepared) -> u8 {
    if let (Some(x), Some(y)) = (&a.birth, &b.birth) {
        return date_level(x, y);
    }
    let digits = |p: &Prepared| p.birth_typo.or_else(|| p.birth.and_then(|d| d.digits()));
    let exchanged = |d: [u8; 8]| [d[0], d[1], d[2], d[3], d[6], d[7], d[4], d[5]];
    match (digits(a), digits(b)) {
        (Some(x), Some(y)) if x == y => 0,
        (Some(x), Some(y)) if exchanged(x) == y => 1,
        (Some(x), Some(y)) if within_one_edit(&x, &y) => 2,
        _ => NULL,
    }
}

fn exact<T: PartialEq + ?Sized>(a: &T, b: &T) -> u8 {
    if a == b { 0 } else { 1 }
}

fn text_level(a: &String, b: &String) -> u8 {
    if a == b {
        0
    } else if jaro_winkler_from(a, b, 0.90).is_some_and(|jw| jw >= 0.90) {
        1
    } else {
        2
    }
}

/// Level for codes (postal codes, phones, identifiers): exact, one edit,
/// two edits, else.
pub fn code_level(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if within_one_edit(a.as_bytes(), b.as_bytes()) {
        1
    } else if a.len().abs_diff(b.len()) <= 2
        && edit_distance_floor(a, b) <= 2
        && strsim::osa_distance(a, b) <= 2
    {
        2
    } else {
        3
    }
}

fn identifier_level(a: &[(String, String)], b: &[(String, String)]) -> u8 {
    let mut best = NULL;
    for (auth_a, va) in a {
        for (auth_b, vb) in b {
            if auth_a == auth_b {
                best = best.min(code_level(va, vb));
            }
        }
    }
    best
}

/// Compares two prepared records.
pub fn compare(a: &Prepared, b: &Prepared) -> Comparison {
    let (given, family, swapped) = names(a, b);
    let mut levels = [NULL; FIELDS];
    levels[Field::GivenName as usize] = given;
    levels[Field::FamilyName as usize] = family;
    levels[Field::BirthDate as usize] = birth_level(a, b);
    levels[Field::Sex as usize] = opt(a.sex.as_ref(), b.sex.as_ref(), exact);
    levels[Field::StreetNumber as usize] =
        opt(a.street_number.as_ref(), b.street_number.as_ref(), exact);
    levels[Field::Street as usize] = opt(a.street.as_ref(), b.street.as_ref(), text_level);
    levels[Field::City as usize] = opt(a.city.as_ref(), b.city.as_ref(), text_level);
    levels[Field::PostalCode as usize] =
        opt(a.postal_code.as_ref(), b.postal_code.as_ref(), |x, y| {
            code_level(x, y)
        });
    levels[Field::State as usize] = opt(a.state.as_ref(), b.state.as_ref(), exact);
    levels[Field::Phone as usize] =
        opt(a.phone.as_ref(), b.phone.as_ref(), |x, y| code_level(x, y));
    levels[Field::Identifier as usize] = identifier_level(&a.identifiers, &b.identifiers);
    Comparison { levels, swapped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::empi::standardise::{date, name_parts};

    mod bounds {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The bound never falls under the metric, for related and
            /// unrelated strings alike.
            #[test]
            fn jaro_winkler_bound_holds(a in "[a-e ]{0,12}", b in "[a-e ]{0,12}", c in "[a-z0-9]{1,20}") {
                for (x, y) in [(&a, &b), (&a, &c), (&c, &b)] {
                    let jw = strsim::jaro_winkler(x, y);
                    prop_assert!(jaro_winkler_bound(x, y) >= jw, "{x:?} {y:?}");
                }
            }

            /// The floor never exceeds the distance, so code levels are
            /// what the distance alone gives.
            #[test]
            fn edit_distance_floor_holds(a in "[0-3]{0,10}", b in "[0-3]{0,10}", c in "[0-9A-Z]{0,12}") {
                for (x, y) in [(&a, &b), (&a, &c), (&c, &b)] {
                    prop_assert!(edit_distance_floor(x, y) <= strsim::osa_distance(x, y));
                    let plain = if x == y {
                        0
                    } else if within_one_edit(x.as_bytes(), y.as_bytes()) {
                        1
                    } else if strsim::osa_distance(x, y) <= 2 {
                        2
                    } else {
                        3
                    };
                    prop_assert_eq!(code_level(x, y), plain);
                }
            }
        }

        #[test]
        fn bounds_turn_away_unrelated_pairs() {
            assert!(jaro_winkler_bound("margaret", "bob") < 0.88);
            assert!(jaro_winkler_bound("smith", "smyth") >= strsim::jaro_winkler("smith", "smyth"));
            assert_eq!(edit_distance_floor("0412345678", "0499999999"), 8);
            assert_eq!(edit_distance_floor("2600", "2600"), 0);
        }
    }

    #[test]
    fn one_edit() {
        let cases = [
            ("2600", "2600", true),
            ("2600", "2601", true),
            ("2600", "2060", true),
            ("2600", "260", true),
            ("2600", "26000", true),
            ("2600", "0062", false),
            ("2600", "2611", false),
            ("", "1", true),
            ("abc", "cab", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(within_one_edit(a.as_bytes(), b.as_bytes()), want, "{a} {b}");
            assert_eq!(within_one_edit(b.as_bytes(), a.as_bytes()), want, "{b} {a}");
        }
    }

    #[test]
    fn name_levels() {
        let cases = [
            ("John", "JOHN", "exact"),
            ("Jonathon", "Jonathan", "jaro_winkler>=0.94"),
            ("Catherine", "Katherine", "jaro_winkler>=0.88"),
            ("Bill", "William", "nickname"),
            ("Peggy", "Margaret", "nickname"),
            ("Smyth", "Smith", "jaro_winkler>=0.88"),
            ("Geoff", "Jeff", "phonetic"),
            ("Maria", "Xavier", "else"),
            ("M", "Maria", "nickname"),
            ("V", "Alicia", "null"),
        ];
        for (a, b, want) in cases {
            let (x, y) = (name_parts(a).expect("name"), name_parts(b).expect("name"));
            assert_eq!(
                Field::GivenName.level_name(name_level(&x, &y)),
                want,
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn date_levels() {
        let cases = [
            ("1970-01-02", "1970-01-02", "exact"),
            ("1970-01-02", "1970-02-01", "day_month_transposed"),
            ("1970-01-02", "1970-01-03", "one_edit"),
            ("1970-01-12", "1970-01-21", "one_edit"),
            ("1970-01-02", "1971-01-02", "one_edit"),
            ("1970-01-02", "1970", "partial_agrees"),
            ("1970-01", "1970-01-02", "partial_agrees"),
            ("1970-02", "1970-01-02", "else"),
            ("1970-01-02", "1980-05-09", "else"),
        ];
        for (a, b, want) in cases {
            let (x, y) = (date(a).expect("date"), date(b).expect("date"));
            assert_eq!(
                Field::BirthDate.level_name(date_level(&x, &y)),
                want,
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn code_levels() {
        let cases = [
            ("2600", "2600", "exact"),
            ("2600", "2609", "one_edit"),
            ("2600", "2699", "two_edits"),
            ("2600", "4811", "else"),
            ("123456789", "123456798", "one_edit"),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                Field::PostalCode.level_name(code_level(a, b)),
                want,
                "{a} vs {b}"
            );
        }
    }

    fn rec(given: &str, family: &str) -> Prepared {
        Prepared {
            given: name_parts(given),
            family: name_parts(family),
            ..Prepared::default()
        }
    }

    #[test]
    fn swapped_names_and_nulls() {
        let c = compare(&rec("Smith", "John"), &rec("John", "Smith"));
        assert!(c.swapped);
        assert_eq!(c.level(Field::GivenName), 0);
        assert_eq!(c.level(Field::FamilyName), 0);
        assert_eq!(c.level(Field::BirthDate), NULL);
        assert_eq!(Field::BirthDate.level_name(NULL), "null");
        let c = compare(&rec("John", "Smith"), &rec("Jon", "Smith"));
        assert!(!c.swapped);
        let c = compare(&rec("UNKNOWN", "Smith"), &rec("John", "Smith"));
        assert_eq!(c.level(Field::GivenName), NULL);
        assert_eq!(c.level(Field::FamilyName), 0);
    }

    #[test]
    fn a_name_in_the_other_field() {
        let level = |a: (&str, &str), b: (&str, &str)| {
            let c = compare(&rec(a.0, a.1), &rec(b.0, b.1));
            (
                c.swapped,
                c.level(Field::GivenName),
                c.level(Field::FamilyName),
            )
        };
        // The family name typed as the given name, the family name lost.
        assert_eq!(
            level(("Harrison", "Capurso"), ("Capurso", "Ruby")),
            (true, 5, 0)
        );
        assert_eq!(
            level(("Harrison", ""), ("Wheatley", "Harrison")),
            (true, 0, NULL)
        );
        // A close but inexact name in the other field is not enough.
        assert_eq!(
            level(("Harrison", "Capurso"), ("Capuso", "Ruby")),
            (false, 5, 5)
        );
        // Nor when the straight alignment already agrees somewhere.
        assert_eq!(level(("Ruby", "Capurso"), ("Ruby", "Ruby")), (false, 0, 5));
    }

    #[test]
    fn mistyped_birth_dates() {
        let with_date = |d: &str| {
            let mut r = crate::empi::standardise::Record::new("h", "1");
            r.birth_date = Some(crate::phi::BirthDate::new(d));
            crate::empi::standardise::prepare(&r)
        };
        let cases = [
            ("19141122", "19142122", "one_edit"),
            ("19142122", "19142122", "exact"),
            ("19740614", "19740164", "one_edit"),
            ("19150412", "19105412", "one_edit"),
            ("19150412", "19901312", "null"),
            ("1915", "19105412", "null"),
        ];
        for (a, b, want) in cases {
            let c = compare(&with_date(a), &with_date(b));
            assert_eq!(
                Field::BirthDate.level_name(c.level(Field::BirthDate)),
                want,
                "{a} vs {b}"
            );
        }
    }
}
