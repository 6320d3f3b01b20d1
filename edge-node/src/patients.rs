//! The appliance's local patient index: every patient the ADT feed has
//! described, in memory, for look-ups that work offline.
//!
//! Loaded from the `patients` projection at start, then kept current from
//! the store's committed patient events (recorded, merged); a follower that
//! falls behind the event feed re-reads the projection and re-indexes the
//! patients that differ, so the index never misses a change. Look-up by MRN is exact. Each patient carries the
//! enterprise id (EID) the regional EMPI assigned (an `empi.eid_assigned`
//! event from the cloud's downlink), or `pending` until the cloud has
//! assigned one (and while offline).
//!
//! Ranked search by demographics (name, birth date, sex, address, phone,
//! identifiers) runs the shared EMPI engine ([`hms_domain::empi`]) over the
//! same patients: blocking, Fellegi–Sunter scores in bits.
//!
//! Responses carry the minimum necessary: MRN, name, birth date, sex and
//! EID (and a score for ranked hits); addresses, phones and other
//! identifiers stay in the index.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hms_domain::empi::{Eid, Engine, Params, Record, RecordKey};
use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone, Sex};
use hms_domain::{EventBody, PatientRef};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// One patient as the index holds it.
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

    fn from_ref(p: &PatientRef) -> Patient {
        Patient {
            mrn: p.mrn.clone(),
            name: p.name.clone(),
            birth_date: p.birth_date.clone(),
            sex: p.sex,
            address: None,
            phone: None,
            identifiers: vec![],
            eid: None,
        }
    }

    /// Folds a newer description in (absent fields keep their value, as in
    /// the projection).
    fn update(&mut self, p: &PatientRef) {
        if p.name.is_some() {
            self.name = p.name.clone();
        }
        if p.birth_date.is_some() {
            self.birth_date = p.birth_date.clone();
        }
        if p.sex.is_some() {
            self.sex = p.sex;
        }
    }
}

/// The index.
#[derive(Debug, Default)]
pub struct PatientIndex {
    by_mrn: RwLock<HashMap<String, Patient>>,
    /// The matching engine over the same patients, for ranked search (each
    /// patient its own local identity; the EMPI's EIDs come from the cloud).
    engine: RwLock<Option<Engine>>,
    /// Set once the first load from the projection is done.
    ready: std::sync::atomic::AtomicBool,
}

/// The engine's source name for the appliance's own patients.
const LOCAL: &str = "local";

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

/// Whether two descriptions of a patient match the same way (the EID
/// plays no part in matching).
fn same_demographics(a: &Patient, b: &Patient) -> bool {
    (
        &a.mrn,
        &a.name,
        &a.birth_date,
        a.sex,
        &a.address,
        &a.phone,
        &a.identifiers,
    ) == (
        &b.mrn,
        &b.name,
        &b.birth_date,
        b.sex,
        &b.address,
        &b.phone,
        &b.identifiers,
    )
}

fn parse_sex(s: &str) -> Option<Sex> {
    match s {
        "female" => Some(Sex::Female),
        "male" => Some(Sex::Male),
        "other" => Some(Sex::Other),
        _ => None,
    }
}

impl PatientIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Patient>> {
        self.by_mrn.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Patient>> {
        self.by_mrn.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the engine from `patients`.
    fn build(patients: &HashMap<String, Patient>) -> Engine {
        let mut e = Engine::new(Params::default());
        for (i, p) in patients.values().enumerate() {
            e.restore(&record(p), Eid(i as u64 + 1));
        }
        e
    }

    /// Re-indexes one patient in the engine (or drops it).
    fn reindex(&self, mrn: &str, patient: Option<&Patient>) {
        let mut guard = self.engine.write().unwrap_or_else(|p| p.into_inner());
        let Some(e) = guard.as_mut() else { return };
        let key = RecordKey {
            source: LOCAL.into(),
            local_id: Mrn::new(mrn),
        };
        let eid = e.remove(&key);
        if let Some(p) = patient {
            let eid = eid.unwrap_or_else(|| Eid(e.len() as u64 + 1_000_000_000));
            e.restore(&record(p), eid);
        }
    }

    /// Patients resembling `query` (name, birth date, sex, address…), best
    /// first, at most `limit`, scoring at least `min_score` bits.
    pub fn search(&self, query: &Record, limit: usize, min_score: f64) -> Vec<Hit> {
        let hits = {
            let guard = self.engine.read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(e) => e.search(query, limit),
                None => vec![],
            }
        };
        let map = self.read();
        hits.into_iter()
            .filter(|h| h.score >= min_score)
            .filter_map(|h| {
                map.get(h.key.local_id.expose()).map(|p| Hit {
                    patient: p.json(),
                    score: h.score,
                })
            })
            .collect()
    }

    /// Every patient of the projection.
    async fn rows(store: &Store) -> anyhow::Result<HashMap<String, Patient>> {
        Ok(store
            .patients()
            .await?
            .into_iter()
            .map(|r| {
                let p = Patient {
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
                };
                (p.mrn.expose().to_owned(), p)
            })
            .collect())
    }

