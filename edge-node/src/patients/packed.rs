//! Standardised patient records packed for a million-patient index.
//!
//! A [`Prepared`] record holds about twenty heap strings, over a kilobyte per
//! patient. Here a patient is one fixed row of 44 bytes: its names, house
//! number, street, second line, city, postal code, state and identifier
//! authorities are ids of values stored once for everyone ([`Strings`], and
//! [`Names`] for a name with its phonetic codes), the birth date is packed
//! into a word, and what is the patient's own (the MRN, the phone, the
//! digits of a birth date that is not a date, identifier values) sits in one
//! shared byte arena. Packing is lossless: [`Packed::unpack_into`] gives back
//! the very record that was packed, so blocking keys and scores computed
//! from it are those of the original.
//!
//! Slots of removed patients are reused. Pool values that no patient uses
//! any more (a corrected typo) stay until the index is next loaded; the
//! arena compacts itself once more than half of it is left over from
//! changed or removed patients. Nothing here logs, and no `Debug` shows a
//! value.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use hms_domain::empi::Prepared;
use hms_domain::empi::blocking::Spread;
use hms_domain::empi::standardise::{Name, PartialDate};
use hms_domain::phi::Sex;

/// A map keyed by a hash already computed.
type ByHash<K, V> = HashMap<K, V, BuildHasherDefault<Spread>>;

fn hash_of(x: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Distinct strings, each stored once in one arena. Id 0 is "absent".
#[derive(Default)]
struct Strings {
    bytes: String,
    /// `ends[i]`: where string `i + 1` ends in `bytes` (it starts where
    /// string `i` ends).
    ends: Vec<u32>,
    by_hash: ByHash<u64, u32>,
    /// Strings whose 64-bit hash another string had first.
    collided: Vec<u32>,
}

impl Strings {
    fn get(&self, id: u32) -> &str {
        let i = id as usize - 1;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn opt(&self, id: u32) -> Option<&str> {
        (id != 0).then(|| self.get(id))
    }

    fn intern(&mut self, s: &str) -> u32 {
        let h = hash_of(&s);
        match self.by_hash.get(&h) {
            Some(&id) if self.get(id) == s => return id,
            Some(_) => {
                if let Some(id) = self.collided.iter().copied().find(|&i| self.get(i) == s) {
                    return id;
                }
            }
            None => {}
        }
        self.bytes.push_str(s);
        self.ends.push(offset(self.bytes.len()));
        let id = offset(self.ends.len());
        match self.by_hash.entry(h) {
            Entry::Vacant(v) => {
                v.insert(id);
            }
            Entry::Occupied(_) => self.collided.push(id),
        }
        id
    }

    fn intern_opt(&mut self, s: Option<&str>) -> u32 {
        s.map_or(0, |s| self.intern(s))
    }

    fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity() + 17 * self.by_hash.capacity()
    }
}

/// A position or count that the index keeps in 32 bits (arenas stay far
/// below 4 GiB: a million patients take tens of megabytes).
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("patient index arenas stay below 4 GiB")
}

/// A standardised name as ids of its strings.
#[derive(Clone, Copy)]
struct NameRow {
    text: u32,
    squashed: u32,
    metaphone: u32,
    metaphone_alt: u32,
    nysiis: u32,
    nick: &'static [u16],
}

/// Distinct standardised names. Id 0 is "absent".
#[derive(Default)]
struct Names {
    rows: Vec<NameRow>,
    by_hash: ByHash<u64, u32>,
    collided: Vec<u32>,
}

fn name_hash(n: &Name) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &n.text,
        &n.squashed,
        &n.metaphone,
        &n.metaphone_alt,
        &n.nysiis,
        n.nick,
    )
        .hash(&mut h);
    h.finish()
}

impl Names {
    fn row(&self, id: u32) -> NameRow {
        self.rows[id as usize - 1]
    }

