//! Ranked search over every patient in little memory: the EMPI engine's
//! blocking, term frequencies and scores over packed records.
//!
//! [`SearchIndex`] keeps, per patient, only what ranking needs: the
//! standardised record packed (the sibling module `packed`; about 120 bytes
//! with the MRN map and the shared value pools), its blocking keys in the
//! engine's own [`BlockIndex`] (keys folded to 32 bits, single-record keys
//! inline; about 225 bytes per patient at a million), and the name counts of
//! [`TermFrequencies`] (16 bytes). A search blocks the
//! query exactly as [`hms_domain::empi::Engine::search`] does (same keys,
//! same per-key cap and candidate budget), unpacks each candidate and scores
//! it with the same [`Model`] and counts, so it finds the same patients with
//! the same scores; ties are broken by MRN. Display fields are not here: the
//! caller reads the hits' rows from the store.
//!
//! Sans-IO: no store, no clock, no logging.

use std::fmt;

use hms_domain::empi::model::TermFrequencies;
use hms_domain::empi::{BlockIndex, Model, Params, Prepared};

use super::packed::{Packed, same};

/// A ranked hit: the patient's MRN and score in bits.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The patient.
    pub mrn: String,
    /// Match score, bits (higher is closer).
    pub score: f64,
}

/// The search index (see the module doc).
pub struct SearchIndex {
    model: Model,
    blocks: BlockIndex,
    tf: TermFrequencies,
    packed: Packed,
}

impl fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchIndex")
            .field("patients", &self.packed.len())
            .field("blocking_keys", &self.blocks.len())
            .field("model", &self.model.params().version)
            .finish()
    }
}

impl Default for SearchIndex {
    fn default() -> Self {
        Self::new(Params::default())
    }
}

impl SearchIndex {
    /// An empty index scoring with `params` (its block cap included).
    pub fn new(params: Params) -> Self {
        SearchIndex {
            blocks: BlockIndex::new(params.block_cap),
            model: Model::new(params),
            tf: TermFrequencies::default(),
            packed: Packed::default(),
        }
    }

    /// Patients indexed.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// Whether no patient is indexed.
    pub fn is_empty(&self) -> bool {
        self.packed.len() == 0
    }

    /// Whether `mrn` is indexed.
    pub fn contains(&self, mrn: &str) -> bool {
        self.packed.slot(mrn).is_some()
    }

    /// Approximate heap bytes of the packed records and the MRN map (the
    /// blocking index and the name counts come on top).
    pub fn packed_bytes(&self) -> usize {
        self.packed.heap_bytes()
    }

    /// Files `p` as the record of `mrn`, replacing what it had; false when
    /// it was filed already with the same values (nothing changes).
    pub fn upsert(&mut self, mrn: &str, p: &Prepared) -> bool {
        match self.packed.slot(mrn) {
            Some(slot) => {
                let mut old = Prepared::default();
                self.packed.unpack_into(slot, &mut old);
                if same(&old, p) {
                    return false;
                }
                self.blocks.remove(slot, &old);
                self.tf.remove(&old);
                self.packed.replace(slot, p);
                self.blocks.insert(slot, p);
                self.tf.add(p);
            }
            None => {
                let slot = self.packed.insert(mrn, p);
                self.blocks.insert(slot, p);
                self.tf.add(p);
            }
        }
        true
    }

    /// Removes `mrn`; false when it was not indexed.
    pub fn remove(&mut self, mrn: &str) -> bool {
        let Some(slot) = self.packed.slot(mrn) else {
            return false;
        };
        let mut old = Prepared::default();
        self.packed.unpack_into(slot, &mut old);
        self.blocks.remove(slot, &old);
        self.tf.remove(&old);
        self.packed.remove(slot);
        true
    }

    /// The MRNs indexed whose slots `keep` does not mark (for a sweep that
    /// marked every patient it saw; see [`SearchIndex::slot`]).
    pub fn unmarked(&self, keep: &[bool]) -> Vec<String> {
        (0..self.packed.slots())
            .filter(|&s| !keep.get(s).copied().unwrap_or(false))
            .map(|s| s as u32)
            .filter(|&s| self.packed.is_live(s))
            .map(|s| self.packed.mrn(s).to_owned())
            .collect()
    }

    /// The slot number of `mrn` (stable until it is removed), for marking.
    pub fn slot(&self, mrn: &str) -> Option<usize> {
        self.packed.slot(mrn).map(|s| s as usize)
    }

