//! Fellegi–Sunter scoring and its training.
//!
//! For each field and agreement level, `m` is the probability of the level
//! among true matches and `u` among non-matches; a pair's score is the sum of
//! `log2(m/u)` over its fields (the null level adds 0). On an exact name
//! agreement `u` is replaced by the name's frequency among indexed records
//! (term-frequency adjustment: agreeing on "Smith" is weaker evidence than on
//! "Vanstone"); under a name swap the frequency is that of the name's role
//! in the candidate (a family name typed as a given name counts as a family
//! name). [`train`] estimates `u` from random pairs and `m` by
//! expectation–maximisation over blocked pairs.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::blocking::{Rule, keys};
use super::compare::{Comparison, FIELDS, Field, NULL, compare};
use super::decision::Thresholds;
use super::standardise::Prepared;

/// Probabilities of one field's levels (non-null, best first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// The field.
    pub field: Field,
    /// P(level | match).
    pub m: Vec<f64>,
    /// P(level | non-match).
    pub u: Vec<f64>,
}

/// Least probability of a level among matches (`m`) or non-matches (`u`)
/// after training: no level is ever certain or impossible, so no one field
/// can add or take away unbounded evidence (about ±10 bits at most).
pub const PROBABILITY_FLOOR: f64 = 1e-3;

/// Bits beyond the index's size in bits that names must weigh to link on
/// their own (about one chance in 32 that another indexed person has both).
pub const RARE_NAMES_MARGIN: f64 = 5.0;

impl FieldParams {
    /// Weight of each level: `log2(m / u)`, bits.
    pub fn weights(&self) -> Vec<f64> {
        self.m
            .iter()
            .zip(&self.u)
            .map(|(m, u)| (m.max(f64::MIN_POSITIVE) / u.max(f64::MIN_POSITIVE)).log2())
            .collect()
    }

    /// Makes trained probabilities safe to score with: `m` and `u` each a
    /// distribution over the levels with every level at least
    /// [`PROBABILITY_FLOOR`], and weights that never grow from the closest
    /// level to the loosest ("else"): a closer agreement never weighs less
    /// than a looser one. Violating weights are pooled (the mean of the
    /// run) and `m` rebuilt from them, or, when the floor undoes that, `m`
    /// is blended towards `u` until the weights are in order. Returns
    /// whether anything changed.
    pub fn regularise(&mut self) -> bool {
        let before = (self.m.clone(), self.u.clone());
        if self.m.len() != self.u.len() || self.m.is_empty() {
            return false;
        }
        floor(&mut self.u);
        floor(&mut self.m);
        for _ in 0..16 {
            let w = self.weights();
            let pooled = non_increasing(&w);
            if pooled.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-12) {
                break;
            }
            self.m = self
                .u
                .iter()
                .zip(&pooled)
                .map(|(u, w)| u * w.exp2())
                .collect();
            floor(&mut self.m);
        }
        // The floor can undo the pooling when a level's `m` is tiny: blend
        // `m` towards `u` (where every weight is 0) just enough to order the
        // weights. A blend of floored distributions stays floored.
        let ordered = |m: &[f64], u: &[f64]| {
            let w: Vec<f64> = m.iter().zip(u).map(|(m, u)| (m / u).log2()).collect();
            w.windows(2).all(|p| p[0] >= p[1] - 1e-12)
        };
        if !ordered(&self.m, &self.u) {
            let trained = self.m.clone();
            for step in 1..=100 {
                let t = f64::from(step) / 100.0;
                let blended: Vec<f64> = trained
                    .iter()
                    .zip(&self.u)
                    .map(|(m, u)| (1.0 - t) * m + t * u)
                    .collect();
                if ordered(&blended, &self.u) || step == 100 {
                    self.m = blended;
                    break;
                }
            }
        }
        (self.m.clone(), self.u.clone()) != before
    }
}