    fn is(&self, id: u32, n: &Name, s: &Strings) -> bool {
        let r = self.row(id);
        s.get(r.text) == n.text
            && s.get(r.squashed) == n.squashed
            && s.get(r.metaphone) == n.metaphone
            && s.get(r.metaphone_alt) == n.metaphone_alt
            && s.get(r.nysiis) == n.nysiis
            && r.nick == n.nick
    }

    fn intern(&mut self, n: &Name, s: &mut Strings) -> u32 {
        let h = name_hash(n);
        match self.by_hash.get(&h) {
            Some(&id) if self.is(id, n, s) => return id,
            Some(_) => {
                if let Some(id) = self.collided.iter().copied().find(|&i| self.is(i, n, s)) {
                    return id;
                }
            }
            None => {}
        }
        self.rows.push(NameRow {
            text: s.intern(&n.text),
            squashed: s.intern(&n.squashed),
            metaphone: s.intern(&n.metaphone),
            metaphone_alt: s.intern(&n.metaphone_alt),
            nysiis: s.intern(&n.nysiis),
            nick: n.nick,
        });
        let id = offset(self.rows.len());
        match self.by_hash.entry(h) {
            Entry::Vacant(v) => {
                v.insert(id);
            }
            Entry::Occupied(_) => self.collided.push(id),
        }
        id
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<NameRow>() * self.rows.capacity() + 17 * self.by_hash.capacity()
    }
}

/// `Row::flags`: the slot holds a patient.
const LIVE: u8 = 1;
/// A birth date is present (its month and day as the next two bits say).
const BIRTH: u8 = 1 << 1;
const MONTH: u8 = 1 << 2;
const DAY: u8 = 1 << 3;
/// The digits of a birth date that is not a date follow the phone.
const TYPO: u8 = 1 << 4;
/// Sex in two bits: 0 none, 1 female, 2 male, 3 other.
const SEX_SHIFT: u8 = 5;

/// One patient's fixed part. Ids are of [`Strings`] or [`Names`] (0:
/// absent); `var` is where the patient's own bytes start in the arena.
#[derive(Clone, Copy, Default)]
struct Row {
    given: u32,
    family: u32,
    /// Year in the high half, month and day in the low bytes.
    birth: u32,
    street_number: u32,
    street: u32,
    line2: u32,
    city: u32,
    postal_code: u32,
    state: u32,
    var: u32,
    flags: u8,
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len());
    out.extend_from_slice(b);
}

/// Reads what [`put_varint`] and [`put_bytes`] wrote.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> usize {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.bytes[self.at];
            self.at += 1;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return n;
            }
            shift += 7;
        }
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.varint();
        let b = &self.bytes[self.at..self.at + n];
        self.at += n;
        b
    }

    fn str(&mut self) -> &'a str {
        // Only whole `&str`s are written, so this never falls back.
        std::str::from_utf8(self.bytes()).unwrap_or_default()
    }
}

fn set_string(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

fn set_opt(dst: &mut Option<String>, src: Option<&str>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) => set_string(d, s),
        (_, s) => *dst = s.map(str::to_owned),
    }
}

/// Whether two standardised records are the same in every field.
pub(super) fn same(a: &Prepared, b: &Prepared) -> bool {
    let Prepared {
        given,
        family,
        birth,
        birth_typo,
        sex,
        street_number,
        street,
        line2,
        city,
        postal_code,
        state,
        phone,
        identifiers,
    } = a;
    *given == b.given
        && *family == b.family
        && *birth == b.birth
        && *birth_typo == b.birth_typo
        && *sex == b.sex
        && *street_number == b.street_number
        && *street == b.street
        && *line2 == b.line2
        && *city == b.city
        && *postal_code == b.postal_code
        && *state == b.state
        && *phone == b.phone
        && *identifiers == b.identifiers
}

