//! Coding suggestions: which procedure and charge codes go with a visit's
//! diagnoses, learned from the appliance's own history, with a fallback
//! rule. Pure: built from rows the store reads, asked from memory.
//!
//! **History**: each visit's posted charges give its set of diagnosis codes
//! (the DG1 and FT1-19 codes their messages carried) and its set of charge
//! codes. For a diagnosis `d` seen on `n(d)` visits, and a code `c` posted
//! on `n(d, c)` of them, `P(c | d) = n(d, c) / n(d)`. A request's diagnoses
//! `Q` score each code by noisy-OR, `1 − Π (1 − P(c | d))` over the `d` in
//! `Q` seen on at least [`MIN_SUPPORT`] visits; the best [`TOP`] come back,
//! `source: "history"`.
//!
//! **Fallback** (`source: "fallback"` with the reason): when no diagnosis of
//! the request has [`MIN_SUPPORT`] visits of history (`too_little_history`),
//! or when the request's text is longer than the configured limit
//! (`text_too_long`): the [`TOP`] codes posted on the most visits of the
//! request's unit (of the whole hospital when the unit has none), scored by
//! their share of those visits.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// Suggestions returned.
pub const TOP: usize = 10;

/// Visits a diagnosis needs in the history before it is used.
pub const MIN_SUPPORT: u32 = 5;

/// One posted charge as the suggestions learn from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// Its visit; charges without one count as a visit each.
    pub visit: Option<String>,
    /// Its unit.
    pub unit: Option<String>,
    /// The charge code.
    pub code: String,
    /// The diagnoses its message carried.
    pub diagnoses: Vec<String>,
}

/// One suggested code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The code.
    pub code: String,
    /// Its score, 0 to 1.
    pub score: f64,
    /// Visits of the history behind it.
    pub support: u32,
}

/// Why the fallback answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// No diagnosis of the request has enough history.
    TooLittleHistory,
    /// The request's text is longer than the configured limit.
    TextTooLong,
}

/// What a request gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// Best first.
    pub suggestions: Vec<Suggestion>,
    /// `history` or `fallback`.
    pub source: &'static str,
    /// Why the fallback answered.
    pub reason: Option<FallbackReason>,
}

/// The statistics of a history.
#[derive(Debug, Clone, Default)]
pub struct Coder {
    /// Visits per diagnosis.
    dx_visits: HashMap<String, u32>,
    /// Visits per (diagnosis, code).
    pairs: HashMap<String, HashMap<String, u32>>,
    /// Visits per code, per unit (`""`: the whole hospital).
    by_unit: HashMap<String, HashMap<String, u32>>,
    /// Visits per unit (`""`: the whole hospital).
    unit_visits: HashMap<String, u32>,
    /// Visits in the history.
    pub visits: u32,
}

impl Coder {
    /// The statistics of `rows`.
    pub fn build(rows: impl IntoIterator<Item = Posted>) -> Coder {
        #[derive(Default)]
        struct Visit {
            dx: BTreeSet<String>,
            codes: BTreeSet<String>,
            units: BTreeSet<String>,
        }
        let mut visits: HashMap<String, Visit> = HashMap::new();
        for (i, r) in rows.into_iter().enumerate() {
            let key = r.visit.unwrap_or_else(|| format!("\u{0}{i}"));
            let v = visits.entry(key).or_default();
            v.dx.extend(r.diagnoses);
            v.codes.insert(r.code);
            if let Some(u) = r.unit {
                v.units.insert(u);
            }
        }
        let mut c = Coder::default();
        for v in visits.values() {
            c.visits += 1;
            for d in &v.dx {
                *c.dx_visits.entry(d.clone()).or_default() += 1;
                let p = c.pairs.entry(d.clone()).or_default();
                for code in &v.codes {
                    *p.entry(code.clone()).or_default() += 1;
                }
            }
            for unit in v.units.iter().map(String::as_str).chain([""]) {
                *c.unit_visits.entry(unit.to_owned()).or_default() += 1;
                let u = c.by_unit.entry(unit.to_owned()).or_default();
                for code in &v.codes {
                    *u.entry(code.clone()).or_default() += 1;
                }
            }
        }
        c
    }

