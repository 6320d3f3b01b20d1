//! The appliance's local patient index: ranked search over every patient
//! the ADT feed has described, offline, in little memory.
//!
//! The patients themselves are in the store's `patients` projection. The
//! index keeps only what ranked search needs ([`index::SearchIndex`]: each
//! patient's standardised record packed, its blocking keys and the name
//! counts; a few hundred bytes per patient). It is loaded from the
//! projection a page at a time at start, then kept current from the
//! store's committed patient events (recorded, merged): each event re-reads
//! the rows of the patients it names and re-indexes those that differ (a
//! patient whose row is gone, merged away, leaves). A follower that falls
//! behind the event feed sweeps the projection and re-indexes the patients
//! that differ, so the index never misses a change.
//!
//! Look-up by MRN is exact: a patient the index holds, read from the
//! projection. Each patient carries the enterprise id (EID) the regional
//! EMPI assigned (an `empi.eid_assigned` event from the cloud's downlink,
//! kept in the projection), or `pending` until the cloud has assigned one
//! (and while offline).
//!
//! Ranked search by demographics (name, birth date, sex, address, phone,
//! identifiers) blocks and scores with the shared EMPI engine's parts
//! ([`hms_domain::empi`]): the candidates and Fellegi–Sunter scores in bits
//! of the engine's own search. The hits' display fields are read from the
//! projection.
//!
//! Responses carry the minimum necessary: MRN, name, birth date, sex and
//! EID (and a score for ranked hits); addresses, phones and other
//! identifiers stay in the store.

pub mod index;
mod packed;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Context;
use hms_domain::empi::{Prepared, Record, prepare};
use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone, Sex};
use hms_domain::{EventBody, PatientRef};
use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::queries::PatientRow;
use index::{Ranked, SearchIndex};

/// One patient as the projection holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    /// Medical record number (the key).
    pub mrn: Mrn,
    /// Name.
    pub name: Option<PersonName>,
    /// Date of birth.
    pub birth_date: Option<BirthDate>,
    /// Administrative sex.
    pub sex: Option<Sex>,
    /// Address (PID-11).
    pub address: Option<Address>,
    /// Phone (PID-13).
    pub phone: Option<Phone>,
    /// Every identifier (PID-3).
    pub identifiers: Vec<Identifier>,
    /// The enterprise id, once the regional EMPI assigned one.
    pub eid: Option<String>,
}

/// What the API shows of a patient (minimum necessary).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatientJson {
    /// MRN.
    pub mrn: String,
    /// Name.
    pub name: Option<String>,
    /// Date of birth.
    pub birth_date: Option<String>,
    /// Sex.
    pub sex: Option<Sex>,
    /// The EID, or `pending`.
    pub eid: String,
}

impl Patient {
    /// The API view.
    pub fn json(&self) -> PatientJson {
        PatientJson {
            mrn: self.mrn.expose().to_owned(),
            name: self.name.as_ref().map(|n| n.expose().to_owned()),
            birth_date: self.birth_date.as_ref().map(|d| d.expose().to_owned()),
            sex: self.sex,
            eid: self.eid.clone().unwrap_or_else(|| "pending".into()),
        }
    }

    /// The patient of a projection row.
    fn from_row(r: PatientRow) -> Patient {
        Patient {
            mrn: r.mrn,
            name: r.name,
            birth_date: r.birth_date,
            sex: r.sex.as_deref().and_then(parse_sex),
            identifiers: r
                .identifiers_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default(),
            address: r.address,
            phone: r.phone,
            eid: r.eid,
        }
    }
}

/// The index.
#[derive(Debug, Default)]
pub struct PatientIndex {
    /// Ranked search over the patients (each patient its own local
    /// identity; the EMPI's EIDs come from the cloud, with the rows).
    index: RwLock<SearchIndex>,
    /// Set once the first load from the projection is done.
    ready: AtomicBool,
}

/// The engine's source name for the appliance's own patients.
const LOCAL: &str = "local";

/// Rows read from the projection at a time (load and catch-up).
const PAGE: usize = 2_000;

/// Committed patient events applied at a time: those waiting when the
/// follower wakes, up to this many (their rows are read in one go).
const BATCH: usize = 1_024;

/// Changed patients re-indexed on the async runtime itself (about 20 µs
/// each); more go to a blocking thread.
const INLINE: usize = 16;

