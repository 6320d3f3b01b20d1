//! OR utilisation per room and UTC day, the part of
//! [`super::Projection`] that the `or.*` events feed.
//!
//! Each `or.case_*` event carries the whole case after the change, so the
//! latest one of a case id is the case; a case deleted by the scheduling
//! system (status `deleted`) is dropped. `or.case_predicted` names the case
//! version it predicted: a case keeps the prediction of the highest version
//! (a later one of the same version replaces it), whatever its own version
//! is now (a completed case is a version after the one predicted), and
//! loses it when it is deleted. A prediction of a case not held (never
//! seen, deleted, or on a dropped day) is ignored: the appliance predicts
//! only cases it holds, after their change event.
//!
//! A case counts in its room on the UTC day of its booked `start`, moving
//! with it when rescheduled. Per room and day, the figures ([`RoomDay`]) are
//! kept up to date as cases change, so an answer is a range look-up.
//!
//! Memory is bounded by a floor, as for charges: days before it are
//! dropped with their cases, and events of such days are ignored
//! afterwards. The projection raises it as its clock moves
//! ([`super::RETAIN_DAYS`]); past [`MAX_CASES`] cases held, the oldest days
//! go too, until at most nine tenths of the cap remain. The set of rooms
//! ever named is kept whole (a hospital has tens).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hms_domain::{CaseId, CasePrediction, CaseStatus, OrCase, OrRoomId};

use super::DAY_MS;

/// Most cases one hospital's projection holds: 500 a day over
/// [`super::RETAIN_DAYS`]. A case takes a few hundred bytes (its id, its
/// room's, its figures' inputs): tens of MB at the cap.
pub const MAX_CASES: usize = 200_000;

/// The cases of one room on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomDay {
    /// Scheduled and completed cases.
    pub cases: u64,
    /// Their booked minutes.
    pub booked_minutes: u64,
    /// Predicted minutes of those of them with a prediction.
    pub predicted_minutes: u64,
    /// Those of them with a prediction.
    pub predicted_cases: u64,
    /// Actual minutes of the completed cases that report them.
    pub actual_minutes: u64,
    /// Completed cases that report their actual minutes.
    pub completed_cases: u64,
    /// Of those, the ones with a prediction.
    pub completed_predicted: u64,
    /// Of those, the ones whose actual minutes exceed the predicted ones.
    pub overruns: u64,
    /// Cancelled cases.
    pub cancelled: u64,
    /// Bumped cases.
    pub bumped: u64,
    /// Cases whose patient did not come.
    pub no_show: u64,
}

impl RoomDay {
    /// Overruns per completed case with a prediction (and actual
    /// minutes); `None` without such a case.
    pub fn overrun_rate(&self) -> Option<f64> {
        (self.completed_predicted > 0)
            .then(|| self.overruns as f64 / self.completed_predicted as f64)
    }

    fn fields(&mut self) -> [&mut u64; 11] {
        [
            &mut self.cases,
            &mut self.booked_minutes,
            &mut self.predicted_minutes,
            &mut self.predicted_cases,
            &mut self.actual_minutes,
            &mut self.completed_cases,
            &mut self.completed_predicted,
            &mut self.overruns,
            &mut self.cancelled,
            &mut self.bumped,
            &mut self.no_show,
        ]
    }

    /// Adds (or, with `add` false, takes away) `other`.
    fn merge(&mut self, mut other: RoomDay, add: bool) {
        for (mine, theirs) in self.fields().into_iter().zip(other.fields()) {
            *mine = if add {
                mine.saturating_add(*theirs)
            } else {
                mine.saturating_sub(*theirs)
            };
        }
    }
}

/// What a case's figures need of it.
#[derive(Debug, Clone)]
struct Case {
    room: OrRoomId,
    day: i64,
    status: CaseStatus,
    booked: u32,
    actual: Option<u32>,
    /// (version predicted, minutes).
    prediction: Option<(u64, u32)>,
}

impl Case {
    /// What the case adds to its room and day.
    fn figures(&self) -> RoomDay {
        let mut f = RoomDay::default();
        match self.status {
            CaseStatus::Scheduled | CaseStatus::Completed => {
                f.cases = 1;
                f.booked_minutes = u64::from(self.booked);
                if let Some((_, p)) = self.prediction {
                    f.predicted_minutes = u64::from(p);
                    f.predicted_cases = 1;
                }
                if self.status == CaseStatus::Completed
                    && let Some(a) = self.actual
                {
                    f.actual_minutes = u64::from(a);
                    f.completed_cases = 1;
                    if let Some((_, p)) = self.prediction {
                        f.completed_predicted = 1;
                        f.overruns = u64::from(a > p);
                    }
                }
            }
            CaseStatus::Cancelled => f.cancelled = 1,
            CaseStatus::Bumped => f.bumped = 1,
            CaseStatus::NoShow => f.no_show = 1,
            CaseStatus::Deleted => {}
        }
        f
    }
}

