//! Analytics over a hospital's stored events: hourly census per unit and
//! daily ADT volumes.
//!
//! A [`Projection`] replays the event log once, in seq order, and keeps only
//! what the answers need: each bed's unit and whether it is occupied, the
//! occupied count of every unit as a step function of time, and ADT counts
//! per day. The [`Cache`] holds one projection per hospital and brings it up
//! to date from the store on each request (reading only the events after
//! the last one it saw), so a request costs the new events plus the answer.
//! The log is append-only and the store is the truth: a restart simply
//! replays it again.
//!
//! - Census: a bed counts as occupied in its unit while its last state
//!   change left it `occupied`. A bed's unit comes from its commission and
//!   reconfigure events (a bed whose unit is unknown is not counted). The
//!   census at an hour boundary H is the state after every event recorded
//!   (appliance time, `recorded_at`) at or before H, which is what the board
//!   showed at H. The time axis never goes back: an event recorded earlier
//!   than one before it (a clock step) takes the later time.
//! - ADT volumes: `adt.patient_recorded` events by HL7 trigger, per UTC day
//!   of `occurred_at` (the source event time): A01 admissions, A02
//!   transfers, A03 discharges, anything else (registrations, updates,
//!   cancellations, merges) other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hms_domain::{BedId, BedState, Envelope, EventBody, HospitalId, Stream, UnitId};
use serde::Serialize;

use crate::store::HospitalStore;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// ADT counts of one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdtCounts {
    /// A01.
    pub admissions: u64,
    /// A02.
    pub transfers: u64,
    /// A03.
    pub discharges: u64,
    /// Every other ADT event.
    pub other: u64,
}

#[derive(Debug, Clone, Default)]
struct Bed {
    unit: Option<UnitId>,
    occupied: bool,
}

/// The replayed state of one hospital's log.
#[derive(Debug, Default)]
pub struct Projection {
    next_seq: u64,
    clock_ms: i64,
    beds: HashMap<BedId, Bed>,
    occupied: BTreeMap<UnitId, u32>,
    /// Per unit: (time, occupied count from then on).
    steps: BTreeMap<UnitId, BTreeMap<i64, u32>>,
    /// Per UTC day number (days since the epoch).
    adt: BTreeMap<i64, AdtCounts>,
    /// Events whose body could not be decoded (skipped).
    undecodable: u64,
}

impl Projection {
    /// An empty projection, before event 1.
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            clock_ms: i64::MIN,
            ..Self::default()
        }
    }

    /// The seq it expects next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events skipped because their body did not decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Whether `unit` has had a bed.
    pub fn has_unit(&self, unit: &UnitId) -> bool {
        self.steps.contains_key(unit)
    }

    fn set_count(&mut self, unit: &UnitId, delta: i64) {
        let c = self.occupied.entry(unit.clone()).or_insert(0);
        *c = u32::try_from((i64::from(*c) + delta).max(0)).unwrap_or(u32::MAX);
        let c = *c;
        self.steps
            .entry(unit.clone())
            .or_default()
            .insert(self.clock_ms, c);
    }

    fn set_bed(&mut self, bed: &BedId, unit: Option<Option<&UnitId>>, occupied: Option<bool>) {
        let old = self.beds.get(bed).cloned().unwrap_or_default();
        let new = Bed {
            unit: match unit {
                Some(u) => u.cloned(),
                None => old.unit.clone(),
            },
            occupied: occupied.unwrap_or(old.occupied),
        };
        if let Some(u) = &new.unit
            && !self.steps.contains_key(u)
        {
            self.set_count(u, 0);
        }
        if old.unit != new.unit || old.occupied != new.occupied {
            if let Some(u) = &old.unit
                && old.occupied
            {
                self.set_count(u, -1);
            }
            if let Some(u) = &new.unit
                && new.occupied
            {
                self.set_count(u, 1);
            }
        }
        self.beds.insert(bed.clone(), new);
    }

    /// Applies the next event (events must come in seq order; others are ignored).
    pub fn apply(&mut self, e: &Envelope) {
        if e.seq != self.next_seq {
            return;
        }
        self.next_seq += 1;
        self.clock_ms = self.clock_ms.max(e.recorded_at.as_millis());
        if !matches!(e.stream, Stream::Adt | Stream::Bed) {
            return;
        }
        let Ok(body) = e.decode_body() else {
            self.undecodable += 1;
            tracing::warn!(hospital = %e.hospital, seq = e.seq, "event body does not decode; skipped by analytics");
            return;
        };
        match body {
            EventBody::BedCommissioned { bed, unit, .. }
            | EventBody::BedReconfigured { bed, unit, .. } => {
                self.set_bed(&bed, Some(Some(&unit)), None);
            }
            EventBody::BedDecommissioned { bed } => {
                self.set_bed(&bed, None, Some(false));
                self.beds.remove(&bed);
            }
            EventBody::BedStateChanged { bed, state, .. } => {
                self.set_bed(&bed, None, Some(matches!(state, BedState::Occupied { .. })));
            }
            EventBody::BedsSwapped { bed, other, .. } => {
                let a = self.beds.get(&bed).is_some_and(|b| b.occupied);
                let b = self.beds.get(&other).is_some_and(|b| b.occupied);
                self.set_bed(&bed, None, Some(b));
                self.set_bed(&other, None, Some(a));
            }
            EventBody::PatientRecorded { trigger, .. } => {
                let day = e.occurred_at.as_millis().div_euclid(DAY_MS);
                let c = self.adt.entry(day).or_default();
                match trigger.as_str() {
                    "A01" => c.admissions += 1,
                    "A02" => c.transfers += 1,
                    "A03" => c.discharges += 1,
                    _ => c.other += 1,
                }
            }
            EventBody::PatientsMerged { .. } => {
                let day = e.occurred_at.as_millis().div_euclid(DAY_MS);
                self.adt.entry(day).or_default().other += 1;
            }
            _ => {}
        }
    }

    /// Occupied beds per unit (only `unit` when given) at `at_ms`; a unit
    /// that had no bed yet at that time is absent.
    pub fn census_at(&self, at_ms: i64, unit: Option<&UnitId>) -> BTreeMap<UnitId, u32> {
        self.steps
            .iter()
            .filter(|(u, _)| unit.is_none_or(|want| want == *u))
            .filter_map(|(u, steps)| {
                steps
                    .range(..=at_ms)
                    .next_back()
                    .map(|(_, c)| (u.clone(), *c))
            })
            .collect()
    }

    /// ADT counts of day number `day` (days since the epoch, UTC).
    pub fn adt_day(&self, day: i64) -> AdtCounts {
        self.adt.get(&day).copied().unwrap_or_default()
    }

    /// Reads and applies the events after the last one seen.
    pub fn catch_up(&mut self, store: &mut dyn HospitalStore) -> anyhow::Result<()> {
        loop {
            let events = store.events(self.next_seq, 1_000)?;
            if events.is_empty() {
                return Ok(());
            }
            let before = self.next_seq;
            for e in &events {
                self.apply(e);
            }
            if self.next_seq == before {
                anyhow::bail!(
                    "the store returned no event {before} (found {}): not consecutive",
                    events[0].seq
                );
            }
        }
    }
}