    /// Patients resembling `query`, best first (ties by MRN), at most
    /// `limit`, whatever their score.
    pub fn rank(&self, query: &Prepared, limit: usize) -> Vec<Ranked> {
        let mut candidates = Vec::new();
        self.blocks.candidates(query, &mut candidates);
        let mut record = Prepared::default();
        let mut scored: Vec<(f64, u32)> = candidates
            .into_iter()
            .filter(|&s| self.packed.is_live(s))
            .map(|s| {
                self.packed.unpack_into(s, &mut record);
                let (_, score) = self.model.compare_score(query, &record, Some(&self.tf));
                (score, s)
            })
            .collect();
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.packed.mrn(a.1).cmp(self.packed.mrn(b.1)))
        });
        scored
            .into_iter()
            .take(limit)
            .map(|(score, s)| Ranked {
                mrn: self.packed.mrn(s).to_owned(),
                score,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use hms_domain::empi::synth::{SynthConfig, Vocabulary, generate};
    use hms_domain::empi::{Eid, Engine, Record, prepare};
    use hms_domain::phi::{Address, BirthDate, Mrn, PersonName};

    use super::*;

    /// Term frequencies count from 50 records, so that a few hundred
    /// patients exercise them.
    fn params() -> Params {
        Params {
            tf_min_records: 50,
            ..Params::default()
        }
    }

    /// `n` generated patients (with their duplicates' typos, nicknames and
    /// moves), each under its own MRN.
    fn patients(n: usize, vocabulary: Vocabulary) -> Vec<Record> {
        generate(&SynthConfig {
            people: n,
            vocabulary,
            ..SynthConfig::default()
        })
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut r = l.record;
            r.source = "local".into();
            r.local_id = Mrn::new(format!("M{i:04}"));
            r
        })
        .collect()
    }

    /// The look-ups a clerk types: family, first given name, birth date.
    fn clerk_query(r: &Record) -> Record {
        let mut q = Record::new("query", "query");
        q.family_name = r.family_name.clone();
        q.given_name = r
            .given_name
            .as_ref()
            .and_then(|g| g.expose().split(' ').next().map(PersonName::new));
        q.birth_date = r.birth_date.clone();
        q
    }

    fn engine_of(records: &[Record], params: Params) -> Engine {
        let mut e = Engine::new(params);
        for (i, r) in records.iter().enumerate() {
            e.restore(r, Eid(i as u64 + 1));
        }
        e
    }

    fn index_of(records: &[Record], params: Params) -> SearchIndex {
        let mut idx = SearchIndex::new(params);
        for r in records {
            assert!(idx.upsert(r.local_id.expose(), &prepare(r)));
        }
        idx
    }

    /// The engine's ranking with ties put in MRN order.
    fn engine_rank(e: &Engine, q: &Record, limit: usize) -> Vec<Ranked> {
        let mut hits: Vec<Ranked> = e
            .search(q, usize::MAX)
            .into_iter()
            .map(|h| Ranked {
                mrn: h.key.local_id.expose().to_owned(),
                score: h.score,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.mrn.cmp(&b.mrn)));
        hits.truncate(limit);
        hits
    }

    #[test]
    fn ranks_the_same_patients_with_the_same_scores_as_the_engine() {
        for vocabulary in [Vocabulary::Dense, Vocabulary::Population] {
            let records = patients(300, vocabulary);
            assert!(records.len() > 400, "{}", records.len());
            let engine = engine_of(&records, params());
            let idx = index_of(&records, params());
            assert_eq!(idx.len(), records.len());
            let (mut queries, mut hits) = (0, 0);
            for (i, r) in records.iter().enumerate().step_by(3) {
                // Full records and what a clerk types, every hit and the top ten.
                let q = if i % 2 == 0 {
                    r.clone()
                } else {
                    clerk_query(r)
                };
                let want = engine_rank(&engine, &q, usize::MAX);
                assert_eq!(idx.rank(&prepare(&q), usize::MAX), want, "query {i}");
                assert_eq!(idx.rank(&prepare(&q), 10), want[..want.len().min(10)]);
                assert!(want.iter().any(|h| h.mrn == r.local_id.expose()));
                queries += 1;
                hits += want.len();
            }
            // Blocking brought more than the patient itself.
            assert!(hits > 2 * queries, "{hits} hits for {queries} queries");
        }
    }

    #[test]
    fn changes_and_removals_rank_as_a_fresh_index_of_the_result() {
        let records = patients(250, Vocabulary::Population);
        let mut idx = index_of(&records, params());
        let mut now: HashMap<String, Record> = records
            .iter()
            .map(|r| (r.local_id.expose().to_owned(), r.clone()))
            .collect();
        // Every fifth patient takes the demographics of another (a changed
        // name, birth date and address), every seventh leaves, and a record
        // filed again unchanged changes nothing.
        for (i, r) in records.iter().enumerate() {
            let mrn = r.local_id.expose();
            if i % 7 == 3 {
                assert!(idx.remove(mrn));
                assert!(!idx.remove(mrn));
                now.remove(mrn);
            } else if i % 5 == 1 {
                let mut changed = records[(i * 31 + 7) % records.len()].clone();
                changed.local_id = r.local_id.clone();
                assert!(idx.upsert(mrn, &prepare(&changed)));
                now.insert(mrn.to_owned(), changed);
            } else {
                assert!(!idx.upsert(mrn, &prepare(r)));
            }
        }
        // Newcomers take the freed slots.
        let newcomers = patients(30, Vocabulary::Dense);
        for (i, r) in newcomers.iter().enumerate() {
            let mut r = r.clone();
            r.local_id = Mrn::new(format!("N{i:03}"));
            assert!(idx.upsert(r.local_id.expose(), &prepare(&r)));
            now.insert(r.local_id.expose().to_owned(), r);
        }
        let mut remaining: Vec<Record> = now.values().cloned().collect();
        remaining.sort_by(|a, b| a.local_id.expose().cmp(b.local_id.expose()));
        assert_eq!(idx.len(), remaining.len());
        let fresh = index_of(&remaining, params());
        let engine = engine_of(&remaining, params());
        for r in records.iter().chain(&newcomers) {
            let q = prepare(&clerk_query(r));
            let got = idx.rank(&q, usize::MAX);
            assert_eq!(got, fresh.rank(&q, usize::MAX));
            assert_eq!(got, engine_rank(&engine, &clerk_query(r), usize::MAX));
        }
        for r in &records {
            let mrn = r.local_id.expose();
            assert_eq!(idx.contains(mrn), now.contains_key(mrn));
        }
        // A removed patient is found by no look-up.
        let gone = records[3].local_id.expose();
        assert!(records.iter().all(|r| {
            idx.rank(&prepare(r), usize::MAX)
                .iter()
                .all(|h| h.mrn != gone)
        }));
    }

    fn born(given: &str, family: &str, dob: &str, postcode: &str) -> Record {
        let mut r = Record::new("local", format!("{given}-{family}"));
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        r.postal_code = Some(Address::new(postcode));
        r
    }

    #[test]
    fn a_key_shared_by_more_patients_than_the_cap_finds_none_of_them() {
        // Four patients share only a birth date with the query, one shares
        // its postal code and family name.
        let mut records: Vec<Record> = ["Xavier", "Yusuf", "Zane", "Quentin"]
            .iter()
            .map(|g| born(g, "Jones", "1970-03-04", "4000"))
            .collect();
        records.push(born("Walter", "Smith", "1981-01-01", "2600"));
        let mut q = Record::new("query", "query");
        q.family_name = Some(PersonName::new("Smith"));
        q.birth_date = Some(BirthDate::new("1970-03-04"));
        q.postal_code = Some(Address::new("2600"));
        let found = |cap: usize| -> Vec<String> {
            let p = Params {
                block_cap: cap,
                ..params()
            };
            let idx = index_of(&records, p.clone());
            let got = idx.rank(&prepare(&q), 10);
            assert_eq!(got, engine_rank(&engine_of(&records, p), &q, 10));
            let mut mrns: Vec<String> = got.into_iter().map(|h| h.mrn).collect();
            mrns.sort();
            mrns
        };
        assert_eq!(found(3), vec!["Walter-Smith"]);
        // Cap 4: the birth-date list fits the cap, not what is left of it
        // after the narrower postal-code key.
        assert_eq!(found(4), vec!["Walter-Smith"]);
        assert_eq!(found(5).len(), 5);
        // Removing two brings the list under the cap again.
        let p = Params {
            block_cap: 3,
            ..params()
        };
        let mut idx = index_of(&records, p);
        assert!(idx.remove("Xavier-Jones") && idx.remove("Yusuf-Jones"));
        let mut mrns: Vec<String> = idx
            .rank(&prepare(&q), 10)
            .into_iter()
            .map(|h| h.mrn)
            .collect();
        mrns.sort();
        assert_eq!(mrns, vec!["Quentin-Jones", "Walter-Smith", "Zane-Jones"]);
    }

    #[test]
    fn a_sweep_finds_the_patients_it_did_not_see() {
        let records = patients(40, Vocabulary::Dense);
        let idx = index_of(&records, params());
        let mut keep: Vec<bool> = Vec::new();
        for r in records.iter().skip(2) {
            let s = idx.slot(r.local_id.expose()).expect("indexed");
            if keep.len() <= s {
                keep.resize(s + 1, false);
            }
            keep[s] = true;
        }
        let mut missing = idx.unmarked(&keep);
        missing.sort();
        assert_eq!(missing, vec!["M0000", "M0001"]);
    }
}
