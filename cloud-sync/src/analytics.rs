//! Analytics over a hospital's stored events: hourly census per unit,
//! daily ADT volumes, charges per day and OR utilisation per room and day.
//!
//! A [`Projection`] replays the event log once, in seq order, and keeps only
//! what the answers need: each bed's unit and whether it is occupied, the
//! occupied count of every unit as a step function of time, ADT counts per
//! day, the charges' transactions and their day figures ([`charges`]) and
//! the OR cases and their figures per room and day ([`or`]). The [`Cache`]
//! holds one projection per hospital and brings it up to date from the
//! store on each request (reading only the events after the last one it
//! saw), so a request costs the new events plus the answer. The log is
//! append-only and the store is the truth: a restart simply replays it
//! again.
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
//! - Charges: `billing.*` transactions by transaction id, per UTC day of the
//!   transaction date (`charge.date`): the total in cents (reversed ones
//!   count 0, credits negative), transactions, credits, reversed.
//! - OR utilisation: `or.*` cases by case id, per room and UTC day of the
//!   booked start: scheduled and completed cases with their booked,
//!   predicted and actual minutes, overruns, and cancelled, bumped and
//!   no-show cases.
//!
//! Memory: census steps and ADT days are kept whole. Charges and OR cases
//! are kept per transaction and per case, so they are bounded: only the
//! days from [`RETAIN_DAYS`] − 1 days before the day of the projection's
//! clock (the latest `recorded_at` so far) are kept, and later ones (cases
//! booked ahead, transactions dated ahead); earlier days are dropped as the
//! clock moves, and events of dropped days are ignored. Each part also
//! caps what it holds ([`charges::MAX_TRANSACTIONS`], [`or::MAX_CASES`]),
//! dropping its oldest days beyond. [`Projection::charges_floor`] and
//! [`Projection::or_floor`] say from which day on the figures are held.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hms_domain::{BedId, BedState, Envelope, EventBody, HospitalId, OrRoomId, Stream, UnitId};
use serde::Serialize;

use crate::store::HospitalStore;

pub mod charges;
pub mod or;

pub use charges::ChargeDay;
pub use or::RoomDay;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days of charges and OR figures kept up to the day of the projection's
/// clock (that day included): the longest range asked (366 days) and a
/// month more.
pub const RETAIN_DAYS: i64 = 400;

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
    /// Charges per day.
    charges: charges::Charges,
    /// OR cases per room and day.
    or: or::OrRooms,
    /// The day floor set from the clock so far.
    window_floor: i64,
    /// Events whose body could not be decoded (skipped).
    undecodable: u64,
}