/// Every indexed patient's standardised record, by slot, and the slot of
/// each MRN.
#[derive(Default)]
pub(super) struct Packed {
    rows: Vec<Row>,
    /// Slots of removed patients, for reuse.
    free: Vec<u32>,
    live: usize,
    /// Per patient: MRN, phone, birth-date digits, identifiers.
    var: Vec<u8>,
    /// Bytes of `var` no live row points to.
    var_garbage: usize,
    strings: Strings,
    names: Names,
    /// MRN hash folded to 32 bits → slot; an MRN whose folded hash another
    /// MRN holds goes to `mrn_collided`.
    by_mrn: ByHash<u32, u32>,
    mrn_collided: HashMap<Box<str>, u32>,
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("patients", &self.live)
            .field("slots", &self.rows.len())
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

fn mrn_key(mrn: &str) -> u32 {
    let h = hash_of(&mrn);
    (h ^ (h >> 32)) as u32
}

impl Packed {
    /// Patients held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Slots in use or free (every slot number is below this).
    pub(super) fn slots(&self) -> usize {
        self.rows.len()
    }

    /// Whether `slot` holds a patient.
    pub(super) fn is_live(&self, slot: u32) -> bool {
        self.rows
            .get(slot as usize)
            .is_some_and(|r| r.flags & LIVE != 0)
    }

    /// The slot of `mrn`'s patient.
    pub(super) fn slot(&self, mrn: &str) -> Option<u32> {
        match self.by_mrn.get(&mrn_key(mrn)) {
            Some(&s) if self.mrn(s) == mrn => Some(s),
            _ => self.mrn_collided.get(mrn).copied(),
        }
    }

    /// The MRN of the patient in `slot` (a live slot).
    pub(super) fn mrn(&self, slot: u32) -> &str {
        let r = &self.rows[slot as usize];
        Cursor {
            bytes: &self.var,
            at: r.var as usize,
        }
        .str()
    }

    /// Files a new patient; `mrn` must not be held yet. Returns its slot.
    pub(super) fn insert(&mut self, mrn: &str, p: &Prepared) -> u32 {
        debug_assert!(self.slot(mrn).is_none());
        let row = self.row(mrn, p);
        let slot = match self.free.pop() {
            Some(s) => {
                self.rows[s as usize] = row;
                s
            }
            None => {
                self.rows.push(row);
                offset(self.rows.len() - 1)
            }
        };
        match self.by_mrn.entry(mrn_key(mrn)) {
            Entry::Vacant(v) => {
                v.insert(slot);
            }
            Entry::Occupied(_) => {
                self.mrn_collided.insert(mrn.into(), slot);
            }
        }
        self.live += 1;
        slot
    }

    /// Replaces the record of the patient in `slot`, keeping its MRN.
    pub(super) fn replace(&mut self, slot: u32, p: &Prepared) {
        let mrn = self.mrn(slot).to_owned();
        self.var_garbage += self.var_len(slot);
        self.rows[slot as usize] = self.row(&mrn, p);
        self.compact_if_sparse();
    }

    /// Removes the patient in `slot`.
    pub(super) fn remove(&mut self, slot: u32) {
        if !self.is_live(slot) {
            return;
        }
        let key = mrn_key(self.mrn(slot));
        if self.by_mrn.get(&key) == Some(&slot) {
            self.by_mrn.remove(&key);
        } else {
            let mrn: Box<str> = self.mrn(slot).into();
            self.mrn_collided.remove(&mrn);
        }
        self.var_garbage += self.var_len(slot);
        self.rows[slot as usize] = Row::default();
        self.free.push(slot);
        self.live -= 1;
        self.compact_if_sparse();
    }

