//! `/or`: the OR board of one day (nurse and up, as the API's OR
//! endpoints): the operating rooms as rows, the day as a timeline, each
//! case a block as long as its booking with its predicted duration drawn
//! beneath, and the cases whose predicted end runs into the next case of
//! their room marked as an overrun risk (by a border, a sign and the word,
//! never by colour alone). Cancelled, bumped and no-show cases show greyed
//! with their status.
//!
//! The timeline is SVG drawn here (no script, no inline style); below it
//! the same cases as a table, for screen readers and for reading figures.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use hms_domain::{CaseStatus, Priority, Timestamp};
use hms_web::page;
use maud::{Markup, html};

use super::{Signed, frame, may, message};
use crate::api::AppState;
use crate::api::or::{DayCase, day, day_bounds};
use crate::auth::Role;

/// Timeline geometry (SVG user units).
const W: f64 = 960.0;
const LABEL: f64 = 120.0;
const ROW: f64 = 46.0;
const HEAD: f64 = 22.0;
const HOUR_MS: i64 = 3_600_000;

/// `?date=` of the page.
#[derive(Debug, serde::Deserialize)]
pub struct DateQuery {
    /// Local date, `YYYY-MM-DD`.
    pub date: Option<String>,
}

fn status_label(s: CaseStatus) -> &'static str {
    match s {
        CaseStatus::Scheduled => "Scheduled",
        CaseStatus::Cancelled => "Cancelled",
        CaseStatus::NoShow => "No-show",
        CaseStatus::Bumped => "Bumped",
        CaseStatus::Deleted => "Deleted",
        CaseStatus::Completed => "Completed",
    }
}

fn minutes(m: f64) -> String {
    let m = m.round() as i64;
    if m >= 60 {
        format!("{} h {:02} min", m / 60, m % 60)
    } else {
        format!("{m} min")
    }
}

