//! `/forecast`: each unit's expected occupied beds at 24, 48 and 72 hours
//! as a chart with its 80 % interval band, and where the figures come from
//! (the model, or the fallback rule and why). Viewer and up, as the API's
//! forecast endpoints.
//!
//! The chart is SVG drawn here (no script, no inline style: colours come
//! from the style sheet's classes); beside it, the same figures as a table
//! for screen readers and anyone who prefers numbers.

use axum::extract::State;
use axum::response::Response;
use hms_web::page;
use maud::{Markup, html};

use super::{Signed, frame};
use crate::api::AppState;
use crate::inference::forecast::UnitForecast;

/// Chart geometry (SVG user units).
const W: f64 = 320.0;
const H: f64 = 160.0;
const LEFT: f64 = 36.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

fn chart(f: &UnitForecast, name: &str) -> Markup {
    let cap = f64::from(f.capacity.max(1));
    let x = |hours: i64| LEFT + (W - LEFT - RIGHT) * hours as f64 / 72.0;
    let y = |beds: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (beds / cap).clamp(0.0, 1.0));
    let now = f64::from(f.census);
    let mut upper = vec![(x(0), y(now))];
    let mut lower = vec![(x(0), y(now))];
    let mut mid = vec![(x(0), y(now))];
    for h in &f.horizons {
        upper.push((x(h.hours), y(h.high)));
        lower.push((x(h.hours), y(h.low)));
        mid.push((x(h.hours), y(h.mid)));
    }
    let pts = |v: &[(f64, f64)]| {
        v.iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let band: Vec<(f64, f64)> = upper
        .iter()
        .copied()
        .chain(lower.iter().rev().copied())
        .collect();
    let last = f.horizons.last();
    let label = format!(
        "{name}: {} of {} beds occupied now; at 72 hours {} expected (80 % interval {} to {})",
        f.census,
        f.capacity,
        last.map_or(0.0, |h| h.mid).round(),
        last.map_or(0.0, |h| h.low).round(),
        last.map_or(0.0, |h| h.high).round(),
    );
    html! {
        svg class="chart" viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) {
            line class="axis" x1=(LEFT) y1=(y(0.0)) x2=(W - RIGHT) y2=(y(0.0)) {}
            line class="axis" x1=(LEFT) y1=(y(cap)) x2=(W - RIGHT) y2=(y(cap)) {}
            text class="tick" x=(LEFT - 4.0) y=(y(cap) + 4.0) text-anchor="end" { (f.capacity) }
            text class="tick" x=(LEFT - 4.0) y=(y(0.0) + 4.0) text-anchor="end" { "0" }
            @for hours in [0i64, 24, 48, 72] {
                text class="tick" x=(x(hours)) y=(H - 6.0) text-anchor="middle" {
                    @if hours == 0 { "now" } @else { "+" (hours) " h" }
                }
            }
            polygon class="band" points=(pts(&band)) {}
            polyline class="mid" points=(pts(&mid)) {}
            @for (px, py) in &mid { circle class="dot" cx=(format!("{px:.1}")) cy=(format!("{py:.1}")) r="3" {} }
        }
    }
}

fn unit_section(state: &AppState, f: &UnitForecast) -> Markup {
    let name = state
        .settings
        .units
        .get(&f.unit)
        .map_or(f.unit.as_str(), |u| u.name.as_str());
    let id = format!("forecast-{}", f.unit.as_str());
    html! {
        section class="forecast" aria-labelledby=(id) data-unit=(f.unit.as_str()) data-source=(f.source) {
            h2 id=(id) { a href={ "/units/" (f.unit.as_str()) } { (name) } }
            p class="source" {
                @if f.source == "model" {
                    "From the bed-demand model."
                } @else {
                    "From the fallback rule (the average census at that weekday and hour) because: "
                    strong { (f.reason.map_or("unknown", |r| r.as_str()).replace('_', " ")) } "."
                }
            }
            (chart(f, name))
            table class="figures" {
                caption class="visually-hidden" { "Occupied beds expected, " (name) }
                thead { tr { th scope="col" { "When" } th scope="col" class="num" { "Low" } th scope="col" class="num" { "Expected" } th scope="col" class="num" { "High" } } }
                tbody {
                    tr { th scope="row" { "Now" } td class="num" { (f.census) } td class="num" { (f.census) } td class="num" { (f.census) } }
                    @for h in &f.horizons {
                        tr {
                            th scope="row" { "In " (h.hours) " h" }
                            td class="num" { (format!("{:.0}", h.low)) }
                            td class="num" { (format!("{:.0}", h.mid)) }
                            td class="num" { (format!("{:.0}", h.high)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /forecast`.
pub async fn page(State(state): State<AppState>, who: Signed) -> Response {
    let cached = state.forecaster.cached();
    let f = if cached.generated_at.is_some() {
        cached
    } else {
        state.forecaster.refresh_now().await
    };
    let body = html! {
        h1 { "Bed demand forecast" }
        p class="hint" {
            "Occupied beds expected in each unit in 24, 48 and 72 hours, with an 80 % interval (the shaded band)"
            @if let Some(at) = f.generated_at { ", computed at " (state.settings.clock.clock_time(at)) }
            "."
        }
        div class="forecasts" {
            @for u in f.units.values() {
                (unit_section(&state, u))
            }
        }
    };
    page::respond(frame(
        &state,
        &who,
        "Forecast",
        "/forecast",
        "forecast",
        body,
    ))
}