/// `p` as a distribution with every entry at least [`PROBABILITY_FLOOR`]
/// (entries that are not finite count as 0).
fn floor(p: &mut [f64]) {
    for v in p.iter_mut() {
        if !v.is_finite() || *v < 0.0 {
            *v = 0.0;
        }
    }
    let n = p.len();
    let mut low = vec![false; n];
    loop {
        let fixed = low.iter().filter(|l| **l).count() as f64 * PROBABILITY_FLOOR;
        let rest: f64 = p
            .iter()
            .zip(&low)
            .filter(|(_, l)| !**l)
            .map(|(v, _)| v)
            .sum();
        let free = low.iter().filter(|l| !**l).count();
        let mut changed = false;
        for (v, l) in p.iter_mut().zip(low.iter_mut()) {
            if *l {
                *v = PROBABILITY_FLOOR;
                continue;
            }
            *v = if rest > 0.0 {
                *v * (1.0 - fixed) / rest
            } else {
                (1.0 - fixed) / free.max(1) as f64
            };
            if *v < PROBABILITY_FLOOR {
                *l = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// The closest non-increasing sequence to `w` (pool adjacent violators,
/// equal weights).
fn non_increasing(w: &[f64]) -> Vec<f64> {
    // Blocks of (mean, size), merged while a later block is above an earlier one.
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(w.len());
    for &x in w {
        blocks.push((x, 1));
        while blocks.len() > 1 {
            let (b, nb) = blocks[blocks.len() - 1];
            let (a, na) = blocks[blocks.len() - 2];
            if b <= a {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = ((a * na as f64 + b * nb as f64) / (na + nb) as f64, na + nb);
        }
    }
    blocks
        .into_iter()
        .flat_map(|(v, n)| std::iter::repeat_n(v, n))
        .collect()
}

/// Everything the engine needs to score and decide. Serialisable so a
/// trained model can be versioned, shipped and audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Model version, recorded with every decision.
    pub version: String,
    /// Per-field probabilities, in [`Field::ALL`] order.
    pub fields: Vec<FieldParams>,
    /// Share of blocked pairs that EM estimated to be matches (informative).
    pub lambda: f64,
    /// Decision thresholds, in bits of evidence.
    pub thresholds: Thresholds,
    /// Identifier authorities whose exact agreement links deterministically
    /// (upper-case alphanumerics, as standardised).
    pub trusted_authorities: Vec<String>,
    /// Blocking lists longer than this are skipped at query time.
    pub block_cap: usize,
    /// Term-frequency adjustment applies once this many records are indexed.
    pub tf_min_records: u32,
    /// Lowest frequency used by the term-frequency adjustment.
    pub tf_floor: f64,
    /// Most bits the household fields (address, postal code, state, phone)
    /// may add together: they are correlated, and shared by everyone living
    /// at one address, so they must not link two people on their own.
    pub household_cap: f64,
    /// Whether each source keeps one record per person (a hospital's MRN
    /// register): two local ids of one source then never share an identity
    /// unless a human linked them. Off only for a source known to hold
    /// duplicates that should be linked automatically (a deduplication
    /// data set).
    #[serde(default = "source_unique_default")]
    pub source_unique: bool,
    /// Most bits the household fields may add when the family name agrees
    /// too: a shared surname and address describe a household (siblings,
    /// parents, children, twins), weak evidence of one person.
    #[serde(default = "family_household_cap_default")]
    pub family_household_cap: f64,
    /// Whether the two-people patterns ([`Distinct`]) and the family
    /// household cap apply. Off only to measure on data without households
    /// or twins (FEBRL replaces one duplicate's given name by another name
    /// in about one duplicate in twelve, which is what a twin looks like).
    #[serde(default = "source_unique_default")]
    pub household_rules: bool,
}

fn family_household_cap_default() -> f64 {
    6.0
}

fn source_unique_default() -> bool {
    true
}

fn fp(field: Field, m: &[f64], u: &[f64]) -> FieldParams {
    FieldParams {
        field,
        m: m.to_vec(),
        u: u.to_vec(),
    }
}

impl Default for Params {
    /// Hand-set starting values: usable untrained, and the start point of EM.
    fn default() -> Self {
        let name_m = [0.86, 0.05, 0.02, 0.02, 0.02, 0.03];
        let name_u = [0.004, 0.002, 0.004, 0.002, 0.02, 0.968];
        Params {
            version: "empi-default-1".to_owned(),
            fields: vec![
                fp(Field::GivenName, &name_m, &name_u),
                fp(Field::FamilyName, &name_m, &name_u),
                fp(
                    Field::BirthDate,
                    &[0.9, 0.02, 0.05, 0.01, 0.02],
                    &[4e-5, 2e-6, 5e-4, 0.01, 0.98946],
                ),
                fp(Field::Sex, &[0.98, 0.02], &[0.5, 0.5]),
                fp(Field::StreetNumber, &[0.9, 0.1], &[0.02, 0.98]),
                fp(Field::Street, &[0.85, 0.05, 0.1], &[0.001, 0.01, 0.989]),
                fp(Field::City, &[0.85, 0.05, 0.1], &[0.01, 0.02, 0.97]),
                fp(
                    Field::PostalCode,
                    &[0.85, 0.05, 0.02, 0.08],
                    &[0.005, 0.02, 0.05, 0.925],
                ),
                fp(Field::State, &[0.95, 0.05], &[0.3, 0.7]),
                fp(
                    Field::Phone,
                    &[0.8, 0.05, 0.02, 0.13],
                    &[1e-6, 1e-5, 1e-4, 0.999889],
                ),
                fp(
                    Field::Identifier,
                    &[0.95, 0.03, 0.01, 0.01],
                    &[1e-7, 1e-6, 1e-5, 0.9999889],
                ),
            ],
            lambda: 0.01,
            thresholds: Thresholds::default(),
            trusted_authorities: vec![],
            block_cap: 2000,
            tf_min_records: 1000,
            tf_floor: 1e-5,
            household_cap: 16.0,
            source_unique: true,
            family_household_cap: family_household_cap_default(),
            household_rules: true,
        }
    }
}

/// Name frequencies among indexed records, for the term-frequency adjustment.
#[derive(Debug, Clone, Default)]
pub struct TermFrequencies {
    given: HashMap<String, u32>,
    family: HashMap<String, u32>,
    records: u32,
}

impl TermFrequencies {
    /// Counts a record in.
    pub fn add(&mut self, p: &Prepared) {
        self.records += 1;
        if let Some(g) = &p.given {
            *self.given.entry(g.squashed.clone()).or_default() += 1;
        }
        if let Some(f) = &p.family {
            *self.family.entry(f.squashed.clone()).or_default() += 1;
        }
    }

    /// Counts a record out.
    pub fn remove(&mut self, p: &Prepared) {
        self.records = self.records.saturating_sub(1);
        for (map, name) in [(&mut self.given, &p.given), (&mut self.family, &p.family)] {
            if let Some(n) = name
                && let Some(c) = map.get_mut(&n.squashed)
            {
                *c -= 1;
                if *c == 0 {
                    map.remove(&n.squashed);
                }
            }
        }
    }

    /// Records counted.
    pub fn records(&self) -> u32 {
        self.records
    }

    fn frequency(&self, field: Field, value: &str) -> Option<f64> {
        let map = match field {
            Field::GivenName => &self.given,
            Field::FamilyName => &self.family,
            _ => return None,
        };
        let count = map.get(value).copied().unwrap_or(0);
        Some(f64::from(count.max(1)) / f64::from(self.records.max(1)))
    }
}

/// One field's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldScore {
    /// The field.
    pub field: Field,
    /// Agreement level name (`exact`, `one_edit`, `null`…).
    pub level: Cow<'static, str>,
    /// Weight in bits, `log2(m/u)`; 0 for null.
    pub weight: f64,
    /// Whether the weight used the value's frequency instead of `u`.
    pub tf_adjusted: bool,
}

/// Why a pair scored what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Total score in bits (the sum of the field weights).
    pub total: f64,
    /// Whether names agreed with given and family swapped.
    pub swapped_names: bool,
    /// Bits removed because the household fields (address and phone)
    /// together gave more than `Params::household_cap`, or than
    /// `Params::family_household_cap` when the family name agrees too (0 or
    /// negative).
    pub household_cap: f64,
    /// Per field, in [`Field::ALL`] order.
    pub fields: Vec<FieldScore>,
    /// The rule that held the total down because the pair describes two
    /// people whatever else agrees (see [`Distinct`]), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<Distinct>,
}

/// Patterns that describe two people, which no sum of other agreements may
/// outweigh: household members share a surname, an address and a phone, and
/// twins a birth date too; a family's insurance membership may be shared.
/// A pair showing one may not link automatically on its score (a trusted
/// identifier agreeing still links deterministically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distinct {
    /// Given name, birth date and sex all disagree: never above the review
    /// threshold.
    GivenNameBirthDateAndSex,
    /// Another given name in the same family (a sibling, a parent, a twin),
    /// or with no family name to tell; or a similar one of the other sex
    /// (Michael and Michelle): below the link threshold.
    GivenNameInOneFamily,
    /// Neither a birth date nor an identifier agrees, and the names do not
    /// both agree (the given name exactly or as a nickname, the family name
    /// or no family name to tell): what is left, a family name, a similar
    /// given name, an address, a phone, is shared by households and
    /// neighbours. Below the link threshold.
    HouseholdOnly,
    /// Neither a birth date nor an identifier agrees, and nor does an
    /// address or a phone: two people may share a name. Below the link
    /// threshold.
    NamesOnly,
    /// Another full birth date with nothing but names agreeing: below the
    /// link threshold.
    BirthDate,
}

/// [`Params`] with the log weights computed once.
#[derive(Debug, Clone)]
pub struct Model {
    params: Params,
    weights: [[f64; 8]; FIELDS],
    m_exact: [f64; FIELDS],
    trusted: Vec<String>,
}

impl Model {
    /// Builds the weight tables.
    pub fn new(params: Params) -> Self {
        let mut weights = [[0.0; 8]; FIELDS];
        let mut m_exact = [0.0; FIELDS];
        for fp in &params.fields {
            let i = fp.field as usize;
            for (l, (m, u)) in fp.m.iter().zip(&fp.u).enumerate().take(8) {
                weights[i][l] = (m.max(1e-9) / u.max(1e-12)).log2();
            }
            m_exact[i] = fp.m.first().copied().unwrap_or(0.0);
        }
        let trusted = params.trusted_authorities.clone();
        Model {
            params,
            weights,
            m_exact,
            trusted,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The weight of one field's level. `swapped`: the name levels compare
    /// the query's given name with the candidate's family name and the other
    /// way round; an exact agreement is then a name in the other role, and
    /// its frequency is looked up among names of that role.
    fn field_weight(
        &self,
        f: Field,
        level: u8,
        a: &Prepared,
        swapped: bool,
        tf: Option<&TermFrequencies>,
    ) -> (f64, bool) {
        if level == NULL {
            return (0.0, false);
        }
        if level == 0
            && let Some(tf) = tf.filter(|t| t.records >= self.params.tf_min_records)
        {
            let (value, role) = match (f, swapped) {
                (Field::GivenName, false) => (a.given.as_ref(), Field::GivenName),
                (Field::FamilyName, false) => (a.family.as_ref(), Field::FamilyName),
                (Field::GivenName, true) => (a.given.as_ref(), Field::FamilyName),
                (Field::FamilyName, true) => (a.family.as_ref(), Field::GivenName),
                _ => (None, f),
            };
            if let Some(v) = value
                && let Some(freq) = tf.frequency(role, &v.squashed)
            {
                let u = freq.max(self.params.tf_floor);
                return ((self.m_exact[f as usize].max(1e-9) / u).log2(), true);
            }
        }
        (self.weights[f as usize][usize::from(level)], false)
    }

    /// Score of a comparison in bits. `a` is the query record (its names are
    /// the looked-up terms: an exact agreement names the same string on both
    /// sides, so either side serves).
    pub fn score(&self, c: &Comparison, a: &Prepared, tf: Option<&TermFrequencies>) -> f64 {
        let (mut total, mut household, mut names) = (0.0, 0.0, 0.0);
        for f in Field::ALL {
            let w = self.field_weight(f, c.level(f), a, c.swapped, tf).0;
            total += w;
            if f.is_household() && w > 0.0 {
                household += w;
            }
            if matches!(f, Field::GivenName | Field::FamilyName) {
                names += w;
            }
        }
        let total = total - (household - self.household_cap(c)).max(0.0);
        match self.distinct(c).filter(|&d| self.holds(d, names, tf)) {
            Some(d) => total.min(self.ceiling(d)),
            None => total,
        }
    }

    /// Whether pattern `d` holds the score down. Names alone (no birth date
    /// on one side) do not link unless they are rare enough, by their
    /// frequencies among the indexed records, that another person with both
    /// is not expected among them: their bits at least the index's size in
    /// bits plus
    /// [`RARE_NAMES_MARGIN`] (at 30,000 records about 20 bits, at a
    /// million 25).
    fn holds(&self, d: Distinct, names: f64, tf: Option<&TermFrequencies>) -> bool {
        match (d, tf) {
            (Distinct::NamesOnly, Some(tf)) if tf.records >= self.params.tf_min_records => {
                names < f64::from(tf.records).log2() + RARE_NAMES_MARGIN
            }
            _ => true,
        }
    }

    /// The most bits the household fields may add for this pair: few when
    /// the family name agrees too and the birth date does not exactly (a
    /// household shares name and address), or when neither a birth date nor
    /// an identifier agrees (people who share an address, a room-mate or a
    /// resident of the same home, cannot be told apart from the person by
    /// it).
    fn household_cap(&self, c: &Comparison) -> f64 {
        let agrees = |f: Field| agrees(f, c.level(f));
        let personal = agrees(Field::BirthDate) || agrees(Field::Identifier);
        let exact_birth = c.level(Field::BirthDate) == 0;
        if self.params.household_rules && (!personal || (agrees(Field::FamilyName) && !exact_birth))
        {
            self.params
                .household_cap
                .min(self.params.family_household_cap)
        } else {
            self.params.household_cap
        }
    }

    /// Which two-people pattern the pair shows, if any.
    pub fn distinct(&self, c: &Comparison) -> Option<Distinct> {
        if !self.params.household_rules {
            return None;
        }
        let level = |f: Field| c.level(f);
        let differs = |f: Field| level(f) != NULL && is_else(f, level(f));
        let agrees = |f: Field| agrees(f, level(f));
        // Without a birth date or an identifier, only names and where one
        // lives are left: the names must both agree, the given name exactly
        // or as a nickname (Daniel and Danielle, Michael and Michelle live
        // together), and the address (or the phone) must agree too.
        let personal = agrees(Field::BirthDate) || agrees(Field::Identifier);
        let lives_there = (agrees(Field::Street) && agrees(Field::StreetNumber))
            || level(Field::PostalCode) == 0
            || level(Field::Phone) == 0;
        let given = matches!(level(Field::GivenName), 0 | 3);
        if differs(Field::GivenName) && differs(Field::BirthDate) && differs(Field::Sex) {
            Some(Distinct::GivenNameBirthDateAndSex)
        } else if !differs(Field::FamilyName)
            && (differs(Field::GivenName) || (!given && differs(Field::Sex)))
        {
            Some(Distinct::GivenNameInOneFamily)
        } else if !personal && (!given || differs(Field::FamilyName)) {
            Some(Distinct::HouseholdOnly)
        } else if differs(Field::BirthDate)
            && Field::ALL.iter().all(|&f| {
                matches!(f, Field::GivenName | Field::FamilyName | Field::Sex) || !agrees(f)
            })
        {
            Some(Distinct::BirthDate)
        } else if !personal && !lives_there {
            Some(Distinct::NamesOnly)
        } else {
            None
        }
    }

    /// The highest score a pair showing `d` may have.
    fn ceiling(&self, d: Distinct) -> f64 {
        let t = &self.params.thresholds;
        match d {
            Distinct::GivenNameBirthDateAndSex => t.review - 0.01,
            Distinct::GivenNameInOneFamily
            | Distinct::HouseholdOnly
            | Distinct::NamesOnly
            | Distinct::BirthDate => t.link - 0.01,
        }
    }

    /// Per-field explanation of a comparison's score.
    pub fn explain(
        &self,
        c: &Comparison,
        a: &Prepared,
        tf: Option<&TermFrequencies>,
    ) -> Explanation {
        let fields: Vec<FieldScore> = Field::ALL
            .iter()
            .map(|&f| {
                let level = c.level(f);
                let (weight, tf_adjusted) = self.field_weight(f, level, a, c.swapped, tf);
                FieldScore {
                    field: f,
                    level: Cow::Borrowed(f.level_name(level)),
                    weight,
                    tf_adjusted,
                }
            })
            .collect();
        let household: f64 = fields
            .iter()
            .filter(|f| f.field.is_household() && f.weight > 0.0)
            .map(|f| f.weight)
            .sum();
        let household_cap = -(household - self.household_cap(c)).max(0.0);
        let sum = fields.iter().map(|f| f.weight).sum::<f64>() + household_cap;
        let names: f64 = fields
            .iter()
            .filter(|f| matches!(f.field, Field::GivenName | Field::FamilyName))
            .map(|f| f.weight)
            .sum();
        let distinct = self
            .distinct(c)
            .filter(|&d| sum > self.ceiling(d) && self.holds(d, names, tf));
        Explanation {
            total: distinct.map_or(sum, |d| self.ceiling(d)),
            swapped_names: c.swapped,
            household_cap,
            fields,
            distinct,
        }
    }

    /// Whether the pair shares an identifier of a trusted authority exactly.
    pub fn trusted_identifier_agrees(&self, a: &Prepared, b: &Prepared) -> bool {
        a.identifiers.iter().any(|(auth, v)| {
            self.trusted.contains(auth)
                && b.identifiers.iter().any(|(ab, vb)| ab == auth && vb == v)
        })
    }

    /// Whether the pair carries different values of one trusted authority's
    /// identifier (and `b` does not also carry `a`'s value): a cannot-link
    /// constraint, since a trusted identifier names one person.
    pub fn trusted_identifier_conflicts(&self, a: &Prepared, b: &Prepared) -> bool {
        a.identifiers.iter().any(|(auth, v)| {
            self.trusted.contains(auth)
                && b.identifiers.iter().any(|(ab, vb)| ab == auth && vb != v)
                && !b.identifiers.iter().any(|(ab, vb)| ab == auth && vb == v)
        })
    }

    /// Compares and scores.
    pub fn compare_score(
        &self,
        a: &Prepared,
        b: &Prepared,
        tf: Option<&TermFrequencies>,
    ) -> (Comparison, f64) {
        let c = compare(a, b);
        let s = self.score(&c, a, tf);
        (c, s)
    }
}

/// Whether a field agrees at some level better than "else".
fn agrees(f: Field, level: u8) -> bool {
    level != NULL && !is_else(f, level)
}

/// Whether `level` is a field's last level, "else": both present and
/// different.
fn is_else(f: Field, level: u8) -> bool {
    usize::from(level) + 1 == f.levels().len()
}

/// A small deterministic generator (SplitMix64) for sampling.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Random pairs sampled to estimate `u`.
    pub u_pairs: usize,
    /// Most blocked pairs used by EM.
    pub em_pairs: usize,
    /// EM iteration limit.
    pub max_iterations: usize,
    /// EM stops when no probability moves more than this.
    pub tolerance: f64,
    /// Sampling seed.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            u_pairs: 2_000_000,
            em_pairs: 2_000_000,
            max_iterations: 200,
            tolerance: 1e-7,
            seed: 1,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Random pairs compared for `u`.
    pub u_pairs: usize,
    /// Blocked pairs fed to EM.
    pub em_pairs: usize,
    /// Distinct comparison patterns among them.
    pub patterns: usize,
    /// EM iterations run.
    pub iterations: usize,
    /// Whether EM met the tolerance.
    pub converged: bool,
    /// Estimated share of matches among blocked pairs.
    pub lambda: f64,
    /// Fields whose trained probabilities broke a floor or the order of the
    /// levels and were regularised ([`FieldParams::regularise`]).
    #[serde(default)]
    pub regularised: Vec<String>,
}

/// Estimates `u` from random pairs of `records` and `m` by EM over the pairs
/// that blocking proposes, starting from `base`; returns new parameters (with
/// `base`'s thresholds and settings) and a report. Deterministic for a seed.
pub fn train(records: &[Prepared], base: &Params, config: &TrainConfig) -> (Params, TrainReport) {
    train_sourced(records, &[], base, config)
}

/// [`train`] knowing each record's source (`sources[i]` numbers the source
/// of `records[i]`; empty: unknown). Where each source holds a person once
/// (`Params::source_unique`), EM learns only from pairs of two sources: two
/// records of one source are two people, and EM fed with them (twins sharing
/// a birth date, a household sharing an address) learns what a household
/// looks like instead of a person.
pub fn train_sourced(
    records: &[Prepared],
    sources: &[u32],
    base: &Params,
    config: &TrainConfig,
) -> (Params, TrainReport) {
    let mut params = base.clone();
    let sources = if base.source_unique && sources.len() == records.len() {
        sources
    } else {
        &[]
    };
    let n = records.len();
    let mut report = TrainReport {
        u_pairs: 0,
        em_pairs: 0,
        patterns: 0,
        iterations: 0,
        converged: false,
        lambda: base.lambda,
        regularised: vec![],
    };
    if n < 2 {
        return (params, report);
    }
    // u by random sampling.
    let mut rng = SplitMix64::new(config.seed);
    let mut u_counts = [[0u64; 8]; FIELDS];
    for _ in 0..config.u_pairs {
        let i = rng.below(n);
        let mut j = rng.below(n - 1);
        if j >= i {
            j += 1;
        }
        let c = compare(&records[i], &records[j]);
        for (f, &l) in c.levels.iter().enumerate() {
            if l != NULL {
                u_counts[f][usize::from(l)] += 1;
            }
        }
    }
    report.u_pairs = config.u_pairs;
    let mut u: Vec<Vec<f64>> = params.fields.iter().map(|f| f.u.clone()).collect();
    for (f, fp) in params.fields.iter().enumerate() {
        let counts = &u_counts[fp.field as usize][..fp.u.len()];
        let seen: u64 = counts.iter().sum();
        if seen > 0 {
            let levels = counts.len() as f64;
            u[f] = counts
                .iter()
                .map(|&c| (c as f64 + 0.5) / (seen as f64 + 0.5 * levels))
                .collect();
        }
    }

    // m by EM, one session per training rule: pairs sharing that rule's key,
    // with the rule's own fields left out of the likelihood (non-matches
    // that share a key agree on its fields far more often than random
    // pairs, so their u would be wrong there). Each field's m is the mean
    // over the sessions that estimated it.
    let init: Vec<Vec<f64>> = params.fields.iter().map(|f| f.m.clone()).collect();
    let mut m_sum: Vec<Vec<f64>> = init.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut m_n = [0u32; FIELDS];
    let mut lambdas = vec![];
    for (rule, excluded) in TRAINING_SESSIONS {
        let patterns = session_patterns(
            records,
            sources,
            *rule,
            excluded,
            base.block_cap,
            config.em_pairs,
        );
        report.em_pairs += patterns.iter().map(|p| p.1 as usize).sum::<usize>();
        report.patterns += patterns.len();
        let fit = em(&patterns, init.clone(), &u, base.lambda, config);
        report.iterations = report.iterations.max(fit.iterations);
        report.converged = fit.iterations < config.max_iterations || report.converged;
        lambdas.push(fit.lambda);
        for f in 0..FIELDS {
            let estimated = !excluded.iter().any(|x| *x as usize == f) && fit.seen[f];
            if estimated {
                for (acc, v) in m_sum[f].iter_mut().zip(&fit.m[f]) {
                    *acc += v;
                }
                m_n[f] += 1;
            }
        }
    }
    let lambda = lambdas.iter().sum::<f64>() / lambdas.len().max(1) as f64;
    report.lambda = lambda;
    for (f, fp) in params.fields.iter_mut().enumerate() {
        if m_n[f] > 0 {
            fp.m = m_sum[f].iter().map(|v| v / f64::from(m_n[f])).collect();
        }
        fp.u.clone_from(&u[f]);
        if fp.regularise() {
            report.regularised.push(fp.field.as_str().to_owned());
        }
    }
    params.lambda = lambda;
    (params, report)
}

/// EM training sessions: a blocking rule and the fields it constrains.
const TRAINING_SESSIONS: &[(Rule, &[Field])] = &[
    (Rule::BirthDate, &[Field::BirthDate]),
    (
        Rule::NamePairMetaphone,
        &[Field::GivenName, Field::FamilyName, Field::Sex],
    ),
    (
        Rule::PostalCodeStreetNumber,
        &[
            Field::StreetNumber,
            Field::Street,
            Field::City,
            Field::PostalCode,
            Field::State,
            Field::Phone,
        ],
    ),
];

/// Comparison patterns (with `excluded` fields nulled) and their counts over
/// the pairs that share a key of `rule` (and, where `sources` is given, come
/// from two sources).
fn session_patterns(
    records: &[Prepared],
    sources: &[u32],
    rule: Rule,
    excluded: &[Field],
    cap: usize,
    max_pairs: usize,
) -> Vec<([u8; FIELDS], f64)> {
    let mut lists: HashMap<u64, Vec<u32>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        keys(r, |rl, k| {
            if rl == rule {
                lists.entry(k).or_default().push(i as u32);
            }
        });
    }
    let mut lists: Vec<(u64, Vec<u32>)> = lists
        .into_iter()
        .filter(|(_, l)| l.len() > 1 && l.len() <= cap)
        .collect();
    lists.sort_unstable_by_key(|(k, _)| *k);
    let mut seen = std::collections::HashSet::new();
    let mut patterns: HashMap<[u8; FIELDS], f64> = HashMap::new();
    'outer: for (_, list) in &lists {
        for (x, &a) in list.iter().enumerate() {
            for &b in &list[x + 1..] {
                if seen.len() >= max_pairs {
                    break 'outer;
                }
                if !sources.is_empty() && sources[a as usize] == sources[b as usize] {
                    continue;
                }
                if !seen.insert((a.min(b), a.max(b))) {
                    continue;
                }
                let mut levels = compare(&records[a as usize], &records[b as usize]).levels;
                for f in excluded {
                    levels[*f as usize] = NULL;
                }
                *patterns.entry(levels).or_default() += 1.0;
            }
        }
    }
    let mut patterns: Vec<([u8; FIELDS], f64)> = patterns.into_iter().collect();
    patterns.sort_by_key(|p| p.0);
    patterns
}

