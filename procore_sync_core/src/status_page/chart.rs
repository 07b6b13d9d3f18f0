//! Hourly bar charts as inline SVG, drawn here: a chart library would bring a script or a
//! fetch, and the page must work with neither. Each bar carries its hour and value as an SVG
//! `<title>`, which browsers show as a tooltip without script; the same numbers are in a
//! table beside the charts for screen readers and copying.

use chrono::{DateTime, Timelike, Utc};
use maud::{html, Markup};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    Plain,
    /// Red bars: the failures chart should not look like good news at a glance.
    Failures,
}

const BAR_WIDTH: f64 = 16.0;
const GAP: f64 = 4.0;
const PLOT_HEIGHT: f64 = 100.0;
// Room above the bars for the scale, below them for the hour labels, and right of them for
// the last label, which starts at the last bar.
const TOP: f64 = 14.0;
const BOTTOM: f64 = 14.0;
const RIGHT: f64 = 16.0;

fn coordinate(v: f64) -> String {
    format!("{v:.1}")
}

/// One bar per point, oldest on the left, scaled to the largest value.
pub(super) fn bars(label: &str, style: Style, points: &[(DateTime<Utc>, u64)]) -> Markup {
    let max = points.iter().map(|&(_, v)| v).max().unwrap_or(0);
    let plot_width = points.len() as f64 * (BAR_WIDTH + GAP);
    let width = plot_width + RIGHT;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let base = TOP + PLOT_HEIGHT;
    let class = match style {
        Style::Plain => "chart",
        Style::Failures => "chart failures",
    };
    let unit = label.to_lowercase();
    html! {
        svg class=(class) viewBox=(format!("0 0 {} {}", coordinate(width), coordinate(height)))
            role="img" aria-label=(format!("{label} per hour over the last 24 hours, at most {max} in one hour")) {
            title { (label) " per hour" }
            text class="tick" x="0" y="10" { "max " (max) }
            @for (i, &(hour, value)) in points.iter().enumerate() {
                @let bar = if max == 0 { 0.0 } else { PLOT_HEIGHT * value as f64 / max as f64 };
                @let x = i as f64 * (BAR_WIDTH + GAP) + GAP / 2.0;
                rect class="bar" x=(coordinate(x)) y=(coordinate(base - bar))
                    width=(coordinate(BAR_WIDTH)) height=(coordinate(bar)) {
                    title { (hour.format("%Y-%m-%dT%H:00Z")) ": " (value) " " (unit) }
                }
                @if hour.hour() % 6 == 0 {
                    text class="tick" x=(coordinate(x)) y=(coordinate(height - 2.0)) {
                        (hour.format("%H:00"))
                    }
                }
            }
            // Closed explicitly: inside <svg> an HTML parser does not close void-looking
            // elements by itself.
            line class="axis" x1="0" y1=(coordinate(base)) x2=(coordinate(plot_width)) y2=(coordinate(base)) {}
        }
    }
}
