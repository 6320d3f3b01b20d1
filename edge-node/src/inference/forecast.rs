//! Bed-demand forecasts and OR case durations: model first, rules second.
//!
//! The [`Forecaster`] computes, per unit, occupied beds at +24, +48 and
//! +72 h with an 80 % interval from the live board (census, capacity,
//! reservations as pending admissions, expected discharges) and the last
//! 24 h of admissions and discharges (kept from the store's commit notices,
//! seeded from the log at start). It recomputes on a schedule
//! (`inference.refresh_s`) and, within [`MIN_REFRESH_GAP`], when a unit's
//! census moves by at least [`SIGNIFICANT`] beds, and serves every request
//! from the cached result.
//!
//! When the model cannot answer (see [`crate::inference::Reason`]), the
//! fallback is the historical average census of the unit at the target
//! weekday and hour: hourly census rebuilt from the log at start (the last
//! [`HISTORY_DAYS`] days, as far as retention kept bed events) plus the
//! samples the forecaster takes as it runs (the interval is ±1.28 standard
//! deviations); before a slot has any, the current census (persistence)
//! with ±10 % of the unit's capacity. Hours and weekdays, in the history and
//! in the model's features, are the hospital's local ones (`node.timezone`,
//! see [`HospitalTime`]): the census sampled at 08:00 is the morning round in
//! summer and in winter alike.
//!
//! OR durations: the model, else the surgeon's mean duration from the
//! manifest plus 20 %, else (unknown surgeon, or no manifest) the booked
//! minutes plus 20 %.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hms_domain::{Timestamp, UnitId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::inference::{BED_DEMAND, OR_DURATION, Reason, Runtime, Unanswered};
use crate::integration::hl7::time::HospitalTime;
use crate::store::Store;

/// Census change (beds) in a unit that triggers a refresh before the schedule.
pub const SIGNIFICANT: u32 = 2;

/// The shortest time between two refreshes a census change asks for.
pub const MIN_REFRESH_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Forecast horizons, hours.
pub const HORIZONS: [i64; 3] = [24, 48, 72];

const HOUR_MS: i64 = 3_600_000;

/// How far back the fallback's history is rebuilt from the log at start.
pub const HISTORY_DAYS: i64 = 56;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One horizon of a forecast.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Horizon {
    /// Hours ahead.
    pub hours: i64,
    /// Lower bound of the 80 % interval.
    pub low: f64,
    /// Point forecast.
    pub mid: f64,
    /// Upper bound of the 80 % interval.
    pub high: f64,
}

/// A unit's forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitForecast {
    /// The unit.
    pub unit: UnitId,
    /// When it was computed.
    pub generated_at: Timestamp,
    /// Occupied beds now.
    pub census: u32,
    /// Beds in the unit.
    pub capacity: u32,
    /// `model` or `fallback`.
    pub source: &'static str,
    /// Why the fallback answered.
    pub reason: Option<Reason>,
    /// The horizons.
    pub horizons: Vec<Horizon>,
}

/// Every unit's forecast, as cached.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Forecasts {
    /// When computed (none before the first refresh).
    pub generated_at: Option<Timestamp>,
    /// By unit.
    pub units: BTreeMap<UnitId, UnitForecast>,
    /// How long the refresh took, ms.
    pub refresh_ms: f64,
}

/// The hospital roll-up: sums over units.
pub fn roll_up(f: &Forecasts) -> serde_json::Value {
    let mut sums = HORIZONS.map(|h| Horizon {
        hours: h,
        low: 0.0,
        mid: 0.0,
        high: 0.0,
    });
    let (mut census, mut capacity, mut from_model) = (0u32, 0u32, 0usize);
    for u in f.units.values() {
        census += u.census;
        capacity += u.capacity;
        from_model += usize::from(u.source == "model");
        for (s, h) in sums.iter_mut().zip(&u.horizons) {
            s.low += h.low;
            s.mid += h.mid;
            s.high += h.high;
        }
    }
    serde_json::json!({
        "generated_at": f.generated_at,
        "refresh_ms": f.refresh_ms,
        "census": census,
        "capacity": capacity,
        "units": f.units.len(),
        "units_from_model": from_model,
        "horizons": sums,
    })
}

