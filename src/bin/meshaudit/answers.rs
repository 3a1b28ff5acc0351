//! `meshaudit summary`: the trail's answers as terminal tables, JSON or CSV; the reading of
//! the inputs that `summary`, `report` and `policy` share.

use meshaudit::core::trail::event::{Trail, Window};
use meshaudit::core::trail::summary::{self, Cell, Summary, Table, TABLES};
use std::fmt::Write as _;
use std::io::{BufReader, Read};
use std::process::ExitCode;

/// The options every answer takes: inputs (files, `-` for standard input) and the window.
pub(crate) struct Inputs {
    pub(crate) files: Vec<String>,
    pub(crate) window: Window,
}

/// Takes `--since`, `--until` and the input files from `args`, leaving the other options.
pub(crate) fn inputs(args: &mut Vec<String>) -> Result<Inputs, String> {
    let mut window = Window::default();
    if let Some(since) = crate::take_option(args, "--since")?.pop() {
        window.since = Some(Window::bound(&since).map_err(|e| format!("--since: {e}"))?);
    }
    if let Some(until) = crate::take_option(args, "--until")?.pop() {
        window.until = Some(Window::bound(&until).map_err(|e| format!("--until: {e}"))?);
    }
    let mut files: Vec<String> = Vec::new();
    args.retain(|a| {
        let file = !a.starts_with("--") || a == "-";
        if file {
            files.push(a.clone());
        }
        !file
    });
    if files.is_empty() {
        files.push("-".into());
    }
    Ok(Inputs { files, window })
}

/// Reads every input into one trail, sorted by time.
pub(crate) fn read(inputs: &Inputs) -> Result<Trail, String> {
    let mut trail = Trail::default();
    for file in &inputs.files {
        let reader: Box<dyn Read> = if file == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(file).map_err(|e| format!("{file}: cannot read: {e}"))?)
        };
        trail
            .read(BufReader::with_capacity(1 << 20, reader), &inputs.window)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    trail.sort();
    Ok(trail)
}

/// A flag present in `args`, removed from them.
pub(crate) fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

/// `--top N`: rows per table in the terminal and the report (0: all).
pub(crate) fn top(args: &mut Vec<String>, default: usize) -> Result<usize, String> {
    match crate::take_option(args, "--top")?.pop() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("--top: {n:?} is not a number of rows")),
        None => Ok(default),
    }
}

pub(crate) fn no_unknown_options(args: &[String]) -> Result<(), String> {
    match args.iter().find(|a| a.starts_with("--")) {
        Some(unknown) => Err(format!("unknown option {unknown}\n{}", crate::USAGE)),
        None => Ok(()),
    }
}

