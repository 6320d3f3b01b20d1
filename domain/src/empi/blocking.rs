//! Blocking: which stored records are worth comparing with a new one.
//!
//! A record is filed under one key per applicable [`Rule`]; the candidates of
//! a query are the union of the lists under its keys. Keys are 64-bit hashes
//! of the rule and its values (a collision only adds a candidate). Lists
//! longer than the cap are skipped at query time, as a too-broad key (a
//! placeholder birth date shared by thousands) finds nothing useful, and a
//! query takes lists narrowest first up to the same number of candidates, so
//! its cost is bounded; skips are reported in [`CandidateStats`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::standardise::Prepared;

/// A blocking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Double Metaphone of given and family name, unordered (so swapped
    /// names meet).
    NamePairMetaphone,
    /// NYSIIS of given and family name, unordered.
    NamePairNysiis,
    /// Double Metaphone of the family name and the birth year.
    FamilyMetaphoneYear,
    /// Double Metaphone of the given name and the birth year.
    GivenMetaphoneYear,
    /// Nickname group of the first given name and Double Metaphone of the
    /// family name (`Bill Smith` meets `William Smith`).
    NicknameFamily,
    /// Full birth date with day and month unordered (transpositions meet).
    BirthDate,
    /// Postal code and house number.
    PostalCodeStreetNumber,
    /// Postal code and family name's Double Metaphone.
    PostalCodeFamily,
    /// Postal code and given name's Double Metaphone.
    PostalCodeGiven,
    /// City and given name's Double Metaphone.
    CityGiven,
    /// City and family name's Double Metaphone.
    CityFamily,
    /// House number and street name without its last word, the street type
    /// (`12 long` for `12 Long St`), so a mistyped or different street type
    /// still meets; no postal code or city.
    StreetAddress,
    /// Postal code and one address line: the street without its number, or
    /// a second line without digits (a building or estate name; `Flat 2`
    /// is shared by too many). The lines are interchangeable, so a name
    /// typed on the other line still meets.
    PostalCodeLine,
    /// Phone number.
    Phone,
    /// An identifier with its authority.
    Identifier,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 15] = [
        Rule::NamePairMetaphone,
        Rule::NamePairNysiis,
        Rule::FamilyMetaphoneYear,
        Rule::GivenMetaphoneYear,
        Rule::NicknameFamily,
        Rule::BirthDate,
        Rule::PostalCodeStreetNumber,
        Rule::PostalCodeFamily,
        Rule::PostalCodeGiven,
        Rule::CityGiven,
        Rule::CityFamily,
        Rule::StreetAddress,
        Rule::PostalCodeLine,
        Rule::Phone,
        Rule::Identifier,
    ];
}

fn key(rule: Rule, parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    (rule as u8).hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn unordered<'a>(a: &'a str, b: &'a str) -> [&'a [u8]; 2] {
    if a <= b {
        [a.as_bytes(), b.as_bytes()]
    } else {
        [b.as_bytes(), a.as_bytes()]
    }
}