/// Patients filed under one hold of the write lock, so that searches wait
/// for at most this many.
const FILED_PER_LOCK: usize = 64;

/// How long the follower waits before reading the projection again after
/// a failed read.
const RETRY: Duration = Duration::from_secs(1);

fn record(p: &Patient) -> Record {
    let r = PatientRef {
        mrn: p.mrn.clone(),
        name: p.name.clone(),
        birth_date: p.birth_date.clone(),
        sex: p.sex,
    };
    Record::from_patient(
        LOCAL,
        &r,
        p.address.as_ref(),
        p.phone.as_ref(),
        &p.identifiers,
    )
}

/// A ranked search hit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    /// The patient (minimum necessary fields).
    #[serde(flatten)]
    pub patient: PatientJson,
    /// Match score, bits (higher is closer).
    pub score: f64,
}

fn parse_sex(s: &str) -> Option<Sex> {
    match s {
        "female" => Some(Sex::Female),
        "male" => Some(Sex::Male),
        "other" => Some(Sex::Other),
        _ => None,
    }
}

/// The MRNs whose rows a committed patient event changed (an EID lives in
/// the row only: nothing to re-index).
fn touched(body: &EventBody) -> Vec<&Mrn> {
    match body {
        EventBody::PatientRecorded { patient, .. } => vec![&patient.mrn],
        EventBody::PatientsMerged { from, into } => vec![from, &into.mrn],
        _ => vec![],
    }
}

/// Standardises patients (the costly part, done before taking the lock).
fn standardised(patients: &[Patient]) -> Vec<(&str, Prepared)> {
    patients
        .iter()
        .map(|p| (p.mrn.expose(), prepare(&record(p))))
        .collect()
}

/// Files standardised patients into `index`, marking their slots in `seen`
/// when given; returns how many changed.
fn file_into(
    index: &mut SearchIndex,
    prepared: &[(&str, Prepared)],
    mut seen: Option<&mut Vec<bool>>,
) -> usize {
    let mut changed = 0;
    for (mrn, p) in prepared {
        changed += usize::from(index.upsert(mrn, p));
        if let (Some(seen), Some(slot)) = (seen.as_deref_mut(), index.slot(mrn)) {
            if seen.len() <= slot {
                seen.resize(slot + 1, false);
            }
            seen[slot] = true;
        }
    }
    changed
}

impl PatientIndex {
    fn write(&self) -> RwLockWriteGuard<'_, SearchIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, SearchIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `patients`, a few at a time under the write lock (searches go
    /// on in between), marking their slots in `seen` when given; returns
    /// how many changed.
    fn file(&self, patients: &[Patient], mut seen: Option<&mut Vec<bool>>) -> usize {
        patients
            .chunks(FILED_PER_LOCK)
            .map(|chunk| {
                let prepared = standardised(chunk);
                file_into(&mut self.write(), &prepared, seen.as_deref_mut())
            })
            .sum()
    }

    /// Removes the patients whose slots `seen` does not mark; returns how
    /// many.
    fn remove_unseen(&self, seen: &[bool]) -> usize {
        let mut index = self.write();
        let gone = index.unmarked(seen);
        gone.iter().filter(|mrn| index.remove(mrn)).count()
    }

    /// Patients resembling `query` (name, birth date, sex, address…), best
    /// first, at most `limit`, scoring at least `min_score` bits: their
    /// MRNs and scores.
    pub fn rank(&self, query: &Record, limit: usize, min_score: f64) -> Vec<Ranked> {
        let p = prepare(query);
        let mut hits = self.read().rank(&p, limit);
        hits.retain(|h| h.score >= min_score);
        hits
    }

    /// [`PatientIndex::rank`] with each hit's display fields read from the
    /// store, in the same trip off the async runtime (a hit whose patient
    /// left meanwhile is left out).
    pub async fn search(
        self: &Arc<Self>,
        store: &Store,
        query: Record,
        limit: usize,
        min_score: f64,
    ) -> anyhow::Result<Vec<Hit>> {
        let me = self.clone();
        let (ranked, rows) = store
            .patients_picked(move || {
                let ranked = me.rank(&query, limit, min_score);
                let mrns = ranked.iter().map(|h| h.mrn.clone()).collect();
                (ranked, mrns)
            })
            .await
            .context("ranking patients")?;
        let rows: HashMap<String, Patient> = rows
            .into_iter()
            .map(|r| (r.mrn.expose().to_owned(), Patient::from_row(r)))
            .collect();
        Ok(ranked
            .into_iter()
            .filter_map(|h| {
                rows.get(&h.mrn).map(|p| Hit {
                    patient: p.json(),
                    score: h.score,
                })
            })
            .collect())
    }

