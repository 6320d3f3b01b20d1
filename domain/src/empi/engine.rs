//! The matching engine: an in-memory index of records and the enterprise
//! identities (EIDs) they belong to, updated one record at a time.
//!
//! `match_or_create` standardises a record, gathers candidates by blocking,
//! scores them, takes the best score per identity and decides. EIDs are
//! stable: a new record joins an existing EID or gets a fresh one; no
//! automatic step renumbers or merges existing identities. Merges and splits
//! happen only through the human-decision methods, and those decisions stay
//! in force whenever records are matched again. The engine does no IO; the
//! caller persists records, EIDs and [`Decisions`] and can rebuild it with
//! [`Engine::restore`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::blocking::{BlockIndex, CandidateStats};
use super::decision::{Decisions, Outcome, RecordKey, ReviewReason, Separation, decide};
use super::model::{Explanation, Model, Params, TermFrequencies};
use super::standardise::{Prepared, Record, prepare};

/// An enterprise identity: one person across sources. Not PHI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Eid(pub u64);

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{:010}", self.0)
    }
}

/// One candidate identity with the score of its best record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The identity.
    pub eid: Eid,
    /// Its best-scoring record.
    pub key: RecordKey,
    /// Score in bits.
    pub score: f64,
}

/// The answer to [`Engine::match_or_create`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchResult {
    /// The record's identity now.
    pub eid: Eid,
    /// How it was decided.
    pub decision: Outcome,
    /// Best candidate's score (bits), if there was a candidate.
    pub score: Option<f64>,
    /// Per-field explanation against the best candidate record.
    pub explanation: Option<Explanation>,
    /// Best identities, best first (at most five), for review tasks.
    pub candidates: Vec<Candidate>,
    /// For a re-matched record: its identity before.
    pub previous_eid: Option<Eid>,
    /// An identity that ceased to exist (its only record moved).
    pub retired: Option<Eid>,
    /// What blocking found.
    pub blocking: CandidateStats,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The record.
    pub key: RecordKey,
    /// Its identity.
    pub eid: Eid,
    /// Score in bits.
    pub score: f64,
    /// Why.
    pub explanation: Explanation,
}

/// What a human decision changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Nothing moved (already so).
    Unchanged,
    /// `retired`'s records joined `survivor`.
    Merged {
        /// The identity that remains (the older).
        survivor: Eid,
        /// The identity that ceased.
        retired: Eid,
    },
    /// Records left `from` for the new identity `to`.
    Split {
        /// The identity that kept the other records.
        from: Eid,
        /// The new identity.
        to: Eid,
        /// Records that moved.
        moved: Vec<RecordKey>,
    },
}

/// Why a human decision could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A record named is not in the index.
    #[error("record not indexed")]
    UnknownRecord,
    /// Linking would put together records a human separated.
    #[error("a human decision keeps records of these identities apart")]
    Separated,
    /// The records are human-linked (directly or through others); unlink
    /// those links first.
    #[error("the records are joined by human links")]
    HumanLinked,
    /// Joining would put together two records with different values of a
    /// trusted identifier (two people, unless one value is wrong: correct
    /// it at its source, and the record is matched again).
    #[error(
        "two records of these identities carry different trusted identifiers: correct the wrong one at its source"
    )]
    CannotLink,
}

#[derive(Clone)]
struct Slot {
    key: RecordKey,
    prepared: Prepared,
    eid: Eid,
}

/// Counters for monitoring (no PHI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Matches run.
    pub matches: u64,
    /// Matches where some blocking key was skipped for its length.
    pub capped_queries: u64,
    /// Candidate records scored, in total.
    pub candidates_scored: u64,
}

/// The matching engine.
pub struct Engine {
    model: Model,
    slots: Vec<Option<Slot>>,
    by_key: HashMap<RecordKey, u32>,
    index: BlockIndex,
    tf: TermFrequencies,
    members: HashMap<Eid, Vec<u32>>,
    next_eid: u64,
    decisions: Decisions,
    stats: EngineStats,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("records", &self.by_key.len())
            .field("identities", &self.members.len())
            .field("model", &self.model.params().version)
            .finish()
    }
}

struct Scored {
    /// (eid, best score, best slot) per identity, best first.
    per_eid: Vec<(Eid, f64, u32)>,
    /// A trusted-identifier agreement: identity and slot.
    trusted: Option<(Eid, u32)>,
    stats: CandidateStats,
}

impl Engine {
    /// An empty engine.
    pub fn new(params: Params) -> Self {
        Self::with_decisions(params, Decisions::new())
    }

    /// An empty engine that honours stored human decisions.
    pub fn with_decisions(params: Params, decisions: Decisions) -> Self {
        let cap = params.block_cap;
        Engine {
            model: Model::new(params),
            slots: vec![],
            by_key: HashMap::new(),
            index: BlockIndex::new(cap),
            tf: TermFrequencies::default(),
            members: HashMap::new(),
            next_eid: 1,
            decisions,
            stats: EngineStats::default(),
        }
    }

    /// The model in use.
    pub fn params(&self) -> &Params {
        self.model.params()
    }

    /// The human decisions in force.
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// The EID the next new identity will get (for callers that create one
    /// themselves with [`Engine::restore`], e.g. when matching is degraded).
    pub fn next_eid(&self) -> u64 {
        self.next_eid
    }

    /// Makes new identities number from `next` on (at least): for a caller
    /// whose store remembers EIDs no indexed record holds any more (retired
    /// by a merge or a move), so that none is ever handed out twice.
    pub fn reserve_eids(&mut self, next: u64) {
        self.next_eid = self.next_eid.max(next);
    }

    /// Monitoring counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Records indexed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no record is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Identities in use.
    pub fn identities(&self) -> usize {
        self.members.len()
    }

    /// A record's identity.
    pub fn eid_of(&self, key: &RecordKey) -> Option<Eid> {
        self.by_key
            .get(key)
            .and_then(|&i| self.slot(i))
            .map(|s| s.eid)
    }