fn timeline(state: &AppState, cases: &[DayCase], from: Timestamp, to: Timestamp) -> Markup {
    let rooms = &state.settings.or_rooms;
    // Hours shown: 07:00 to 19:00, widened to every case's booked and
    // predicted time on the day.
    let mut first = from.as_millis() + 7 * HOUR_MS;
    let mut last = from.as_millis() + 19 * HOUR_MS;
    for d in cases {
        first = first.min(d.slot.case.start.as_millis());
        last = last
            .max(d.slot.case.booked_end().as_millis())
            .max(d.slot.predicted_end().as_millis());
    }
    let first = from.as_millis() + (first - from.as_millis()).div_euclid(HOUR_MS) * HOUR_MS;
    let last = (from.as_millis()
        + (last - from.as_millis() + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS)
        .min(to.as_millis().max(first + HOUR_MS) + 12 * HOUR_MS);
    let span = (last - first).max(HOUR_MS) as f64;
    let x = |t: i64| LABEL + (W - LABEL - 24.0) * ((t - first) as f64 / span).clamp(0.0, 1.0);
    let h = HEAD + ROW * rooms.len().max(1) as f64 + 4.0;
    let risks = cases.iter().filter(|d| d.slot.overrun_risk).count();
    let label = format!(
        "Timeline of {} operating rooms: {} cases, {} at risk of overrunning into the next case",
        rooms.len(),
        cases.len(),
        risks
    );
    html! {
        svg class="timeline" viewBox={ "0 0 " (W) " " (h) } role="img" aria-label=(label) {
            @for k in 0..=((last - first) / HOUR_MS) {
                @let t = first + k * HOUR_MS;
                line class="hour" x1=(format!("{:.1}", x(t))) y1=(HEAD - 4.0) x2=(format!("{:.1}", x(t))) y2=(h - 4.0) {}
                text class="tick" x=(format!("{:.1}", x(t))) y=(HEAD - 8.0) text-anchor="middle" {
                    (state.settings.clock.clock_time(Timestamp::from_millis(t)))
                }
            }
            @for (i, r) in rooms.iter().enumerate() {
                @let y = HEAD + ROW * i as f64;
                rect class="lane" x="0" y=(y) width=(W) height=(ROW) {}
                text class="room" x="6" y=(y + ROW / 2.0 + 5.0) { (r.name) }
                @for d in cases.iter().filter(|d| d.slot.case.room == r.id) {
                    @let c = &d.slot.case;
                    @let x0 = x(c.start.as_millis());
                    @let xb = x(c.booked_end().as_millis());
                    @let xp = x(d.slot.predicted_end().as_millis());
                    @let class = format!(
                        "case {} {}{}",
                        c.status.as_str(),
                        c.priority.as_str(),
                        if d.slot.overrun_risk { " risk" } else { "" }
                    );
                    g class=(class) data-case=(c.case_id.as_str()) {
                        title {
                            (c.case_id) ", " (state.settings.clock.clock_time(c.start)) ", booked " (minutes(f64::from(c.booked_minutes)))
                            ", predicted " (minutes(d.slot.predicted_minutes)) ", " (status_label(c.status).to_lowercase())
                            @if d.slot.overrun_risk { ", overrun risk" }
                        }
                        rect class="predicted" x=(format!("{x0:.1}")) y=(y + ROW - 12.0) width=(format!("{:.1}", (xp - x0).max(2.0))) height="6" {}
                        rect class="booked" x=(format!("{x0:.1}")) y=(y + 6.0) width=(format!("{:.1}", (xb - x0).max(2.0))) height=(ROW - 20.0) rx="3" {}
                        text class="label" x=(format!("{:.1}", x0 + 4.0)) y=(y + ROW / 2.0 + 1.0) {
                            @if d.slot.overrun_risk { "⚠ " }
                            @if c.priority == Priority::Urgent { "URGENT " }
                            (c.case_id)
                        }
                    }
                }
            }
        }
    }
}

fn table(state: &AppState, cases: &[DayCase]) -> Markup {
    let room_name = |id: &hms_domain::OrRoomId| {
        state
            .settings
            .or_rooms
            .iter()
            .find(|r| &r.id == id)
            .map_or(id.as_str().to_owned(), |r| r.name.clone())
    };
    html! {
        table class="or-cases" {
            caption { "Cases of the day, by room and start" }
            thead {
                tr {
                    th scope="col" { "Room" }
                    th scope="col" { "Start" }
                    th scope="col" { "Case" }
                    th scope="col" { "Procedure" }
                    th scope="col" { "Surgeon" }
                    th scope="col" { "Patient" }
                    th scope="col" class="num" { "Booked" }
                    th scope="col" class="num" { "Predicted" }
                    th scope="col" { "Status" }
                    th scope="col" { "Overrun risk" }
                }
            }
            tbody {
                @for d in cases {
                    @let c = &d.slot.case;
                    tr data-case=(c.case_id.as_str()) data-status=(c.status.as_str()) data-overrun=(d.slot.overrun_risk) {
                        td { (room_name(&c.room)) }
                        td { (state.settings.clock.clock_time(c.start)) }
                        td {
                            (c.case_id)
                            @if c.priority == Priority::Urgent { " " span class="flag urgent" { "Urgent" } }
                        }
                        td { (c.procedure_text.as_deref().or(c.procedure.as_deref()).unwrap_or("—")) }
                        td { (c.surgeon_name.as_deref().or(c.surgeon.as_deref()).unwrap_or("—")) }
                        td {
                            @match c.patient.as_ref() {
                                Some(p) => (p.name.as_ref().map_or(p.mrn.expose(), |n| n.expose())),
                                None => "—",
                            }
                        }
                        td class="num" { (minutes(f64::from(c.booked_minutes))) }
                        td class="num" {
                            (minutes(d.slot.predicted_minutes))
                            @if d.source == "fallback" {
                                br;
                                span class="hint" { "rule: " (d.reason.map_or("unknown", |r| r.as_str()).replace('_', " ")) }
                            }
                        }
                        td {
                            (status_label(c.status))
                            @if let Some(by) = &c.bumped_by { " by " (by) }
                        }
                        td {
                            @if d.slot.overrun_risk { strong class="risk" { "⚠ Yes" } } @else { "No" }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /or`.
pub async fn page(
    State(state): State<AppState>,
    who: Signed,
    query: Result<Query<DateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !may(&who.principal, Role::Nurse) {
        return message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The OR board needs the nurse role or above.",
        );
    }
    let date = query
        .ok()
        .and_then(|Query(q)| q.date)
        .filter(|d| !d.is_empty());
    let Ok((date, from, to)) = day_bounds(&state, date.as_deref()) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Not a date",
            "Choose a calendar date (YYYY-MM-DD).",
        );
    };
    let cases = day(&state, from, to, None).await;
    let clock = &state.settings.clock;
    let prev = clock.date(Timestamp::from_millis(from.as_millis() - HOUR_MS));
    let next = clock.date(to);
    let risks = cases.iter().filter(|d| d.slot.overrun_risk).count();
    let active = cases.iter().filter(|d| d.slot.case.is_active()).count();
    let body = html! {
        h1 { "Operating rooms, " (date) }
        form class="day" method="get" action="/or" {
            label for="or-date" { "Day" }
            input id="or-date" type="date" name="date" value=(date) required;
            button type="submit" { "Show" }
            a href={ "/or?date=" (prev) } { "← Previous day" }
            a href={ "/or?date=" (next) } { "Next day →" }
        }
        p class="summary" {
            (active) " scheduled " @if active == 1 { "case" } @else { "cases" }
            " in " (state.settings.or_rooms.len()) " rooms; "
            strong { (risks) " at risk of overrunning" } " into the next case of their room."
        }
        @if state.settings.or_rooms.is_empty() {
            p class="notice" { "No operating rooms are configured ([[or_room]] in the configuration)." }
        } @else {
            (timeline(&state, &cases, from, to))
            p class="hint legend" {
                "Each block is a case as booked; the bar beneath it is its predicted duration. "
                "⚠ marks a case predicted to run into the next case of its room."
            }
        }
        @if cases.is_empty() {
            p { "No cases are booked on this day." }
        } @else {
            (table(&state, &cases))
        }
    };
    page::respond(frame(&state, &who, "Operating rooms", "/or", "or", body))
}