    /// The patient with this MRN, as the projection holds it now, once the
    /// index holds the patient too (so a look-up by MRN and a search agree
    /// on who is known, and a patient shows once it can also be found).
    pub async fn get(&self, store: &Store, mrn: &str) -> anyhow::Result<Option<Patient>> {
        if !self.read().contains(mrn) {
            return Ok(None);
        }
        Ok(store
            .patients_by_mrn(vec![mrn.to_owned()])
            .await
            .context("reading a patient")?
            .into_iter()
            .next()
            .map(Patient::from_row))
    }

    /// Patients indexed.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first load is done (until then look-ups cannot answer).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Builds the index afresh from the projection, a page at a time off
    /// the async runtime, then puts it in place of the one there was.
    pub async fn reload(&self, store: &Store) -> anyhow::Result<()> {
        let mut fresh = SearchIndex::default();
        let mut after = None;
        loop {
            let page = store
                .patients_page(after.take(), PAGE)
                .await
                .context("reading the patients")?;
            let Some(last) = page.last() else { break };
            after = Some(last.mrn.expose().to_owned());
            let more = page.len() == PAGE;
            fresh = tokio::task::spawn_blocking(move || {
                let patients: Vec<Patient> = page.into_iter().map(Patient::from_row).collect();
                file_into(&mut fresh, &standardised(&patients), None);
                fresh
            })
            .await?;
            if !more {
                break;
            }
        }
        let (patients, packed_mb) = (fresh.len(), fresh.packed_bytes() >> 20);
        *self.write() = fresh;
        self.ready.store(true, Ordering::Release);
        tracing::info!(patients, packed_mb, "patient index loaded");
        Ok(())
    }

    /// Brings the index level with the projection after the follower missed
    /// events: reads every patient a page at a time, re-indexes only those
    /// whose standardised demographics differ and removes those gone, so
    /// the search index is never rebuilt (nor held twice) while the feed
    /// runs. Returns how many patients changed.
    pub async fn catch_up(self: &Arc<Self>, store: &Store) -> anyhow::Result<usize> {
        let mut seen = Vec::new();
        let mut changed = 0;
        let mut after = None;
        loop {
            let page = store
                .patients_page(after.take(), PAGE)
                .await
                .context("reading the patients")?;
            let Some(last) = page.last() else { break };
            after = Some(last.mrn.expose().to_owned());
            let more = page.len() == PAGE;
            let me = self.clone();
            let (s, c) = tokio::task::spawn_blocking(move || {
                let patients: Vec<Patient> = page.into_iter().map(Patient::from_row).collect();
                let c = me.file(&patients, Some(&mut seen));
                (seen, c)
            })
            .await?;
            (seen, changed) = (s, changed + c);
            if !more {
                break;
            }
        }
        Ok(changed + self.remove_unseen(&seen))
    }

    /// Replaces the patients with `fresh`, re-indexing those that changed;
    /// returns how many did (a catch-up in one page).
    #[cfg(test)]
    fn replace(&self, fresh: HashMap<String, Patient>) -> usize {
        let fresh: Vec<Patient> = fresh.into_values().collect();
        let mut seen = vec![];
        self.file(&fresh, Some(&mut seen)) + self.remove_unseen(&seen)
    }

    /// Re-indexes the patients committed events name, from their rows as
    /// the projection holds them now (a patient without a row leaves);
    /// returns how many changed.
    pub async fn apply(
        self: &Arc<Self>,
        store: &Store,
        bodies: &[Arc<EventBody>],
    ) -> anyhow::Result<usize> {
        let mut mrns: Vec<String> = bodies
            .iter()
            .flat_map(|b| touched(b))
            .map(|m| m.expose().to_owned())
            .collect();
        mrns.sort_unstable();
        mrns.dedup();
        if mrns.is_empty() {
            return Ok(0);
        }
        let rows: Vec<Patient> = store
            .patients_by_mrn(mrns.clone())
            .await
            .context("reading changed patients")?
            .into_iter()
            .map(Patient::from_row)
            .collect();
        // A few patients (a feed keeping pace) are re-indexed in place, in
        // well under a millisecond; a burst off the async runtime.
        if mrns.len() <= INLINE {
            return Ok(self.refresh(&mrns, rows));
        }
        let me = self.clone();
        Ok(tokio::task::spawn_blocking(move || me.refresh(&mrns, rows)).await?)
    }