    /// Packs `p` (appending the patient's own bytes to the arena).
    fn row(&mut self, mrn: &str, p: &Prepared) -> Row {
        // Every field by name: a field added to `Prepared` fails to compile
        // here until it is packed.
        let Prepared {
            given,
            family,
            birth,
            birth_typo,
            sex,
            street_number,
            street,
            line2,
            city,
            postal_code,
            state,
            phone,
            identifiers,
        } = p;
        let mut flags = LIVE;
        let mut packed_birth = 0;
        if let Some(d) = birth {
            flags |= BIRTH;
            packed_birth = u32::from(d.year) << 16;
            if let Some(m) = d.month {
                flags |= MONTH;
                packed_birth |= u32::from(m) << 8;
            }
            if let Some(day) = d.day {
                flags |= DAY;
                packed_birth |= u32::from(day);
            }
        }
        flags |= match sex {
            None => 0,
            Some(Sex::Female) => 1,
            Some(Sex::Male) => 2,
            Some(Sex::Other) => 3,
        } << SEX_SHIFT;
        let var = offset(self.var.len());
        put_bytes(&mut self.var, mrn.as_bytes());
        match phone {
            None => put_varint(&mut self.var, 0),
            Some(ph) => {
                put_varint(&mut self.var, ph.len() + 1);
                self.var.extend_from_slice(ph.as_bytes());
            }
        }
        if let Some(digits) = birth_typo {
            flags |= TYPO;
            self.var.extend_from_slice(digits);
        }
        put_varint(&mut self.var, identifiers.len());
        for (authority, value) in identifiers {
            let a = self.strings.intern(authority);
            put_varint(&mut self.var, a as usize);
            put_bytes(&mut self.var, value.as_bytes());
        }
        let s = &mut self.strings;
        Row {
            given: given.as_ref().map_or(0, |n| self.names.intern(n, s)),
            family: family.as_ref().map_or(0, |n| self.names.intern(n, s)),
            birth: packed_birth,
            street_number: s.intern_opt(street_number.as_deref()),
            street: s.intern_opt(street.as_deref()),
            line2: s.intern_opt(line2.as_deref()),
            city: s.intern_opt(city.as_deref()),
            postal_code: s.intern_opt(postal_code.as_deref()),
            state: s.intern_opt(state.as_deref()),
            var,
            flags,
        }
    }

    /// Length of the arena bytes of the patient in `slot`.
    fn var_len(&self, slot: u32) -> usize {
        let r = &self.rows[slot as usize];
        let mut c = Cursor {
            bytes: &self.var,
            at: r.var as usize,
        };
        c.bytes();
        let phone = c.varint();
        c.at += phone.saturating_sub(1);
        if r.flags & TYPO != 0 {
            c.at += 8;
        }
        for _ in 0..c.varint() {
            c.varint();
            c.bytes();
        }
        c.at - r.var as usize
    }

    /// Rewrites the arena without the bytes of changed or removed patients
    /// once they are more than half of it.
    fn compact_if_sparse(&mut self) {
        if self.var_garbage < 1 << 16 || self.var_garbage * 2 < self.var.len() {
            return;
        }
        let mut var = Vec::with_capacity(self.var.len() - self.var_garbage);
        for slot in 0..self.rows.len() {
            if self.rows[slot].flags & LIVE == 0 {
                continue;
            }
            let start = self.rows[slot].var as usize;
            let len = self.var_len(offset(slot));
            self.rows[slot].var = offset(var.len());
            var.extend_from_slice(&self.var[start..start + len]);
        }
        self.var = var;
        self.var_garbage = 0;
    }