struct Fit {
    m: Vec<Vec<f64>>,
    lambda: f64,
    iterations: usize,
    /// Fields with at least one non-null level in the data.
    seen: [bool; FIELDS],
}

/// Expectation–maximisation of `m` and the match share with `u` fixed.
fn em(
    patterns: &[([u8; FIELDS], f64)],
    mut m: Vec<Vec<f64>>,
    u: &[Vec<f64>],
    lambda0: f64,
    config: &TrainConfig,
) -> Fit {
    let mut lambda = lambda0.clamp(1e-4, 0.5);
    let mut seen = [false; FIELDS];
    for (levels, _) in patterns {
        for (f, &l) in levels.iter().enumerate() {
            seen[f] |= l != NULL;
        }
    }
    let mut iterations = 0;
    for it in 0..config.max_iterations {
        iterations = it + 1;
        let mut m_acc: Vec<Vec<f64>> = m.iter().map(|v| vec![0.0; v.len()]).collect();
        let (mut g_sum, mut total) = (0.0, 0.0);
        for (levels, count) in patterns {
            let (mut lm, mut lu) = (lambda.ln(), (1.0 - lambda).ln());
            for (f, &l) in levels.iter().enumerate() {
                if l != NULL {
                    lm += m[f][usize::from(l)].max(1e-12).ln();
                    lu += u[f][usize::from(l)].max(1e-12).ln();
                }
            }
            let g = 1.0 / (1.0 + (lu - lm).exp());
            g_sum += g * count;
            total += count;
            for (f, &l) in levels.iter().enumerate() {
                if l != NULL {
                    m_acc[f][usize::from(l)] += g * count;
                }
            }
        }
        let mut delta: f64 = 0.0;
        for (f, acc) in m_acc.iter().enumerate() {
            let s: f64 = acc.iter().sum();
            if s > 0.0 {
                for (l, a) in acc.iter().enumerate() {
                    let v = (a + 1e-6) / (s + 1e-6 * acc.len() as f64);
                    delta = delta.max((v - m[f][l]).abs());
                    m[f][l] = v;
                }
            }
        }
        let new_lambda = if total > 0.0 {
            (g_sum / total).clamp(1e-6, 0.999)
        } else {
            lambda
        };
        delta = delta.max((new_lambda - lambda).abs());
        lambda = new_lambda;
        if delta < config.tolerance {
            break;
        }
    }
    Fit {
        m,
        lambda,
        iterations,
        seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::empi::standardise::{Record, prepare};
    use crate::phi::{BirthDate, PersonName};

    fn rec(given: &str, family: &str, dob: &str) -> Prepared {
        let mut r = Record::new("h", "1");
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        prepare(&r)
    }

    proptest::proptest! {
        #[test]
        fn regularised_probabilities_are_floored_distributions_with_ordered_weights(
            raw in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0, 0u8..4), 2..7)
        ) {
            // Random EM output, zeros and certainties included.
            let pick = |x: f64, k: u8| match k { 0 => 0.0, 1 => 1.0, _ => x };
            let mut fp = FieldParams {
                field: Field::GivenName,
                m: raw.iter().map(|(m, _, k)| pick(*m, *k)).collect(),
                u: raw.iter().map(|(_, u, k)| pick(*u, k.wrapping_add(1) % 4)).collect(),
            };
            fp.regularise();
            for p in [&fp.m, &fp.u] {
                let sum: f64 = p.iter().sum();
                proptest::prop_assert!((sum - 1.0).abs() < 1e-9, "sum {sum}: {p:?}");
                for v in p.iter() {
                    proptest::prop_assert!(*v >= PROBABILITY_FLOOR - 1e-12 && *v <= 1.0, "{p:?}");
                }
            }
            let w = fp.weights();
            for pair in w.windows(2) {
                proptest::prop_assert!(pair[0] >= pair[1] - 1e-9, "weights not ordered: {w:?}");
            }
            // Already regular: nothing changes.
            let again = fp.clone();
            proptest::prop_assert!(!fp.regularise() || fp.m.iter().zip(&again.m).all(|(a, b)| (a - b).abs() < 1e-9));
        }
    }

    #[test]
    fn a_phonetic_agreement_below_else_is_pooled_and_certainties_are_floored() {
        // Like an unchecked EM: phonetic (level 2) weighs far below "else",
        // and an identifier level with m = u = 0.
        let mut fp = FieldParams {
            field: Field::GivenName,
            m: vec![0.9, 0.1, 0.0, 0.0],
            u: vec![0.001, 0.01, 0.2, 0.789],
        };
        assert!(fp.regularise());
        let w = fp.weights();
        assert!(w.windows(2).all(|p| p[0] >= p[1] - 1e-9), "{w:?}");
        assert!(w[0] > 5.0, "exact agreement keeps strong evidence: {w:?}");
        assert!(fp.m.iter().all(|m| *m >= PROBABILITY_FLOOR), "{:?}", fp.m);
    }

    #[test]
    fn explanation_lists_levels_and_weights() {
        let model = Model::new(Params::default());
        let a = rec("Jonathan", "Smith", "1970-03-04");
        let b = rec("Jonathon", "Smith", "1970-04-03");
        let (c, s) = model.compare_score(&a, &b, None);
        let e = model.explain(&c, &a, None);
        assert!((e.total - s).abs() < 1e-9);
        let shown: Vec<String> = e
            .fields
            .iter()
            .map(|f| format!("{}={}:{:.2}", f.field.as_str(), f.level, f.weight))
            .collect();
        expect_test::expect![[r#"
            [
                "given_name=jaro_winkler>=0.94:4.64",
                "family_name=exact:7.75",
                "birth_date=day_month_transposed:13.29",
                "sex=null:0.00",
                "street_number=null:0.00",
                "street=null:0.00",
                "city=null:0.00",
                "postal_code=null:0.00",
                "state=null:0.00",
                "phone=null:0.00",
                "identifier=null:0.00",
            ]
        "#]]
        .assert_debug_eq(&shown);
    }

    #[test]
    fn term_frequency_weakens_common_names() {
        let model = Model::new(Params {
            tf_min_records: 10,
            ..Params::default()
        });
        let mut tf = TermFrequencies::default();
        for i in 0..100 {
            let family = if i < 50 { "Smith" } else { "Vanstone" };
            let family = if i >= 51 {
                format!("Other{i}")
            } else {
                family.to_owned()
            };
            tf.add(&rec("Ann", &family, "1970"));
        }
        let smith = rec("Ann", "Smith", "1970");
        let rare = rec("Ann", "Vanstone", "1970");
        let c = compare(&smith, &smith);
        let common = model.explain(&c, &smith, Some(&tf));
        let c = compare(&rare, &rare);
        let unusual = model.explain(&c, &rare, Some(&tf));
        let fam = |e: &Explanation| e.fields[Field::FamilyName as usize].clone();
        assert!(fam(&common).tf_adjusted && fam(&unusual).tf_adjusted);
        assert!(fam(&unusual).weight > fam(&common).weight + 5.0);
    }

    #[test]
    fn a_name_in_the_other_field_is_weighed_by_its_frequency_in_its_role() {
        let model = Model::new(Params {
            tf_min_records: 10,
            ..Params::default()
        });
        let mut tf = TermFrequencies::default();
        for i in 0..100 {
            let family = if i < 50 {
                "Smith".to_owned()
            } else {
                format!("Family{i}")
            };
            tf.add(&rec(&format!("Given{i}"), &family, "1970"));
        }
        tf.add(&rec("Xavier", "Vanstone", "1970"));
        let given_slot = |query: &Prepared, candidate: &Prepared| {
            let c = compare(query, candidate);
            assert!(c.swapped);
            model.explain(&c, query, Some(&tf)).fields[Field::GivenName as usize].clone()
        };
        // A family name typed as the given name: common as a family name.
        let common = given_slot(
            &rec("Smith", "Zzyzx", "1970"),
            &rec("Xavier", "Smith", "1970"),
        );
        let rare = given_slot(
            &rec("Vanstone", "Zzyzx", "1970"),
            &rec("Xavier", "Vanstone", "1970"),
        );
        assert!(common.tf_adjusted && rare.tf_adjusted);
        assert!(common.weight < 1.0, "{common:?}");
        assert!(rare.weight > common.weight + 5.0, "{rare:?}");
    }

    #[test]
    fn em_learns_from_unlabelled_synthetic_data() {
        use crate::empi::synth::{SynthConfig, generate};
        let data = generate(&SynthConfig {
            people: 1500,
            ..SynthConfig::default()
        });
        let records: Vec<Prepared> = data.iter().map(|l| prepare(&l.record)).collect();
        let config = TrainConfig {
            u_pairs: 200_000,
            ..TrainConfig::default()
        };
        let (params, report) = train(&records, &Params::default(), &config);
        assert!(report.em_pairs > 1000 && report.patterns > 10, "{report:?}");
        let dob = &params.fields[Field::BirthDate as usize];
        assert!(dob.m[0] > 0.7 && dob.u[0] < 0.01, "{:?} {:?}", dob.m, dob.u);
        // Labels are used only to check: pairwise F1 at the link threshold.
        let model = Model::new(params);
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for i in 0..records.len() {
            for j in i + 1..records.len() {
                let same = data[i].person == data[j].person;
                if !same
                    && data[i].record.birth_date != data[j].record.birth_date
                    && (i + j) % 7 != 0
                {
                    continue; // sample non-matches to keep the test fast
                }
                let linked = model.compare_score(&records[i], &records[j], None).1
                    >= model.params().thresholds.link;
                match (linked, same) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    _ => {}
                }
            }
        }
        let f1 = 2.0 * f64::from(tp) / f64::from(2 * tp + fp + fn_);
        assert!(f1 > 0.9, "tp {tp} fp {fp} fn {fn_}");
    }

    #[test]
    fn em_learns_only_from_pairs_of_two_sources() {
        use crate::empi::synth::{SynthConfig, generate};
        let data = generate(&SynthConfig {
            people: 600,
            ..SynthConfig::default()
        });
        let records: Vec<Prepared> = data.iter().map(|l| prepare(&l.record)).collect();
        let config = TrainConfig {
            u_pairs: 50_000,
            ..TrainConfig::default()
        };
        // One register: no pair to learn from, so every m stays hand-set
        // (made safe like any other).
        let one = vec![0u32; records.len()];
        let (params, report) = train_sourced(&records, &one, &Params::default(), &config);
        assert_eq!(report.em_pairs, 0, "{report:?}");
        for (got, hand) in params.fields.iter().zip(&Params::default().fields) {
            let mut hand = hand.clone();
            hand.u.clone_from(&got.u);
            hand.regularise();
            let off = got.m.iter().zip(&hand.m).map(|(a, b)| (a - b).abs());
            assert!(off.fold(0.0, f64::max) < 1e-12, "{}", got.field.as_str());
        }
        // Two registers: pairs across them teach EM.
        let two: Vec<u32> = (0..records.len() as u32).map(|i| i % 2).collect();
        let (_, report) = train_sourced(&records, &two, &Params::default(), &config);
        assert!(report.em_pairs > 100, "{report:?}");
        // Without the register rule, one source's pairs count.
        let dedup = Params {
            source_unique: false,
            ..Params::default()
        };
        let (_, report) = train_sourced(&records, &one, &dedup, &config);
        assert!(report.em_pairs > 100, "{report:?}");
    }
}
