//! The results: the table printed at the end, `results.csv`, `results.md` (the table, the
//! notes and W2's timelines) and the figures the chart draws, all under `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use procore_sync_e2e::render_table;

use crate::sampling::{timeline_csv, W2Timeline};

struct Row {
    workload: &'static str,
    metric: String,
    value: f64,
    unit: &'static str,
    decimals: usize,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
pub struct ChartData {
    /// records/s: end to end, database alone, network alone.
    pub w1: Option<[f64; 3]>,
    pub w2: Vec<W2Bar>,
    /// Requests/s and users in flight over time, one series per W2 cycle.
    pub w2_timeline: Vec<W2Timeline>,
    /// (records synced, VmRSS MB, RssAnon MB)
    pub w3: Vec<(f64, f64, f64)>,
    /// The same with every in-flight slot of one worker busy: (records synced, VmRSS MB,
    /// RssAnon MB).
    pub w3_slots: Vec<(f64, f64, f64)>,
    /// (seconds since the first run, start lateness ms, command lateness ms)
    pub w4: Vec<(f64, f64, f64)>,
}

/// One W2 cycle in the chart.
pub struct W2Bar {
    pub label: String,
    pub secs: f64,
    pub projected: bool,
    pub target_min: Option<f64>,
}

#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
    pub notes: Vec<String>,
    /// (title, text chart) printed under the table: W2's cycles over time.
    pub timelines: Vec<(String, String)>,
    pub chart: ChartData,
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        workload: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        decimals: usize,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            workload,
            metric: metric.into(),
            value,
            unit,
            decimals,
            target: target.into(),
            met,
        };
        println!(
            "  {:<3} {:<52} {:>12} {}",
            row.workload,
            row.metric,
            format_value(row.value, row.decimals),
            row.unit
        );
        self.rows.push(row);
    }

    pub fn info(
        &mut self,
        workload: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        decimals: usize,
    ) {
        self.add(workload, metric, value, unit, decimals, "", None);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }
}

fn format_value(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = format!("{v:.decimals$}");
    // Thousands separators on the integer part, for long numbers.
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

pub fn table_text(results: &Results) -> String {
    let header: Vec<String> = ["workload", "metric", "value", "target", "met?"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = results
        .rows
        .iter()
        .map(|r| {
            vec![
                r.workload.to_string(),
                r.metric.clone(),
                format!("{} {}", format_value(r.value, r.decimals), r.unit)
                    .trim()
                    .to_string(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    render_table(&header, &rows)
}

fn markdown_table(results: &Results) -> String {
    let mut out = String::from(
        "| workload | metric | value | target | met? |\n| --- | --- | --: | --- | --- |\n",
    );
    for r in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} |",
            r.workload,
            r.metric,
            format_value(r.value, r.decimals),
            r.unit,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    out
}

fn csv_text(results: &Results) -> String {
    let esc = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("workload,metric,value,unit,target,met\n");
    for r in &results.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            r.workload,
            esc(&r.metric),
            if r.value.is_finite() {
                format!("{:.*}", r.decimals.max(1), r.value)
            } else {
                String::new()
            },
            esc(r.unit),
            esc(&r.target),
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            }
        );
    }
    out
}

/// Writes `results.csv`, `results.md` and the samples behind the chart under `out_dir`;
/// returns the paths of the first two.
pub fn write_files(
    out_dir: &Path,
    results: &Results,
    machine: &str,
    quick: bool,
    total: Duration,
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let csv_path = out_dir.join("results.csv");
    std::fs::write(&csv_path, csv_text(results))?;
    if !results.chart.w3.is_empty() {
        let mut text = String::from("records,vmrss_mb,rssanon_mb\n");
        for (r, rss, anon) in &results.chart.w3 {
            let _ = writeln!(text, "{r},{rss:.1},{anon:.1}");
        }
        std::fs::write(out_dir.join("w3_memory.csv"), text)?;
    }
    if !results.chart.w3_slots.is_empty() {
        let mut text = String::from("records,vmrss_mb,rssanon_mb\n");
        for (r, rss, anon) in &results.chart.w3_slots {
            let _ = writeln!(text, "{r},{rss:.1},{anon:.1}");
        }
        std::fs::write(out_dir.join("w3_slots_memory.csv"), text)?;
    }
    if !results.chart.w2_timeline.is_empty() {
        std::fs::write(
            out_dir.join("w2_timeline.csv"),
            timeline_csv(&results.chart.w2_timeline),
        )?;
    }
    let md_path = out_dir.join("results.md");
    let mut md = format!(
        "Machine: {machine}. Run {} ({}), {:.0} min.\n\n",
        Utc::now().format("%Y-%m-%d"),
        if quick { "`--quick`" } else { "full defaults" },
        total.as_secs_f64() / 60.0
    );
    md.push_str(&markdown_table(results));
    if !results.notes.is_empty() {
        md.push('\n');
        for n in &results.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    for (title, text) in &results.timelines {
        let _ = write!(md, "\n{title}, over time:\n\n```\n{text}```\n");
    }
    std::fs::write(&md_path, md)?;
    Ok((csv_path, md_path))
}
