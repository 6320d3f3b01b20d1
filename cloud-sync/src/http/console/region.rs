//! The region's pages (`read` scope), from the same reads as the operator
//! API:
//!
//! - `GET /console/hospitals`: every hospital this cloud holds, with its
//!   region, events, position and last ingest (`GET /api/v1/hospitals`);
//! - `GET /console/hospitals/{hospital}`: its occupied beds at each hour of
//!   the last 24 hours and now (`…/census`), and its ADT events per UTC
//!   day over the last 14 days by kind (`…/adt-volumes`), each as a chart
//!   with its figures as a table;
//! - `GET /console/replication`: DR replication (`GET /api/v1/replication`):
//!   this cloud's role, its peer, and per hospital how far the peer is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hms_domain::Timestamp;
use hms_web::{chart, page};
use maud::{Markup, html};
use serde_json::Value;

use super::{Operator, blocking, frame, message, text, when};
use crate::analytics::{DAY_MS, HOUR_MS, hour_boundaries};
use crate::http::operator::{
    adt_days, census_points, hospital_of, hospital_rows, replication_status,
};
use crate::state::CloudState;
use crate::store::registry::Scope;

/// Days of ADT volumes shown.
const VOLUME_DAYS: i64 = 14;

/// `GET /console/hospitals`.
pub async fn hospitals(State(state): State<CloudState>, who: Operator) -> Response {
    if let Err(r) = who.require(Scope::Read) {
        return r.into_response();
    }
    let st = state.clone();
    let rows = match blocking(move || hospital_rows(&st)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let main = html! {
        h1 { "Hospitals" }
        @if rows.is_empty() {
            p { "No hospital has synced to this cloud yet." }
        } @else {
            table {
                caption class="visually-hidden" { "Hospitals held by this cloud" }
                thead { tr {
                    th scope="col" { "Hospital" } th scope="col" { "Region" }
                    th scope="col" class="num" { "Events" } th scope="col" { "Last ingest" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href={ "/console/hospitals/" (text(&r["id"])) } { (text(&r["id"])) } }
                            td { (text(&r["region"])) }
                            td class="num" { (text(&r["events"])) }
                            td { @match r["last_ingest"].as_str() { Some(t) => (when(t)), None => "never" } }
                        }
                    }
                }
            }
        }
    };
    page::respond(frame(
        &state,
        &who,
        "Hospitals",
        "/console/hospitals",
        "hospitals",
        main,
    ))
}

/// Total occupied beds of a census point (`{"at", "occupied": {unit: n}}`).
fn occupied(point: &Value) -> f64 {
    point["occupied"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0)
}