/// Admissions and discharges of the last 24 h, per unit.
#[derive(Debug, Default)]
struct Activity {
    /// (time ms, unit, admission?)
    recent: VecDeque<(i64, UnitId, bool)>,
    /// (admissions, discharges) per unit of `recent`, kept as it changes so
    /// that a refresh costs the number of units, not of movements.
    totals: HashMap<UnitId, (u32, u32)>,
}

impl Activity {
    fn add(&mut self, at: i64, unit: UnitId, admission: bool) {
        let e = self.totals.entry(unit.clone()).or_default();
        if admission {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
        self.recent.push_back((at, unit, admission));
    }

    /// Admissions and discharges per unit over the 24 h before `now`.
    fn counts(&mut self, now: i64) -> &HashMap<UnitId, (u32, u32)> {
        while let Some((t, ..)) = self.recent.front()
            && *t < now - DAY_MS
        {
            let Some((_, unit, admission)) = self.recent.pop_front() else {
                break;
            };
            if let Some(e) = self.totals.get_mut(&unit) {
                if admission {
                    e.0 = e.0.saturating_sub(1);
                } else {
                    e.1 = e.1.saturating_sub(1);
                }
                if *e == (0, 0) {
                    self.totals.remove(&unit);
                }
            }
        }
        &self.totals
    }
}

/// Whether an event kind admits to a bed (`Some(true)`) or discharges from it.
fn movement(kind: &str) -> Option<bool> {
    match kind {
        "bed.assigned" | "bed.placed" | "bed.transferred_in" | "bed.readmitted" => Some(true),
        "bed.released" | "bed.transferred_out" => Some(false),
        _ => None,
    }
}

/// Census samples per unit × local weekday × local hour: the fallback's history.
#[derive(Debug, Default)]
struct History {
    /// (sum, sum of squares, count) per slot.
    slots: HashMap<(UnitId, u8, u8), (f64, f64, u32)>,
    /// The local hour (its start, ms) each unit was last sampled in.
    sampled: HashMap<UnitId, i64>,
    /// Whose hours and weekdays (UTC by default).
    clock: HospitalTime,
}

/// Local weekday (0 = Monday) and hour of a time.
fn slot_of(clock: &HospitalTime, ms: i64) -> (u8, u8) {
    clock.slot(Timestamp::from_millis(ms))
}

/// The start of the local hour holding `ms`.
fn hour_of(clock: &HospitalTime, ms: i64) -> i64 {
    clock.start_of_hour(Timestamp::from_millis(ms)).as_millis()
}

impl History {
    fn new(clock: HospitalTime) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    fn sample(&mut self, unit: &UnitId, now: i64, census: u32) {
        let hour = hour_of(&self.clock, now);
        if self.sampled.get(unit) == Some(&hour) {
            return;
        }
        self.sampled.insert(unit.clone(), hour);
        self.record(unit, hour, census);
    }

    /// Adds one census observation at `at`.
    fn record(&mut self, unit: &UnitId, at: i64, census: u32) {
        let (w, h) = slot_of(&self.clock, at);
        let c = f64::from(census);
        let e = self.slots.entry((unit.clone(), w, h)).or_default();
        e.0 += c;
        e.1 += c * c;
        e.2 += 1;
    }