impl Projection {
    /// An empty projection, before event 1.
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            clock_ms: i64::MIN,
            window_floor: i64::MIN,
            ..Self::default()
        }
    }

    /// The same with caps on the transactions and cases kept (tests).
    #[cfg(test)]
    fn with_caps(transactions: usize, cases: usize) -> Self {
        Self {
            charges: charges::Charges::with_cap(transactions),
            or: or::OrRooms::with_cap(cases),
            ..Self::new()
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
        let floor = self
            .clock_ms
            .div_euclid(DAY_MS)
            .saturating_sub(RETAIN_DAYS - 1);
        if floor > self.window_floor {
            self.window_floor = floor;
            self.charges.prune(floor);
            self.or.prune(floor);
        }
        if !matches!(
            e.stream,
            Stream::Adt | Stream::Bed | Stream::Billing | Stream::Or
        ) {
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
            EventBody::ChargePosted { charge } => self.charges.apply(&charge, false),
            EventBody::ChargeReversed { charge } => self.charges.apply(&charge, true),
            EventBody::OrCaseChanged { case, .. } => self.or.apply_case(&case),
            EventBody::OrCasePredicted { prediction } => self.or.apply_prediction(&prediction),
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

    /// The charges of day number `day` (days since the epoch, UTC).
    pub fn charges_day(&self, day: i64) -> ChargeDay {
        self.charges.day(day)
    }

    /// The first day whose charges are held (`None`: every day is).
    pub fn charges_floor(&self) -> Option<i64> {
        self.charges.floor()
    }

    /// OR figures per room (only `room` when given) and day in
    /// `from..=to` (day numbers), by room, then day; a room-day without
    /// a case is absent.
    pub fn or_room_days(
        &self,
        from: i64,
        to: i64,
        room: Option<&OrRoomId>,
    ) -> Vec<(OrRoomId, i64, RoomDay)> {
        self.or.room_days(from, to, room)
    }

    /// Whether an OR case ever named `room`.
    pub fn has_or_room(&self, room: &OrRoomId) -> bool {
        self.or.has_room(room)
    }

    /// The first day whose OR figures are held (`None`: every day is).
    pub fn or_floor(&self) -> Option<i64> {
        self.or.floor()
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

    /// Charges over two days and an OR day in three rooms (figures in
    /// [`CHARGES`] and [`ROOM_DAYS`]).
    pub(crate) fn revenue_or_log() -> Vec<Envelope> {
        use hms_domain::{CaseChange as Ch, ChargeKind, Priority};
        let t1 = charge("T1", "2026-03-02T09:00:00Z", ChargeKind::Charge, 125_000);
        let t2 = charge("T2", "2026-03-02T10:00:00Z", ChargeKind::Charge, 2_000);
        // A credit with an id of its own, dated on the last millisecond of the day.
        let t3 = charge("T3", "2026-03-02T23:59:59.999Z", ChargeKind::Credit, -500);
        let t4 = charge("T4", "2026-03-03T00:00:00Z", ChargeKind::Charge, 10_000);
        let t5 = charge("T5", "2026-03-03T08:00:00Z", ChargeKind::Charge, 3_050);

        let mut c1 = or_case("C1", "OR-1", "2026-03-02T08:00:00Z", 120);
        let mut c2 = or_case("C2", "OR-1", "2026-03-02T11:00:00Z", 60);
        let mut c3 = or_case("C3", "OR-1", "2026-03-02T13:00:00Z", 90);
        let c3_v1 = c3.clone();
        let mut c4 = or_case("C4", "OR-1", "2026-03-02T14:00:00Z", 45);
        let mut c5 = or_case("C5", "OR-1", "2026-03-02T14:00:00Z", 30);
        c5.priority = Priority::Urgent;
        let mut c6 = or_case("C6", "OR-2", "2026-03-02T09:00:00Z", 60);
        let mut c7 = or_case("C7", "OR-2", "2026-03-02T10:00:00Z", 60);
        let mut c8 = or_case("C8", "OR-2", "2026-03-02T12:00:00Z", 60);
        let mut c9 = or_case("C9", "OR-1", "2026-03-02T16:00:00Z", 60);
        let mut c10 = or_case("C10", "OR-3", "2026-03-02T23:30:00Z", 60);

        let mut log = LogBuilder::new("h1");
        log.add("2026-03-01T12:00:00Z", case_changed(Ch::Scheduled, &c1))
            .add("2026-03-01T12:00:01Z", predicted(&c1, 150))
            .add("2026-03-01T12:01:00Z", case_changed(Ch::Scheduled, &c2))
            .add("2026-03-01T12:01:01Z", predicted(&c2, 70))
            .add("2026-03-01T12:02:00Z", case_changed(Ch::Scheduled, &c3))
            .add("2026-03-01T12:02:01Z", predicted(&c3, 100));
        // C3 is changed (same room, time and minutes): the prediction of
        // version 2 replaces the first; one of version 1 coming after it
        // does not.
        log.add("2026-03-01T13:00:00Z", changed(&mut c3, Ch::Modified, None))
            .add("2026-03-01T13:00:01Z", predicted(&c3, 95))
            .add("2026-03-01T13:00:02Z", predicted(&c3_v1, 200))
            .add("2026-03-01T13:01:00Z", case_changed(Ch::Scheduled, &c4))
            .add("2026-03-01T13:01:01Z", predicted(&c4, 50))
            .add("2026-03-01T13:02:00Z", case_changed(Ch::Scheduled, &c6))
            .add("2026-03-01T13:03:00Z", case_changed(Ch::Scheduled, &c7))
            .add("2026-03-01T13:04:00Z", case_changed(Ch::Scheduled, &c8))
            .add("2026-03-01T13:04:01Z", predicted(&c8, 60))
            .add("2026-03-01T13:05:00Z", case_changed(Ch::Scheduled, &c9))
            .add("2026-03-01T13:05:01Z", predicted(&c9, 70))
            .add("2026-03-01T13:06:00Z", case_changed(Ch::Scheduled, &c10));
        // C9 moves to OR-2 the next day, for 90 minutes, and is predicted again.
        c9.room = crate::testkit::id("OR-2");
        c9.start = hms_domain::Timestamp::from_millis(at("2026-03-03T08:00:00Z"));
        c9.booked_minutes = 90;
        log.add(
            "2026-03-01T14:00:00Z",
            changed(&mut c9, Ch::Rescheduled, None),
        )
        .add("2026-03-01T14:00:01Z", predicted(&c9, 80))
        .add(
            "2026-03-02T07:00:00Z",
            changed(&mut c6, Ch::Cancelled, None),
        )
        .add("2026-03-02T07:30:00Z", changed(&mut c8, Ch::Deleted, None))
        .add("2026-03-02T07:31:00Z", changed(&mut c10, Ch::Deleted, None))
        // An urgent add-on bumps C4.
        .add("2026-03-02T09:00:00Z", case_changed(Ch::Scheduled, &c5))
        .add("2026-03-02T09:00:01Z", changed(&mut c4, Ch::Bumped, None))
        .add("2026-03-02T09:05:00Z", posted(&t1))
        .add("2026-03-02T10:05:00Z", posted(&t2))
        .add("2026-03-02T10:30:00Z", changed(&mut c7, Ch::NoShow, None))
        // 170 actual minutes against 150 predicted: an overrun.
        .add(
            "2026-03-02T10:50:00Z",
            changed(&mut c1, Ch::Completed, Some(170)),
        )
        .add(
            "2026-03-02T12:00:00Z",
            changed(&mut c2, Ch::Completed, Some(50)),
        )
        // Completed without a prediction: not an overrun, nor counted in the rate.
        .add(
            "2026-03-02T15:00:00Z",
            changed(&mut c5, Ch::Completed, Some(40)),
        )
        // Recorded the next day, dated the day before.
        .add("2026-03-03T00:10:00Z", posted(&t3))
        .add("2026-03-03T00:20:00Z", posted(&t4))
        // Reversed the next day: counts on its own day. Twice, and T5
        // posted twice: the same transaction again changes nothing.
        .add("2026-03-03T09:00:00Z", reversed(&t2))
        .add("2026-03-03T09:01:00Z", reversed(&t2))
        .add("2026-03-03T09:10:00Z", posted(&t5))
        .add("2026-03-03T09:11:00Z", posted(&t5));
        log.events()
    }

    /// The charges of [`revenue_or_log`]: date, total cents, transactions,
    /// credits, reversed.
    pub(crate) const CHARGES: [(&str, i64, u64, u64, u64); 4] = [
        ("2026-03-01", 0, 0, 0, 0),
        ("2026-03-02", 124_500, 3, 1, 1),
        ("2026-03-03", 13_050, 2, 0, 0),
        ("2026-03-04", 0, 0, 0, 0),
    ];

    /// The OR figures of [`revenue_or_log`] as [`show_room_day`] writes them.
    pub(crate) const ROOM_DAYS: [&str; 3] = [
        "OR-1 2026-03-02 cases=4 booked=300 predicted=315/3 actual=260/3 overruns=1 rate=0.5 cancelled=0 bumped=1 no_show=0",
        "OR-2 2026-03-02 cases=0 booked=0 predicted=0/0 actual=0/0 overruns=0 rate=- cancelled=1 bumped=0 no_show=1",
        "OR-2 2026-03-03 cases=1 booked=90 predicted=80/1 actual=0/0 overruns=0 rate=- cancelled=0 bumped=0 no_show=0",
    ];

    fn day_of(date: &str) -> i64 {
        at(&format!("{date}T00:00:00Z")) / DAY_MS
    }

    fn show_room_day((room, day, f): &(OrRoomId, i64, RoomDay)) -> String {
        let date = hms_domain::Timestamp::from_millis(day * DAY_MS).to_rfc3339();
        format!(
            "{room} {} cases={} booked={} predicted={}/{} actual={}/{} overruns={} rate={} cancelled={} bumped={} no_show={}",
            &date[..10],
            f.cases,
            f.booked_minutes,
            f.predicted_minutes,
            f.predicted_cases,
            f.actual_minutes,
            f.completed_cases,
            f.overruns,
            f.overrun_rate().map_or("-".into(), |r| r.to_string()),
            f.cancelled,
            f.bumped,
            f.no_show
        )
    }

    fn shown(p: &Projection, from: &str, to: &str, room: Option<&str>) -> Vec<String> {
        let room: Option<OrRoomId> = room.map(crate::testkit::id);
        p.or_room_days(day_of(from), day_of(to), room.as_ref())
            .iter()
            .map(show_room_day)
            .collect()
    }

    fn charges_of(p: &Projection, date: &str) -> (i64, u64, u64, u64) {
        let c = p.charges_day(day_of(date));
        (c.total_cents_i64(), c.transactions, c.credits, c.reversed)
    }

    fn replay(log: &[Envelope]) -> Projection {
        let mut p = Projection::new();
        for e in log {
            p.apply(e);
        }
        p
    }

    #[test]
    fn charges_per_day_of_the_transaction_date_with_a_reversal_and_a_credit() {
        let log = revenue_or_log();
        let p = replay(&log);
        for (date, total, transactions, credits, reversed) in CHARGES {
            assert_eq!(
                charges_of(&p, date),
                (total, transactions, credits, reversed),
                "{date}"
            );
        }
        assert_eq!(p.charges.len(), 5);
        // Before the reversal, T2 counted on its day.
        let before = log
            .iter()
            .position(|e| e.kind == "billing.charge_reversed")
            .expect("a reversal");
        let p = replay(&log[..before]);
        assert_eq!(charges_of(&p, "2026-03-02"), (126_500, 3, 1, 0));
        assert_eq!(charges_of(&p, "2026-03-03"), (10_000, 1, 0, 0));
    }

    #[test]
    fn or_utilisation_per_room_and_day_with_predictions_and_an_overrun() {
        let p = replay(&revenue_or_log());
        assert_eq!(shown(&p, "2026-03-01", "2026-03-04", None), ROOM_DAYS);
        assert_eq!(
            shown(&p, "2026-03-03", "2026-03-03", Some("OR-2")),
            ROOM_DAYS[2..]
        );
        assert_eq!(
            shown(&p, "2026-03-02", "2026-03-02", Some("OR-1")),
            ROOM_DAYS[..1]
        );
        assert!(shown(&p, "2026-03-03", "2026-03-02", None).is_empty());
        assert_eq!(p.undecodable(), 0);
    }

    #[test]
    fn a_deleted_case_leaves_the_figures_and_its_room_stays_known() {
        let log = revenue_or_log();
        let deleted = log
            .iter()
            .position(|e| e.kind == "or.case_deleted")
            .expect("a deletion");
        // Before the deletions C8 counted in OR-2 (with its prediction) and
        // C10 alone in OR-3.
        let p = replay(&log[..deleted]);
        assert_eq!(
            shown(&p, "2026-03-02", "2026-03-02", None)[1..],
            [
                "OR-2 2026-03-02 cases=2 booked=120 predicted=60/1 actual=0/0 overruns=0 rate=- cancelled=1 bumped=0 no_show=0",
                "OR-3 2026-03-02 cases=1 booked=60 predicted=0/0 actual=0/0 overruns=0 rate=- cancelled=0 bumped=0 no_show=0",
            ]
        );
        let p = replay(&log);
        let or3: OrRoomId = crate::testkit::id("OR-3");
        assert!(shown(&p, "2026-03-01", "2026-03-04", Some("OR-3")).is_empty());
        assert!(p.has_or_room(&or3));
        assert!(!p.has_or_room(&crate::testkit::id("OR-9")));
        // Nine cases named, C8 and C10 gone.
        assert_eq!(p.or.len(), 8);
    }

    #[test]
    fn revenue_and_or_replay_in_pieces_equals_replay_at_once() {
        let log = revenue_or_log();
        let whole = replay(&log);
        let mut p = Projection::new();
        for e in &log[..7] {
            p.apply(e);
        }
        p.apply(&log[3]);
        for e in &log[7..] {
            p.apply(e);
        }
        p.apply(&log[log.len() - 1]);
        assert_eq!(
            shown(&p, "2026-03-01", "2026-03-04", None),
            shown(&whole, "2026-03-01", "2026-03-04", None)
        );
        for (date, ..) in CHARGES {
            assert_eq!(charges_of(&p, date), charges_of(&whole, date));
        }
    }

    #[test]
    fn charges_and_or_figures_are_kept_for_retain_days_of_the_clock() {
        use hms_domain::{CaseChange, ChargeKind};
        let mut log = LogBuilder::new("h1");
        log.add(
            "2026-03-02T09:00:00Z",
            posted(&charge(
                "A",
                "2026-03-02T09:00:00Z",
                ChargeKind::Charge,
                100,
            )),
        )
        .add(
            "2026-03-02T09:01:00Z",
            case_changed(
                CaseChange::Scheduled,
                &or_case("C1", "OR-1", "2026-03-02T10:00:00Z", 60),
            ),
        )
        .add(
            "2026-03-02T09:02:00Z",
            posted(&charge(
                "B",
                "2026-03-03T09:00:00Z",
                ChargeKind::Charge,
                200,
            )),
        )
        .add(
            "2026-03-02T09:03:00Z",
            case_changed(
                CaseChange::Scheduled,
                &or_case("C2", "OR-1", "2026-03-03T10:00:00Z", 30),
            ),
        );
        let p = replay(&log.events());
        assert_eq!(
            p.charges_floor(),
            Some(day_of("2026-03-02") - RETAIN_DAYS + 1)
        );
        // RETAIN_DAYS - 1 days on, the first day is still held; a day more
        // and it goes (with its transaction and case).
        let first = day_of("2026-03-02");
        let date = |d: i64| hms_domain::Timestamp::from_millis(d * DAY_MS).to_rfc3339();
        log.add(&date(first + RETAIN_DAYS - 1), merge());
        let mut p = replay(&log.events());
        assert_eq!(charges_of(&p, "2026-03-02"), (100, 1, 0, 0));
        assert_eq!(shown(&p, "2026-03-02", "2026-03-03", None).len(), 2);
        log.add(&date(first + RETAIN_DAYS), merge());
        let events = log.events();
        p.apply(&events[events.len() - 1]);
        assert_eq!(p.charges_floor(), Some(first + 1));
        assert_eq!(p.or_floor(), Some(first + 1));
        assert_eq!(charges_of(&p, "2026-03-02"), (0, 0, 0, 0));
        assert_eq!(charges_of(&p, "2026-03-03"), (200, 1, 0, 0));
        assert_eq!((p.charges.len(), p.or.len()), (1, 1));
        assert_eq!(
            shown(&p, "2026-03-01", "2026-03-04", None),
            [
                "OR-1 2026-03-03 cases=1 booked=30 predicted=0/0 actual=0/0 overruns=0 rate=- cancelled=0 bumped=0 no_show=0"
            ]
        );
        // Events of a dropped day are ignored: a reversal of A, a new case.
        log.add(
            &date(first + RETAIN_DAYS),
            reversed(&charge(
                "A",
                "2026-03-02T09:00:00Z",
                ChargeKind::Charge,
                100,
            )),
        )
        .add(
            &date(first + RETAIN_DAYS),
            case_changed(
                CaseChange::Scheduled,
                &or_case("C3", "OR-1", "2026-03-02T12:00:00Z", 60),
            ),
        );
        let replayed = replay(&log.events());
        assert_eq!(charges_of(&replayed, "2026-03-02"), (0, 0, 0, 0));
        assert!(shown(&replayed, "2026-03-02", "2026-03-02", None).is_empty());
        assert_eq!((replayed.charges.len(), replayed.or.len()), (1, 1));
    }

    #[test]
    fn past_the_caps_the_oldest_days_go() {
        use hms_domain::{CaseChange, ChargeKind};
        let mut log = LogBuilder::new("h1");
        for (i, date) in ["2026-03-04", "2026-03-02", "2026-03-03", "2026-03-03"]
            .iter()
            .enumerate()
        {
            let when = format!("{date}T09:00:00Z");
            log.add(
                "2026-03-05T00:00:00Z",
                posted(&charge(&format!("T{i}"), &when, ChargeKind::Charge, 100)),
            )
            .add(
                "2026-03-05T00:00:00Z",
                case_changed(
                    CaseChange::Scheduled,
                    &or_case(&format!("C{i}"), "OR-1", &when, 60),
                ),
            );
        }
        let mut p = Projection::with_caps(3, 3);
        for e in log.events() {
            p.apply(&e);
        }
        // The fourth of each went over the cap of 3: 03-02 went.
        assert_eq!(p.charges_floor(), Some(day_of("2026-03-03")));
        assert_eq!(p.or_floor(), Some(day_of("2026-03-03")));
        assert_eq!(charges_of(&p, "2026-03-02"), (0, 0, 0, 0));
        assert_eq!(charges_of(&p, "2026-03-03"), (200, 2, 0, 0));
        assert_eq!((p.charges.len(), p.or.len()), (3, 3));
        assert_eq!(shown(&p, "2026-03-01", "2026-03-05", None).len(), 2);
    }
}