fn census_section(points: &[Value], now_ms: i64) -> Markup {
    let series: Vec<(String, f64)> = points
        .iter()
        .map(|p| {
            let at = text(&p["at"]);
            let hm = at.get(11..16).unwrap_or(&at).to_owned();
            let label = if at.starts_with(&Timestamp::from_millis(now_ms).to_rfc3339()[..16]) {
                "now".to_owned()
            } else {
                hm
            };
            (label, occupied(p))
        })
        .collect();
    let latest = points.last();
    let units: Vec<(String, String)> = latest
        .and_then(|p| p["occupied"].as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    html! {
        section class="panel" aria-labelledby="census-h" {
            h2 id="census-h" { "Occupied beds, last 24 hours (UTC)" }
            (chart::line("Occupied beds", &series, "beds"))
            @if let Some(p) = latest {
                p { strong id="census-now" { (occupied(p)) } " beds occupied now." }
            }
            details {
                summary { "Figures" }
                table class="figures" {
                    caption class="visually-hidden" { "Occupied beds by hour" }
                    thead { tr { th scope="col" { "Hour (UTC)" } th scope="col" class="num" { "Occupied" } } }
                    tbody { @for (l, v) in &series { tr { td { (l) } td class="num" { (v) } } } }
                }
                @if !units.is_empty() {
                    table class="figures" {
                        caption { "Now, by unit" }
                        thead { tr { th scope="col" { "Unit" } th scope="col" class="num" { "Occupied" } } }
                        tbody { @for (u, v) in &units { tr { td { (u) } td class="num" { (v) } } } }
                    }
                }
            }
        }
    }
}

fn volumes_section(days: &[Value]) -> Markup {
    let kinds = ["admissions", "transfers", "discharges", "other"];
    let total = |d: &Value| kinds.iter().filter_map(|k| d[*k].as_f64()).sum::<f64>();
    let series: Vec<(String, f64)> = days
        .iter()
        .map(|d| {
            let date = text(&d["date"]);
            (date.get(5..).unwrap_or(&date).to_owned(), total(d))
        })
        .collect();
    html! {
        section class="panel" aria-labelledby="volumes-h" {
            h2 id="volumes-h" { "ADT events per day, last " (VOLUME_DAYS) " days (UTC)" }
            (chart::bars("ADT events", &series, "events"))
            table class="figures" id="volumes" {
                caption class="visually-hidden" { "ADT events per day by kind" }
                thead { tr {
                    th scope="col" { "Day" }
                    @for k in kinds { th scope="col" class="num" { (k) } }
                } }
                tbody {
                    @for d in days.iter().rev().filter(|d| total(d) > 0.0) {
                        tr {
                            td { (text(&d["date"])) }
                            @for k in kinds { td class="num" { (text(&d[k])) } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/hospitals/{hospital}`.
pub async fn hospital(
    State(state): State<CloudState>,
    who: Operator,
    Path(raw): Path<String>,
) -> Response {
    if let Err(r) = who.require(Scope::Read) {
        return r.into_response();
    }
    let Ok(h) = hospital_of(&state, &raw).await else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No hospital {raw} is held by this cloud."),
        );
    };
    let now = Timestamp::now().as_millis();
    let (st, hh) = (state.clone(), h.clone());
    let read = blocking(move || {
        let at: Vec<i64> = hour_boundaries(now - 24 * HOUR_MS + 1, now)
            .chain((now % HOUR_MS != 0).then_some(now))
            .collect();
        let census = census_points(&st, &hh, at.into_iter(), None)?.unwrap_or_default();
        let today = now.div_euclid(DAY_MS);
        let days = adt_days(&st, &hh, today - VOLUME_DAYS + 1, today)?;
        Ok((census, days))
    })
    .await;
    let (census, days) = match read {
        Ok(x) => x,
        Err(r) => return r,
    };
    let title = format!("Hospital {h}");
    let main = html! {
        p { a href="/console/hospitals" { "← Hospitals" } }
        h1 { (title) }
        div class="panels" {
            (census_section(&census, now))
            (volumes_section(&days))
        }
    };
    page::respond(frame(
        &state,
        &who,
        &title,
        "/console/hospitals",
        "hospital",
        main,
    ))
}

/// `GET /console/replication`.
pub async fn replication(State(state): State<CloudState>, who: Operator) -> Response {
    if let Err(r) = who.require(Scope::Read) {
        return r.into_response();
    }
    let Ok(v) = replication_status(&state).await else {
        return super::unavailable();
    };
    let rows = v["hospitals"].as_array().cloned().unwrap_or_default();
    let main = html! {
        h1 { "DR replication" }
        dl class="details" {
            dt { "This cloud" } dd id="dr-role" { (text(&v["role"])) }
            @if v["role"] == "primary" {
                dt { "DR peer" } dd { (text(&v["peer"])) }
                dt { "Peer region" } dd { (text(&v["peer_region"])) }
            }
        }
        @if v["role"] == "primary" && v["peer"].is_null() {
            p class="notice" { "No DR peer is configured: nothing is replicated." }
        }
        @if !rows.is_empty() {
            table {
                caption class="visually-hidden" { "Replication by hospital" }
                thead { tr {
                    th scope="col" { "Hospital" }
                    @for k in columns(&rows) { th scope="col" { (k.replace('_', " ")) } }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (text(&r["hospital"])) }
                            @for k in columns(&rows) { td { (cell(&r[k.as_str()])) } }
                        }
                    }
                }
            }
        }
    };
    page::respond(frame(
        &state,
        &who,
        "DR replication",
        "/console/replication",
        "replication",
        main,
    ))
}

/// The columns of the replication rows besides `hospital`, in the order
/// the API gives them.
fn columns(rows: &[Value]) -> Vec<String> {
    rows.first()
        .and_then(Value::as_object)
        .map(|o| o.keys().filter(|k| *k != "hospital").cloned().collect())
        .unwrap_or_default()
}

fn cell(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) if t.len() >= 20 && t.as_bytes().get(10) == Some(&b'T') => when(t),
        _ => html! { (text(v)) },
    }
}
