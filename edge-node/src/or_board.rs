//! The OR board: every operating-room case the scheduling feed booked, as
//! the writer holds it, and the immutable [`OrView`] readers get after each
//! commit. Sans-IO.
//!
//! Cases change only through [`OrBoard::apply_change`], with the
//! `or.case_*` events the SIU semantics ([`crate::integration::siu`])
//! planned; each event carries the whole case, so the board and its
//! projection are rebuilt from the log alone. A deleted case (S17) leaves
//! the board (its projection row keeps the `deleted` status).
//!
//! Readers ask for a span of time (a local day): cases are kept in buckets
//! of one UTC day by their start, so publishing a view after a commit
//! copies one pointer per day, and only a changed day's list is rebuilt.
//!
//! [`timeline`] puts a day's cases in order per room and flags the ones
//! whose predicted end runs past the start of the next case in the room
//! (`overrun_risk`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hms_domain::{CaseId, CaseStatus, EventBody, OrCase, OrRoomId, Timestamp};

const DAY_MS: i64 = 24 * 3_600_000;

/// The longest a case may be booked for, in milliseconds: a case that
/// overlaps a span starts at most this long before it.
const LONGEST_MS: i64 = hms_domain::or::MAX_BOOKED_MINUTES as i64 * 60_000;

fn day_of(t: Timestamp) -> i64 {
    t.as_millis().div_euclid(DAY_MS)
}

/// The cases of one UTC day, in start order (then case id).
type Day = Arc<Vec<Arc<OrCase>>>;

/// What readers see: the committed cases by day.
#[derive(Debug, Clone, Default)]
pub struct OrView {
    days: BTreeMap<i64, Day>,
}

impl OrView {
    /// Cases starting in `[from, to)`, in start order, in `room` when given;
    /// deleted cases are not on the board.
    pub fn starting(
        &self,
        from: Timestamp,
        to: Timestamp,
        room: Option<&OrRoomId>,
    ) -> Vec<Arc<OrCase>> {
        if to <= from {
            return vec![];
        }
        let (first, last) = (
            day_of(from),
            day_of(Timestamp::from_millis(to.as_millis() - 1)),
        );
        self.days
            .range(first..=last)
            .flat_map(|(_, d)| d.iter())
            .filter(|c| c.start >= from && c.start < to)
            .filter(|c| room.is_none_or(|r| &c.room == r))
            .cloned()
            .collect()
    }

    /// Cases on the board.
    pub fn len(&self) -> usize {
        self.days.values().map(|d| d.len()).sum()
    }

    /// Whether the board holds no case.
    pub fn is_empty(&self) -> bool {
        self.days.values().all(|d| d.is_empty())
    }
}

/// The writer's OR board.
#[derive(Debug, Clone, Default)]
pub struct OrBoard {
    by_id: HashMap<CaseId, Arc<OrCase>>,
    view: OrView,
}

/// Why a recorded change does not fit the board (replay of a bad log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OR case {case}: {reason}")]
pub struct OrBoardError {
    /// The case.
    pub case: CaseId,
    /// What does not fit.
    pub reason: String,
}