/// The OR cases of one hospital, and their figures per room and day.
#[derive(Debug)]
pub struct OrRooms {
    floor: i64,
    cap: usize,
    cases: HashMap<CaseId, Case>,
    rooms: BTreeSet<OrRoomId>,
    days: BTreeMap<i64, BTreeMap<OrRoomId, RoomDay>>,
}

impl Default for OrRooms {
    fn default() -> Self {
        Self::with_cap(MAX_CASES)
    }
}

impl OrRooms {
    /// Empty, holding at most `cap` cases.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            floor: i64::MIN,
            cap: cap.max(1),
            cases: HashMap::new(),
            rooms: BTreeSet::new(),
            days: BTreeMap::new(),
        }
    }

    fn figure(&mut self, c: &Case, add: bool) {
        let f = c.figures();
        if f == RoomDay::default() {
            return;
        }
        let rooms = self.days.entry(c.day).or_default();
        let room = rooms.entry(c.room.clone()).or_default();
        room.merge(f, add);
        if *room == RoomDay::default() {
            rooms.remove(&c.room);
            if rooms.is_empty() {
                self.days.remove(&c.day);
            }
        }
    }

    /// Records a case as an `or.case_*` event carries it.
    pub fn apply_case(&mut self, case: &OrCase) {
        self.rooms.insert(case.room.clone());
        let old = self.cases.remove(&case.case_id);
        if let Some(old) = &old {
            self.figure(old, false);
        }
        let day = case.start.as_millis().div_euclid(DAY_MS);
        if case.status == CaseStatus::Deleted || day < self.floor {
            return;
        }
        let c = Case {
            room: case.room.clone(),
            day,
            status: case.status,
            booked: case.booked_minutes,
            actual: case.actual_minutes,
            prediction: old.and_then(|o| o.prediction),
        };
        self.figure(&c, true);
        self.cases.insert(case.case_id.clone(), c);
        if self.cases.len() > self.cap {
            self.shed();
        }
    }

    /// Records an `or.case_predicted` event.
    pub fn apply_prediction(&mut self, p: &CasePrediction) {
        let Some(mut c) = self.cases.remove(&p.case_id) else {
            return;
        };
        if c.prediction.is_none_or(|(v, _)| v <= p.version) {
            self.figure(&c, false);
            c.prediction = Some((p.version, p.minutes));
            self.figure(&c, true);
        }
        self.cases.insert(p.case_id.clone(), c);
    }

    /// Drops the oldest days until at most nine tenths of the cap remain.
    fn shed(&mut self) {
        let mut per_day: BTreeMap<i64, usize> = BTreeMap::new();
        for c in self.cases.values() {
            *per_day.entry(c.day).or_default() += 1;
        }
        let keep = self.cap - self.cap / 10;
        let mut left = self.cases.len();
        let mut floor = self.floor;
        for (day, n) in per_day {
            if left <= keep {
                break;
            }
            left -= n;
            floor = day + 1;
        }
        tracing::warn!(
            held = self.cases.len(),
            cap = self.cap,
            "analytics holds too many OR cases; dropping the oldest days"
        );
        self.prune(floor);
    }

    /// Drops the days before `floor` (a floor never goes down).
    pub fn prune(&mut self, floor: i64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        self.cases.retain(|_, c| c.day >= floor);
        self.days = self.days.split_off(&floor);
    }

    /// The floor: days before it are not held (`None`: no floor yet).
    pub fn floor(&self) -> Option<i64> {
        (self.floor != i64::MIN).then_some(self.floor)
    }

    /// Whether a case ever named `room`.
    pub fn has_room(&self, room: &OrRoomId) -> bool {
        self.rooms.contains(room)
    }

    /// The figures of every room (only `room` when given) on the days
    /// `from..=to` that have a case held, by room, then day.
    pub fn room_days(
        &self,
        from: i64,
        to: i64,
        room: Option<&OrRoomId>,
    ) -> Vec<(OrRoomId, i64, RoomDay)> {
        if to < from {
            return vec![];
        }
        let mut out: Vec<(OrRoomId, i64, RoomDay)> = self
            .days
            .range(from..=to)
            .flat_map(|(day, rooms)| {
                rooms
                    .iter()
                    .filter(|(r, _)| room.is_none_or(|want| want == *r))
                    .map(|(r, f)| (r.clone(), *day, *f))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Cases held.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}
