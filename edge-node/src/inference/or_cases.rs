//! Predicted durations of the OR board's cases: the `or_duration` model's
//! features of a case, and the task that records each scheduled case's
//! prediction in the log (`or.case_predicted`), so the board shows the same
//! figure every time it is read and the regional cloud can compare booked,
//! predicted and actual times.
//!
//! The recorder wakes after commits that changed the OR board (at most
//! every [`GAP`]) and predicts,
//! in one batch, every scheduled case starting from a day ago to
//! [`RECORD_DAYS`] ahead whose current version has no recorded prediction
//! yet; the writer records a prediction only while its case is still
//! scheduled at that version. Cases outside that window are predicted when
//! a day is read and not recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hms_domain::{CaseId, CasePrediction, OrCase, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::inference::forecast::{Forecaster, OrCase as Features};
use crate::integration::hl7::time::HospitalTime;
use crate::store::Store;

/// Age given to the model when the case names no birth date (years).
pub const DEFAULT_AGE: f64 = 55.0;

/// ASA class given to the model when the case names none.
pub const DEFAULT_ASA: u8 = 2;

/// How far ahead scheduled cases get a recorded prediction, days.
pub const RECORD_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// The shortest time between two looks at the OR board.
pub const GAP: Duration = Duration::from_millis(250);

/// Most cases predicted in one batch.
const BATCH: usize = 500;

/// Patient age in whole years on `at`, from dates `YYYY-MM-DD`.
fn age_at(birth: &str, at: &str) -> Option<f64> {
    let ymd = |s: &str| -> Option<(i32, i32, i32)> {
        let mut p = s.splitn(3, '-');
        Some((
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.get(..2)?.parse().ok()?,
        ))
    };
    let (by, bm, bd) = ymd(birth)?;
    let (y, m, d) = ymd(at)?;
    let years = y - by - i32::from((m, d) < (bm, bd));
    (0..=120).contains(&years).then_some(f64::from(years))
}

/// The model's features of a case: booked minutes, the patient's age at
/// the case's start (local date; [`DEFAULT_AGE`] when unknown), the ASA
/// class ([`DEFAULT_ASA`] when unknown), procedure and surgeon codes.
pub fn features(c: &OrCase, clock: &HospitalTime) -> Features {
    let age = c
        .patient
        .as_ref()
        .and_then(|p| p.birth_date.as_ref())
        .and_then(|b| age_at(b.expose(), &clock.date(c.start)))
        .unwrap_or(DEFAULT_AGE);
    Features {
        booked_minutes: f64::from(c.booked_minutes),
        age,
        asa: c.asa.unwrap_or(DEFAULT_ASA),
        procedure: c.procedure.clone().unwrap_or_default(),
        surgeon: c.surgeon.clone().unwrap_or_default(),
    }
}

/// Predicts `cases` in one batch, as they would be recorded.
pub async fn predict(
    forecaster: &Forecaster,
    cases: &[Arc<OrCase>],
    clock: &HospitalTime,
) -> Vec<CasePrediction> {
    let feats: Vec<Features> = cases.iter().map(|c| features(c, clock)).collect();
    let out = forecaster.predict_or(&feats).await;
    cases
        .iter()
        .zip(out)
        .map(|(c, p)| CasePrediction {
            case_id: c.case_id.clone(),
            version: c.version,
            room: c.room.clone(),
            start: c.start,
            booked_minutes: c.booked_minutes,
            minutes: p.minutes.round().clamp(0.0, f64::from(u32::MAX)) as u32,
            source: p.source.to_owned(),
            reason: p.reason.map(|r| r.as_str().to_owned()),
        })
        .collect()
}

/// Records predictions until `shutdown` (see the module doc).
pub async fn run(
    store: Store,
    forecaster: Arc<Forecaster>,
    clock: HospitalTime,
    shutdown: CancellationToken,
) {
    let mut recorded: HashMap<CaseId, u64> = match store.predicted_versions().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading recorded OR predictions failed");
            HashMap::new()
        }
    };
    let mut commits = store.watch_commits();
    let mut last = None;
    loop {
        let view = store.or_view();
        if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &view)) {
            let now = Timestamp::now().as_millis();
            let pending: Vec<Arc<OrCase>> = view
                .starting(
                    Timestamp::from_millis(now - DAY_MS),
                    Timestamp::from_millis(now + RECORD_DAYS * DAY_MS),
                    None,
                )
                .into_iter()
                .filter(|c| c.is_active() && recorded.get(&c.case_id) != Some(&c.version))
                .collect();
            let mut ok = true;
            for chunk in pending.chunks(BATCH) {
                let predictions = predict(&forecaster, chunk, &clock).await;
                match store.record_predictions(predictions.clone()).await {
                    Ok(_) => {
                        for p in predictions {
                            recorded.insert(p.case_id, p.version);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "recording OR predictions failed; retrying");
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                last = Some(view);
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
        }
        // At most one look every [`GAP`]: a busy feed commits thousands of
        // times a second and the look is not free.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAP) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_whole_years_on_the_day() {
        assert_eq!(age_at("1961-03-15", "2026-03-14"), Some(64.0));
        assert_eq!(age_at("1961-03-15", "2026-03-15"), Some(65.0));
        assert_eq!(age_at("1961-03", "2026-03-15"), None, "a month only");
        assert_eq!(age_at("1800-01-01", "2026-03-15"), None, "over 120");
        assert_eq!(age_at("2030-01-01", "2026-03-15"), None, "born later");
    }
}