/// Hour boundaries in `[from_ms, to_ms]`.
pub fn hour_boundaries(from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> {
    let first = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let first = if first < from_ms {
        first + HOUR_MS
    } else {
        first
    };
    (0..)
        .map(move |i| first + i * HOUR_MS)
        .take_while(move |t| *t <= to_ms)
}

/// One projection per hospital, brought up to date on use.
#[derive(Debug, Default)]
pub struct Cache {
    hospitals: Mutex<HashMap<HospitalId, Arc<Mutex<Projection>>>>,
}

impl Cache {
    /// Runs `f` on the hospital's projection after catching it up with
    /// `store` (blocking: call from a blocking task).
    pub fn with<T>(
        &self,
        hospital: &HospitalId,
        store: &mut dyn HospitalStore,
        f: impl FnOnce(&Projection) -> T,
    ) -> anyhow::Result<T> {
        let p = {
            let mut map = self.hospitals.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(hospital.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Projection::new())))
                .clone()
        };
        let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
        p.catch_up(store)?;
        Ok(f(&p))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::{LogBuilder, at, body::*};

    /// A day on two wards (see the census table below), and ADT traffic.
    pub(crate) fn ward_log() -> Vec<Envelope> {
        let mut log = LogBuilder::new("h1");
        log.add("2026-03-02T07:00:00Z", commission("B1", "3W"))
            .add("2026-03-02T07:00:00Z", commission("B2", "3W"))
            .add("2026-03-02T07:00:00Z", commission("B3", "4E"))
            .add("2026-03-02T08:10:00Z", occupy("B1", "E1"))
            .add("2026-03-02T09:30:00Z", occupy("B3", "E3"))
            .add("2026-03-02T09:45:00Z", reserve("B2", "E9"))
            .add("2026-03-02T10:05:00Z", release("B1", "E1"))
            // The occupied bed B3 moves to 3W.
            .add("2026-03-02T10:20:00Z", reconfigure("B3", "3W"))
            // Exactly on the boundary: counted at 11:00.
            .add("2026-03-02T11:00:00Z", occupy("B2", "E2"))
            .add("2026-03-02T11:30:00Z", swap("B2", "B1"))
            .add("2026-03-02T13:10:00Z", commission("B4", "5N"))
            // The appliance clock stepped back: this takes the time of the event before.
            .add("2026-03-02T12:50:00Z", occupy("B4", "E4"))
            .add("2026-03-02T14:30:00Z", decommission("B2"))
            // ADT, by source time (occurred_at).
            .add_at("2026-03-02T14:40:00Z", "2026-03-01T23:30:00Z", adt("A01"))
            .add_at("2026-03-02T14:41:00Z", "2026-03-02T09:10:00Z", adt("A01"))
            .add_at("2026-03-02T14:42:00Z", "2026-03-02T09:20:00Z", adt("A02"))
            .add_at("2026-03-02T14:43:00Z", "2026-03-02T10:05:00Z", adt("A03"))
            .add_at("2026-03-02T14:44:00Z", "2026-03-02T10:06:00Z", adt("A08"))
            .add_at(
                "2026-03-02T14:45:00Z",
                "2026-03-02T23:59:59.999Z",
                adt("A04"),
            )
            .add_at("2026-03-03T00:00:00Z", "2026-03-03T00:00:00Z", adt("A03"))
            .add_at("2026-03-03T01:00:00Z", "2026-03-03T01:00:00Z", merge());
        log.events()
    }

    /// The census of [`ward_log`] at each hour, as "UNIT=N ...".
    pub(crate) const CENSUS: [(&str, &str); 10] = [
        ("2026-03-02T06:00:00Z", ""),
        ("2026-03-02T07:00:00Z", "3W=0 4E=0"),
        ("2026-03-02T08:00:00Z", "3W=0 4E=0"),
        ("2026-03-02T09:00:00Z", "3W=1 4E=0"),
        ("2026-03-02T10:00:00Z", "3W=1 4E=1"),
        ("2026-03-02T11:00:00Z", "3W=2 4E=0"),
        ("2026-03-02T12:00:00Z", "3W=2 4E=0"),
        ("2026-03-02T13:00:00Z", "3W=2 4E=0"),
        ("2026-03-02T14:00:00Z", "3W=2 4E=0 5N=1"),
        ("2026-03-02T15:00:00Z", "3W=2 4E=0 5N=1"),
    ];

    pub(crate) fn show(c: &BTreeMap<UnitId, u32>) -> String {
        c.iter()
            .map(|(u, n)| format!("{u}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn replayed() -> Projection {
        let mut p = Projection::new();
        for e in ward_log() {
            p.apply(&e);
        }
        p
    }

    #[test]
    fn hourly_census_follows_beds_units_and_the_boundaries() {
        let p = replayed();
        for (hour, want) in CENSUS {
            assert_eq!(show(&p.census_at(at(hour), None)), want, "at {hour}");
        }
        let only_4e: UnitId = "4E".parse().expect("id");
        assert_eq!(
            show(&p.census_at(at("2026-03-02T10:00:00Z"), Some(&only_4e))),
            "4E=1"
        );
        assert!(p.has_unit(&only_4e));
        assert!(!p.has_unit(&"9Z".parse().expect("id")));
        assert_eq!(p.undecodable(), 0);
    }

    #[test]
    fn adt_volumes_by_day_and_kind() {
        let p = replayed();
        let day = |d: &str| at(&format!("{d}T00:00:00Z")) / DAY_MS;
        let counts = |d: &str| {
            let c = p.adt_day(day(d));
            (c.admissions, c.transfers, c.discharges, c.other)
        };
        assert_eq!(counts("2026-03-01"), (1, 0, 0, 0));
        assert_eq!(counts("2026-03-02"), (1, 1, 1, 2));
        assert_eq!(counts("2026-03-03"), (0, 0, 1, 1));
        assert_eq!(counts("2026-03-04"), (0, 0, 0, 0));
    }

    #[test]
    fn replay_in_pieces_equals_replay_at_once_and_ignores_disorder() {
        let log = ward_log();
        let whole = replayed();
        let mut p = Projection::new();
        // Out of order and repeated events change nothing.
        p.apply(&log[3]);
        for e in &log[..10] {
            p.apply(e);
        }
        p.apply(&log[2]);
        for e in &log[10..] {
            p.apply(e);
        }
        assert_eq!(p.next_seq(), log.len() as u64 + 1);
        for (hour, _) in CENSUS {
            assert_eq!(p.census_at(at(hour), None), whole.census_at(at(hour), None));
        }
        assert_eq!(p.adt, whole.adt);
    }

    #[test]
    fn hour_boundaries_are_inclusive_and_aligned() {
        let b: Vec<i64> =
            hour_boundaries(at("2026-03-02T07:00:00Z"), at("2026-03-02T09:00:00Z")).collect();
        assert_eq!(b.len(), 3);
        let b: Vec<i64> =
            hour_boundaries(at("2026-03-02T07:00:01Z"), at("2026-03-02T08:59:59Z")).collect();
        assert_eq!(b, vec![at("2026-03-02T08:00:00Z")]);
        assert_eq!(
            hour_boundaries(at("1969-12-31T22:30:00Z"), at("1969-12-31T23:00:00Z")).count(),
            1
        );
    }
}
