//! `chart.png`: W1's rates against the ceilings, W2's cycles and W2 over time (requests/s,
//! users in flight), W3's memory against records synced, W4's lateness per run.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::ChartData;

const FONT_CANDIDATES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// A panel whose axes are both plain numbers: W2 over time, W3, W4.
type Plot<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub fn draw_chart(path: &Path, data: &ChartData, machine: &str, quick: bool) -> Result<()> {
    let font = FONT_CANDIDATES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| anyhow!("no DejaVuSans.ttf (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("DejaVuSans.ttf is not a usable font"))?;

    let root = BitMapBackend::new(path, (1400, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "procore_sync benchmarks{} - {machine}",
                if quick { " (quick sizes)" } else { "" }
            ),
            ("sans-serif", 24),
        )
        .map_err(err)?;
    let panels = root.split_evenly((3, 2));
    let label = ("sans-serif", 16);
    let caption = ("sans-serif", 20);
    let blue = RGBColor(52, 101, 164);
    let orange = RGBColor(230, 126, 34);
    let green = RGBColor(46, 139, 87);
    let red = RGBColor(200, 40, 40);
    let centered =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));

    // W1: bars.
    if let Some(w1) = data.w1 {
        let names = ["end to end", "database alone", "network alone"];
        let top = w1.iter().cloned().fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("W1 ingest: records/s (higher is better)", caption)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0..2usize).into_segmented(), 0.0..top.max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_style(label)
            .y_label_style(label)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).unwrap_or(&"").to_string(),
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        let colors = [blue, orange, green];
        chart
            .draw_series(w1.iter().enumerate().map(|(i, v)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    colors[i].filled(),
                );
                r.set_margin(0, 0, 30, 30);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(w1.iter().enumerate().map(|(i, v)| {
                Text::new(
                    format!("{:.0}", v),
                    (SegmentValue::CenterOf(i), *v * 1.02 + top * 0.01),
                    centered.clone(),
                )
            }))
            .map_err(err)?;
    }

    // W2: one cycle per setting, minutes, with each bar's target where it has one.
    if !data.w2.is_empty() {
        let n = data.w2.len();
        let top = data
            .w2
            .iter()
            .map(|b| (b.secs / 60.0).max(b.target_min.unwrap_or(0.0)))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("W2 many users: one cycle, minutes (red: target)", caption)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        let labels: Vec<String> = data
            .w2
            .iter()
            .map(|b| format!("{}{}", b.label, if b.projected { " (proj.)" } else { "" }))
            .collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_style(("sans-serif", 13))
            .y_label_style(label)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(data.w2.iter().enumerate().map(|(i, b)| {
                let style = if b.projected {
                    blue.mix(0.35).filled()
                } else {
                    blue.filled()
                };
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.secs / 60.0),
                    ],
                    style,
                );
                r.set_margin(0, 0, 20, 20);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(data.w2.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!("{:.1}", b.secs / 60.0),
                    (SegmentValue::CenterOf(i), b.secs / 60.0 + top * 0.02),
                    centered.clone(),
                )
            }))
            .map_err(err)?;
        for (i, b) in data.w2.iter().enumerate() {
            if let Some(t) = b.target_min {
                chart
                    .draw_series(LineSeries::new(
                        vec![(SegmentValue::Exact(i), t), (SegmentValue::Exact(i + 1), t)],
                        red.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
    }

    // W2 over time: requests/s, and users in flight, one line per cycle.
    if !data.w2_timeline.is_empty() {
        let palette = [blue, orange, green, red, RGBColor(120, 80, 160), BLACK];
        type Line = Vec<(f64, f64)>;
        let series: Vec<(&str, Line, Line)> = data
            .w2_timeline
            .iter()
            .map(|c| {
                let rps = c
                    .points
                    .windows(2)
                    .map(|w| {
                        let dt = (w[1].secs - w[0].secs).max(1e-9);
                        (w[1].secs, (w[1].requests - w[0].requests) as f64 / dt)
                    })
                    .collect();
                let in_flight = c
                    .points
                    .iter()
                    .map(|p| (p.secs, p.in_flight as f64))
                    .collect();
                (c.label.as_str(), rps, in_flight)
            })
            .collect();
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        for (panel, title, pick) in [
            (&panels[2], "W2 over time: requests/s", 1usize),
            (&panels[3], "W2 over time: users in flight", 2),
        ] {
            let points = |s: &(&str, Line, Line)| {
                if pick == 1 {
                    s.1.clone()
                } else {
                    s.2.clone()
                }
            };
            let ymax = series
                .iter()
                .flat_map(|s| points(s).into_iter().map(|p| p.1))
                .fold(1.0, f64::max)
                * 1.15;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, caption)
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..xmax * 1.02, 0.0..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("seconds since the cycle started")
                .x_label_style(label)
                .y_label_style(label)
                .axis_desc_style(label)
                .draw()
                .map_err(err)?;
            for (i, s) in series.iter().enumerate() {
                let color = palette[i % palette.len()];
                draw_line(&mut chart, points(s), color.stroke_width(2), s.0)?;
            }
            draw_legend(&mut chart, 13, SeriesLabelPosition::UpperRight)?;
        }
    }

    // W3: RSS against records synced, one user and every slot busy.
    if !data.w3.is_empty() || !data.w3_slots.is_empty() {
        let both = || data.w3.iter().chain(data.w3_slots.iter());
        let xmax = both().map(|s| s.0).fold(1.0, f64::max) / 1000.0;
        let ymax = both().map(|s| s.1.max(s.2)).fold(100.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&panels[4])
            .caption(
                "W3 one huge resource: worker memory, MB (target < 100)",
                caption,
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax * 1.02, 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("records synced (thousands)")
            .x_label_style(label)
            .y_label_style(label)
            .axis_desc_style(label)
            .draw()
            .map_err(err)?;
        // (records synced, VmRSS, RssAnon) samples as (thousands of records, MB) points.
        let rss = |v: &[(f64, f64, f64)]| v.iter().map(|s| (s.0 / 1000.0, s.1)).collect::<Vec<_>>();
        let anon =
            |v: &[(f64, f64, f64)]| v.iter().map(|s| (s.0 / 1000.0, s.2)).collect::<Vec<_>>();
        draw_line(&mut chart, rss(&data.w3), blue.stroke_width(2), "VmRSS")?;
        draw_line(
            &mut chart,
            anon(&data.w3),
            orange.stroke_width(2),
            "RssAnon (private)",
        )?;
        if !data.w3_slots.is_empty() {
            draw_line(
                &mut chart,
                rss(&data.w3_slots),
                green.stroke_width(2),
                "VmRSS, every slot busy",
            )?;
            draw_line(
                &mut chart,
                anon(&data.w3_slots),
                green.mix(0.5).stroke_width(2),
                "RssAnon, every slot busy",
            )?;
        }
        draw_line(
            &mut chart,
            [(0.0, 100.0), (xmax * 1.02, 100.0)],
            red.stroke_width(2),
            "target",
        )?;
        draw_legend(&mut chart, 16, SeriesLabelPosition::MiddleRight)?;
    }

    // W4: lateness of each run.
    if !data.w4.is_empty() {
        let xmax = data.w4.iter().map(|s| s.0).fold(1.0, f64::max);
        let ymax = data
            .w4
            .iter()
            .map(|s| s.1.max(if s.2.is_finite() { s.2 } else { 0.0 }))
            .fold(10.0, f64::max)
            * 1.2;
        let ymin = data.w4.iter().map(|s| s.1.min(0.0)).fold(0.0, f64::min) * 1.2;
        let mut chart = ChartBuilder::on(&panels[5])
            .caption(
                "W4 idle: lateness of each 'N seconds' run, ms (target < 1000)",
                caption,
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax * 1.02, ymin..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first run")
            .x_label_style(label)
            .y_label_style(label)
            .axis_desc_style(label)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                data.w4
                    .iter()
                    .map(|s| Circle::new((s.0, s.1), 4, blue.filled())),
            )
            .map_err(err)?
            .label("start_time")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
        chart
            .draw_series(
                data.w4
                    .iter()
                    .filter(|s| s.2.is_finite())
                    .map(|s| Circle::new((s.0, s.2), 4, orange.filled())),
            )
            .map_err(err)?
            .label("command ran")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, orange.filled()));
        draw_legend(&mut chart, 16, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// One line through `points`, named in the legend with a stroke of its own style.
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Plot<'a, DB>,
    points: impl IntoIterator<Item = (f64, f64)>,
    style: ShapeStyle,
    name: &str,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

/// The legend of a panel's named series, over a light background so lines behind it show.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Plot<'a, DB>,
    font_size: u32,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(err)
}