    /// The records of an identity, sorted.
    pub fn members(&self, eid: Eid) -> Vec<RecordKey> {
        let mut out: Vec<RecordKey> = self
            .members
            .get(&eid)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.slot(i).map(|s| s.key.clone()))
            .collect();
        out.sort();
        out
    }

    /// Every identity with its records (sorted), for audits and tests.
    pub fn partition(&self) -> Vec<(Eid, Vec<RecordKey>)> {
        let mut out: Vec<(Eid, Vec<RecordKey>)> =
            self.members.keys().map(|&e| (e, self.members(e))).collect();
        out.sort();
        out
    }

    fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize).and_then(Option::as_ref)
    }

    fn new_eid(&mut self) -> Eid {
        let e = Eid(self.next_eid);
        self.next_eid += 1;
        e
    }

    /// Scores the candidates of `p`, skipping `skip` and identities a human
    /// separated from `key`.
    fn score(&self, key: Option<&RecordKey>, p: &Prepared, skip: Option<u32>) -> Scored {
        let mut cands = Vec::new();
        let stats = self.index.candidates(p, &mut cands);
        let excluded: BTreeSet<Eid> = key
            .map(|k| {
                self.decisions
                    .apart_from(k)
                    .filter_map(|o| self.eid_of(o))
                    .collect()
            })
            .unwrap_or_default();
        let mut per_eid: HashMap<Eid, (f64, u32)> = HashMap::new();
        let mut trusted: Option<(Eid, u32, f64)> = None;
        for &i in &cands {
            if Some(i) == skip {
                continue;
            }
            let Some(slot) = self.slot(i) else { continue };
            if excluded.contains(&slot.eid) {
                continue;
            }
            let (_, s) = self.model.compare_score(p, &slot.prepared, Some(&self.tf));
            let e = per_eid.entry(slot.eid).or_insert((f64::NEG_INFINITY, i));
            if s > e.0 {
                *e = (s, i);
            }
            if self.model.trusted_identifier_agrees(p, &slot.prepared)
                && trusted.is_none_or(|(_, _, t)| s > t)
            {
                trusted = Some((slot.eid, i, s));
            }
        }
        let mut per_eid: Vec<(Eid, f64, u32)> =
            per_eid.into_iter().map(|(e, (s, i))| (e, s, i)).collect();
        per_eid.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Scored {
            per_eid,
            trusted: trusted.map(|(e, i, _)| (e, i)),
            stats,
        }
    }

    /// The identity a human link pins `key` to, if any (the oldest such).
    fn human_link_target(&self, key: &RecordKey) -> Option<Eid> {
        self.decisions
            .links_of(key)
            .filter(|k| *k != key)
            .filter_map(|k| self.eid_of(k))
            .min()
    }

    fn result(
        &mut self,
        p: &Prepared,
        scored: &Scored,
        eid: Eid,
        decision: Outcome,
    ) -> MatchResult {
        self.stats.matches += 1;
        self.stats.candidates_scored += scored.stats.candidates as u64;
        if scored.stats.capped_keys > 0 {
            self.stats.capped_queries += 1;
        }
        let best = scored.per_eid.first();
        let explanation = best.and_then(|&(_, _, i)| {
            let slot = self.slot(i)?;
            let c = super::compare::compare(p, &slot.prepared);
            Some(self.model.explain(&c, p, Some(&self.tf)))
        });
        let candidates = scored
            .per_eid
            .iter()
            .take(5)
            .filter_map(|&(eid, score, i)| {
                Some(Candidate {
                    eid,
                    key: self.slot(i)?.key.clone(),
                    score,
                })
            })
            .collect();
        MatchResult {
            eid,
            decision,
            score: best.map(|b| b.1),
            explanation,
            candidates,
            previous_eid: None,
            retired: None,
            blocking: scored.stats,
        }
    }

    /// Whether two records carry different values of one trusted
    /// identifier and no human linked them: two people, whoever asks.
    fn identifiers_conflict(&self, a: (&RecordKey, &Prepared), b: (&RecordKey, &Prepared)) -> bool {
        a.0 != b.0
            && (self.model.trusted_identifier_conflicts(a.1, b.1)
                || self.model.trusted_identifier_conflicts(b.1, a.1))
            && !self.decisions.linked(a.0, b.0)
    }

    /// Whether two records may never share an identity unless a human
    /// linked them: two local ids of one source (the source's own register
    /// says they are two people), or different values of one trusted
    /// identifier.
    fn constrained(&self, a: (&RecordKey, &Prepared), b: (&RecordKey, &Prepared)) -> bool {
        if a.0 == b.0 || self.decisions.linked(a.0, b.0) {
            return false;
        }
        (a.0.source == b.0.source && self.params().source_unique) || self.identifiers_conflict(a, b)
    }

    /// Whether `key` (standardised as `p`) may not join `eid`: some member
    /// is constrained against it (checked against every member, so no chain
    /// of other records can join two constrained records).
    fn conflicts(&self, key: &RecordKey, p: &Prepared, eid: Eid) -> bool {
        self.members.get(&eid).into_iter().flatten().any(|&i| {
            self.slot(i)
                .is_some_and(|s| self.constrained((key, p), (&s.key, &s.prepared)))
        })
    }

    /// Whether two identities hold a constrained pair of records (they may
    /// not merge automatically).
    fn identities_conflict(&self, a: Eid, b: Eid) -> bool {
        self.members.get(&a).into_iter().flatten().any(|&i| {
            self.slot(i)
                .is_some_and(|s| self.conflicts(&s.key, &s.prepared, b))
        })
    }

    /// Chooses an identity for `p` from scores, decisions and cannot-link
    /// constraints: `None` means a new identity. A record that resembles an
    /// identity it may not join (at the link threshold, and at least as
    /// much, within the margin, as the best one it may join), or that links
    /// to two identities that may not merge, goes to review.
    fn choose(&self, key: &RecordKey, p: &Prepared, scored: &Scored) -> (Option<Eid>, Outcome) {
        if let Some(e) = self.human_link_target(key) {
            return (Some(e), Outcome::HumanLink);
        }
        let cannot = Outcome::Review(ReviewReason::CannotLink);
        if let Some((e, _)) = scored.trusted {
            return if self.conflicts(key, p, e) {
                (None, cannot)
            } else {
                (Some(e), Outcome::Deterministic)
            };
        }
        let t = self.params().thresholds;
        let mut allowed: Vec<(Eid, f64)> = Vec::with_capacity(2);
        let mut blocked: Option<f64> = None;
        for &(e, s, _) in &scored.per_eid {
            if s < t.link && allowed.len() >= 2 {
                break;
            }
            if self.conflicts(key, p, e) {
                if s >= t.link && blocked.is_none() {
                    blocked = Some(s);
                }
                continue;
            }
            if allowed.len() < 2 {
                allowed.push((e, s));
            }
        }
        let best = allowed.first().copied();
        let second = allowed.get(1).copied();
        // An identity it may not join scores as well as (or within the
        // margin of) the best one it may: a human decides.
        if let Some(b) = blocked
            && best.is_none_or(|(_, a)| b > a - t.margin)
        {
            return (None, cannot);
        }
        match decide(&t, best.map(|b| b.1), second.map(|b| b.1)) {
            Outcome::AutoLink => {
                let best = best.map(|b| b.0);
                match (best, second) {
                    (Some(b), Some((o, s))) if s >= t.link && self.identities_conflict(b, o) => {
                        (None, cannot)
                    }
                    _ => (best, Outcome::AutoLink),
                }
            }
            other => (None, other),
        }
    }

    fn place(&mut self, key: RecordKey, p: Prepared, eid: Eid) -> u32 {
        let i = self.slots.len() as u32;
        self.index.insert(i, &p);
        self.tf.add(&p);
        self.members.entry(eid).or_default().push(i);
        self.by_key.insert(key.clone(), i);
        self.slots.push(Some(Slot {
            key,
            prepared: p,
            eid,
        }));
        i
    }

    fn unplace(&mut self, i: u32) -> Option<Slot> {
        let slot = self.slots.get_mut(i as usize)?.take()?;
        self.index.remove(i, &slot.prepared);
        self.tf.remove(&slot.prepared);
        if let Some(m) = self.members.get_mut(&slot.eid) {
            m.retain(|&x| x != i);
            if m.is_empty() {
                self.members.remove(&slot.eid);
            }
        }
        self.by_key.remove(&slot.key);
        Some(slot)
    }

    fn move_to(&mut self, i: u32, to: Eid) {
        let Some(Some(slot)) = self.slots.get_mut(i as usize) else {
            return;
        };
        let from = std::mem::replace(&mut slot.eid, to);
        if let Some(m) = self.members.get_mut(&from) {
            m.retain(|&x| x != i);
            if m.is_empty() {
                self.members.remove(&from);
            }
        }
        self.members.entry(to).or_default().push(i);
    }

    /// Matches a record and files it: joins an existing identity or creates
    /// one. A record already indexed under the same (source, local id) is
    /// re-matched with its new demographics (see [`Engine::rematch`]).
    pub fn match_or_create(&mut self, record: &Record) -> MatchResult {
        let key = RecordKey {
            source: record.source.clone(),
            local_id: record.local_id.clone(),
        };
        if self.by_key.contains_key(&key) {
            return self.rematch(record);
        }
        let p = prepare(record);
        let scored = self.score(Some(&key), &p, None);
        let (target, decision) = self.choose(&key, &p, &scored);
        let eid = target.unwrap_or_else(|| self.new_eid());
        let result = self.result(&p, &scored, eid, decision);
        self.place(key, p, eid);
        result
    }

    /// Re-matches an indexed record after its demographics changed. Human
    /// links and separations still hold. The record stays in its identity
    /// while it still scores at least the review threshold against another
    /// member, or is the identity's only record; otherwise it moves to the
    /// identity it now links to, or to a new one. A record not yet indexed is
    /// simply matched.
    pub fn rematch(&mut self, record: &Record) -> MatchResult {
        let key = RecordKey {
            source: record.source.clone(),
            local_id: record.local_id.clone(),
        };
        let Some(&old) = self.by_key.get(&key) else {
            return self.match_or_create(record);
        };
        let Some(old_slot) = self.unplace(old) else {
            return self.match_or_create(record);
        };
        let current = old_slot.eid;
        let p = prepare(record);
        let scored = self.score(Some(&key), &p, None);
        let others = self.members.get(&current).is_some_and(|m| !m.is_empty());
        // A record whose trusted identifier now differs from another
        // member's does not stay in its identity. (Records of its own source
        // beside it were put there by a human merge, which stands.)
        let own_conflict = self.members.get(&current).into_iter().flatten().any(|&i| {
            self.slot(i)
                .is_some_and(|s| self.identifiers_conflict((&key, &p), (&s.key, &s.prepared)))
        });
        let own = scored
            .per_eid
            .iter()
            .find(|e| e.0 == current)
            .map(|e| e.1)
            .filter(|_| !own_conflict);
        let review = self.params().thresholds.review;
        let (target, decision) = self.choose(&key, &p, &scored);
        let (eid, decision) = match target {
            Some(t) if decision == Outcome::HumanLink => (t, decision),
            Some(t) if t == current => (t, decision),
            Some(t) if !others || own.is_none_or(|s| s < review) => (t, decision),
            _ if others && own.is_none_or(|s| s < review) => (self.new_eid(), decision),
            _ => (current, if others { Outcome::AutoLink } else { decision }),
        };
        let mut result = self.result(&p, &scored, eid, decision);
        result.previous_eid = Some(current);
        if eid != current && !others {
            result.retired = Some(current);
        }
        self.place(key, p, eid);
        result
    }

    /// Files a record under a known identity without matching (rebuilding the
    /// engine from the caller's store). Later new identities number above
    /// every restored one.
    pub fn restore(&mut self, record: &Record, eid: Eid) {
        let key = RecordKey {
            source: record.source.clone(),
            local_id: record.local_id.clone(),
        };
        if let Some(&i) = self.by_key.get(&key) {
            self.unplace(i);
        }
        self.next_eid = self.next_eid.max(eid.0 + 1);
        self.place(key, prepare(record), eid);
    }

    /// Removes a record (e.g. merged away at its source). Its identity ends
    /// when it was the only record.
    pub fn remove(&mut self, key: &RecordKey) -> Option<Eid> {
        let &i = self.by_key.get(key)?;
        self.unplace(i).map(|s| s.eid)
    }

    /// Ranked records resembling `query` (its source and local id are
    /// ignored), best first, with explanations. Read-only.
    pub fn search(&self, query: &Record, limit: usize) -> Vec<SearchHit> {
        let p = prepare(query);
        let mut cands = Vec::new();
        self.index.candidates(&p, &mut cands);
        let mut scored: Vec<(f64, u32)> = cands
            .iter()
            .filter_map(|&i| {
                let slot = self.slot(i)?;
                Some((
                    self.model
                        .compare_score(&p, &slot.prepared, Some(&self.tf))
                        .1,
                    i,
                ))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(limit)
            .filter_map(|(score, i)| {
                let slot = self.slot(i)?;
                let c = super::compare::compare(&p, &slot.prepared);
                Some(SearchHit {
                    key: slot.key.clone(),
                    eid: slot.eid,
                    score,
                    explanation: self.model.explain(&c, &p, Some(&self.tf)),
                })
            })
            .collect()
    }

    /// Scores two indexed records against each other.
    pub fn explain_pair(&self, a: &RecordKey, b: &RecordKey) -> Result<Explanation, EngineError> {
        let sa = self
            .by_key
            .get(a)
            .and_then(|&i| self.slot(i))
            .ok_or(EngineError::UnknownRecord)?;
        let sb = self
            .by_key
            .get(b)
            .and_then(|&i| self.slot(i))
            .ok_or(EngineError::UnknownRecord)?;
        let c = super::compare::compare(&sa.prepared, &sb.prepared);
        Ok(self.model.explain(&c, &sa.prepared, Some(&self.tf)))
    }

    fn indexed(&self, key: &RecordKey) -> Result<(u32, Eid), EngineError> {
        let &i = self.by_key.get(key).ok_or(EngineError::UnknownRecord)?;
        let eid = self.slot(i).ok_or(EngineError::UnknownRecord)?.eid;
        Ok((i, eid))
    }

    /// A human says `a` and `b` are the same person: their identities merge
    /// (the older EID survives) and the link is remembered. Refused when a
    /// human separated two of their records, or when two of their records
    /// carry different values of a trusted identifier. Records of one source
    /// may be joined this way (the source holds a duplicate).
    pub fn link(&mut self, a: &RecordKey, b: &RecordKey) -> Result<Change, EngineError> {
        let (_, ea) = self.indexed(a)?;
        let (_, eb) = self.indexed(b)?;
        if ea == eb {
            self.decisions.link(a, b);
            return Ok(Change::Unchanged);
        }
        let ka = self.members(ea);
        let kb = self.members(eb);
        for x in &ka {
            for y in &kb {
                if (x, y) != (a, b) && (x, y) != (b, a) && self.decisions.separated(x, y).is_some()
                {
                    return Err(EngineError::Separated);
                }
            }
        }
        for x in &ka {
            for y in &kb {
                let pair = |k: &RecordKey| {
                    self.by_key
                        .get(k)
                        .and_then(|&i| self.slot(i))
                        .map(|s| &s.prepared)
                };
                if let (Some(px), Some(py)) = (pair(x), pair(y))
                    && self.identifiers_conflict((x, px), (y, py))
                {
                    return Err(EngineError::CannotLink);
                }
            }
        }
        self.decisions.link(a, b);
        let (survivor, retired) = (ea.min(eb), ea.max(eb));
        for i in self.members.get(&retired).cloned().unwrap_or_default() {
            self.move_to(i, survivor);
        }
        Ok(Change::Merged { survivor, retired })
    }

    /// Merges two identities on a human's word (links a record of each).
    pub fn merge(&mut self, survivor: Eid, other: Eid) -> Result<Change, EngineError> {
        let a = self
            .members(survivor)
            .into_iter()
            .next()
            .ok_or(EngineError::UnknownRecord)?;
        let b = self
            .members(other)
            .into_iter()
            .next()
            .ok_or(EngineError::UnknownRecord)?;
        self.link(&a, &b)
    }

    /// A human says `a` and `b` are different people (`Unlink` for a link
    /// being undone, `NeverLink` in advance). If they share an identity, `b`
    /// and the records a human tied to it move to a new identity, as do
    /// records that no longer reach the review threshold with `a`'s side.
    pub fn separate(
        &mut self,
        a: &RecordKey,
        b: &RecordKey,
        how: Separation,
    ) -> Result<Change, EngineError> {
        let (_, ea) = self.indexed(a)?;
        let (_, eb) = self.indexed(b)?;
        if ea == eb && self.human_component(a).contains(b) && !self.decisions.linked(a, b) {
            return Err(EngineError::HumanLinked);
        }
        self.decisions.separate(a, b, how);
        if ea != eb {
            return Ok(Change::Unchanged);
        }
        let moving = self.human_component(b);
        let to = self.new_eid();
        let mut moved = vec![];
        for k in &moving {
            if let Some(&i) = self.by_key.get(k)
                && self.slot(i).is_some_and(|s| s.eid == ea)
            {
                self.move_to(i, to);
                moved.push(k.clone());
            }
        }
        // Remaining members follow whichever side they resemble more, unless
        // a human tied them to `a`.
        let tied_to_a = self.human_component(a);
        let review = self.params().thresholds.review;
        for k in self.members(ea) {
            if tied_to_a.contains(&k) {
                continue;
            }
            let best = |side: Eid, this: &Self| {
                this.members(side)
                    .iter()
                    .filter(|o| **o != k)
                    .filter_map(|o| this.explain_pair(&k, o).ok().map(|e| e.total))
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            let (stay, go) = (best(ea, self), best(to, self));
            let apart_from_to = self
                .members(to)
                .iter()
                .any(|o| self.decisions.separated(&k, o).is_some());
            if go > stay
                && go >= review
                && !apart_from_to
                && let Some(&i) = self.by_key.get(&k)
            {
                self.move_to(i, to);
                moved.push(k);
            }
        }
        moved.sort();
        Ok(Change::Split {
            from: ea,
            to,
            moved,
        })
    }

    /// Records joined to `k` by human links, transitively (including `k`).
    fn human_component(&self, k: &RecordKey) -> BTreeSet<RecordKey> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![k.clone()];
        while let Some(x) = stack.pop() {
            if seen.insert(x.clone()) {
                stack.extend(self.decisions.links_of(&x).cloned());
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Sex};

    fn rec(source: &str, id: &str, given: &str, family: &str, dob: &str, postcode: &str) -> Record {
        let mut r = Record::new(source, id);
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = Some(BirthDate::new(dob));
        r.postal_code = Some(Address::new(postcode));
        r.address_line = Some(Address::new("12 Long Street"));
        r.city = Some(Address::new("Canberra"));
        r
    }

    fn key(source: &str, id: &str) -> RecordKey {
        RecordKey::new(source, id)
    }

    #[test]
    fn reserved_eids_are_never_handed_out() {
        let mut e = Engine::new(Params::default());
        e.reserve_eids(40);
        let mut r = Record::new("h1", "1");
        r.family_name = Some(PersonName::new("Quist"));
        assert_eq!(e.match_or_create(&r).eid, Eid(40));
        e.reserve_eids(10);
        assert_eq!(e.next_eid(), 41);
    }

    #[test]
    fn decisions_table() {
        let mut e = Engine::new(Params {
            trusted_authorities: vec!["NATIONAL".to_owned()],
            ..Params::default()
        });
        let first = e.match_or_create(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!((first.eid, first.decision), (Eid(1), Outcome::NewIdentity));
        let mut with_id = rec("h1", "2", "Maria", "Garcia", "1980-05-06", "4000");
        with_id.identifiers.push(Identifier {
            id: Mrn::new("123-45-6789"),
            authority: "national".into(),
            kind: "NI".into(),
        });
        e.match_or_create(&with_id);

        let cases: Vec<(Record, &str, Option<Eid>)> = vec![
            (
                rec("h2", "a", "Jonathon", "Smith", "1970-03-04", "2600"),
                "auto_link",
                Some(Eid(1)),
            ),
            (
                rec("h3", "b", "Jon", "Smith", "1970-04-03", "2601"),
                "auto_link",
                Some(Eid(1)),
            ),
            (
                {
                    let mut r = rec("h4", "c", "Jon", "Smyth", "1970-03-05", "9999");
                    (r.address_line, r.city) = (None, None);
                    r
                },
                "review",
                None,
            ),
            (
                {
                    // Same postcode only: nothing close.
                    let mut r = rec("h5", "d", "Xavier", "Nguyen", "1990-01-01", "2600");
                    (r.address_line, r.city) = (None, None);
                    r
                },
                "new_identity",
                None,
            ),
            (
                {
                    let mut r = rec("h6", "e", "M", "Garcia-Lopez", "1980", "9999");
                    r.identifiers.push(Identifier {
                        id: Mrn::new("123456789"),
                        authority: "NATIONAL".into(),
                        kind: String::new(),
                    });
                    r
                },
                "deterministic",
                Some(Eid(2)),
            ),
        ];
        for (r, want, eid) in cases {
            let got = e.match_or_create(&r);
            assert_eq!(got.decision.as_str(), want, "{:?}", got.explanation);
            if let Some(eid) = eid {
                assert_eq!(got.eid, eid);
            } else {
                assert!(got.eid.0 > 2);
            }
        }
    }

    fn national(mut r: Record, id: &str) -> Record {
        r.identifiers.push(Identifier {
            id: Mrn::new(id),
            authority: "national".into(),
            kind: "NI".into(),
        });
        r
    }

    fn trusting() -> Engine {
        Engine::new(Params {
            trusted_authorities: vec!["NATIONAL".to_owned()],
            ..Params::default()
        })
    }

    const CANNOT: Outcome = Outcome::Review(ReviewReason::CannotLink);

    #[test]
    fn two_records_of_one_source_never_share_an_identity_automatically() {
        let mut e = Engine::new(Params::default());
        let first = e.match_or_create(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        let second = e.match_or_create(&rec("h1", "2", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!(second.decision, CANNOT);
        assert_ne!(second.eid, first.eid);
        assert!(
            second.score.is_some_and(|s| s >= 10.0),
            "{:?}",
            second.score
        );
        assert_eq!(
            second.candidates[0].eid, first.eid,
            "the review names the identity"
        );
        // Another source's record resembles both: it may join either, but
        // not the two together, so it is a review too.
        let third = e.match_or_create(&rec("h2", "9", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert!(
            matches!(third.decision, Outcome::Review(_)),
            "{:?}",
            third.decision
        );
        assert_eq!(e.identities(), 3);
        // A human may still say the source holds one person twice.
        assert!(matches!(
            e.link(&key("h1", "1"), &key("h1", "2")),
            Ok(Change::Merged { .. })
        ));
        // A deduplication data set can switch the rule off.
        let mut dedup = Engine::new(Params {
            source_unique: false,
            ..Params::default()
        });
        let a = dedup.match_or_create(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        let b = dedup.match_or_create(&rec("h1", "2", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!((b.decision, b.eid), (Outcome::AutoLink, a.eid));
    }

    #[test]
    fn no_chain_of_other_records_joins_two_trusted_identifiers() {
        let mut e = trusting();
        let jon = || rec("a", "1", "Jonathan", "Smith", "1970-03-04", "2600");
        let first = e.match_or_create(&national(jon(), "123-45-6789"));
        // The other source has no national id: it links on demographics.
        let mut b = jon();
        b.source = "b".into();
        assert_eq!(e.match_or_create(&b).eid, first.eid);
        // A third source's record with another national id resembles the
        // bridge record as much: it may not join.
        let mut c = national(jon(), "987-65-4321");
        c.source = "c".into();
        let third = e.match_or_create(&c);
        assert_eq!(third.decision, CANNOT);
        assert_ne!(third.eid, first.eid);
        assert_eq!(e.members(first.eid), vec![key("a", "1"), key("b", "1")]);
        // The same id in a fourth source still links deterministically.
        let mut d = national(rec("d", "1", "J", "Smith", "1970", "9999"), "123456789");
        d.address_line = None;
        let fourth = e.match_or_create(&d);
        assert_eq!(
            (fourth.decision, fourth.eid),
            (Outcome::Deterministic, first.eid)
        );
        // A human merge that would join the two ids, directly or through
        // other records, is refused: one of the ids is wrong at its source.
        for (x, y) in [
            (key("b", "1"), key("c", "1")),
            (key("a", "1"), key("c", "1")),
        ] {
            assert_eq!(e.link(&x, &y), Err(EngineError::CannotLink));
        }
        assert_eq!(e.merge(first.eid, third.eid), Err(EngineError::CannotLink));
        assert_eq!(e.eid_of(&key("c", "1")), Some(third.eid));
        assert_eq!(e.members(first.eid).len(), 3);
    }

    #[test]
    fn a_record_whose_trusted_identifier_changes_leaves_an_identity_it_conflicts_with() {
        let mut e = trusting();
        let first = e.match_or_create(&national(
            rec("a", "1", "Maria", "Garcia", "1980-05-06", "4000"),
            "123456789",
        ));
        let b = rec("b", "1", "Maria", "Garcia", "1980-05-06", "4000");
        assert_eq!(e.match_or_create(&b).eid, first.eid);
        let moved = e.rematch(&national(b, "987654321"));
        assert_ne!(moved.eid, first.eid);
        assert_eq!(moved.previous_eid, Some(first.eid));
        assert_eq!(e.members(first.eid), vec![key("a", "1")]);
    }

    fn person(source: &str, given: &str, family: &str, dob: Option<&str>, sex: Sex) -> Record {
        let mut r = Record::new(source, "1");
        r.given_name = Some(PersonName::new(given));
        r.family_name = Some(PersonName::new(family));
        r.birth_date = dob.map(BirthDate::new);
        r.sex = Some(sex);
        r.address_line = Some(Address::new("5112 145th Street"));
        r.city = Some(Address::new("Anytown"));
        r.postal_code = Some(Address::new("98101"));
        r.phone = Some(crate::phi::Phone::new("206 555 0134"));
        r
    }

    #[test]
    fn a_household_is_not_one_person() {
        use crate::empi::model::Distinct;
        let cases: Vec<(Record, Option<Distinct>)> = vec![
            // A twin: same family, birth date, address and phone.
            (
                person("b", "Diana", "Kofron", Some("1994-05-06"), Sex::Female),
                Some(Distinct::GivenNameInOneFamily),
            ),
            // A brother three years older: the shared phone and address do
            // not outweigh another name, birth date and sex.
            (
                {
                    let mut r = person("b", "Peter", "Kofron", Some("1991-02-11"), Sex::Male);
                    r.identifiers.push(Identifier {
                        id: Mrn::new("P-77"),
                        authority: "insurer".into(),
                        kind: "MB".into(),
                    });
                    r
                },
                Some(Distinct::GivenNameBirthDateAndSex),
            ),
            // A twin brother with a similar name.
            (
                person("b", "Anton", "Kofron", Some("1994-05-06"), Sex::Male),
                Some(Distinct::GivenNameInOneFamily),
            ),
            // Same address and family name, no birth date, no given name.
            (
                {
                    let mut r = person("b", "x", "Kofron", None, Sex::Female);
                    r.given_name = None;
                    r
                },
                Some(Distinct::HouseholdOnly),
            ),
            // The same name elsewhere with nothing else to go on.
            (
                {
                    let mut r = person("b", "Anna", "Kofron", None, Sex::Female);
                    (r.address_line, r.postal_code, r.phone) = (None, None, None);
                    r
                },
                Some(Distinct::NamesOnly),
            ),
            // The person herself, one letter off in the name: links.
            (
                person("b", "Ana", "Kofron", Some("1994-05-06"), Sex::Female),
                None,
            ),
        ];
        for (other, want) in cases {
            let mut e = Engine::new(Params::default());
            let mut anna = person("a", "Anna", "Kofron", Some("1994-05-06"), Sex::Female);
            // The household's shared insurance membership (an identifier
            // that is not trusted) adds evidence too.
            anna.identifiers.push(Identifier {
                id: Mrn::new("P-77"),
                authority: "insurer".into(),
                kind: "MB".into(),
            });
            let anna = e.match_or_create(&anna);
            let got = e.match_or_create(&other);
            let explained = e
                .explain_pair(&key("a", "1"), &key("b", "1"))
                .expect("both indexed");
            assert_eq!(explained.distinct, want, "{explained:?}");
            if want.is_some() {
                assert_ne!(got.eid, anna.eid, "{explained:?}");
                assert!(explained.total < 10.0, "{explained:?}");
            } else {
                assert_eq!((got.eid, got.decision), (anna.eid, Outcome::AutoLink));
            }
        }
        // Without the household rules (data without households), the twin
        // would link on her shared family, birth date, address and phone.
        let mut e = Engine::new(Params {
            household_rules: false,
            ..Params::default()
        });
        let anna = e.match_or_create(&person(
            "a",
            "Anna",
            "Kofron",
            Some("1994-05-06"),
            Sex::Female,
        ));
        let diana = e.match_or_create(&person(
            "b",
            "Diana",
            "Kofron",
            Some("1994-05-06"),
            Sex::Female,
        ));
        assert_eq!((diana.eid, diana.decision), (anna.eid, Outcome::AutoLink));
    }

    #[test]
    fn names_alone_link_only_when_rare_enough_among_the_indexed() {
        let mut e = Engine::new(Params::default());
        // 1,500 people in one register; ten are called Jasper and ten
        // Pembroke, none both.
        for i in 0..1500u32 {
            let (given, family) = match i {
                0..10 => ("Jasper".to_owned(), format!("Family{i}")),
                10..20 => (format!("Given{i}"), "Pembroke".to_owned()),
                _ => (format!("Given{}", i % 97), format!("Family{}", i / 97)),
            };
            let mut r = person("reg", &given, &family, Some("1960-01-01"), Sex::Male);
            r.local_id = Mrn::new(format!("r{i}"));
            e.restore(&r, Eid(u64::from(i) + 1));
        }
        let bare = |source: &str, given: &str, family: &str| {
            let mut r = person(source, given, family, None, Sex::Male);
            (r.address_line, r.city, r.postal_code, r.phone) = (None, None, None, None);
            r
        };
        // A name no one else has: two sources' records link on it alone.
        let first = e.match_or_create(&bare("a", "Zebediah", "Quackenbush"));
        let second = e.match_or_create(&bare("b", "Zebediah", "Quackenbush"));
        assert_eq!(
            (second.decision, second.eid),
            (Outcome::AutoLink, first.eid)
        );
        // Names of one person in a hundred and fifty each add up to more
        // than the link threshold, but not to more than the index's size in
        // bits and the margin: a review, not a link.
        let first = e.match_or_create(&bare("c", "Jasper", "Pembroke"));
        let second = e.match_or_create(&bare("d", "Jasper", "Pembroke"));
        let explained = e
            .explain_pair(&key("c", "1"), &key("d", "1"))
            .expect("indexed");
        let names: f64 = explained.fields[..2].iter().map(|f| f.weight).sum();
        assert!(names + 1.0 >= 10.0, "{explained:?}");
        assert_eq!(
            explained.distinct,
            Some(crate::empi::model::Distinct::NamesOnly)
        );
        assert_eq!(second.decision, Outcome::Review(ReviewReason::Threshold));
        assert_ne!(second.eid, first.eid);
    }

    #[test]
    fn margin_rule_asks_for_review() {
        let mut e = Engine::new(Params::default());
        e.match_or_create(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        // A twin at the same address with a near-identical name: two identities.
        e.match_or_create(&rec("h1", "2", "Jonathon", "Smith", "1970-03-04", "2600"));
        e.link(&key("h1", "1"), &key("h1", "2")).expect("link");
        e.separate(&key("h1", "1"), &key("h1", "2"), Separation::Unlink)
            .expect("unlink");
        let r = e.match_or_create(&rec("h2", "x", "Jonathen", "Smith", "1970-03-04", "2600"));
        assert_eq!(
            r.decision,
            Outcome::Review(super::super::decision::ReviewReason::Margin)
        );
        assert_eq!(r.candidates.len(), 2);
    }

    #[test]
    fn human_decisions_stick() {
        let mut e = Engine::new(Params::default());
        let a = e.match_or_create(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        let b = e.match_or_create(&rec("h2", "7", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!(a.eid, b.eid);
        let split = e
            .separate(&key("h1", "1"), &key("h2", "7"), Separation::Unlink)
            .expect("unlink");
        let Change::Split { from, to, moved } = split else {
            panic!("{split:?}")
        };
        assert_eq!((from, moved), (a.eid, vec![key("h2", "7")]));
        // Re-matching either record with the same data keeps them apart.
        let again = e.match_or_create(&rec("h2", "7", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!(again.eid, to);
        let again = e.rematch(&rec("h1", "1", "Jonathan", "Smith", "1970-03-04", "2600"));
        assert_eq!(again.eid, a.eid);
        // A human link to a dissimilar record holds through a re-match.
        let c = e.match_or_create(&rec("h3", "9", "Xavier", "Nguyen", "1990-01-01", "4000"));
        assert_ne!(c.eid, a.eid);
        let merged = e.link(&key("h1", "1"), &key("h3", "9")).expect("link");
        assert_eq!(
            merged,
            Change::Merged {
                survivor: a.eid,
                retired: c.eid
            }
        );
        let again = e.rematch(&rec("h3", "9", "Xavier", "Nguyen", "1990-01-01", "4000"));
        assert_eq!((again.eid, again.decision), (a.eid, Outcome::HumanLink));
        // Linking across a separation is refused.
        assert_eq!(
            e.link(&key("h3", "9"), &key("h2", "7")),
            Err(EngineError::Separated)
        );
    }

    #[test]
    fn eids_are_not_renumbered_and_restore_continues_numbering() {
        let mut e = Engine::new(Params::default());
        let a = e
            .match_or_create(&rec("h1", "1", "Ann", "Lee", "1950-01-01", "2600"))
            .eid;
        let b = e
            .match_or_create(&rec("h1", "2", "Bob", "Ray", "1962-07-19", "2600"))
            .eid;
        let joined = e.match_or_create(&rec("h2", "1", "Ann", "Lee", "1950-01-01", "2600"));
        assert_eq!(joined.eid, a);
        assert_eq!(e.eid_of(&key("h1", "2")), Some(b));
        assert_eq!(e.members(a), vec![key("h1", "1"), key("h2", "1")]);
        let mut r = Engine::new(Params::default());
        r.restore(&rec("h1", "1", "Ann", "Lee", "1950-01-01", "2600"), Eid(41));
        let next = r.match_or_create(&rec("h1", "3", "Cy", "Orr", "1933-08-27", "4000"));
        assert_eq!(next.eid, Eid(42));
        let hits = r.search(&rec("", "", "Ann", "Lee", "1950", ""), 5);
        assert!(!hits.is_empty() && hits.len() <= 2, "{}", hits.len());
        assert_eq!(hits[0].eid, Eid(41));
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(format!("{}", Eid(41)), "E0000000041");
    }

    #[test]
    fn rematch_moves_a_singleton_to_the_identity_it_now_matches() {
        let mut e = Engine::new(Params::default());
        let a = e
            .match_or_create(&rec("h1", "1", "Ann", "Lee", "1950-01-01", "2600"))
            .eid;
        let typo = e.match_or_create(&rec("h2", "1", "Xnn", "Qee", "1905-11-11", "9999"));
        assert_ne!(typo.eid, a);
        let fixed = e.match_or_create(&rec("h2", "1", "Ann", "Lee", "1950-01-01", "2600"));
        assert_eq!(
            (fixed.eid, fixed.previous_eid, fixed.retired),
            (a, Some(typo.eid), Some(typo.eid))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const GIVEN: &[&str] = &[
            "Amelia",
            "Bartholomew",
            "Cressida",
            "Dmitri",
            "Esperanza",
            "Fitzwilliam",
            "Gwendolyn",
            "Horatio",
        ];
        const FAMILY: &[&str] = &[
            "Quigley",
            "Rasmussen",
            "Szymanski",
            "Tokugawa",
            "Underwood",
            "Vasquez",
            "Whitlock",
            "Xenakis",
        ];

        /// Well-separated people, each with `copies[i]` near-identical records
        /// (later copies lack the address line or the city).
        fn records(copies: &[usize]) -> Vec<Record> {
            let mut out = vec![];
            for (i, &n) in copies.iter().enumerate() {
                for c in 0..n {
                    let mut r = rec(
                        &format!("h{c}"),
                        &format!("p{i}"),
                        GIVEN[i],
                        FAMILY[i],
                        &format!("19{}-0{}-1{}", 40 + 7 * i, 1 + i, i),
                        &format!("{}", 2000 + 311 * i),
                    );
                    r.address_line = Some(Address::new(format!(
                        "{} {} Road",
                        3 + 17 * i,
                        FAMILY[7 - i]
                    )));
                    match c {
                        1 => r.address_line = None,
                        2 => r.city = None,
                        _ => {}
                    }
                    out.push(r);
                }
            }
            out
        }

        fn partition(e: &Engine) -> BTreeSet<Vec<RecordKey>> {
            e.partition().into_iter().map(|(_, m)| m).collect()
        }

        fn key_of(r: &Record) -> RecordKey {
            RecordKey {
                source: r.source.clone(),
                local_id: r.local_id.clone(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn insertion_order_does_not_change_the_partition(
                (copies, order) in prop::collection::vec(1usize..=3, 8)
                    .prop_flat_map(|copies| {
                        let n: usize = copies.iter().sum();
                        (Just(copies), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
                    })
            ) {
                let recs = records(&copies);
                let mut sorted = Engine::new(Params::default());
                for r in &recs {
                    sorted.match_or_create(r);
                }
                let mut shuffled = Engine::new(Params::default());
                let mut eids_seen: HashMap<RecordKey, Eid> = HashMap::new();
                for &i in &order {
                    let got = shuffled.match_or_create(&recs[i]);
                    eids_seen.insert(key_of(&recs[i]), got.eid);
                    // No EID already handed out is ever renumbered.
                    for (k, e) in &eids_seen {
                        prop_assert_eq!(shuffled.eid_of(k), Some(*e));
                    }
                }
                prop_assert_eq!(partition(&sorted), partition(&shuffled));
                prop_assert_eq!(sorted.identities(), copies.len());
            }

            /// Whatever the records and their order, no identity ever holds
            /// two records of one source or two different trusted
            /// identifiers, though every record resembles every other.
            #[test]
            fn cannot_link_constraints_hold_for_whole_identities(
                picks in prop::collection::vec((0usize..3, 0usize..4, 0usize..3), 2..24),
            ) {
                let ids = ["123456789", "987654321", "555123777"];
                let mut e = Engine::new(Params {
                    trusted_authorities: vec!["NATIONAL".to_owned()],
                    ..Params::default()
                });
                let mut recs = vec![];
                for (n, &(source, id, dob)) in picks.iter().enumerate() {
                    let mut r = rec(
                        &format!("s{source}"),
                        &format!("r{n}"),
                        "Jonathan",
                        "Smith",
                        ["1970-03-04", "1970-03-05", "1970-04-03"][dob],
                        "2600",
                    );
                    if let Some(v) = ids.get(id) {
                        r.identifiers.push(Identifier {
                            id: Mrn::new(*v),
                            authority: "national".into(),
                            kind: "NI".into(),
                        });
                    }
                    e.match_or_create(&r);
                    recs.push(r);
                }
                for (_, members) in e.partition() {
                    let of = |k: &RecordKey| recs.iter().find(|r| key_of(r) == *k).expect("record");
                    for (x, a) in members.iter().enumerate() {
                        for b in &members[x + 1..] {
                            prop_assert_ne!(&a.source, &b.source);
                            let (ia, ib) = (&of(a).identifiers, &of(b).identifiers);
                            if let (Some(ia), Some(ib)) = (ia.first(), ib.first()) {
                                prop_assert_eq!(ia.id.expose(), ib.id.expose());
                            }
                        }
                    }
                }
            }

            #[test]
            fn human_decisions_survive_rematching(
                order in Just((0..16usize).collect::<Vec<_>>()).prop_shuffle(),
            ) {
                let recs = records(&[2; 8]);
                let mut e = Engine::new(Params::default());
                for r in &recs {
                    e.match_or_create(r);
                }
                // Person 0's two records split apart; persons 1 and 2 linked.
                let (a, b) = (key_of(&recs[0]), key_of(&recs[1]));
                e.separate(&a, &b, Separation::Unlink).map_err(|x| TestCaseError::fail(x.to_string()))?;
                let (c, d) = (key_of(&recs[2]), key_of(&recs[4]));
                e.link(&c, &d).map_err(|x| TestCaseError::fail(x.to_string()))?;
                for &i in &order {
                    e.rematch(&recs[i]);
                }
                prop_assert_ne!(e.eid_of(&a), e.eid_of(&b));
                prop_assert_eq!(e.eid_of(&c), e.eid_of(&d));
                prop_assert_eq!(e.eid_of(&c), e.eid_of(&key_of(&recs[3])));
                prop_assert_eq!(e.eid_of(&d), e.eid_of(&key_of(&recs[5])));
            }
        }
    }
}
