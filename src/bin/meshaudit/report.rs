//! `meshaudit report --html FILE`: the summary as one self-contained HTML page with charts.
//!
//! The page holds all it shows: inline CSS, the charts as inline SVG, no script, and no font,
//! image or style from anywhere else (its Content-Security-Policy, `default-src 'none'`, tells
//! the browser so too). Every text from the trail (paths, callers, policies) is untrusted and
//! escaped (`esc`). Each chart's `<svg>` names itself (`data-chart`), each bar and segment
//! carries its data (`data-kind`, `data-label`, `data-count`) and a `<title>`, and every chart
//! and table says so when it has nothing to show: an empty trail is a valid page.
//!
//! The SVG is written here by hand. plotters 0.3.7 (`default-features = false`, features
//! `svg_backend`, no font feature) was tried and does not fit:
//! - its `SVGBackend` writes each `<rect>` and `<text>` as an empty element with a fixed list
//!   of attributes (`x y width height opacity fill stroke`), from what the `DrawingBackend`
//!   trait hands it (coordinates and a style): a bar cannot carry `data-kind`/`data-count`,
//!   neither a bar nor a truncated label can hold a `<title>`, and the `<svg>` it opens cannot
//!   carry `data-chart`;
//! - getting them means patching its output by the order it drew elements in, or writing our
//!   own `DrawingBackend` that emits SVG: writing the SVG ourselves after all, with plotters'
//!   tick placement the only gain;
//! - without a font feature it sizes text at 0.7 em per byte (not per character) of font sizes
//!   it divides by 1.24 (16 px is written as 12.9 px), which sizes label areas neither for the
//!   SPIFFE ids the bars are labelled with nor for the font the browser then uses.

use crate::answers::{self, thousands};
use meshaudit::core::trail::event::utc_parts;
use meshaudit::core::trail::summary::{self, Cell, Summary, Table, Timeline, NOT_WRITTEN};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