    /// Mean and standard deviation of the slot of `at`.
    fn stats(&self, unit: &UnitId, at: i64) -> Option<(f64, f64)> {
        let (w, h) = slot_of(&self.clock, at);
        let (s, ss, n) = *self.slots.get(&(unit.clone(), w, h))?;
        let n = f64::from(n);
        let mean = s / n;
        Some((mean, (ss / n - mean * mean).max(0.0).sqrt()))
    }
}

/// Each unit's census at every local hour boundary from `now` back to
/// `oldest`, rebuilt from the census `now` and the moves (newest first: time,
/// unit, admission?) by undoing, going back, every move after each boundary.
fn rebuild(
    clock: &HospitalTime,
    now_census: &HashMap<UnitId, u32>,
    moves: &[(i64, UnitId, bool)],
    now: i64,
    oldest: i64,
) -> Vec<(UnitId, i64, u32)> {
    let mut census: HashMap<&UnitId, i64> =
        now_census.iter().map(|(u, c)| (u, i64::from(*c))).collect();
    let mut out = vec![];
    let mut next = moves.iter().peekable();
    let mut hour = hour_of(clock, now);
    while hour >= oldest {
        while let Some((at, unit, adm)) = next.peek() {
            if *at <= hour {
                break;
            }
            if let Some(c) = census.get_mut(unit) {
                *c -= if *adm { 1 } else { -1 };
            }
            next.next();
        }
        let mut units: Vec<_> = census.iter().collect();
        units.sort();
        for (unit, c) in units {
            out.push(((*unit).clone(), hour, (*c).max(0) as u32));
        }
        // The local hour before (an hour earlier, unless the offset changed
        // by a fraction of an hour in between).
        hour = hour_of(clock, hour - 1);
    }
    out
}

/// One unit's inputs at a time.
#[derive(Debug, Clone, PartialEq)]
struct UnitState {
    unit: UnitId,
    census: u32,
    capacity: u32,
    arrivals: u32,
    discharges: u32,
    pending_in: u32,
    pending_out: u32,
}

impl UnitState {
    /// The model's feature row, in the manifest's order (local hour and
    /// weekday).
    fn features(&self, clock: &HospitalTime, now: i64) -> [f32; 10] {
        let (w, h) = slot_of(clock, now);
        let tau = std::f64::consts::TAU;
        let (hs, hc) = (tau * f64::from(h) / 24.0).sin_cos();
        let (ws, wc) = (tau * f64::from(w) / 7.0).sin_cos();
        [
            self.census as f32,
            self.capacity as f32,
            self.arrivals as f32,
            self.discharges as f32,
            self.pending_in as f32,
            self.pending_out as f32,
            hs as f32,
            hc as f32,
            ws as f32,
            wc as f32,
        ]
    }
}

/// The manifest's bed-demand feature order, which `UnitState::features` fills.
pub const BED_FEATURES: [&str; 10] = [
    "census",
    "capacity",
    "arrivals_24h",
    "discharges_24h",
    "pending_admissions",
    "pending_discharges",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
];

/// The manifest's OR feature order.
pub const OR_FEATURES: [&str; 5] = [
    "booked_minutes",
    "age",
    "asa",
    "procedure_code",
    "surgeon_code",
];

/// Forecasts and OR predictions of one appliance.
pub struct Forecaster {
    runtime: ArcSwap<Runtime>,
    store: Store,
    cache: ArcSwap<Forecasts>,
    activity: Mutex<Activity>,
    history: Mutex<History>,
    refresh: Duration,
    /// The hospital's clock: local hours and weekdays.
    clock: HospitalTime,
}

impl std::fmt::Debug for Forecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecaster").finish_non_exhaustive()
    }
}

/// An OR case to predict.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrCase {
    /// Booked duration, minutes.
    pub booked_minutes: f64,
    /// Patient age, years.
    pub age: f64,
    /// ASA physical status class, 1 to 6.
    pub asa: u8,
    /// Procedure code.
    pub procedure: String,
    /// Surgeon code.
    pub surgeon: String,
}

/// A predicted OR case duration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrPrediction {
    /// Predicted minutes.
    pub minutes: f64,
    /// `model` or `fallback`.
    pub source: &'static str,
    /// Why the fallback answered.
    pub reason: Option<Reason>,
}

impl Forecaster {
    /// A forecaster over `store` with `runtime` (its history is seeded from
    /// the log when [`Forecaster::run`] starts), in the hours and weekdays of
    /// `clock`.
    pub fn new(
        store: Store,
        runtime: Runtime,
        refresh: Duration,
        clock: HospitalTime,
    ) -> Arc<Forecaster> {
        Arc::new(Forecaster {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            cache: ArcSwap::from_pointee(Forecasts::default()),
            activity: Mutex::new(Activity::default()),
            history: Mutex::new(History::new(clock.clone())),
            refresh,
            clock,
        })
    }