impl OrBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// The board holding `cases` (the projection's rows); deleted cases
    /// are left out.
    pub fn from_cases(cases: impl IntoIterator<Item = OrCase>) -> Self {
        let mut b = Self::new();
        for c in cases {
            if c.status != CaseStatus::Deleted {
                b.insert(Arc::new(c));
            }
        }
        b
    }

    /// A case on the board.
    pub fn case(&self, id: &CaseId) -> Option<&Arc<OrCase>> {
        self.by_id.get(id)
    }

    /// The view to publish.
    pub fn view(&self) -> OrView {
        self.view.clone()
    }

    /// Cases of `room` whose booked time overlaps `[from, to)`, in start order.
    pub fn overlapping(
        &self,
        room: &OrRoomId,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Iterator<Item = &Arc<OrCase>> + '_ {
        let first = day_of(Timestamp::from_millis(from.as_millis() - LONGEST_MS));
        let last = day_of(to);
        let room = room.clone();
        self.view
            .days
            .range(first..=last)
            .flat_map(|(_, d)| d.iter())
            .filter(move |c| c.room == room && c.overlaps(from, to))
    }

    /// Applies one recorded change (live or from the log). An
    /// `or.case_*` event replaces the case (or, deleted, removes it); every
    /// other event leaves the board alone.
    pub fn apply_change(&mut self, change: &EventBody) -> Result<(), OrBoardError> {
        let EventBody::OrCaseChanged { case, .. } = change else {
            return Ok(());
        };
        let expected = self.by_id.get(&case.case_id).map_or(1, |c| c.version + 1);
        if case.version != expected && !(expected > 1 && case.version == 1) {
            // Version 1 again: a case deleted and booked anew is not on the
            // board, so it starts over; anything else out of step is a log
            // that does not fit.
            return Err(OrBoardError {
                case: case.case_id.clone(),
                reason: format!("version {} where {expected} was expected", case.version),
            });
        }
        self.remove(&case.case_id);
        if case.status != CaseStatus::Deleted {
            self.insert(Arc::new(case.clone()));
        }
        Ok(())
    }

    fn insert(&mut self, c: Arc<OrCase>) {
        let day = Arc::make_mut(self.view.days.entry(day_of(c.start)).or_default());
        let at = day.partition_point(|x| (x.start, &x.case_id) < (c.start, &c.case_id));
        day.insert(at, c.clone());
        self.by_id.insert(c.case_id.clone(), c);
    }

    fn remove(&mut self, id: &CaseId) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        let key = day_of(old.start);
        if let Some(day) = self.view.days.get_mut(&key) {
            Arc::make_mut(day).retain(|x| &x.case_id != id);
            if day.is_empty() {
                self.view.days.remove(&key);
            }
        }
    }
}

/// A case on a day's timeline, with its predicted duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The case.
    pub case: Arc<OrCase>,
    /// Predicted duration, minutes.
    pub predicted_minutes: f64,
    /// Its predicted end runs past the start of the next scheduled case in
    /// its room.
    pub overrun_risk: bool,
}

impl Slot {
    /// The predicted end.
    pub fn predicted_end(&self) -> Timestamp {
        Timestamp::from_millis(
            self.case.start.as_millis() + (self.predicted_minutes * 60_000.0).round() as i64,
        )
    }
}