    /// Whether the first load is done (until then look-ups cannot answer).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reloads from the projection (off the async runtime: building the
    /// search index of many patients takes a while).
    pub async fn reload(&self, store: &Store) -> anyhow::Result<()> {
        let fresh = Self::rows(store).await?;
        let (fresh, engine) = tokio::task::spawn_blocking(move || {
            let engine = Self::build(&fresh);
            (fresh, engine)
        })
        .await?;
        *self.write() = fresh;
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(engine);
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Brings the index level with the projection after the follower missed
    /// events: reads every patient and re-indexes only those whose
    /// demographics differ, so the search index is never rebuilt (nor held
    /// twice) while the feed runs, and catching up takes far less than the
    /// first load.
    pub async fn catch_up(self: &Arc<Self>, store: &Store) -> anyhow::Result<usize> {
        let fresh = Self::rows(store).await?;
        let me = self.clone();
        Ok(tokio::task::spawn_blocking(move || me.replace(fresh)).await?)
    }

    /// Replaces the patients with `fresh`, re-indexing those that changed;
    /// returns how many did.
    fn replace(&self, fresh: HashMap<String, Patient>) -> usize {
        let changed: Vec<(String, Option<Patient>)> = {
            let map = self.read();
            let mut changed: Vec<(String, Option<Patient>)> = fresh
                .iter()
                .filter(|(mrn, p)| map.get(*mrn).is_none_or(|old| !same_demographics(old, p)))
                .map(|(mrn, p)| (mrn.clone(), Some(p.clone())))
                .collect();
            changed.extend(
                map.keys()
                    .filter(|mrn| !fresh.contains_key(*mrn))
                    .map(|mrn| (mrn.clone(), None)),
            );
            changed
        };
        *self.write() = fresh;
        for (mrn, p) in &changed {
            self.reindex(mrn, p.as_ref());
        }
        changed.len()
    }

    /// Applies one committed patient event.
    pub fn apply(&self, body: &EventBody) {
        let touched = self.apply_map(body);
        for (mrn, patient) in touched {
            self.reindex(&mrn, patient.as_ref());
        }
    }

    /// Updates the map; returns the patients to re-index (none: removed).
    fn apply_map(&self, body: &EventBody) -> Vec<(String, Option<Patient>)> {
        let mut map = self.write();
        match body {
            EventBody::PatientRecorded {
                patient,
                identifiers,
                address,
                phone,
                ..
            } => {
                let p = map
                    .entry(patient.mrn.expose().to_owned())
                    .or_insert_with(|| Patient::from_ref(patient));
                p.update(patient);
                if !identifiers.is_empty() {
                    p.identifiers = identifiers.clone();
                }
                if address.is_some() {
                    p.address = address.clone();
                }
                if phone.is_some() {
                    p.phone = phone.clone();
                }
                vec![(patient.mrn.expose().to_owned(), Some(p.clone()))]
            }
            EventBody::EidAssigned { mrn, eid, .. } => {
                if let Some(p) = map.get_mut(mrn.expose()) {
                    p.eid = Some(eid.clone());
                }
                vec![]
            }
            EventBody::PatientsMerged { from, into } => {
                let merged = map.remove(from.expose());
                let p = map
                    .entry(into.mrn.expose().to_owned())
                    .or_insert_with(|| Patient::from_ref(into));
                p.update(into);
                if p.eid.is_none() {
                    p.eid = merged.and_then(|m| m.eid);
                }
                vec![
                    (from.expose().to_owned(), None),
                    (into.mrn.expose().to_owned(), Some(p.clone())),
                ]
            }
            _ => vec![],
        }
    }

    /// The patient with this MRN.
    pub fn get(&self, mrn: &str) -> Option<Patient> {
        self.read().get(mrn).cloned()
    }

    /// Patients indexed.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the index, then follows the store's committed patient events
    /// until `shutdown`. Runs beside the appliance, so a large index never
    /// delays start-up; look-ups answer "loading" until the load is done.
    pub async fn follow(self: Arc<Self>, store: Store, shutdown: CancellationToken) {
        // Subscribe first, then load: nothing committed in between is missed.
        let mut rx = store.subscribe_patients();
        if let Err(e) = self.reload(&store).await {
            tracing::error!(error = %format!("{e:#}"), "patient index reload failed");
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m {
                    Ok(body) => self.apply(&body),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "patient index fell behind; catching up from the projection");
                        match self.catch_up(&store).await {
                            Ok(changed) => tracing::info!(changed, "patient index caught up"),
                            Err(e) => tracing::error!(error = %format!("{e:#}"), "patient index catch-up failed"),
                        }
                    }
                    Err(_) => break,
                },
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
        let map: HashMap<String, Patient> = patients
            .iter()
            .map(|p| (p.mrn.expose().to_owned(), p.clone()))
            .collect();
        let idx = PatientIndex::default();
        *idx.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(PatientIndex::build(&map));
        *idx.write() = map;
        idx
    }

    fn found(idx: &PatientIndex, name: &str, dob: &str) -> Vec<String> {
        let (family, given) = name.split_once(", ").unwrap_or((name, ""));
        let mut q = Record::new("query", "");
        q.family_name = Some(PersonName::new(family));
        q.given_name = Some(PersonName::new(given));
        q.birth_date = Some(BirthDate::new(dob));
        idx.search(&q, 5, 10.0)
            .into_iter()
            .map(|h| h.patient.mrn)
            .collect()
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
        assert_eq!(
            idx.get("M3").and_then(|p| p.eid).as_deref(),
            Some("E0000000007")
        );
        assert_eq!(idx.len(), 3);
    }
}