pub(crate) fn summary(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let json = take_flag(&mut args, "--json");
    let hops = take_flag(&mut args, "--hops");
    let csv = crate::take_option(&mut args, "--csv")?.pop();
    let top = top(&mut args, 10)?;
    let inputs = inputs(&mut args)?;
    no_unknown_options(&args)?;
    if let Some(name) = &csv {
        if !TABLES.contains(&name.as_str()) {
            return Err(format!(
                "--csv: no table {name:?}; tables: {}",
                TABLES.join(", ")
            ));
        }
    }
    let trail = read(&inputs)?;
    let summary = summary::summarize(
        &trail,
        &inputs.window,
        hops || csv.as_deref() == Some("hops"),
    );
    match csv {
        Some(name) => {
            let table = summary.table(&name).ok_or("no such table")?;
            print!("{}", table_csv(table));
        }
        None if json => println!("{}", summary_json(&summary)),
        None => print!("{}", summary_text(&summary, top)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 caller`, `2 callers`.
pub(crate) fn counted(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", thousands(n))
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The lines above the tables: what was read, over which time, what the trail lacks.
pub(crate) fn headline(s: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    let span = match (&s.first, &s.last) {
        (Some(first), Some(last)) => format!(", {first} to {last}"),
        _ => String::new(),
    };
    lines.push(format!("{} records{span}", thousands(s.records)));
    if s.window.since.is_some() || s.window.until.is_some() {
        lines.push(format!(
            "window: since {} until {} ({} records outside it)",
            s.window.since.as_deref().unwrap_or("the start"),
            s.window.until.as_deref().unwrap_or("the end"),
            thousands(s.outside_window)
        ));
    }
    lines.push(format!(
        "requests: {} (from {} request records: one per proxy a request crossed)",
        thousands(s.requests),
        thousands(s.request_records)
    ));
    let kinds: Vec<String> = s
        .records_by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {}", thousands(*n)))
        .collect();
    if !kinds.is_empty() {
        lines.push(format!("records by kind: {}", kinds.join(", ")));
    }
    lines.push(format!(
        "read twice (in both outputs), counted once: {}; lines without a record: {}; unreadable records: {}",
        thousands(s.duplicates),
        thousands(s.other_lines),
        thousands(s.unreadable)
    ));
    let c = &s.completeness;
    if c.intervals == 0 {
        lines.push(
            "not written: unknown (no accounting record in the trail; each proxy writes one every reporting.interval_seconds)"
                .into(),
        );
    } else {
        let get = |name: &str| thousands(c.total(name));
        lines.push(format!(
            "not written, by {} accounting records: {} of {} requests; sampled out {}, dropped {}, suppressed {}, hidden {}, sink errors {}",
            thousands(c.intervals),
            thousands(c.not_written()),
            get("requests"),
            get("sampled_out"),
            get("dropped"),
            get("suppressed"),
            get("hidden"),
            get("sink_errors"),
        ));
    }
    if c.hidden_by_log_level > 0 {
        lines.push(format!(
            "Envoy's log level hid the records at times: {} log_level reports say so",
            thousands(c.hidden_by_log_level)
        ));
    }
    lines
}

/// Longest cell shown in the terminal, in characters.
const MAX_CELL: usize = 64;

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_CELL {
        text.to_string()
    } else {
        let kept: String = text.chars().take(MAX_CELL - 1).collect();
        format!("{kept}…")
    }
}

pub(crate) fn table_text(table: &Table, top: usize) -> String {
    let mut out = format!("\n{}\n", table.title);
    if table.rows.is_empty() {
        out.push_str("  (none)\n");
        return out;
    }
    let shown = if top == 0 {
        table.rows.len()
    } else {
        top.min(table.rows.len())
    };
    let cells: Vec<Vec<String>> = table
        .rows
        .iter()
        .take(shown)
        .map(|row| {
            // The last column ends the line: nothing to align after it, so it is never cut.
            let last = row.len().saturating_sub(1);
            row.iter()
                .enumerate()
                .map(|(i, c)| match c {
                    Cell::Count(n) => thousands(*n),
                    Cell::Text(t) if i == last => t.clone(),
                    Cell::Text(t) => clip(t),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|t| t.chars().count())
                .chain([c.heading.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<(&str, bool)>| {
        let mut line = String::from(" ");
        for ((value, right), width) in values.into_iter().zip(&widths) {
            let pad = width.saturating_sub(value.chars().count());
            line.push(' ');
            if right {
                line.push_str(&" ".repeat(pad));
                line.push_str(value);
            } else {
                line.push_str(value);
                line.push_str(&" ".repeat(pad));
            }
            line.push(' ');
        }
        format!("{}\n", line.trim_end())
    };
    let numeric = table.numeric_columns();
    out.push_str(&line(
        table
            .columns
            .iter()
            .zip(&numeric)
            .map(|(c, n)| (c.heading, *n))
            .collect(),
    ));
    for row in &cells {
        out.push_str(&line(
            row.iter()
                .zip(&numeric)
                .map(|(c, n)| (c.as_str(), *n))
                .collect(),
        ));
    }
    if shown < table.rows.len() {
        let _ = writeln!(
            out,
            "  … {} more rows (--top 0 shows all; --csv {} writes them)",
            thousands((table.rows.len() - shown) as u64),
            table.name
        );
    }
    out
}

pub(crate) fn summary_text(s: &Summary, top: usize) -> String {
    let mut out = String::from("meshaudit summary\n");
    for line in headline(s) {
        let _ = writeln!(out, "  {line}");
    }
    for table in &s.tables {
        out.push_str(&table_text(table, top));
    }
    out
}

fn cell_json(cell: &Cell) -> serde_json::Value {
    match cell {
        Cell::Text(t) => serde_json::Value::String(t.clone()),
        Cell::Count(n) => serde_json::Value::from(*n),
    }
}

pub(crate) fn table_json(table: &Table) -> serde_json::Value {
    table
        .rows
        .iter()
        .map(|row| {
            table
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.key.to_string(), cell_json(v)))
                .collect::<serde_json::Map<_, _>>()
        })
        .collect()
}

pub(crate) fn summary_json(s: &Summary) -> String {
    let tables: serde_json::Map<String, serde_json::Value> = s
        .tables
        .iter()
        .map(|t| (t.name.to_string(), table_json(t)))
        .collect();
    let timeline = &s.timeline;
    let value = serde_json::json!({
        "window": {"since": s.window.since, "until": s.window.until},
        "first": s.first,
        "last": s.last,
        "records": s.records,
        "records_by_kind": s.records_by_kind,
        "request_records": s.request_records,
        "requests": s.requests,
        "read": {
            "duplicates": s.duplicates,
            "other_lines": s.other_lines,
            "unreadable": s.unreadable,
            "outside_window": s.outside_window,
        },
        "completeness": {
            "intervals": s.completeness.intervals,
            "totals": s.completeness.totals,
            "not_written": s.completeness.not_written(),
            "hidden_by_log_level": s.completeness.hidden_by_log_level,
        },
        "timeline": {
            "bucket_seconds": timeline.bucket_seconds,
            "start": timeline.start,
            "buckets": timeline.buckets,
        },
        "tables": tables,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub(crate) fn table_csv(table: &Table) -> String {
    let mut out = String::new();
    let header: Vec<&str> = table.columns.iter().map(|c| c.key).collect();
    let _ = writeln!(out, "{}", header.join(","));
    for row in &table.rows {
        let fields: Vec<String> = row.iter().map(|c| csv_field(&c.text())).collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}