    /// Files `rows`, the rows of `mrns` that exist, and removes the rest.
    fn refresh(&self, mrns: &[String], rows: Vec<Patient>) -> usize {
        let present: HashSet<&str> = rows.iter().map(|p| p.mrn.expose()).collect();
        let gone: Vec<&String> = mrns
            .iter()
            .filter(|m| !present.contains(m.as_str()))
            .collect();
        let changed = self.file(&rows, None);
        let mut index = self.write();
        changed + gone.into_iter().filter(|m| index.remove(m)).count()
    }

    /// Reads the projection again after the follower missed events or
    /// failed to read: a catch-up, or the first load if that never
    /// finished. Whether it worked.
    async fn recover(self: &Arc<Self>, store: &Store) -> bool {
        if !self.is_ready() {
            return match self.reload(store).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "patient index reload failed");
                    false
                }
            };
        }
        match self.catch_up(store).await {
            Ok(changed) => {
                tracing::info!(changed, "patient index caught up");
                true
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "patient index catch-up failed");
                false
            }
        }
    }

    /// Loads the index, then follows the store's committed patient events
    /// until `shutdown`. Runs beside the appliance, so a large index never
    /// delays start-up; look-ups answer "loading" until the load is done.
    pub async fn follow(self: Arc<Self>, store: Store, shutdown: CancellationToken) {
        // Subscribe first, then load: nothing committed in between is missed.
        let mut rx = store.subscribe_patients();
        let mut behind = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = self.reload(&store) => match r {
                Ok(()) => false,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "patient index reload failed");
                    true
                }
            },
        };
        loop {
            if behind {
                behind = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ok = async {
                        tokio::time::sleep(RETRY).await;
                        self.recover(&store).await
                    } => !ok,
                };
                continue;
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => m,
            };
            let mut batch = vec![];
            let mut missed = None;
            match first {
                Ok(body) => batch.push(body),
                Err(RecvError::Lagged(n)) => missed = Some(n),
                Err(RecvError::Closed) => break,
            }
            while missed.is_none() && batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(body) => batch.push(body),
                    Err(TryRecvError::Lagged(n)) => missed = Some(n),
                    Err(_) => break,
                }
            }
            if let Some(missed) = missed {
                // The sweep covers the batch's events too.
                tracing::warn!(
                    missed,
                    "patient index fell behind; catching up from the projection"
                );
                behind = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ok = self.recover(&store) => !ok,
                };
                continue;
            }
            let applied = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.apply(&store, &batch) => r,
            };
            if let Err(e) = applied {
                tracing::error!(
                    error = %format!("{e:#}"),
                    "patient index could not read changed patients; catching up from the projection"
                );
                behind = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(mrn: &str, name: &str, dob: &str) -> Patient {
        Patient {
            mrn: Mrn::new(mrn),
            name: Some(PersonName::new(name)),
            birth_date: Some(BirthDate::new(dob)),
            sex: Some(Sex::Female),
            address: None,
            phone: None,
            identifiers: vec![],
            eid: None,
        }
    }

    fn index(patients: &[Patient]) -> PatientIndex {
        let idx = PatientIndex::default();
        idx.file(patients, None);
        idx
    }

    fn found(idx: &PatientIndex, name: &str, dob: &str) -> Vec<String> {
        let (family, given) = name.split_once(", ").unwrap_or((name, ""));
        let mut q = Record::new("query", "");
        q.family_name = Some(PersonName::new(family));
        q.given_name = Some(PersonName::new(given));
        q.birth_date = Some(BirthDate::new(dob));
        idx.rank(&q, 5, 10.0).into_iter().map(|h| h.mrn).collect()
    }

    #[test]
    fn catching_up_re_indexes_only_what_changed() {
        let idx = index(&[
            patient("M1", "Seacole, Mary", "1965-01-23"),
            patient("M2", "Nightingale, Florence", "1920-05-12"),
            patient("M3", "Barton, Clara", "1921-12-25"),
        ]);
        assert_eq!(found(&idx, "Seacole, Mary", "1965-01-23"), vec!["M1"]);
        let mut assigned = patient("M3", "Barton, Clara", "1921-12-25");
        assigned.eid = Some("E0000000007".into());
        let fresh: HashMap<String, Patient> = [
            // Renamed, with the birth date corrected.
            patient("M1", "Grant, Mary", "1966-02-14"),
            // Unchanged but for the EID: not re-indexed.
            assigned,
            // New.
            patient("M4", "Cavell, Edith", "1915-10-12"),
        ]
        .into_iter()
        .map(|p| (p.mrn.expose().to_owned(), p))
        .collect();
        // M1 changed, M2 went (merged away), M4 came; M3 only got its EID.
        assert_eq!(idx.replace(fresh), 3);
        assert!(found(&idx, "Seacole, Mary", "1965-01-23").is_empty());
        assert_eq!(found(&idx, "Grant, Mary", "1966-02-14"), vec!["M1"]);
        assert!(found(&idx, "Nightingale, Florence", "1920-05-12").is_empty());
        assert_eq!(found(&idx, "Cavell, Edith", "1915-10-12"), vec!["M4"]);
        assert_eq!(found(&idx, "Barton, Clara", "1921-12-25"), vec!["M3"]);
        // The EID is read with the row (the index holds none); M3 stays.
        assert!(idx.read().contains("M3"));
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn events_re_index_the_patients_they_name_from_their_rows() {
        let idx = index(&[
            patient("M1", "Seacole, Mary", "1965-01-23"),
            patient("M2", "Seacole, Marie", "1965-01-23"),
            patient("M3", "Barton, Clara", "1921-12-25"),
        ]);
        let merged = EventBody::PatientsMerged {
            from: Mrn::new("M2"),
            into: PatientRef {
                mrn: Mrn::new("M1"),
                name: Some(PersonName::new("Grant, Edith")),
                birth_date: None,
                sex: None,
            },
        };
        let mrns: Vec<String> = touched(&merged)
            .into_iter()
            .map(|m| m.expose().to_owned())
            .collect();
        assert_eq!(mrns, ["M2", "M1"]);
        let eid = EventBody::EidAssigned {
            mrn: Mrn::new("M3"),
            eid: "E0000000007".into(),
            downlink_seq: 9,
        };
        assert!(touched(&eid).is_empty(), "the EID is read with the row");
        // The projection after the merge: M1 renamed and born on another
        // day (as later events left it), M2 without a row.
        let now = || vec![patient("M1", "Grant, Edith", "1971-06-30")];
        assert_eq!(idx.refresh(&mrns, now()), 2);
        assert_eq!(found(&idx, "Grant, Edith", "1971-06-30"), vec!["M1"]);
        assert!(found(&idx, "Seacole, Marie", "1965-01-23").is_empty());
        assert!(found(&idx, "Seacole, Mary", "1965-01-23").is_empty());
        assert_eq!(found(&idx, "Barton, Clara", "1921-12-25"), vec!["M3"]);
        assert_eq!(idx.len(), 2);
        // Read again unchanged (a later event for the same patients).
        assert_eq!(idx.refresh(&mrns, now()), 0);
    }

    #[test]
    fn a_row_reads_back_as_the_patient_the_index_files() {
        let row = PatientRow {
            mrn: Mrn::new("M9"),
            name: Some(PersonName::new("Smith, Anna")),
            birth_date: Some(BirthDate::new("1985-02-03")),
            sex: Some("female".into()),
            identifiers_json: Some(r#"[{"id":"9434765919","authority":"NHS","kind":"NH"}]"#.into()),
            address: Some(Address::new("1 High Street, Leeds, LS1 4AB")),
            phone: None,
            eid: None,
        };
        let assigned = PatientRow {
            eid: Some("E0000000007".into()),
            ..row.clone()
        };
        assert_eq!(Patient::from_row(assigned).json().eid, "E0000000007");
        let p = Patient::from_row(row);
        assert_eq!(p.identifiers.len(), 1);
        assert_eq!(
            p.json(),
            PatientJson {
                mrn: "M9".into(),
                name: Some("Smith, Anna".into()),
                birth_date: Some("1985-02-03".into()),
                sex: Some(Sex::Female),
                eid: "pending".into(),
            }
        );
        let idx = index(&[p]);
        let mut q = Record::new("query", "");
        q.family_name = Some(PersonName::new("Smith"));
        q.postal_code = Some(Address::new("LS1 4AB"));
        q.phone = None;
        let hits = idx.rank(&q, 5, 0.0);
        assert_eq!(hits.len(), 1, "found by postal code and family name");
    }
}