    /// The runtime (model states for `/health`).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces the runtime (a new model set).
    pub fn swap_runtime(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// The cached forecasts.
    pub fn cached(&self) -> Arc<Forecasts> {
        self.cache.load_full()
    }

    /// Seeds the last 24 h of admissions and discharges and the fallback's
    /// history from the log: walking back from the current census, each
    /// admission after an hour boundary was not yet there and each
    /// discharge still was, which gives every unit's census at each hour of
    /// the last [`HISTORY_DAYS`] days (or as far back as the log reaches).
    async fn seed_activity(&self) {
        let now = Timestamp::now().as_millis();
        let since = now - HISTORY_DAYS * DAY_MS;
        let read = self.store.movements_since(since, now, movement).await;
        let Ok((rows, oldest)) = read else { return };
        let view = self.store.view();
        // Newest first.
        let moves: Vec<(i64, UnitId, bool)> = rows
            .into_iter()
            .filter_map(|m| {
                view.bed(&m.bed)
                    .map(|b| (m.at_ms, b.unit.clone(), m.admission))
            })
            .collect();
        {
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            for (at, unit, adm) in moves.iter().rev().filter(|m| m.0 >= now - DAY_MS) {
                a.add(*at, unit.clone(), *adm);
            }
        }
        let census: HashMap<UnitId, u32> = view
            .unit_ids()
            .filter_map(|u| Some((u.clone(), view.census(u.as_str())?.occupied)))
            .collect();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for (unit, hour, c) in rebuild(&self.clock, &census, &moves, now, oldest) {
            history.record(&unit, hour, c);
        }
        // The current hour is sampled already.
        let hour = hour_of(&self.clock, now);
        for unit in census.keys() {
            history.sampled.insert(unit.clone(), hour);
        }
    }

    fn unit_states(&self, now: i64) -> Vec<UnitState> {
        let view = self.store.view();
        let mut activity = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        let counts = activity.counts(now);
        view.unit_ids()
            .filter_map(|u| {
                let c = view.census(u.as_str())?;
                let (arrivals, discharges) = counts.get(u).copied().unwrap_or_default();
                Some(UnitState {
                    unit: u.clone(),
                    census: c.occupied,
                    capacity: c.total,
                    arrivals,
                    discharges,
                    pending_in: c.pending_in,
                    pending_out: c.pending_out,
                })
            })
            .collect()
    }

    fn fallback(&self, s: &UnitState, now: i64) -> Vec<Horizon> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let cap = f64::from(s.capacity);
        HORIZONS
            .iter()
            .map(|&h| {
                let (mid, spread) = match history.stats(&s.unit, now + h * HOUR_MS) {
                    Some((mean, sd)) => (mean, 1.28 * sd),
                    None => (f64::from(s.census), 0.1 * cap),
                };
                Horizon {
                    hours: h,
                    low: (mid - spread).clamp(0.0, cap),
                    mid: mid.clamp(0.0, cap),
                    high: (mid + spread).clamp(0.0, cap),
                }
            })
            .collect()
    }