/// Calls `emit(rule, key)` for every blocking key of a record.
pub fn keys(p: &Prepared, mut emit: impl FnMut(Rule, u64)) {
    let year = p.birth.map(|d| d.year.to_le_bytes());
    if let (Some(g), Some(f)) = (&p.given, &p.family) {
        emit(
            Rule::NamePairMetaphone,
            key(
                Rule::NamePairMetaphone,
                &unordered(&g.metaphone, &f.metaphone),
            ),
        );
        emit(
            Rule::NamePairNysiis,
            key(Rule::NamePairNysiis, &unordered(&g.nysiis, &f.nysiis)),
        );
        for group in g.nick {
            let k = key(
                Rule::NicknameFamily,
                &[&group.to_le_bytes(), f.metaphone.as_bytes()],
            );
            emit(Rule::NicknameFamily, k);
        }
    }
    if let (Some(f), Some(y)) = (&p.family, &year) {
        emit(
            Rule::FamilyMetaphoneYear,
            key(Rule::FamilyMetaphoneYear, &[f.metaphone.as_bytes(), y]),
        );
    }
    if let (Some(g), Some(y)) = (&p.given, &year) {
        emit(
            Rule::GivenMetaphoneYear,
            key(Rule::GivenMetaphoneYear, &[g.metaphone.as_bytes(), y]),
        );
    }
    if let Some(d) = p.birth
        && let (Some(m), Some(day)) = (d.month, d.day)
    {
        let (lo, hi) = (m.min(day), m.max(day));
        emit(
            Rule::BirthDate,
            key(Rule::BirthDate, &[&d.year.to_le_bytes(), &[lo, hi]]),
        );
    }
    if let Some(pc) = &p.postal_code {
        if let Some(n) = &p.street_number {
            let k = key(Rule::PostalCodeStreetNumber, &[pc.as_bytes(), n.as_bytes()]);
            emit(Rule::PostalCodeStreetNumber, k);
        }
        if let Some(f) = &p.family {
            let k = key(
                Rule::PostalCodeFamily,
                &[pc.as_bytes(), f.metaphone.as_bytes()],
            );
            emit(Rule::PostalCodeFamily, k);
        }
        if let Some(g) = &p.given {
            let k = key(
                Rule::PostalCodeGiven,
                &[pc.as_bytes(), g.metaphone.as_bytes()],
            );
            emit(Rule::PostalCodeGiven, k);
        }
    }
    if let Some(c) = &p.city {
        if let Some(g) = &p.given {
            emit(
                Rule::CityGiven,
                key(Rule::CityGiven, &[c.as_bytes(), g.metaphone.as_bytes()]),
            );
        }
        if let Some(f) = &p.family {
            emit(
                Rule::CityFamily,
                key(Rule::CityFamily, &[c.as_bytes(), f.metaphone.as_bytes()]),
            );
        }
    }
    if let (Some(n), Some(st)) = (&p.street_number, &p.street) {
        let st = st.rsplit_once(' ').map_or(st.as_str(), |(name, _)| name);
        emit(
            Rule::StreetAddress,
            key(Rule::StreetAddress, &[n.as_bytes(), st.as_bytes()]),
        );
    }
    if let Some(pc) = &p.postal_code {
        let line2 = p
            .line2
            .as_deref()
            .filter(|l| !l.bytes().any(|b| b.is_ascii_digit()) && Some(*l) != p.street.as_deref());
        for line in [p.street.as_deref(), line2].into_iter().flatten() {
            let k = key(Rule::PostalCodeLine, &[pc.as_bytes(), line.as_bytes()]);
            emit(Rule::PostalCodeLine, k);
        }
    }
    if let Some(ph) = &p.phone {
        emit(Rule::Phone, key(Rule::Phone, &[ph.as_bytes()]));
    }
    for (auth, v) in &p.identifiers {
        emit(
            Rule::Identifier,
            key(Rule::Identifier, &[auth.as_bytes(), v.as_bytes()]),
        );
    }
}

/// What a candidate query found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateStats {
    /// Keys the query record has.
    pub keys: usize,
    /// Keys skipped because their list was longer than the cap.
    pub capped_keys: usize,
    /// Distinct candidates returned.
    pub candidates: usize,
}