    /// Writes the record of the patient in `slot` into `out`, reusing its
    /// strings' buffers (a search unpacks hundreds of candidates).
    pub(super) fn unpack_into(&self, slot: u32, out: &mut Prepared) {
        let r = self.rows[slot as usize];
        self.name_into(r.given, &mut out.given);
        self.name_into(r.family, &mut out.family);
        out.birth = (r.flags & BIRTH != 0).then(|| PartialDate {
            year: (r.birth >> 16) as u16,
            month: (r.flags & MONTH != 0).then_some((r.birth >> 8) as u8),
            day: (r.flags & DAY != 0).then_some(r.birth as u8),
        });
        out.sex = match (r.flags >> SEX_SHIFT) & 3 {
            1 => Some(Sex::Female),
            2 => Some(Sex::Male),
            3 => Some(Sex::Other),
            _ => None,
        };
        let s = &self.strings;
        set_opt(&mut out.street_number, s.opt(r.street_number));
        set_opt(&mut out.street, s.opt(r.street));
        set_opt(&mut out.line2, s.opt(r.line2));
        set_opt(&mut out.city, s.opt(r.city));
        set_opt(&mut out.postal_code, s.opt(r.postal_code));
        set_opt(&mut out.state, s.opt(r.state));
        let mut c = Cursor {
            bytes: &self.var,
            at: r.var as usize,
        };
        c.bytes();
        match c.varint() {
            0 => out.phone = None,
            n => {
                let b = &self.var[c.at..c.at + n - 1];
                c.at += n - 1;
                set_opt(
                    &mut out.phone,
                    Some(std::str::from_utf8(b).unwrap_or_default()),
                );
            }
        }
        out.birth_typo = (r.flags & TYPO != 0).then(|| {
            let mut d = [0u8; 8];
            d.copy_from_slice(&self.var[c.at..c.at + 8]);
            c.at += 8;
            d
        });
        let n = c.varint();
        out.identifiers.truncate(n);
        for i in 0..n {
            let authority = s.get(offset(c.varint()));
            let value = c.str();
            match out.identifiers.get_mut(i) {
                Some((a, v)) => {
                    set_string(a, authority);
                    set_string(v, value);
                }
                None => out
                    .identifiers
                    .push((authority.to_owned(), value.to_owned())),
            }
        }
    }

    fn name_into(&self, id: u32, out: &mut Option<Name>) {
        if id == 0 {
            *out = None;
            return;
        }
        let r = self.names.row(id);
        let s = &self.strings;
        match out {
            Some(n) => {
                set_string(&mut n.text, s.get(r.text));
                set_string(&mut n.squashed, s.get(r.squashed));
                set_string(&mut n.metaphone, s.get(r.metaphone));
                set_string(&mut n.metaphone_alt, s.get(r.metaphone_alt));
                set_string(&mut n.nysiis, s.get(r.nysiis));
                n.nick = r.nick;
            }
            None => {
                *out = Some(Name {
                    text: s.get(r.text).to_owned(),
                    squashed: s.get(r.squashed).to_owned(),
                    metaphone: s.get(r.metaphone).to_owned(),
                    metaphone_alt: s.get(r.metaphone_alt).to_owned(),
                    nysiis: s.get(r.nysiis).to_owned(),
                    nick: r.nick,
                });
            }
        }
    }

    /// Approximate heap bytes held (for the load's log line and the tests).
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Row>() * self.rows.capacity()
            + 4 * self.free.capacity()
            + self.var.capacity()
            + self.strings.heap_bytes()
            + self.names.heap_bytes()
            + 9 * self.by_mrn.capacity()
            + 48 * self.mrn_collided.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hms_domain::empi::{Record, prepare};
    use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone};

    fn record(given: &str, family: &str, dob: &str) -> Prepared {
        let mut r = Record::new("local", "x");
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        prepare(&r)
    }

    fn full() -> Prepared {
        let mut r = Record::new("local", "x");
        r.given_name = Some(PersonName::new("Mary Ann"));
        r.family_name = Some(PersonName::new("O'Brien-Smythe"));
        // Not a date: kept as digits.
        r.birth_date = Some(BirthDate::new("1970-21-04"));
        r.sex = Some(Sex::Female);
        r.address_line = Some(Address::new("12 Long Street"));
        r.address_line2 = Some(Address::new("Rose Court"));
        r.city = Some(Address::new("Leeds"));
        r.postal_code = Some(Address::new("LS1 4AB"));
        r.state = Some("West Yorkshire".into());
        r.phone = Some(Phone::new("+44 113 496 0000"));
        r.identifiers = vec![
            Identifier {
                id: Mrn::new("943 476 5919"),
                authority: "NHS".into(),
                kind: "NH".into(),
            },
            Identifier {
                id: Mrn::new("A-1"),
                authority: "".into(),
                kind: "".into(),
            },
        ];
        let p = prepare(&r);
        assert!(p.birth.is_none() && p.birth_typo.is_some() && p.line2.is_some());
        assert_eq!(p.identifiers.len(), 2);
        p
    }