pub(crate) fn report(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let out = crate::take_option(&mut args, "--html")?
        .pop()
        .ok_or_else(|| {
            format!(
                "report needs --html OUT (- for standard output)\n{}",
                crate::USAGE
            )
        })?;
    let top = answers::top(&mut args, 10)?;
    let inputs = answers::inputs(&mut args)?;
    answers::no_unknown_options(&args)?;
    let trail = answers::read(&inputs)?;
    let summary = summary::summarize(&trail, &inputs.window, false);
    let page = html(&summary, top);
    if out == "-" {
        print!("{page}");
    } else {
        std::fs::write(&out, &page).map_err(|e| format!("{out}: cannot write: {e}"))?;
        println!(
            "{out}: {} records, {} bytes",
            thousands(summary.records),
            thousands(page.len() as u64)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The page: the headline, the four charts, then every table of the summary.
pub(crate) fn html(s: &Summary, top: usize) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(HEAD);
    out.push_str("<header>\n<h1>meshaudit report</h1>\n<ul class=\"headline\">\n");
    for line in answers::headline(s) {
        let _ = writeln!(out, "<li>{}</li>", esc(&line));
    }
    out.push_str("</ul>\n</header>\n<main>\n");
    section(
        &mut out,
        "timeline",
        "Records over time, by kind",
        &timeline_note(&s.timeline),
        &timeline_svg(&s.timeline, s.records),
    );
    section(
        &mut out,
        "sensitive_callers",
        "Top callers of sensitive endpoints",
        "Requests to audited endpoints (audit rules, mesh AUDIT policies), summed over the endpoints each caller reached; the red part was denied.",
        &sensitive_svg(s, top),
    );
    section(
        &mut out,
        "denials_by_policy",
        "Denials by policy",
        "Denied requests and connections, summed over callers by the policy that denied them.",
        &denials_svg(s, top),
    );
    section(
        &mut out,
        "completeness",
        "Completeness: written and not written",
        &completeness_note(s),
        &completeness_svg(s),
    );
    for table in &s.tables {
        out.push_str(&table_html(table, top));
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="meshaudit report">
<title>meshaudit report</title>
<style>
body{margin:0;background:#f4f5f7;color:#1d2330;font:14px/1.45 "DejaVu Sans",Helvetica,Arial,sans-serif}
header{background:#1d2330;color:#f4f5f7;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px}
.headline{margin:0;padding-left:18px;font-size:13px}
main{max-width:1000px;margin:0 auto;padding:8px 16px 32px}
section{background:#fff;border:1px solid #d9dde4;border-radius:6px;margin:14px 0;padding:10px 16px 12px}
h2{font-size:16px;margin:2px 0 4px}
.note{margin:0 0 6px;color:#566070;font-size:12px}
svg{display:block;width:100%;height:auto}
svg text{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:12px;fill:#1d2330}
svg .axis{stroke:#1d2330;stroke-width:1}
svg .grid{stroke:#e2e5ea;stroke-width:1}
svg text.muted{fill:#566070}
svg text.empty{font-size:15px;fill:#566070;font-style:italic}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{border-bottom:1px solid #e2e5ea;padding:3px 6px;text-align:left;vertical-align:top}
td.long{overflow-wrap:anywhere}
.nw{white-space:nowrap}
th{background:#eef0f3}
th.n{text-align:right}
td.n{text-align:right;white-space:nowrap}
.more{margin:6px 0 0;color:#566070;font-size:12px}
.empty{color:#566070;font-style:italic;margin:4px 0}
</style>
</head>
<body>
"#;

fn section(out: &mut String, chart: &str, title: &str, note: &str, svg: &str) {
    let _ = writeln!(
        out,
        "<section class=\"chart\" id=\"chart-{chart}\">\n<h2>{}</h2>\n<p class=\"note\">{}</p>\n{svg}</section>",
        esc(title),
        esc(note)
    );
}

/// Text for HTML, in elements and in quoted attributes alike; control characters (which
/// neither HTML nor XML allows raw) become U+FFFD.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters: a longer text keeps its start and (the larger part) its end,
/// where SPIFFE ids and policy names differ, around an ellipsis.
fn clip(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max || max < 2 {
        return text.to_string();
    }
    let head = (max - 1) / 3;
    let tail = max - 1 - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(n - tail));
    out
}

/// `2026-12-01 10:05:00Z`
fn utc(epoch: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(epoch);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// `5 min`, `1 h`, `1 day`.
fn duration(seconds: i64) -> String {
    match seconds {
        s if s % 604_800 == 0 => plural(s / 604_800, "week"),
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `1 proxy`, `2 proxies`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Colours of the timeline's kinds, in stacking order from the axis up: the denial-type kinds
/// first, in strong colours, then the routine ones, pale.
const KIND_COLOURS: [(&str, &str); 9] = [
    ("denied", "#d62728"),
    ("auth_failure", "#f07f00"),
    ("tls_failure", "#7b3294"),
    ("rate_limited", "#e7298a"),
    ("shadow_denied", "#8c6d00"),
    ("access", "#9ec5e6"),
    ("started", "#6baed6"),
    ("shadow_allowed", "#b5dcae"),
    ("connection", "#c9cbd1"),
];
const OTHER_COLOUR: &str = "#dcdcdc";

fn kind_colour(kind: &str) -> &'static str {
    KIND_COLOURS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(OTHER_COLOUR, |(_, c)| c)
}

/// The width of `text` at 12 px in DejaVu Sans, estimated generously (0.62 em a character).
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * 7.4
}

/// Steps for an axis from 0 to at least `max`, about `ticks` of them: (step, top).
fn nice(max: u64, ticks: u64) -> (u64, u64) {
    let max = max.max(1);
    let raw = max.div_ceil(ticks.max(1));
    let mut magnitude: u64 = 1;
    while magnitude.saturating_mul(10) <= raw {
        magnitude = magnitude.saturating_mul(10);
    }
    let step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| magnitude.saturating_mul(m))
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    (step, step.saturating_mul(max.div_ceil(step)))
}

/// The width of every chart's coordinate system.
const WIDTH: f64 = 960.0;

fn open_svg(out: &mut String, chart: &str, height: f64, label: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" data-chart=\"{chart}\" width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn empty_svg(chart: &str, message: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, chart, 64.0, message);
    let _ = writeln!(
        out,
        "<rect x=\"0.5\" y=\"0.5\" width=\"{}\" height=\"63\" rx=\"4\" fill=\"#f7f8fa\" stroke=\"#d9dde4\"/>\n<text class=\"empty\" data-empty=\"{chart}\" x=\"{}\" y=\"38\" text-anchor=\"middle\">{}</text>\n</svg>",
        WIDTH - 1.0,
        WIDTH / 2.0,
        esc(message)
    );
    out
}

/// The kinds on the timeline with their totals, in stacking order.
fn timeline_kinds(t: &Timeline) -> Vec<(String, u64)> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for bucket in &t.buckets {
        for (kind, n) in bucket {
            *totals.entry(kind).or_default() += n;
        }
    }
    let rank = |kind: &str| {
        KIND_COLOURS
            .iter()
            .position(|(k, _)| *k == kind)
            .unwrap_or(KIND_COLOURS.len())
    };
    let mut kinds: Vec<(String, u64)> = totals
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    kinds.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    kinds
}

fn timeline_note(t: &Timeline) -> String {
    if t.buckets.is_empty() {
        return "Request and connection records, counted per time bucket.".into();
    }
    let end = t.start + t.buckets.len() as i64 * t.bucket_seconds;
    format!(
        "Request and connection records per {} (UTC), from {} to {}; denial-type kinds at the bottom of each bar.",
        duration(t.bucket_seconds),
        utc(t.start),
        utc(end)
    )
}

fn timeline_svg(t: &Timeline, records: u64) -> String {
    let kinds = timeline_kinds(t);
    let most = t
        .buckets
        .iter()
        .map(|b| b.values().sum::<u64>())
        .max()
        .unwrap_or(0);
    if kinds.is_empty() || most == 0 {
        let message = if records == 0 {
            "No records in the trail"
        } else {
            "No request or connection records in the trail (only the plugin's own records)"
        };
        return empty_svg("timeline", message);
    }
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 16.0;
    const PLOT_HEIGHT: f64 = 240.0;
    // The legend, in rows across the top.
    let mut legend = String::new();
    let (mut x, mut y) = (LEFT, 16.0);
    for (kind, total) in &kinds {
        let text = format!("{kind} ({})", thousands(*total));
        let w = 18.0 + text_width(&text) + 18.0;
        if x + w > WIDTH - RIGHT && x > LEFT {
            x = LEFT;
            y += 20.0;
        }
        let _ = writeln!(
            legend,
            "<g class=\"legend\" data-legend=\"{k}\" data-total=\"{total}\"><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{y:.1}\">{}</text></g>",
            y - 10.0,
            kind_colour(kind),
            x + 18.0,
            esc(&text),
            k = esc(kind),
        );
        x += w;
    }
    let plot_top = y + 20.0;
    let plot_bottom = plot_top + PLOT_HEIGHT;
    let height = plot_bottom + 44.0;
    let plot_width = WIDTH - LEFT - RIGHT;
    let (step, top) = nice(most, 5);
    let scale = PLOT_HEIGHT / top as f64;

    let mut out = String::new();
    open_svg(&mut out, "timeline", height, "Records over time, by kind");
    out.push_str(&legend);
    // The y axis: grid lines and ticks.
    let mut value = 0;
    while value <= top {
        let at = plot_bottom - value as f64 * scale;
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/><line class=\"axis\" x1=\"{:.1}\" x2=\"{LEFT}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 5.0,
            LEFT - 8.0,
            at + 4.0,
            thousands(value)
        );
        value += step.max(1);
    }
    let _ = writeln!(
        out,
        "<text class=\"muted\" transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">records</text>",
        plot_top + PLOT_HEIGHT / 2.0
    );
    // The bars, one per bucket, stacked by kind.
    let n = t.buckets.len();
    let slot = plot_width / n as f64;
    let bar = (slot * 0.8).clamp(1.0, 48.0);
    let span = duration(t.bucket_seconds);
    for (i, bucket) in t.buckets.iter().enumerate() {
        let start = t.start + i as i64 * t.bucket_seconds;
        let when = utc(start);
        let total: u64 = bucket.values().sum();
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let _ = writeln!(
            out,
            "<g class=\"bucket\" data-start=\"{when}\" data-total=\"{total}\">"
        );
        let mut top_of = plot_bottom;
        for (kind, _) in &kinds {
            let count = bucket.get(kind).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            // A segment stays visible however small its share.
            let h = (count as f64 * scale).max(1.5);
            top_of -= h;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{top_of:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\" data-kind=\"{k}\" data-count=\"{count}\" data-start=\"{when}\"><title>{k}: {} at {when} ({span})</title></rect>",
                kind_colour(kind),
                thousands(count),
                k = esc(kind),
            );
        }
        out.push_str("</g>\n");
    }
    // The time axis, in UTC: at most 8 labels.
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{plot_bottom:.1}\" y2=\"{plot_bottom:.1}\"/>",
        WIDTH - RIGHT
    );
    let every = n.div_ceil(8).max(1);
    let first_day = utc_parts(t.start);
    let last_day = utc_parts(t.start + (n as i64 - 1) * t.bucket_seconds);
    let days_differ =
        (first_day.0, first_day.1, first_day.2) != (last_day.0, last_day.1, last_day.2);
    for i in (0..n).step_by(every) {
        let start = t.start + i as i64 * t.bucket_seconds;
        let (y, mo, d, h, mi, s) = utc_parts(start);
        let label = if t.bucket_seconds >= 86_400 {
            format!("{y:04}-{mo:02}-{d:02}")
        } else if days_differ {
            format!("{mo:02}-{d:02} {h:02}:{mi:02}")
        } else if t.bucket_seconds < 60 {
            format!("{h:02}:{mi:02}:{s:02}")
        } else {
            format!("{h:02}:{mi:02}")
        };
        let at = LEFT + slot * i as f64 + slot / 2.0;
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{plot_bottom:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\"><title>{}</title>{label}</text>",
            plot_bottom + 5.0,
            plot_bottom + 18.0,
            utc(start)
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (UTC), one bar per {span}, from {}</text>\n</svg>",
        LEFT + plot_width / 2.0,
        plot_bottom + 38.0,
        utc(t.start)
    );
    out
}

/// One bar of a horizontal bar chart, with an optional part of it drawn over it.
struct Bar {
    label: String,
    count: u64,
    /// The attribute naming what the bar counts: `data-label` (a caller, a policy) or
    /// `data-kind` (a total).
    key: &'static str,
    key_value: String,
    colour: &'static str,
    title: String,
    part: Option<(&'static str, u64, &'static str)>,
}

/// Horizontal bars, largest first, labelled on the left (clipped, the full text in a
/// `<title>`), counts at their ends; `more` rows left out are said so below them.
fn bars_svg(chart: &str, label: &str, bars: &[Bar], more: usize, what: &str) -> String {
    const LABEL_AREA: f64 = 330.0;
    const RIGHT: f64 = 90.0;
    const ROW: f64 = 26.0;
    const TOP: f64 = 6.0;
    const LABEL_CHARS: usize = 48;
    let x0 = LABEL_AREA + 10.0;
    let plot_width = WIDTH - x0 - RIGHT;
    let most = bars.iter().map(|b| b.count).max().unwrap_or(0);
    let (step, top) = nice(most, 5);
    let scale = plot_width / top as f64;
    let rows_bottom = TOP + bars.len() as f64 * ROW;
    let more_line = if more > 0 { 20.0 } else { 0.0 };
    let axis = rows_bottom + more_line + 4.0;
    let height = axis + 24.0;

    let mut out = String::new();
    open_svg(&mut out, chart, height, label);
    let mut value = 0;
    while value <= top {
        let at = x0 + value as f64 * scale;
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{TOP}\" y2=\"{axis:.1}\"/><text class=\"tick muted\" x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            axis + 16.0,
            thousands(value)
        );
        value += step.max(1);
    }
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let middle = y + ROW / 2.0 + 4.0;
        let w = if b.count == 0 {
            0.0
        } else {
            (b.count as f64 * scale).max(2.0)
        };
        let _ = writeln!(
            out,
            "<g class=\"row\"><text class=\"label\" x=\"{LABEL_AREA}\" y=\"{middle:.1}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            esc(&b.label),
            esc(&clip(&b.label, LABEL_CHARS))
        );
        let _ = writeln!(
            out,
            "<rect class=\"bar\" x=\"{x0}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\" {}=\"{}\" data-count=\"{}\"><title>{}</title></rect>",
            y + 4.0,
            ROW - 8.0,
            b.colour,
            b.key,
            esc(&b.key_value),
            b.count,
            esc(&b.title)
        );
        if let Some((kind, count, colour)) = b.part.filter(|(_, n, _)| *n > 0) {
            let pw = (count as f64 * scale).max(2.0).min(w);
            let _ = writeln!(
                out,
                "<rect class=\"part\" x=\"{x0}\" y=\"{:.1}\" width=\"{pw:.1}\" height=\"{:.1}\" fill=\"{colour}\" data-kind=\"{kind}\" data-count=\"{count}\"><title>{}: {} {kind}</title></rect>",
                y + 4.0,
                ROW - 8.0,
                esc(&b.label),
                thousands(count)
            );
        }
        let _ = writeln!(
            out,
            "<text class=\"count\" x=\"{:.1}\" y=\"{middle:.1}\">{}</text></g>",
            x0 + w + 6.0,
            thousands(b.count)
        );
    }
    if more > 0 {
        let _ = writeln!(
            out,
            "<text class=\"more muted\" data-more=\"{more}\" x=\"{LABEL_AREA}\" y=\"{:.1}\" text-anchor=\"end\">… {} more {what}</text>",
            rows_bottom + 14.0,
            thousands(more as u64)
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{x0}\" x2=\"{x0}\" y1=\"{TOP}\" y2=\"{axis:.1}\"/>\n</svg>"
    );
    out
}

/// A table's rows summed by one column's text: `(text, sums of the count columns)`, largest
/// first (by the first count), then by text.
fn sum_by(table: Option<&Table>, by: &str, counts: &[&str]) -> Vec<(String, Vec<u64>)> {
    let Some(table) = table else {
        return Vec::new();
    };
    let at = |key: &str| table.columns.iter().position(|c| c.key == key);
    let Some(by) = at(by) else {
        return Vec::new();
    };
    let counts: Vec<Option<usize>> = counts.iter().map(|k| at(k)).collect();
    let mut sums: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in &table.rows {
        let key = row.get(by).map(Cell::text).unwrap_or_default();
        let entry = sums.entry(key).or_insert_with(|| vec![0; counts.len()]);
        for (sum, column) in entry.iter_mut().zip(&counts) {
            if let Some(Cell::Count(n)) = column.and_then(|c| row.get(c)) {
                *sum += n;
            }
        }
    }
    let mut sums: Vec<(String, Vec<u64>)> = sums.into_iter().collect();
    sums.sort_by(|(ka, a), (kb, b)| b.first().cmp(&a.first()).then_with(|| ka.cmp(kb)));
    sums
}

/// The first `top` of `rows` (all for 0), and how many were left out.
fn cut<T>(mut rows: Vec<T>, top: usize) -> (Vec<T>, usize) {
    let more = if top == 0 {
        0
    } else {
        rows.len().saturating_sub(top)
    };
    rows.truncate(rows.len() - more);
    (rows, more)
}

fn sensitive_svg(s: &Summary, top: usize) -> String {
    let sums = sum_by(s.table("sensitive"), "caller", &["requests", "denied"]);
    if sums.is_empty() {
        return empty_svg("sensitive_callers", "No sensitive-endpoint access");
    }
    let (shown, more) = cut(sums, top);
    let bars: Vec<Bar> = shown
        .into_iter()
        .map(|(caller, n)| {
            let requests = n.first().copied().unwrap_or(0);
            let denied = n.get(1).copied().unwrap_or(0);
            Bar {
                title: format!(
                    "{caller}: {} requests to sensitive endpoints, {} denied",
                    thousands(requests),
                    thousands(denied)
                ),
                key: "data-label",
                key_value: caller.clone(),
                label: caller,
                count: requests,
                colour: "#3b75af",
                part: Some(("denied", denied, "#d62728")),
            }
        })
        .collect();
    bars_svg(
        "sensitive_callers",
        "Top callers of sensitive endpoints",
        &bars,
        more,
        "callers",
    )
}

fn denials_svg(s: &Summary, top: usize) -> String {
    let sums = sum_by(s.table("denials"), "policy", &["count"]);
    if sums.is_empty() {
        return empty_svg("denials_by_policy", "No denials in the trail");
    }
    let (shown, more) = cut(sums, top);
    let bars: Vec<Bar> = shown
        .into_iter()
        .map(|(policy, n)| {
            let count = n.first().copied().unwrap_or(0);
            Bar {
                title: format!("{policy}: {} denied", thousands(count)),
                key: "data-label",
                key_value: policy.clone(),
                label: policy,
                count,
                colour: "#d62728",
                part: None,
            }
        })
        .collect();
    bars_svg(
        "denials_by_policy",
        "Denials by policy",
        &bars,
        more,
        "policies",
    )
}

fn total_label(name: &str) -> &str {
    match name {
        "records" => "written",
        "sampled_out" => "sampled out",
        "sink_errors" => "sink errors",
        other => other,
    }
}

fn completeness_note(s: &Summary) -> String {
    let c = &s.completeness;
    if c.intervals == 0 {
        return "What each proxy's accounting records say it wrote and did not write.".into();
    }
    let proxies = s.table("completeness").map_or(0, |t| t.rows.len());
    let mut note = format!(
        "By {} from {}: {} requests seen, {} records written, {} not written.",
        counted(c.intervals, "accounting record", "accounting records"),
        counted(proxies as u64, "proxy", "proxies"),
        thousands(c.total("requests")),
        thousands(c.total("records")),
        thousands(c.not_written())
    );
    if c.hidden_by_log_level > 0 {
        let _ = write!(
            note,
            " Envoy's log level hid the records at times ({} log_level reports).",
            thousands(c.hidden_by_log_level)
        );
    }
    note
}

fn completeness_svg(s: &Summary) -> String {
    let c = &s.completeness;
    if c.intervals == 0 {
        return empty_svg(
            "completeness",
            "No accounting records in the trail: what was not written is unknown",
        );
    }
    let requests = c.total("requests");
    let share = |n: u64| {
        if requests == 0 {
            String::new()
        } else {
            format!(" ({:.1}%)", n as f64 * 100.0 / requests as f64)
        }
    };
    let colours = ["#f0a030", "#d62728", "#7b3294", "#6b6f78", "#8c1010"];
    let written = c.total("records");
    let mut bars = vec![Bar {
        label: "written".into(),
        count: written,
        key: "data-kind",
        key_value: "records".into(),
        colour: "#3b9a5a",
        title: format!(
            "written: {} records, for {} requests seen",
            thousands(written),
            thousands(requests)
        ),
        part: None,
    }];
    for (name, colour) in NOT_WRITTEN.iter().zip(colours) {
        let n = c.total(name);
        bars.push(Bar {
            label: total_label(name).into(),
            count: n,
            key: "data-kind",
            key_value: (*name).into(),
            colour,
            title: format!(
                "{}: {} of {} requests{}",
                total_label(name),
                thousands(n),
                thousands(requests),
                share(n)
            ),
            part: None,
        });
    }
    bars_svg("completeness", "Completeness", &bars, 0, "")
}

/// What a table says when it has no rows.
fn empty_table(name: &str) -> &'static str {
    match name {
        "sensitive" => "No sensitive-endpoint access.",
        "open_streams" => "No stream started without an end.",
        "denials" => "No denials.",
        "auth_failures" => "No authentication failures.",
        "tls_failures" => "No TLS failures.",
        "dry_run" => "No dry-run policy would have denied a request.",
        "ambiguous" => "No request that reads two ways.",
        "config" => "No configuration change in the trail.",
        "completeness" => "No accounting records in the trail.",
        "suppressed" => "Nothing suppressed.",
        "hops" => "No request seen at more than one proxy.",
        _ => "None.",
    }
}

/// Longest cell shown, in characters (the full text in its `title`).
const MAX_CELL: usize = 120;

/// A text cell: a time breaks only between its date and its time; a long text (a SPIFFE id,
/// a path) may break anywhere, and past `MAX_CELL` characters shows clipped, whole in its
/// `title`.
fn text_cell(text: &str) -> String {
    let n = text.chars().count();
    let time = n >= 20
        && text.get(10..11) == Some("T")
        && text
            .get(..10)
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
    if let (true, Some(date), Some(rest)) = (time, text.get(..10), text.get(10..)) {
        return format!(
            "<td class=\"t\"><span class=\"nw\">{}</span><wbr>{}</td>",
            esc(date),
            esc(rest)
        );
    }
    match n {
        n if n > MAX_CELL => format!(
            "<td class=\"long\" title=\"{}\">{}</td>",
            esc(text),
            esc(&clip(text, MAX_CELL))
        ),
        n if n > 24 => format!("<td class=\"long\">{}</td>", esc(text)),
        _ => format!("<td>{}</td>", esc(text)),
    }
}

fn table_html(table: &Table, top: usize) -> String {
    let name = esc(table.name);
    let mut out = format!(
        "<section class=\"table\" id=\"table-{name}\">\n<h2>{}</h2>\n",
        esc(table.title)
    );
    if table.rows.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"empty\" data-empty-table=\"{name}\">{}</p>\n</section>",
            esc(empty_table(table.name))
        );
        return out;
    }
    let numeric = table.numeric_columns();
    let _ = write!(out, "<table data-table=\"{name}\">\n<thead><tr>");
    for (column, n) in table.columns.iter().zip(&numeric) {
        let class = if *n { " class=\"n\"" } else { "" };
        let _ = write!(
            out,
            "<th{class} data-key=\"{}\">{}</th>",
            esc(column.key),
            esc(column.heading)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let (rows, more) = cut(table.rows.iter().collect(), top);
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell {
                Cell::Count(n) => {
                    let _ = write!(
                        out,
                        "<td class=\"n\" data-value=\"{n}\">{}</td>",
                        thousands(*n)
                    );
                }
                Cell::Text(text) => out.push_str(&text_cell(text)),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    if more > 0 {
        let _ = writeln!(
            out,
            "<p class=\"more\" data-more=\"{more}\">… {} more rows (meshaudit summary --csv {name} writes them all)</p>",
            thousands(more as u64)
        );
    }
    out.push_str("</section>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaudit::core::trail::event::{epoch_seconds, Trail, Window};

    fn summary_of(lines: &[String]) -> Summary {
        let window = Window::default();
        let mut trail = Trail::default();
        for line in lines {
            trail.line(line, &window);
        }
        trail.sort();
        summary::summarize(&trail, &window, false)
    }

    /// The `<svg>` of one chart.
    fn chart<'h>(html: &'h str, name: &str) -> &'h str {
        let open = format!("data-chart=\"{name}\"");
        let start = html.find(&open).expect("chart present");
        let end = html[start..].find("</svg>").expect("chart closed");
        &html[start..start + end]
    }

    /// The elements of `svg` that carry `attr="value"`, as (their data-count, the element).
    fn counts<'s>(svg: &'s str, attr: &str, value: &str) -> Vec<(u64, &'s str)> {
        let needle = format!("{attr}=\"{value}\"");
        svg.match_indices(&needle)
            .map(|(at, _)| {
                let from = svg[..at].rfind('<').expect("element start");
                let to = at + svg[at..].find('>').expect("element end");
                let element = &svg[from..to];
                let count = element
                    .split("data-count=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|n| n.parse().ok())
                    .expect("data-count");
                (count, element)
            })
            .collect()
    }

    fn sum(svg: &str, attr: &str, value: &str) -> u64 {
        counts(svg, attr, value).iter().map(|(n, _)| n).sum()
    }

    fn request(ts: &str, kind: &str, caller: &str, path: &str, extra: &str) -> String {
        format!(
            r#"{{"v":1,"ts":"{ts}","kind":"{kind}","instance":"proxy-a","why":{{"reason":"rule","action":"audit"}},"request":{{"method":"GET","path":"{path}"}},"response":{{"code":200}},"peer":{{"mtls":true,"principal":"{caller}"}}{extra}}}"#
        )
    }

    fn denied(ts: &str, caller: &str, policy: &str) -> String {
        request(
            ts,
            "denied",
            caller,
            "/admin/keys",
            &format!(
                r#","authz":{{"decision":"deny","by":"rbac","basis":"policy","policy":"{policy}"}}"#
            ),
        )
    }

    const ALICE: &str = "spiffe://cluster.local/ns/payments/sa/a-very-long-service-account-name-for-the-checkout-service";
    const BOB: &str = "spiffe://cluster.local/ns/web/sa/bob";

    fn sample() -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..7 {
            lines.push(request(
                &format!("2026-12-01T10:00:0{i}.000Z"),
                "access",
                ALICE,
                "/admin/users",
                "",
            ));
        }
        for i in 0..3 {
            lines.push(request(
                &format!("2026-12-01T10:00:1{i}.000Z"),
                "access",
                BOB,
                "/admin/users",
                "",
            ));
        }
        for i in 0..4 {
            lines.push(denied(
                &format!("2026-12-01T10:00:2{i}.000Z"),
                ALICE,
                "ns[a]-policy[deny-admin]-rule[0]",
            ));
        }
        lines.push(denied(
            "2026-12-01T10:00:30.000Z",
            BOB,
            "ns[a]-policy[deny-admin]-rule[0]",
        ));
        lines.push(denied(
            "2026-12-01T10:00:31.000Z",
            BOB,
            "ns[b]-policy[other]-rule[1]",
        ));
        lines.push(
            r#"{"v":1,"ts":"2026-12-01T10:01:00.000Z","kind":"accounting","instance":"proxy-a","stream":"00000000000000aa","seq":1,"interval":{"start":"2026-12-01T10:00:00.000Z","end":"2026-12-01T10:01:00.000Z","first_seq":0,"config":"sha256:00"},"totals":{"requests":120,"records":16,"sampled_out":100,"dropped":3,"suppressed":1,"hidden":0,"sink_errors":0},"by_rule":{}}"#
                .to_string(),
        );
        lines
    }

    #[test]
    fn an_empty_trail_renders_every_empty_state() {
        let html = html(&summary_of(&[]), 10);
        for (name, message) in [
            ("timeline", "No records in the trail"),
            ("sensitive_callers", "No sensitive-endpoint access"),
            ("denials_by_policy", "No denials in the trail"),
            ("completeness", "No accounting records in the trail"),
        ] {
            let svg = chart(&html, name);
            assert!(svg.contains(&format!("data-empty=\"{name}\"")), "{name}");
            assert!(svg.contains(message), "{name}: {message}");
            assert!(!svg.contains("data-count"), "{name}");
        }
        for name in summary::TABLES.iter().filter(|n| **n != "hops") {
            assert!(
                html.contains(&format!("data-empty-table=\"{name}\"")),
                "table {name}"
            );
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn a_trail_with_data_has_the_four_charts_with_their_counts() {
        let html = html(&summary_of(&sample()), 10);
        let timeline = chart(&html, "timeline");
        assert_eq!(sum(timeline, "data-kind", "access"), 10);
        assert_eq!(sum(timeline, "data-kind", "denied"), 6);
        assert!(timeline.contains("<title>denied: 1 at 2026-12-01 10:00:20Z (1 s)</title>"));
        assert!(
            !timeline.contains("data-kind=\"accounting\""),
            "the plugin's own records are not traffic"
        );

        let callers = chart(&html, "sensitive_callers");
        let bars = counts(callers, "class", "bar");
        assert_eq!(bars.len(), 2);
        // Alice: 7 requests and 4 denied; Bob: 3 and 2. Largest first.
        assert!(bars[0].1.contains(&format!("data-label=\"{ALICE}\"")));
        assert_eq!(bars[0].0, 11);
        assert_eq!(bars[1].0, 5);
        assert_eq!(sum(callers, "data-kind", "denied"), 6);
        // The long SPIFFE id is clipped in the label, whole in its title.
        assert!(callers.contains(&format!("<title>{ALICE}</title>")));
        assert!(callers.contains('…'));

        let policies = chart(&html, "denials_by_policy");
        let bars = counts(policies, "class", "bar");
        assert_eq!(bars.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [5, 1]);
        assert!(bars[0]
            .1
            .contains("data-label=\"ns[a]-policy[deny-admin]-rule[0]\""));

        let completeness = chart(&html, "completeness");
        for (kind, n) in [
            ("records", 16),
            ("sampled_out", 100),
            ("dropped", 3),
            ("suppressed", 1),
            ("hidden", 0),
            ("sink_errors", 0),
        ] {
            assert_eq!(
                counts(completeness, "data-kind", kind).first().map(|c| c.0),
                Some(n),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_top_cut_holds_and_says_what_it_left_out() {
        let lines: Vec<String> = (0..25)
            .map(|i| {
                denied(
                    "2026-12-01T10:00:00.000Z",
                    &format!("spiffe://x/ns/n/sa/caller-{i:02}"),
                    &format!("policy-{i:02}"),
                )
            })
            .collect();
        let html = html(&summary_of(&lines), 10);
        assert_eq!(
            counts(chart(&html, "sensitive_callers"), "class", "bar").len(),
            10
        );
        assert!(chart(&html, "sensitive_callers").contains("… 15 more callers"));
        assert_eq!(
            counts(chart(&html, "denials_by_policy"), "class", "bar").len(),
            10
        );
        assert!(html.contains("… 15 more rows"));
        let all = super::html(&summary_of(&lines), 0);
        assert_eq!(
            counts(chart(&all, "denials_by_policy"), "class", "bar").len(),
            25
        );
    }

    #[test]
    fn hostile_text_from_the_trail_is_escaped() {
        let caller = r#"spiffe://evil/<script>alert(\"x\")</script>&'"#;
        let lines = vec![
            denied(
                "2026-12-01T10:00:00.000Z",
                caller,
                r#"<img src=x onerror=alert(1)> \"q\" & 'a'"#,
            ),
            request(
                "2026-12-01T10:00:01.000Z",
                "access",
                "spiffe://ok/sa/ok",
                "/a/<b>\\u0000\\u001b&amp;",
                "",
            ),
        ];
        let html = html(&summary_of(&lines), 10);
        assert!(!html.contains("<script"), "a script from the trail");
        assert!(!html.contains("<img"), "an image from the trail");
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &quot;q&quot; &amp; &#39;a&#39;"));
        assert!(html.contains("/a/&lt;b&gt;\u{FFFD}\u{FFFD}&amp;amp;"));
        assert!(!html.contains('\u{0}') && !html.contains('\u{1b}'));
        assert!(!html.contains("src=\"") && !html.contains("href="));
    }

    #[test]
    fn labels_are_clipped_by_characters() {
        assert_eq!(clip("short", 10), "short");
        let clipped = clip("spiffe://cluster.local/ns/payments/sa/checkout", 20);
        assert_eq!(clipped.chars().count(), 20);
        assert_eq!(clipped, "spiffe…s/sa/checkout");
        assert_eq!(clip("ééééééééééé", 5).chars().count(), 5);
    }

    #[test]
    fn times_are_utc() {
        for ts in [
            "1970-01-01T00:00:00.000Z",
            "2026-02-28T23:59:59.000Z",
            "2028-02-29T12:30:05.000Z",
            "2026-12-31T23:59:59.000Z",
        ] {
            let epoch = epoch_seconds(ts).expect("a time");
            assert_eq!(utc(epoch), format!("{} {}Z", &ts[..10], &ts[11..19]));
        }
        assert_eq!(duration(300), "5 min");
        assert_eq!(duration(86_400), "1 day");
        assert_eq!(nice(0, 5), (1, 1));
        assert_eq!(nice(17, 5), (5, 20));
        assert_eq!(nice(100_000, 5), (20_000, 100_000));
    }
}
