//! Decisions: thresholds that turn a score into link / review / new
//! identity, and the store of sticky human decisions.
//!
//! The engine links automatically above `link` bits, opens a review between
//! `review` and `link`, and creates a new identity below `review`. When the
//! two best identities are within `margin` bits of each other and the best
//! would link, it asks for review instead of guessing. A trusted identifier
//! agreeing exactly links deterministically. Human decisions in
//! [`Decisions`] (link, unlink, never-link) win over every score; the engine
//! only reads them. Persisting them is the caller's business.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::phi::Mrn;

/// Decision thresholds in bits of evidence (sum of field weights).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: link automatically.
    pub link: f64,
    /// At or above (and below `link`): new identity plus a review task.
    pub review: f64,
    /// Best and second-best identity closer than this (both ≥ `review`):
    /// review instead of linking.
    pub margin: f64,
}

impl Default for Thresholds {
    /// The pre-declared thresholds (docs/empi.md).
    fn default() -> Self {
        Self {
            link: 10.0,
            review: 4.0,
            margin: 3.0,
        }
    }
}

/// Why a record was sent to review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The best score fell between the review and link thresholds.
    Threshold,
    /// Two identities scored within the margin of each other.
    Margin,
    /// The record resembles an identity it may not join (a cannot-link
    /// constraint: another local id of its own source, or a different value
    /// of a trusted identifier), or two identities that may not merge.
    CannotLink,
}

/// What the engine decided for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Joined an existing identity on score.
    AutoLink,
    /// Joined an existing identity on a trusted identifier.
    Deterministic,
    /// Joined an identity because a human linked the records.
    HumanLink,
    /// Given a new identity, with a review task against the candidates.
    Review(ReviewReason),
    /// Given a new identity; nothing close.
    NewIdentity,
}

impl ReviewReason {
    /// Stable snake-case name (`threshold`, `margin`, `cannot_link`), as
    /// serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::Threshold => "threshold",
            ReviewReason::Margin => "margin",
            ReviewReason::CannotLink => "cannot_link",
        }
    }
}

impl Outcome {
    /// Stable snake-case name (`auto_link`, `review`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AutoLink => "auto_link",
            Outcome::Deterministic => "deterministic",
            Outcome::HumanLink => "human_link",
            Outcome::Review(_) => "review",
            Outcome::NewIdentity => "new_identity",
        }
    }
}

/// Decides from the best score per candidate identity (sorted descending).
/// `best` and `second` are the top two identities' scores.
pub fn decide(t: &Thresholds, best: Option<f64>, second: Option<f64>) -> Outcome {
    let Some(best) = best else {
        return Outcome::NewIdentity;
    };
    if best >= t.link {
        match second {
            Some(s) if s >= t.review && best - s < t.margin => {
                Outcome::Review(ReviewReason::Margin)
            }
            _ => Outcome::AutoLink,
        }
    } else if best >= t.review {
        Outcome::Review(ReviewReason::Threshold)
    } else {
        Outcome::NewIdentity
    }
}

/// A record's identity at its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// Source system (not PHI).
    pub source: String,
    /// Local id at that source (PHI).
    pub local_id: Mrn,
}

impl RecordKey {
    /// A key.
    pub fn new(source: impl Into<String>, local_id: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            local_id: Mrn::new(local_id),
        }
    }
}

impl Ord for RecordKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.source.as_str(), self.local_id.expose())
            .cmp(&(other.source.as_str(), other.local_id.expose()))
    }
}

impl PartialOrd for RecordKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Sticky human decisions between records: links that must hold and
/// separations ("unlink", "never link") that must hold. Adding one replaces
/// the opposite decision on the same pair. Indexed by record both ways, so
/// a look-up costs a tree search, not a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "DecisionsWire", into = "DecisionsWire")]
pub struct Decisions {
    links: BTreeMap<RecordKey, BTreeSet<RecordKey>>,
    apart: BTreeMap<RecordKey, BTreeMap<RecordKey, Separation>>,
}

/// How two records were kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Separation {
    /// An operator split a link.
    Unlink,
    /// An operator declared them different people in advance.
    NeverLink,
}

/// The serialised form of [`Decisions`]: each pair once.
#[derive(Serialize, Deserialize)]
struct DecisionsWire {
    links: Vec<(RecordKey, RecordKey)>,
    apart: Vec<(RecordKey, RecordKey, Separation)>,
}

impl From<DecisionsWire> for Decisions {
    fn from(w: DecisionsWire) -> Self {
        let mut d = Decisions::default();
        for (a, b) in &w.links {
            d.link(a, b);
        }
        for (a, b, how) in &w.apart {
            d.separate(a, b, *how);
        }
        d
    }
}