    fn unpacked(p: &Packed, slot: u32) -> Prepared {
        let mut out = Prepared::default();
        p.unpack_into(slot, &mut out);
        out
    }

    #[test]
    fn packing_gives_back_the_record_packed() {
        assert_eq!(std::mem::size_of::<Row>(), 44, "as the module doc says");
        let mut packed = Packed::default();
        let mut other_sex = record("Sam", "Lee", "1980");
        other_sex.sex = Some(Sex::Other);
        let records = [
            full(),
            Prepared::default(),
            record("Ann", "Lee", "1950-01-01"),
            record("Ann", "Lee", "1950-07"),
            other_sex,
        ];
        let slots: Vec<u32> = records
            .iter()
            .enumerate()
            .map(|(i, r)| packed.insert(&format!("M{i}"), r))
            .collect();
        // A buffer that held a fuller record is overwritten, not merged.
        let mut reused = unpacked(&packed, slots[0]);
        for (r, &slot) in records.iter().zip(&slots) {
            assert!(same(&unpacked(&packed, slot), r));
            packed.unpack_into(slot, &mut reused);
            assert!(same(&reused, r));
        }
        assert!(!same(&records[2], &records[3]));
        assert_eq!(packed.mrn(slots[3]), "M3");
        assert_eq!(packed.slot("M4"), Some(slots[4]));
        assert_eq!(packed.len(), 5);
        // The same name is stored once.
        assert_eq!(
            packed.names.rows.len(),
            5,
            "mary ann, obrien smythe, ann, lee, sam"
        );
    }

    #[test]
    fn slots_are_reused_and_the_arena_compacts() {
        let mut packed = Packed::default();
        let a = packed.insert("A", &full());
        let b = packed.insert("B", &record("Bo", "Ray", "1962-07-19"));
        packed.remove(a);
        assert_eq!((packed.slot("A"), packed.len()), (None, 1));
        assert!(!packed.is_live(a));
        let c = packed.insert("C", &record("Cy", "Orr", "1933-08-27"));
        assert_eq!(c, a, "the free slot is reused");
        // Many changes: the arena stays near the size of what is live.
        for i in 0..20_000 {
            packed.replace(b, &record("Bo", "Ray", &format!("19{:02}", i % 100)));
        }
        assert!(packed.var.len() < 1 << 17, "{}", packed.var.len());
        assert!(same(&unpacked(&packed, b), &record("Bo", "Ray", "1999")));
        assert!(same(
            &unpacked(&packed, c),
            &record("Cy", "Orr", "1933-08-27")
        ));
        assert_eq!((packed.mrn(b), packed.mrn(c)), ("B", "C"));
    }

    #[test]
    fn mrns_whose_hashes_collide_are_both_found() {
        let mut packed = Packed::default();
        // Find two MRNs whose folded hashes are equal.
        let mut seen: HashMap<u32, String> = HashMap::new();
        let (x, y) = (0..)
            .find_map(|i| {
                let m = format!("M{i}");
                seen.insert(mrn_key(&m), m.clone()).map(|prev| (prev, m))
            })
            .expect("a collision among 2^32 keys");
        let sx = packed.insert(&x, &record("X", "X", "1970"));
        let sy = packed.insert(&y, &record("Y", "Y", "1970"));
        assert_eq!((packed.slot(&x), packed.slot(&y)), (Some(sx), Some(sy)));
        packed.remove(sx);
        assert_eq!((packed.slot(&x), packed.slot(&y)), (None, Some(sy)));
        let sx = packed.insert(&x, &record("X", "X", "1970"));
        assert_eq!((packed.slot(&x), packed.slot(&y)), (Some(sx), Some(sy)));
        packed.remove(sy);
        assert_eq!((packed.slot(&x), packed.slot(&y)), (Some(sx), None));
    }
}