    /// Recomputes every unit's forecast and caches it.
    pub async fn refresh_now(&self) -> Arc<Forecasts> {
        let started = std::time::Instant::now();
        let now = Timestamp::now().as_millis();
        let states = self.unit_states(now);
        {
            let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            for s in &states {
                h.sample(&s.unit, now, s.census);
            }
        }
        let runtime = self.runtime();
        let input: Vec<f32> = states
            .iter()
            .flat_map(|s| s.features(&self.clock, now))
            .collect();
        let answer = if states.is_empty() {
            Ok(vec![])
        } else {
            runtime.infer(BED_DEMAND, states.len(), input).await
        };
        let generated_at = Timestamp::from_millis(now);
        let mut units = BTreeMap::new();
        for (i, s) in states.iter().enumerate() {
            let (source, reason, horizons) = match &answer {
                Ok(out) => {
                    let cap = f64::from(s.capacity);
                    let row = &out[i * 9..(i + 1) * 9];
                    let horizons = HORIZONS
                        .iter()
                        .enumerate()
                        .map(|(k, &h)| {
                            let mut v = [row[3 * k], row[3 * k + 1], row[3 * k + 2]]
                                .map(|x| f64::from(x).clamp(0.0, cap));
                            v.sort_by(f64::total_cmp);
                            Horizon {
                                hours: h,
                                low: v[0],
                                mid: v[1],
                                high: v[2],
                            }
                        })
                        .collect();
                    ("model", None, horizons)
                }
                Err(u) => ("fallback", Some(u.reason), self.fallback(s, now)),
            };
            units.insert(
                s.unit.clone(),
                UnitForecast {
                    unit: s.unit.clone(),
                    generated_at,
                    census: s.census,
                    capacity: s.capacity,
                    source,
                    reason,
                    horizons,
                },
            );
        }
        let f = Arc::new(Forecasts {
            generated_at: Some(generated_at),
            units,
            refresh_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        self.cache.store(f.clone());
        f
    }

    /// Predicts OR case durations.
    pub async fn predict_or(&self, cases: &[OrCase]) -> Vec<OrPrediction> {
        let runtime = self.runtime();
        let spec = runtime.spec(OR_DURATION);
        let code = |list: Option<&Vec<String>>, v: &str| -> f32 {
            list.and_then(|l| l.iter().position(|x| x == v))
                .map_or(-1.0, |i| i as f32)
        };
        let input: Vec<f32> = cases
            .iter()
            .flat_map(|c| {
                [
                    c.booked_minutes as f32,
                    c.age as f32,
                    f32::from(c.asa),
                    code(spec.map(|s| &s.procedures), &c.procedure),
                    code(spec.map(|s| &s.surgeons), &c.surgeon),
                ]
            })
            .collect();
        let answer: Result<Vec<f32>, Unanswered> = if cases.is_empty() {
            Ok(vec![])
        } else {
            runtime.infer(OR_DURATION, cases.len(), input).await
        };
        cases
            .iter()
            .enumerate()
            .map(|(i, c)| match &answer {
                Ok(out) => OrPrediction {
                    minutes: f64::from(out[i]).max(0.0),
                    source: "model",
                    reason: None,
                },
                Err(u) => {
                    let surgeon_mean = spec.and_then(|s| {
                        let i = s.surgeons.iter().position(|x| *x == c.surgeon)?;
                        s.surgeon_mean_minutes.get(i).copied()
                    });
                    OrPrediction {
                        minutes: surgeon_mean.unwrap_or(c.booked_minutes) * 1.2,
                        source: "fallback",
                        reason: Some(u.reason),
                    }
                }
            })
            .collect()
    }

    /// Keeps the cache fresh until `shutdown`: on the schedule, on a
    /// significant census change, and picks up a newly installed model set.
    pub async fn run(
        self: Arc<Self>,
        settings: crate::inference::Settings,
        data_dir: std::path::PathBuf,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: CancellationToken,
    ) {
        let mut notices = self.store.subscribe();
        // Seeded here, beside the appliance, so a long log never delays start-up.
        self.seed_activity().await;
        let mut last = self.refresh_now().await;
        let mut refreshed = tokio::time::Instant::now();
        // A census change asks for a refresh; they come at most one a
        // second (a busy hour moves many beds: the forecasts follow within
        // a second without recomputing on every move).
        let mut asked = false;
        let mut tick = tokio::time::interval(self.refresh);
        tick.tick().await;
        loop {
            let mut due = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => due = true,
                _ = tokio::time::sleep_until(refreshed + MIN_REFRESH_GAP), if asked => due = true,
                n = notices.recv() => match n {
                    Ok(n) => {
                        if let Some(adm) = movement(n.kind) {
                            self.activity
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .add(Timestamp::now().as_millis(), n.bed.unit.clone(), adm);
                        }
                        let now = self.store.view().census(n.bed.unit.as_str()).map(|c| c.occupied);
                        let then = last.units.get(&n.bed.unit).map(|u| u.census);
                        if let (Some(now), Some(then)) = (now, then) {
                            asked |= now.abs_diff(then) >= SIGNIFICANT;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => asked = true,
                    Err(_) => break,
                },
            }
            if !due {
                continue;
            }
            // A model set installed since the runtime started replaces it.
            if let Some(dir) = crate::inference::models::current(&data_dir)
                && dir != self.runtime().dir()
            {
                let mut s = settings.clone();
                s.models_dir = dir;
                let m = metrics.clone();
                if let Ok(rt) = tokio::task::spawn_blocking(move || Runtime::start(&s, m)).await {
                    tracing::info!(set = ?rt.set_version(), "model set swapped in");
                    self.swap_runtime(rt);
                }
            }
            last = self.refresh_now().await;
            refreshed = tokio::time::Instant::now();
            asked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UnitId {
        UnitId::new(s).expect("unit id")
    }

    #[test]
    fn activity_counts_follow_the_last_24_hours_as_movements_come_and_go() {
        let mut a = Activity::default();
        let t0 = 1_000 * DAY_MS;
        a.add(t0, u("A"), true);
        a.add(t0 + HOUR_MS, u("A"), false);
        a.add(t0 + 2 * HOUR_MS, u("B"), true);
        a.add(t0 + 3 * HOUR_MS, u("A"), true);
        assert_eq!(
            a.counts(t0 + 4 * HOUR_MS),
            &HashMap::from([(u("A"), (2, 1)), (u("B"), (1, 0))])
        );
        // A day after the first two, they are gone; the others stay.
        assert_eq!(
            a.counts(t0 + DAY_MS + HOUR_MS + 1),
            &HashMap::from([(u("A"), (1, 0)), (u("B"), (1, 0))])
        );
        // Everything expired: nothing left, not even empty entries.
        assert!(a.counts(t0 + 2 * DAY_MS).is_empty());
        assert!(a.recent.is_empty());
    }

    #[test]
    fn hourly_census_is_rebuilt_backwards_from_the_moves() {
        // 2026-11-23 was a Monday; now is 10:30 UTC that day.
        let day = 20_780 * DAY_MS;
        let utc = HospitalTime::utc();
        assert_eq!(slot_of(&utc, day), (0, 0), "the epoch arithmetic");
        let now = day + 10 * HOUR_MS + 30 * 60_000;
        let census = HashMap::from([(u("A"), 5), (u("B"), 2)]);
        // Newest first: A admitted at 10:10, A discharged at 09:20, B admitted at 08:45.
        let moves = vec![
            (day + 10 * HOUR_MS + 10 * 60_000, u("A"), true),
            (day + 9 * HOUR_MS + 20 * 60_000, u("A"), false),
            (day + 8 * HOUR_MS + 45 * 60_000, u("B"), true),
        ];
        let got = rebuild(&utc, &census, &moves, now, day + 8 * HOUR_MS);
        let at = |unit: &str, h: i64| {
            got.iter()
                .find(|(x, t, _)| x.as_str() == unit && *t == day + h * HOUR_MS)
                .map(|r| r.2)
        };
        // 10:00: before the 10:10 admission to A.
        assert_eq!((at("A", 10), at("B", 10)), (Some(4), Some(2)));
        // 09:00: before the 09:20 discharge from A too.
        assert_eq!((at("A", 9), at("B", 9)), (Some(5), Some(2)));
        // 08:00: before the 08:45 admission to B.
        assert_eq!((at("A", 8), at("B", 8)), (Some(5), Some(1)));
        assert_eq!(at("A", 7), None, "nothing before the oldest event");
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn the_fallback_uses_the_slot_of_the_target_hour() {
        let mut h = History::default();
        let monday_9 = 20_780 * DAY_MS + 9 * HOUR_MS;
        for week in 0..4 {
            h.record(&u("A"), monday_9 - week * 7 * DAY_MS, 10 + 2 * week as u32);
        }
        let (mean, sd) = h.stats(&u("A"), monday_9 + 7 * DAY_MS).expect("slot");
        assert!((mean - 13.0).abs() < 1e-9);
        assert!((sd - 5f64.sqrt()).abs() < 1e-9);
        assert_eq!(h.stats(&u("A"), monday_9 + HOUR_MS), None);
    }

    fn ms(rfc3339: &str) -> i64 {
        Timestamp::parse_rfc3339(rfc3339)
            .expect("rfc 3339")
            .as_millis()
    }

    #[test]
    fn a_warsaw_hospital_buckets_by_local_hour() {
        let waw = HospitalTime::new(jiff::tz::TimeZone::get("Europe/Warsaw").expect("zone"));
        // Monday 08:00 in Warsaw: 07:00Z in winter (+01:00), 06:00Z in summer (+02:00).
        let winter = ms("2026-01-05T07:00:00Z");
        let summer = ms("2026-07-06T06:00:00Z");
        assert_eq!(slot_of(&waw, winter), (0, 8));
        assert_eq!(slot_of(&waw, summer), (0, 8));
        let mut local = History::new(waw.clone());
        local.record(&u("A"), winter, 10);
        local.record(&u("A"), summer, 14);
        let next_monday_8 = ms("2026-01-12T07:00:00Z");
        let (mean, _) = local.stats(&u("A"), next_monday_8).expect("slot");
        assert!((mean - 12.0).abs() < 1e-9, "{mean}");
        // By UTC hour the two mornings would be different slots.
        let mut utc = History::default();
        utc.record(&u("A"), winter, 10);
        utc.record(&u("A"), summer, 14);
        assert_eq!(utc.stats(&u("A"), next_monday_8), Some((10.0, 0.0)));

        // The model sees the local hour and weekday: 08:00 on a Monday.
        let s = UnitState {
            unit: u("A"),
            census: 1,
            capacity: 2,
            arrivals: 0,
            discharges: 0,
            pending_in: 0,
            pending_out: 0,
        };
        let f = s.features(&waw, summer);
        let (hs, hc) = (std::f64::consts::TAU * 8.0 / 24.0).sin_cos();
        assert!((f64::from(f[6]) - hs).abs() < 1e-6 && (f64::from(f[7]) - hc).abs() < 1e-6);
        assert_eq!((f[8], f[9]), (0.0, 1.0), "Monday");
        assert_ne!(f, s.features(&HospitalTime::utc(), summer));

        // Across the autumn change, each local hour is rebuilt once: 02:00
        // twice (CEST, then CET), as the clocks on the ward showed.
        let now = ms("2026-10-25T02:30:00Z"); // 03:30 CET
        let census = HashMap::from([(u("A"), 3)]);
        let got = rebuild(&waw, &census, &[], now, ms("2026-10-24T23:00:00Z"));
        let hours: Vec<(i64, u8)> = got
            .iter()
            .map(|(_, t, _)| (*t, waw.hour(Timestamp::from_millis(*t))))
            .collect();
        assert_eq!(
            hours,
            [
                (ms("2026-10-25T02:00:00Z"), 3),
                (ms("2026-10-25T01:00:00Z"), 2),
                (ms("2026-10-25T00:00:00Z"), 2),
                (ms("2026-10-24T23:00:00Z"), 1),
            ]
        );
        // A half-hour zone samples on its own hours, at half past UTC.
        let kolkata = HospitalTime::new(jiff::tz::TimeZone::get("Asia/Kolkata").expect("zone"));
        let got = rebuild(
            &kolkata,
            &census,
            &[],
            ms("2026-07-06T06:10:00Z"),
            ms("2026-07-06T04:00:00Z"),
        );
        let starts: Vec<i64> = got.iter().map(|r| r.1).collect();
        assert_eq!(
            starts,
            [ms("2026-07-06T05:30:00Z"), ms("2026-07-06T04:30:00Z")]
        );
    }
}