/// A hasher for keys that are hashes already: one multiplication spreads
/// them over all 64 bits (the table uses the high bits too).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u32(&mut self, x: u32) {
        self.0 = (u64::from(x) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SpreadMap<K, V> = HashMap<K, V, BuildHasherDefault<Spread>>;

/// A value of [`BlockIndex`]'s table with this bit set is a list number;
/// without it, the only record filed under the key.
const LIST: u32 = 1 << 31;

/// The in-memory blocking index: key → record numbers.
///
/// Built for a million records in little memory: keys are folded to 32
/// bits (a collision only adds candidates), and a key with one record —
/// most identifier, phone and address keys — holds it inline in the table;
/// only keys shared by several records own a list.
#[derive(Debug, Clone)]
pub struct BlockIndex {
    heads: SpreadMap<u32, u32>,
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
    cap: usize,
    budget: usize,
}

fn fold(k: u64) -> u32 {
    (k ^ (k >> 32)) as u32
}

impl BlockIndex {
    /// An empty index whose query skips lists longer than `cap` and stops
    /// adding lists once `cap` candidates are gathered (narrowest first).
    pub fn new(cap: usize) -> Self {
        Self {
            heads: SpreadMap::default(),
            lists: vec![],
            free: vec![],
            cap,
            budget: cap,
        }
    }

    fn new_list(&mut self, ids: Vec<u32>) -> u32 {
        match self.free.pop() {
            Some(n) => {
                self.lists[n as usize] = ids;
                n | LIST
            }
            None => {
                self.lists.push(ids);
                (self.lists.len() as u32 - 1) | LIST
            }
        }
    }

    /// Files record `id` (below 2³¹) under its keys.
    pub fn insert(&mut self, id: u32, p: &Prepared) {
        debug_assert!(id < LIST, "record numbers stay below 2^31");
        keys(p, |_, k| self.file(id, fold(k)));
    }

    fn file(&mut self, id: u32, k: u32) {
        match self.heads.get(&k).copied() {
            None => {
                self.heads.insert(k, id);
            }
            Some(v) if v & LIST != 0 => {
                let list = &mut self.lists[(v & !LIST) as usize];
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
            Some(v) if v == id => {}
            Some(v) => {
                let n = self.new_list(vec![v, id]);
                self.heads.insert(k, n);
            }
        }
    }

    /// Removes record `id`, filed earlier with the same `p`.
    pub fn remove(&mut self, id: u32, p: &Prepared) {
        keys(p, |_, k| self.unfile(id, fold(k)));
    }

    fn unfile(&mut self, id: u32, k: u32) {
        match self.heads.get(&k).copied() {
            Some(v) if v & LIST != 0 => {
                let n = v & !LIST;
                let list = &mut self.lists[n as usize];
                list.retain(|x| *x != id);
                match list.len() {
                    0 | 1 => {
                        let last = list.first().copied();
                        self.lists[n as usize] = vec![];
                        self.free.push(n);
                        match last {
                            Some(one) => self.heads.insert(k, one),
                            None => self.heads.remove(&k),
                        };
                    }
                    _ => {}
                }
            }
            Some(v) if v == id => {
                self.heads.remove(&k);
            }
            _ => {}
        }
    }

    /// Fills `out` with the distinct candidates of `p`, sorted ascending.
    /// Lists are taken narrowest first; a list longer than the cap, or one
    /// that would take the candidates past it, is skipped and counted in
    /// `capped_keys`.
    pub fn candidates(&self, p: &Prepared, out: &mut Vec<u32>) -> CandidateStats {
        out.clear();
        let mut stats = CandidateStats::default();
        let mut found: Vec<(usize, u32)> = Vec::with_capacity(24);
        keys(p, |_, k| {
            stats.keys += 1;
            if let Some(&v) = self.heads.get(&fold(k)) {
                let len = if v & LIST != 0 {
                    self.lists[(v & !LIST) as usize].len()
                } else {
                    1
                };
                found.push((len, v));
            }
        });
        found.sort_unstable();
        found.dedup();
        let mut sorted = true;
        for (len, v) in found {
            let ids = if v & LIST != 0 {
                &self.lists[(v & !LIST) as usize][..]
            } else {
                std::slice::from_ref(&v)
            };
            if len > self.cap {
                stats.capped_keys += 1;
                continue;
            }
            if out.len() + len > self.budget {
                if !sorted {
                    out.sort_unstable();
                    out.dedup();
                    sorted = true;
                }
                let new = ids.iter().filter(|x| out.binary_search(x).is_err()).count();
                if out.len() + new > self.budget {
                    stats.capped_keys += 1;
                    continue;
                }
            }
            out.extend_from_slice(ids);
            sorted = false;
        }
        out.sort_unstable();
        out.dedup();
        stats.candidates = out.len();
        stats
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::empi::standardise::{Record, prepare};
    use crate::phi::{Address, BirthDate, PersonName};

    fn rec(given: &str, family: &str, dob: &str, postcode: &str, address: &str) -> Prepared {
        let mut r = Record::new("h1", "1");
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        r.postal_code = Some(Address::new(postcode));
        r.address_line = Some(Address::new(address));
        prepare(&r)
    }

    fn shared_rules(a: &Prepared, b: &Prepared) -> Vec<Rule> {
        let mut ka = vec![];
        keys(a, |r, k| ka.push((r, k)));
        let mut out = vec![];
        keys(b, |r, k| {
            if ka.contains(&(r, k)) && !out.contains(&r) {
                out.push(r);
            }
        });
        out
    }

    #[test]
    fn rules_that_bring_pairs_together() {
        use Rule::*;
        let base = rec("William", "Smith", "1970-03-04", "2600", "12 Long St");
        let cases: Vec<(Prepared, Vec<Rule>)> = vec![
            (
                rec("Smith", "William", "1980-01-01", "4000", "1 Short Rd"),
                vec![NamePairMetaphone, NamePairNysiis],
            ),
            (
                rec("Bill", "Smith", "1980-01-01", "4000", "1 Short Rd"),
                vec![NicknameFamily],
            ),
            (
                rec("Xavier", "Smyth", "1970-01-01", "4000", "1 Short Rd"),
                vec![FamilyMetaphoneYear],
            ),
            (
                rec("Xavier", "Jones", "1970-04-03", "4000", "1 Short Rd"),
                vec![BirthDate],
            ),
            (
                rec("Xavier", "Jones", "1981-04-03", "2600", "12 Other Rd"),
                vec![PostalCodeStreetNumber],
            ),
            (
                rec("Xavier", "Smith", "1981-04-03", "2600", "9 Other Rd"),
                vec![PostalCodeFamily],
            ),
            (
                rec("Xavier", "Jones", "1981-04-03", "4000", "9 Other Rd"),
                vec![],
            ),
            (
                rec("Xavier", "Jones", "1981-04-03", "2600", "Long Street"),
                vec![PostalCodeLine],
            ),
            (
                rec("Xavier", "Jones", "1981-04-03", "4000", "12 Long Stret"),
                vec![StreetAddress],
            ),
        ];
        for (other, want) in cases {
            let mut got = shared_rules(&base, &other);
            got.sort_by_key(|r| *r as u8);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn second_address_lines_meet_either_line() {
        let with_lines = |line1: &str, line2: &str| {
            let mut r = Record::new("h1", "1");
            r.postal_code = Some(Address::new("2600"));
            r.address_line = Some(Address::new(line1));
            r.address_line2 = Some(Address::new(line2));
            prepare(&r)
        };
        let base = with_lines("12 Long St", "Rose Court");
        let cases = [
            (
                with_lines("4 Short Rd", "Rose Court"),
                vec![Rule::PostalCodeLine],
            ),
            (
                with_lines("Rose Court", "4 Short Rd"),
                vec![Rule::PostalCodeLine],
            ),
            (
                with_lines("4 Short Rd", "Long Street"),
                vec![Rule::PostalCodeLine],
            ),
            (
                with_lines("4 Short Rd", "Rose Crt"),
                vec![Rule::PostalCodeLine],
            ),
            (with_lines("4 Short Rd", "Rose Vale"), vec![]),
        ];
        for (other, want) in cases {
            assert_eq!(shared_rules(&base, &other), want);
        }
        // Numbered lines (`Flat 2`) are shared too widely to be keys.
        let (a, b) = (
            with_lines("4 Short Rd", "Flat 2"),
            with_lines("9 Hill Rd", "Flat 2"),
        );
        assert_eq!(shared_rules(&a, &b), vec![]);
    }

    #[test]
    fn index_query_remove_and_cap() {
        let mut idx = BlockIndex::new(2);
        let a = rec("John", "Smith", "1970-03-04", "2600", "12 Long St");
        idx.insert(0, &a);
        idx.insert(1, &rec("Jon", "Smith", "1970-03-04", "2600", "12 Long St"));
        let mut out = vec![];
        let s = idx.candidates(&a, &mut out);
        assert_eq!(out, vec![0, 1]);
        assert_eq!(s.capped_keys, 0);
        idx.insert(2, &rec("Jan", "Smith", "1970-03-04", "2600", "12 Long St"));
        let s = idx.candidates(&a, &mut out);
        assert!(s.capped_keys > 0, "{s:?}");
        idx.remove(2, &rec("Jan", "Smith", "1970-03-04", "2600", "12 Long St"));
        idx.remove(1, &rec("Jon", "Smith", "1970-03-04", "2600", "12 Long St"));
        let s = idx.candidates(&a, &mut out);
        assert_eq!((out.as_slice(), s.capped_keys), (&[0u32][..], 0));
        idx.remove(0, &a);
        assert!(idx.is_empty());
    }

    #[test]
    fn a_query_stops_at_the_budget_narrowest_lists_first() {
        let q = rec("John", "Smith", "1970-03-04", "2600", "12 Long St");
        let born_same_day = |given: &str| rec(given, "Jones", "1970-03-04", "4000", "9 Far Rd");
        let givens = ["Xavier", "Yusuf", "Zane", "Quentin"];
        // Four records share only the query's birth date; one shares its
        // address.
        let filled = |cap: usize| {
            let mut idx = BlockIndex::new(cap);
            for (i, given) in givens.iter().enumerate() {
                idx.insert(i as u32, &born_same_day(given));
            }
            idx.insert(
                9,
                &rec("Walter", "Brown", "1981-01-01", "2600", "12 Long St"),
            );
            idx
        };
        let mut out = vec![];
        // Cap 3: the birth-date list (4) is over the cap; the address keys
        // (one record each) are taken.
        let s = filled(3).candidates(&q, &mut out);
        assert_eq!((out.as_slice(), s.capped_keys), (&[9u32][..], 1));
        // Cap 4: the birth-date list fits the cap but not what is left of
        // it after the narrower address keys.
        let mut idx = filled(4);
        let s = idx.candidates(&q, &mut out);
        assert_eq!((out.as_slice(), s.capped_keys), (&[9u32][..], 1));
        // Removing records brings the list back to one inline record.
        for (i, given) in givens.iter().take(3).enumerate() {
            idx.remove(i as u32, &born_same_day(given));
        }
        let s = idx.candidates(&q, &mut out);
        assert_eq!((out.as_slice(), s.capped_keys), (&[3u32, 9][..], 0));
    }
}