/// Orders `cases` (each with its predicted minutes) by room and start and
/// flags overrun risk: a scheduled case whose predicted end is after the
/// start of the next scheduled case in the same room. Cancelled, bumped and
/// no-show cases are listed but take no room time.
pub fn timeline(cases: Vec<(Arc<OrCase>, f64)>) -> Vec<Slot> {
    let mut slots: Vec<Slot> = cases
        .into_iter()
        .map(|(case, predicted_minutes)| Slot {
            case,
            predicted_minutes,
            overrun_risk: false,
        })
        .collect();
    slots.sort_by(|a, b| {
        (&a.case.room, a.case.start, &a.case.case_id).cmp(&(
            &b.case.room,
            b.case.start,
            &b.case.case_id,
        ))
    });
    let active: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].case.is_active())
        .collect();
    for w in active.windows(2) {
        let (i, j) = (w[0], w[1]);
        if slots[i].case.room == slots[j].case.room
            && slots[i].predicted_end() > slots[j].case.start
        {
            slots[i].overrun_risk = true;
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use hms_domain::CaseChange;

    fn at(min: i64) -> Timestamp {
        Timestamp::from_millis(1_780_000_000_000 + min * 60_000)
    }

    fn case(id: &str, room: &str, start_min: i64, minutes: u32) -> OrCase {
        OrCase::booked(
            CaseId::new(id).unwrap(),
            OrRoomId::new(room).unwrap(),
            at(start_min),
            minutes,
        )
    }

    fn changed(c: &OrCase) -> EventBody {
        EventBody::OrCaseChanged {
            change: CaseChange::Modified,
            case: c.clone(),
        }
    }

    #[test]
    fn changes_move_a_case_between_days_and_a_deleted_case_leaves() {
        let mut b = OrBoard::new();
        let mut c = case("C1", "OR-1", 0, 60);
        b.apply_change(&changed(&c)).unwrap();
        let old_view = b.view();
        c.version = 2;
        c.start = at(3 * 24 * 60);
        b.apply_change(&changed(&c)).unwrap();
        assert_eq!(b.view().starting(at(0), at(60), None).len(), 0);
        assert_eq!(
            b.view()
                .starting(at(3 * 24 * 60), at(3 * 24 * 60 + 1), None)[0]
                .version,
            2
        );
        // A view already published does not change.
        assert_eq!(old_view.starting(at(0), at(60), None).len(), 1);
        c.version = 3;
        c.status = CaseStatus::Deleted;
        b.apply_change(&changed(&c)).unwrap();
        assert!(b.view().is_empty());
        assert!(b.case(&c.case_id).is_none());
        // Booked again after its deletion: version 1 once more.
        let again = case("C1", "OR-1", 0, 30);
        b.apply_change(&changed(&again)).unwrap();
        assert_eq!(b.view().len(), 1);
    }

    #[test]
    fn a_change_out_of_step_with_the_case_is_refused() {
        let mut b = OrBoard::new();
        let mut c = case("C1", "OR-1", 0, 60);
        b.apply_change(&changed(&c)).unwrap();
        c.version = 5;
        let e = b.apply_change(&changed(&c)).unwrap_err();
        assert!(e.to_string().contains("version 5 where 2"), "{e}");
    }

    #[test]
    fn spans_rooms_and_overlaps_are_read_in_order() {
        let b = OrBoard::from_cases([
            case("B", "OR-1", 120, 60),
            case("A", "OR-1", 0, 90),
            case("C", "OR-2", 30, 60),
            case("D", "OR-1", 24 * 60 - 30, 120),
        ]);
        let ids = |v: Vec<Arc<OrCase>>| -> Vec<String> {
            v.iter().map(|c| c.case_id.to_string()).collect()
        };
        assert_eq!(
            ids(b.view().starting(at(0), at(24 * 60), None)),
            ["A", "C", "B", "D"]
        );
        let r1 = OrRoomId::new("OR-1").unwrap();
        assert_eq!(
            ids(b.view().starting(at(0), at(24 * 60), Some(&r1))),
            ["A", "B", "D"]
        );
        // D started the day before and runs into the next one.
        let over: Vec<String> = b
            .overlapping(&r1, at(24 * 60), at(24 * 60 + 10))
            .map(|c| c.case_id.to_string())
            .collect();
        assert_eq!(over, ["D"]);
        let over: Vec<String> = b
            .overlapping(&r1, at(60), at(150))
            .map(|c| c.case_id.to_string())
            .collect();
        assert_eq!(over, ["A", "B"]);
    }

    #[test]
    fn overrun_risk_is_a_predicted_end_past_the_next_active_case_in_the_room() {
        let a = Arc::new(case("A", "OR-1", 0, 60));
        let b = Arc::new(case("B", "OR-1", 60, 60));
        let mut cancelled = case("X", "OR-1", 120, 60);
        cancelled.status = CaseStatus::Cancelled;
        let cancelled = Arc::new(cancelled);
        let c = Arc::new(case("C", "OR-1", 180, 60));
        let other = Arc::new(case("D", "OR-2", 0, 60));
        let slots = timeline(vec![
            (c.clone(), 30.0),
            (a.clone(), 72.0),
            (b.clone(), 150.0),
            (cancelled, 500.0),
            (other, 600.0),
        ]);
        let flagged: Vec<(String, bool)> = slots
            .iter()
            .map(|s| (s.case.case_id.to_string(), s.overrun_risk))
            .collect();
        assert_eq!(
            flagged,
            [
                ("A".to_owned(), true),
                ("B".to_owned(), true),
                ("X".to_owned(), false),
                ("C".to_owned(), false),
                ("D".to_owned(), false),
            ],
            "B runs past C's start across the cancelled X; the last case of a room has nothing to run into"
        );
        let exact = timeline(vec![(a, 60.0), (b, 60.0)]);
        assert!(
            !exact[0].overrun_risk,
            "ending as the next begins is on time"
        );
    }
}
