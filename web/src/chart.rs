//! Charts of the web pages as SVG drawn on the server: no script, no inline
//! style (colours come from the style sheet's classes: `svg.chart`,
//! `svg.spark`). Each chart is an image with a text label that says what it
//! shows in words (first, last, highest); the pages put the same figures
//! beside it as a table for screen readers and anyone who prefers numbers.
//!
//! - [`line`](fn@line): a series over labelled points (hourly census);
//! - [`bars`]: one bar per labelled point (daily volumes);
//! - [`sparkline`]: a small line without axes (a node's lag over hours).

use maud::{Markup, html};

/// Chart geometry (SVG user units).
const W: f64 = 480.0;
const H: f64 = 180.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

/// The top of the y axis: the highest value rounded up to a readable figure
/// (1, 2 or 5 times a power of ten), at least 1.
fn ceiling(max: f64) -> f64 {
    if !max.is_finite() || max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= max)
        .unwrap_or(10.0 * magnitude)
}

/// A figure as the axis and labels print it (no needless decimals).
fn figure(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn polyline(points: &[(f64, f64)]) -> String {
    points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a chart's label says of `points` besides its `title`.
fn summary(title: &str, points: &[(String, f64)], unit: &str) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return format!("{title}: no figures");
    };
    let high = points
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(first);
    format!(
        "{title}: {} {unit} at {}, {} {unit} at {}; highest {} {unit} at {}",
        figure(first.1),
        first.0,
        figure(last.1),
        last.0,
        figure(high.1),
        high.0
    )
}

/// The frame of [`line`] and [`bars`]: axes, the y scale, and x labels at
/// the first, middle and last point.
fn frame(title: &str, points: &[(String, f64)], unit: &str, class: &str, body: Markup) -> Markup {
    let top = ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / top).clamp(0.0, 1.0));
    let n = points.len();
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * (i as f64 + 0.5) / n.max(1) as f64;
    let ticks: Vec<usize> = match n {
        0 => vec![],
        1 => vec![0],
        2 => vec![0, 1],
        _ => vec![0, n / 2, n - 1],
    };
    html! {
        svg class={ "chart " (class) } viewBox={ "0 0 " (W) " " (H) } role="img"
            aria-label=(summary(title, points, unit)) {
            line class="axis" x1=(LEFT) y1=(y(0.0)) x2=(W - RIGHT) y2=(y(0.0)) {}
            line class="grid" x1=(LEFT) y1=(y(top)) x2=(W - RIGHT) y2=(y(top)) {}
            text class="tick" x=(LEFT - 4.0) y=(y(top) + 4.0) text-anchor="end" { (figure(top)) }
            text class="tick" x=(LEFT - 4.0) y=(y(0.0) + 4.0) text-anchor="end" { "0" }
            @for i in ticks {
                text class="tick" x=(format!("{:.1}", x(i))) y=(H - 6.0) text-anchor="middle" { (points[i].0) }
            }
            (body)
        }
    }
}

/// A line over `points` (label, value), values from 0.
pub fn line(title: &str, points: &[(String, f64)], unit: &str) -> Markup {
    let top = ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / top).clamp(0.0, 1.0));
    let n = points.len();
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * (i as f64 + 0.5) / n.max(1) as f64;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (x(i), y(p.1)))
        .collect();
    frame(
        title,
        points,
        unit,
        "line",
        html! { polyline class="mid" points=(polyline(&xy)) {} },
    )
}

/// One bar per point (label, value), values from 0.
pub fn bars(title: &str, points: &[(String, f64)], unit: &str) -> Markup {
    let top = ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / top).clamp(0.0, 1.0));
    let n = points.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    let body = html! {
        @for (i, p) in points.iter().enumerate() {
            rect class="bar" x=(format!("{:.1}", LEFT + slot * i as f64 + slot * 0.15))
                y=(format!("{:.1}", y(p.1)))
                width=(format!("{:.1}", slot * 0.7))
                height=(format!("{:.1}", y(0.0) - y(p.1))) {}
        }
    };
    frame(title, points, unit, "bars", body)
}

/// A small line of `values` (oldest first) without axes; `title` and
/// `unit` name them in the label (first, last, highest).
pub fn sparkline(title: &str, values: &[f64], unit: &str) -> Markup {
    const SW: f64 = 160.0;
    const SH: f64 = 32.0;
    let label = if values.is_empty() {
        format!("{title}: no figures yet")
    } else {
        let high = values.iter().copied().fold(f64::MIN, f64::max);
        format!(
            "{title}: {} values, first {} {unit}, last {} {unit}, highest {} {unit}",
            values.len(),
            figure(values[0]),
            figure(values[values.len() - 1]),
            figure(high)
        )
    };
    let top = ceiling(values.iter().copied().fold(0.0, f64::max));
    let n = values.len();
    let xy: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = if n <= 1 {
                SW / 2.0
            } else {
                2.0 + (SW - 4.0) * i as f64 / (n - 1) as f64
            };
            (x, 2.0 + (SH - 4.0) * (1.0 - (v / top).clamp(0.0, 1.0)))
        })
        .collect();
    html! {
        svg class="spark" viewBox={ "0 0 " (SW) " " (SH) } role="img" aria-label=(label) {
            line class="axis" x1="0" y1=(SH - 2.0) x2=(SW) y2=(SH - 2.0) {}
            @if xy.len() == 1 {
                circle class="dot" cx=(format!("{:.1}", xy[0].0)) cy=(format!("{:.1}", xy[0].1)) r="2" {}
            } @else {
                polyline class="mid" points=(polyline(&xy)) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_rounds_up_to_a_readable_figure() {
        assert_eq!(ceiling(0.0), 1.0);
        assert_eq!(ceiling(3.0), 5.0);
        assert_eq!(ceiling(17.0), 20.0);
        assert_eq!(ceiling(20.0), 20.0);
        assert_eq!(ceiling(730.0), 1000.0);
        assert_eq!(ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn a_chart_says_in_words_what_it_draws_and_escapes_its_labels() {
        let pts = vec![
            ("00:00".to_owned(), 10.0),
            ("01:00".to_owned(), 14.0),
            ("<02:00>".to_owned(), 12.0),
        ];
        let svg = line("Occupied beds", &pts, "beds").into_string();
        assert!(
            svg.contains(
                "aria-label=\"Occupied beds: 10 beds at 00:00, 12 beds at &lt;02:00&gt;; highest 14 beds at 01:00\""
            ),
            "{svg}"
        );
        assert!(svg.contains("&lt;02:00&gt;"));
        assert!(!svg.contains("style="));
        let b = bars("ADT messages", &pts, "messages").into_string();
        assert_eq!(b.matches("<rect").count(), 3);
        assert!(
            bars("none", &[], "x")
                .into_string()
                .contains("none: no figures")
        );
    }

    #[test]
    fn a_sparkline_of_one_value_is_a_dot_and_of_several_a_line() {
        let one = sparkline("Lag", &[3.0], "s").into_string();
        assert!(one.contains("<circle") && !one.contains("<polyline"));
        let many = sparkline("Lag", &[1.0, 4.0, 2.0], "s").into_string();
        assert!(many.contains("<polyline"));
        assert!(many.contains("first 1 s, last 2 s, highest 4 s"), "{many}");
        assert!(
            sparkline("Lag", &[], "s")
                .into_string()
                .contains("no figures yet")
        );
    }
}