impl From<Decisions> for DecisionsWire {
    fn from(d: Decisions) -> Self {
        let links = d
            .links
            .iter()
            .flat_map(|(a, bs)| {
                bs.iter()
                    .filter(move |b| a < *b)
                    .map(move |b| (a.clone(), b.clone()))
            })
            .collect();
        let apart = d
            .apart
            .iter()
            .flat_map(|(a, bs)| {
                bs.iter()
                    .filter(move |(b, _)| a < *b)
                    .map(move |(b, how)| (a.clone(), b.clone(), *how))
            })
            .collect();
        DecisionsWire { links, apart }
    }
}

impl Decisions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn unset(&mut self, a: &RecordKey, b: &RecordKey) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(s) = self.links.get_mut(x) {
                s.remove(y);
                if s.is_empty() {
                    self.links.remove(x);
                }
            }
            if let Some(s) = self.apart.get_mut(x) {
                s.remove(y);
                if s.is_empty() {
                    self.apart.remove(x);
                }
            }
        }
    }

    /// Records that `a` and `b` are the same person.
    pub fn link(&mut self, a: &RecordKey, b: &RecordKey) {
        if a == b {
            return;
        }
        self.unset(a, b);
        self.links.entry(a.clone()).or_default().insert(b.clone());
        self.links.entry(b.clone()).or_default().insert(a.clone());
    }

    /// Records that `a` and `b` must be kept apart.
    pub fn separate(&mut self, a: &RecordKey, b: &RecordKey, how: Separation) {
        if a == b {
            return;
        }
        self.unset(a, b);
        self.apart
            .entry(a.clone())
            .or_default()
            .insert(b.clone(), how);
        self.apart
            .entry(b.clone())
            .or_default()
            .insert(a.clone(), how);
    }

    /// Whether a human linked the pair.
    pub fn linked(&self, a: &RecordKey, b: &RecordKey) -> bool {
        self.links.get(a).is_some_and(|s| s.contains(b))
    }

    /// How the pair was kept apart, if it was.
    pub fn separated(&self, a: &RecordKey, b: &RecordKey) -> Option<Separation> {
        self.apart.get(a).and_then(|s| s.get(b)).copied()
    }

    /// Records a human linked `a` to.
    pub fn links_of<'a>(&'a self, a: &RecordKey) -> impl Iterator<Item = &'a RecordKey> + 'a {
        self.links.get(a).into_iter().flatten()
    }

    /// Records that must be kept apart from `a`.
    pub fn apart_from<'a>(&'a self, a: &RecordKey) -> impl Iterator<Item = &'a RecordKey> + 'a {
        self.apart.get(a).into_iter().flat_map(|m| m.keys())
    }

    /// Number of decisions (pairs) held.
    pub fn len(&self) -> usize {
        let links: usize = self.links.values().map(BTreeSet::len).sum();
        let apart: usize = self.apart.values().map(BTreeMap::len).sum();
        (links + apart) / 2
    }

    /// Whether no decision is held.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.apart.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_margin() {
        let t = Thresholds {
            link: 20.0,
            review: 10.0,
            margin: 5.0,
        };
        let cases = [
            (None, None, "new_identity"),
            (Some(5.0), None, "new_identity"),
            (Some(10.0), None, "review"),
            (Some(19.9), Some(19.0), "review"),
            (Some(20.0), None, "auto_link"),
            (Some(30.0), Some(9.0), "auto_link"),
            (Some(30.0), Some(26.0), "review"),
            (Some(30.0), Some(24.0), "auto_link"),
        ];
        for (best, second, want) in cases {
            assert_eq!(
                decide(&t, best, second).as_str(),
                want,
                "{best:?} {second:?}"
            );
        }
        assert_eq!(
            decide(&t, Some(30.0), Some(26.0)),
            Outcome::Review(ReviewReason::Margin)
        );
        assert_eq!(
            decide(&t, Some(15.0), None),
            Outcome::Review(ReviewReason::Threshold)
        );
    }

    #[test]
    fn decisions_replace_their_opposites() {
        let (a, b, c) = (
            RecordKey::new("h1", "1"),
            RecordKey::new("h2", "9"),
            RecordKey::new("h1", "2"),
        );
        let mut d = Decisions::new();
        d.link(&b, &a);
        assert!(d.linked(&a, &b));
        assert_eq!(d.links_of(&a).collect::<Vec<_>>(), vec![&b]);
        d.separate(&a, &b, Separation::Unlink);
        assert!(!d.linked(&a, &b));
        assert_eq!(d.separated(&b, &a), Some(Separation::Unlink));
        d.separate(&a, &c, Separation::NeverLink);
        assert_eq!(d.apart_from(&a).count(), 2);
        d.link(&a, &b);
        assert_eq!(d.separated(&a, &b), None);
        assert_eq!(d.len(), 2);
        let json = serde_json::to_string(&d).expect("serialises");
        let back: Decisions = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, d);
    }
}