    /// Suggestions for `diagnoses` in `unit`; the fallback when the text
    /// is too long (`text_too_long`) or history is too thin.
    pub fn suggest(&self, diagnoses: &[String], unit: Option<&str>, text_too_long: bool) -> Answer {
        if text_too_long {
            return self.fallback(unit, FallbackReason::TextTooLong);
        }
        let mut miss: HashMap<&str, (f64, u32)> = HashMap::new();
        let mut used = false;
        for d in diagnoses.iter().collect::<BTreeSet<_>>() {
            let n = self.dx_visits.get(d).copied().unwrap_or(0);
            if n < MIN_SUPPORT {
                continue;
            }
            used = true;
            for (code, &k) in self.pairs.get(d).into_iter().flatten() {
                let e = miss.entry(code).or_insert((1.0, 0));
                e.0 *= 1.0 - f64::from(k) / f64::from(n);
                e.1 = e.1.max(k);
            }
        }
        if !used {
            return self.fallback(unit, FallbackReason::TooLittleHistory);
        }
        let mut out: Vec<Suggestion> = miss
            .into_iter()
            .map(|(code, (m, support))| Suggestion {
                code: code.to_owned(),
                score: round4(1.0 - m),
                support,
            })
            .collect();
        rank(&mut out);
        Answer {
            suggestions: out,
            source: "history",
            reason: None,
        }
    }

    /// The unit's most frequent codes (the hospital's when the unit has none).
    pub fn fallback(&self, unit: Option<&str>, reason: FallbackReason) -> Answer {
        let key = unit.filter(|u| self.by_unit.contains_key(*u)).unwrap_or("");
        let total = self.unit_visits.get(key).copied().unwrap_or(0).max(1);
        let mut out: Vec<Suggestion> = self
            .by_unit
            .get(key)
            .into_iter()
            .flatten()
            .map(|(code, &k)| Suggestion {
                code: code.clone(),
                score: round4(f64::from(k) / f64::from(total)),
                support: k,
            })
            .collect();
        rank(&mut out);
        Answer {
            suggestions: out,
            source: "fallback",
            reason: Some(reason),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Best score first, then most support, then code; the first [`TOP`].
fn rank(v: &mut Vec<Suggestion>) {
    v.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.support.cmp(&a.support))
            .then(a.code.cmp(&b.code))
    });
    v.truncate(TOP);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(visit: &str, unit: &str, code: &str, dx: &[&str]) -> Posted {
        Posted {
            visit: Some(visit.into()),
            unit: Some(unit.into()),
            code: code.into(),
            diagnoses: dx.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn history() -> Coder {
        let mut rows = vec![];
        for i in 0..10 {
            let v = format!("V{i}");
            // Appendicitis: appendectomy on every visit, imaging on half.
            rows.push(posted(&v, "SURG", "44970", &["K35.80"]));
            if i % 2 == 0 {
                rows.push(posted(&v, "SURG", "74177", &["K35.80"]));
            }
        }
        for i in 0..20 {
            // The unit's everyday code, with a diagnosis seen too rarely.
            let v = format!("W{i}");
            rows.push(posted(
                &v,
                "SURG",
                "99223",
                &[if i < 3 { "R10.9" } else { "Z00.0" }],
            ));
        }
        Coder::build(rows)
    }

    #[test]
    fn codes_that_go_with_a_diagnosis_rank_by_how_often_they_do() {
        let c = history();
        assert_eq!(c.visits, 30);
        let a = c.suggest(&["K35.80".into()], Some("SURG"), false);
        assert_eq!(a.source, "history");
        let codes: Vec<(&str, f64, u32)> = a
            .suggestions
            .iter()
            .map(|s| (s.code.as_str(), s.score, s.support))
            .collect();
        assert_eq!(codes, [("44970", 1.0, 10), ("74177", 0.5, 5)]);
    }

    #[test]
    fn thin_history_or_a_long_text_falls_back_to_the_units_frequent_codes() {
        let c = history();
        let a = c.suggest(&["R10.9".into()], Some("SURG"), false);
        assert_eq!(a.source, "fallback");
        assert_eq!(a.reason, Some(FallbackReason::TooLittleHistory));
        assert_eq!(
            a.suggestions[0].code, "99223",
            "on 20 of the unit's 30 visits"
        );
        assert_eq!(a.suggestions[0].score, 0.6667);
        let a = c.suggest(&["K35.80".into()], Some("SURG"), true);
        assert_eq!(a.reason, Some(FallbackReason::TextTooLong));
        // An unknown unit: the hospital's codes.
        let a = c.suggest(&[], Some("NOPE"), false);
        assert_eq!(a.suggestions.len(), 3);
        // No history at all: an empty answer, still from the fallback.
        let empty = Coder::build([]);
        let a = empty.suggest(&["K35.80".into()], None, false);
        assert_eq!((a.source, a.suggestions.len()), ("fallback", 0));
    }
}
