//! meshaudit: the plugin's native companion, for operators and auditors.
//!
//!   meshaudit check [--assume-hmac-key] [--strict] FILE...
//!                                                      validate JSON plugin configurations
//!   meshaudit explain [--assume-hmac-key] CONFIG --request 'METHOD /path?query' [--header NAME:VALUE]...
//!           [--status CODE] [--details DETAILS] [--principal URI] [--trace-id HEX] [--authority HOST]
//!                                                      what the plugin does with one request, and why
//!   meshaudit test [--assume-hmac-key] CONFIG CASES.yaml
//!                                                      rule tests: each case a request and its expected verdict
//!   meshaudit schema                                   print the configuration's JSON Schema
//!   meshaudit verify [--keys FILE]... [--json] [FILE...]
//!                                                      prove a captured trail complete and untampered
//!   meshaudit hash [--key-env NAME] VALUE              the pseudonym the plugin writes for VALUE
//!   meshaudit derive-key --master FILE SCOPE           a workload's trail key, from a master key
//!   meshaudit summary | report | policy                answers from the trail (answers.rs, report.rs, policy.rs)
//!   meshaudit drill --target URL ...                   edge cases sent, their records awaited (drill.rs)
//!
//! `check` runs the very validation the plugin runs in `on_configure` and prints the line Envoy
//! would log. A configuration that hashes needs the HMAC key from the VM's environment: `check`
//! reads it from its own environment, or with `--assume-hmac-key` takes it as provided at run
//! time (for pipelines without the secret). It then warns about rules that cannot do what they
//! say (shadowed by earlier rules, a sample rate of 0, a pattern nothing can match: see
//! `core::request::analysis`); `--strict` makes a warning fail the check, for CI.
//!
//! `verify` reads Envoy log lines (`kubectl logs`), access-log lines and bare JSON records, from
//! files or standard input, in any order. Keys: each `--keys` file holds `<id>:<64 hex digits>`
//! lines (a master's id derives the keys of `<scope>@<id>`), and `MESHAUDIT_TRAIL_KEY` in the
//! environment adds one. Exit status: 0 intact, 1 breaks found, 2 the command could not run.

mod answers;
mod cases;
mod drill;
mod policy;
mod report;

use meshaudit::core::trail::verify::{Break, KeySet, Place, Report, Verifier};
use meshaudit::core::trail::TrailKey;
use meshaudit::core::{
    config_errors, explain as explain_request, rule_warnings, HashKey, Probe, RawConfig, Settings,
    Warning,
};
use std::io::{BufReader, Read};
use std::process::ExitCode;

pub(crate) const USAGE: &str = "usage: meshaudit check [--assume-hmac-key] [--strict] FILE...
       meshaudit explain [--assume-hmac-key] CONFIG --request 'METHOD /path?query' [--header NAME:VALUE]...
                [--status CODE] [--details DETAILS] [--principal URI] [--trace-id HEX] [--authority HOST]
       meshaudit test [--assume-hmac-key] CONFIG CASES.yaml
       meshaudit schema
       meshaudit verify [--keys FILE]... [--json] [FILE...]   (no FILE or -: standard input)
       meshaudit hash [--key-env NAME] VALUE
       meshaudit derive-key --master FILE SCOPE
       meshaudit summary [--since T] [--until T] [--hops] [--top N] [--json | --csv TABLE] [FILE...]
       meshaudit report --html OUT [--since T] [--until T] [--top N] [FILE...]
       meshaudit policy suggest (--workload SPIFFE-ID | --instance PREFIX) --selector KEY=VALUE...
                [--name N] [--namespace NS] [--config PLUGIN-CONFIG] [--generalise N] [--allow-incomplete]
                [--since T] [--until T] [FILE...]
       meshaudit policy impact [--json] [--since T] [--until T] [FILE...]
       meshaudit drill --target http://HOST:PORT [--authority HOST] [--timeout SECONDS] [--json]
                [--jwt-path PATH --issuer ISSUER [--audience AUDIENCE]] [--denied-path PATH] [--sensitive-path PATH]
                (--trail FILE... | --postgres CONNINFO | --clickhouse URL [--clickhouse-database DB])";

/// The environment variables the plugin reads its keys from, by default.
const HMAC_KEY_ENV: &str = "MESHAUDIT_HMAC_KEY";
const TRAIL_KEY_ENV: &str = "MESHAUDIT_TRAIL_KEY";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("schema") if rest.is_empty() => schema(),
        Some("check") => check_all(rest),
        Some("verify") => verify(rest),
        Some("hash") => hash(rest),
        Some("derive-key") => derive_key(rest),
        Some("explain") => explain(rest),
        Some("test") => test(rest),
        Some("summary") => answers::summary(rest),
        Some("report") => report::report(rest),
        Some("policy") => policy::policy(rest),
        Some("drill") => drill::drill(rest),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("meshaudit: {message}");
            ExitCode::from(2)
        }
    }
}

fn schema() -> Result<ExitCode, String> {
    let schema = schemars::schema_for!(RawConfig);
    let text = serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn check_all(args: &[String]) -> Result<ExitCode, String> {
    let assume_key = args.iter().any(|a| a == "--assume-hmac-key");
    let strict = args.iter().any(|a| a == "--strict");
    if let Some(unknown) = args
        .iter()
        .find(|a| a.starts_with("--") && !matches!(a.as_str(), "--assume-hmac-key" | "--strict"))
    {
        return Err(format!("unknown option {unknown}\n{USAGE}"));
    }
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if files.is_empty() {
        return Err(USAGE.to_string());
    }
    let mut failed = false;
    for file in files {
        match check(file, assume_key) {
            Ok((summary, warnings)) => {
                for warning in &warnings {
                    println!("{file}: warning: {warning}");
                }
                if strict && !warnings.is_empty() {
                    println!("{file}: failed (--strict): {} warnings", warnings.len());
                    failed = true;
                } else {
                    println!("{file}: ok ({summary})");
                }
            }
            Err(errors) => {
                for error in &errors {
                    println!("{file}: {error}");
                }
                if errors.len() > 1 {
                    println!("{file}: {} errors", errors.len());
                }
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The plugin's words for a configuration it refuses: the line Envoy logs.
const REFUSED: &str = "meshaudit: invalid plugin configuration: ";

/// The configuration bytes in `file` and the environment the plugin would read its keys from.
fn config_bytes(file: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    cases::plugin_config(&bytes)
}

fn vm_env(assume_key: bool) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        std::env::var(name).ok().or_else(|| {
            // A stand-in for the key only for the HMAC key: a trail key must parse.
            (assume_key && name == HMAC_KEY_ENV)
                .then(|| "provided-at-run-time-by-the-vm-environment".to_string())
        })
    }
}

/// The configuration in `file`, validated as the plugin validates it.
pub(crate) fn load(file: &str, assume_key: bool) -> Result<Settings, String> {
    let bytes = config_bytes(file)?;
    Settings::from_json_with_env(&bytes, &vm_env(assume_key)).map_err(|e| format!("{REFUSED}{e}"))
}

/// A valid configuration's summary and warnings, or every error it has (one line each, the
/// first the line Envoy logs).
fn check(file: &str, assume_key: bool) -> Result<(String, Vec<Warning>), Vec<String>> {
    let bytes = config_bytes(file).map_err(|e| vec![e])?;
    let env = vm_env(assume_key);
    let settings = Settings::from_json_with_env(&bytes, &env).map_err(|_| {
        config_errors(&bytes, &env)
            .iter()
            .map(|e| format!("{REFUSED}{e}"))
            .collect::<Vec<_>>()
    })?;
    let summary = format!("{} rules, digest {}", settings.rules.len(), settings.digest);
    Ok((summary, rule_warnings(&settings)))
}

fn explain(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let assume_key = args.iter().any(|a| a == "--assume-hmac-key");
    args.retain(|a| a != "--assume-hmac-key");
    let one = |args: &mut Vec<String>, name: &str| -> Result<Option<String>, String> {
        let mut values = take_option(args, name)?;
        if values.len() > 1 {
            return Err(format!("{name} given twice"));
        }
        Ok(values.pop())
    };
    let request = one(&mut args, "--request")?.ok_or("explain needs --request 'METHOD /path'")?;
    let (method, path) = cases::request_line(&request).map_err(|e| format!("--{e}"))?;
    let mut probe = Probe {
        method,
        path,
        authority: one(&mut args, "--authority")?,
        details: one(&mut args, "--details")?,
        principal: one(&mut args, "--principal")?,
        status: Some(cases::ANSWERED),
        ..Probe::default()
    };
    if let Some(status) = one(&mut args, "--status")? {
        probe.status = Some(
            status
                .parse()
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| format!("--status {status:?}: an HTTP status, 100 to 599"))?,
        );
    }
    for header in take_option(&mut args, "--header")? {
        let (name, value) = header
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("--header {header:?}: write it as NAME:VALUE"))?;
        probe
            .headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    if let Some(trace) = one(&mut args, "--trace-id")? {
        let traceparent = cases::traceparent(&trace).map_err(|e| format!("--trace-id: {e}"))?;
        probe.headers.push(("traceparent".to_string(), traceparent));
    }
    let [file] = args.as_slice() else {
        return Err(USAGE.to_string());
    };
    let settings = load(file, assume_key)?;
    let e = explain_request(&settings, &probe);
    println!("request: {} {}", probe.method, probe.path);
    println!("canonical path: {}", e.canonical_path);
    println!("rules, in order (the first that matches decides):");
    let first = e.first_match();
    for (i, rule) in e.rules.iter().enumerate() {
        let how = match (rule.failed, Some(i) == first) {
            (None, true) => "matches: first match".to_string(),
            (None, false) => "matches, but an earlier rule decides".to_string(),
            (Some(condition), _) => format!("no: its {condition} condition fails"),
        };
        println!("  rules[{i}] {}: {how}", rule.name);
    }
    if first.is_none() {
        println!(
            "  no rule matches: default_sample_rate {} applies",
            settings.default_sample_rate
        );
    }
    if let Some(started) = &e.started {
        println!("at its start: a started record (record_start)");
        println!("started record: {started}");
    }
    match &e.record {
        Some(record) => {
            let value: serde_json::Value =
                serde_json::from_str(record).map_err(|e| e.to_string())?;
            let field = |at: &str| value.pointer(at).and_then(|v| v.as_str());
            println!(
                "verdict: recorded, kind {}, reason {}{}, action {}",
                field("/kind").unwrap_or("?"),
                field("/why/reason").unwrap_or("?"),
                field("/why/rule")
                    .map(|r| format!(" (rule {r})"))
                    .unwrap_or_default(),
                field("/why/action").unwrap_or("?"),
            );
            println!("record: {record}");
        }
        None => {
            let rule = first.and_then(|i| settings.rules.get(i));
            let why = match rule.map(|r| (r.name.as_str(), r.action)) {
                Some((name, meshaudit::core::Action::Drop)) => format!("dropped by rule {name}"),
                Some((name, meshaudit::core::Action::Sample(rate))) => format!(
                    "sampled out by rule {name} at rate {rate} ({})",
                    sampled_by(&probe)
                ),
                _ => format!(
                    "sampled out at default_sample_rate {} ({})",
                    settings.default_sample_rate,
                    sampled_by(&probe)
                ),
            };
            println!("verdict: not recorded: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn test(args: &[String]) -> Result<ExitCode, String> {
    let assume_key = args.iter().any(|a| a == "--assume-hmac-key");
    let files: Vec<&String> = args.iter().filter(|a| *a != "--assume-hmac-key").collect();
    let [config, cases_file] = files.as_slice() else {
        return Err(USAGE.to_string());
    };
    let settings = load(config, assume_key).map_err(|e| format!("{config}: {e}"))?;
    Ok(if cases::run(&settings, cases_file)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a sampling decision follows: the trace, so every hop decides alike, when there is one.
fn sampled_by(probe: &Probe) -> &'static str {
    let has = |name: &str| probe.headers.iter().any(|(n, _)| n == name);
    if has("traceparent") || has("x-b3-traceid") || has("b3") {
        "decided by the trace id, as on every hop of the trace"
    } else if has("x-request-id") {
        "decided by x-request-id"
    } else {
        "no trace id: a random draw, so the same request may be recorded another time; give --trace-id"
    }
}

/// Takes `--name VALUE` out of the arguments, every time it appears.
pub(crate) fn take_option(args: &mut Vec<String>, name: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    while let Some(at) = args.iter().position(|a| a == name) {
        args.remove(at);
        if at >= args.len() {
            return Err(format!("{name} needs a value"));
        }
        values.push(args.remove(at));
    }
    Ok(values)
}

fn read_keys(file: &str, keys: &mut KeySet) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: cannot read: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = TrailKey::parse(line).map_err(|e| format!("{file}:{}: {e}", n + 1))?;
        keys.add(key);
    }
    Ok(())
}

fn verify(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let mut keys = KeySet::default();
    for file in take_option(&mut args, "--keys")? {
        read_keys(&file, &mut keys)?;
    }
    if let Ok(token) = std::env::var(TRAIL_KEY_ENV) {
        keys.add(TrailKey::parse(&token).map_err(|e| format!("{TRAIL_KEY_ENV}: {e}"))?);
    }
    let json = args.iter().any(|a| a == "--json");
    args.retain(|a| a != "--json");
    if let Some(unknown) = args.iter().find(|a| a.starts_with("--")) {
        return Err(format!("unknown option {unknown}\n{USAGE}"));
    }
    if args.is_empty() {
        args.push("-".into());
    }
    let mut verifier = Verifier::new(keys.clone());
    for (input, file) in args.iter().enumerate() {
        let reader: Box<dyn Read> = if file == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(file).map_err(|e| format!("{file}: cannot read: {e}"))?)
        };
        verifier
            .read(BufReader::with_capacity(1 << 20, reader), input)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    let report = verifier.finish();
    if json {
        println!("{}", report_json(&report, &args, !keys.is_empty()));
    } else {
        print!("{}", report_text(&report, &args, !keys.is_empty()));
    }
    Ok(if report.breaks() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn place_text(place: Option<Place>, inputs: &[String]) -> String {
    place.map_or_else(String::new, |p| {
        let file = inputs.get(p.input).map_or("-", String::as_str);
        format!(" ({file}:{})", p.line)
    })
}

fn break_text(b: &Break, inputs: &[String]) -> String {
    let seq = match b.seq {
        Some((a, z)) if a == z => format!("seq {a}"),
        Some((a, z)) => format!("seq {a}-{z}"),
        None => "stream".into(),
    };
    format!("  BREAK {seq}{}: {}", place_text(b.place, inputs), b.what)
}

fn report_text(report: &Report, inputs: &[String], keyed: bool) -> String {
    let mut out = String::new();
    let mut instance = None;
    for s in &report.streams {
        if instance != Some(&s.instance) {
            out.push_str(&format!("proxy {}\n", s.instance));
            instance = Some(&s.instance);
        }
        let state = if s.closed {
            "closed"
        } else if s.configuration_only {
            "configuration records only (Envoy's main-thread VM)"
        } else {
            "open"
        };
        out.push_str(&format!(
            "  stream {}: {} records (seq 0-{}), {} intervals settled, {state}, key {}, config {}\n",
            s.stream,
            s.records,
            s.max_seq,
            s.intervals,
            s.key_id.as_deref().unwrap_or("none"),
            if s.configs.is_empty() {
                "unknown".to_string()
            } else {
                s.configs.join(", ")
            },
        ));
        if s.open_tail > 0 && !s.configuration_only {
            out.push_str(&format!(
                "    {} records after the last accounting record: not yet confirmed\n",
                s.open_tail
            ));
        }
        if s.declared_losses > 0 {
            out.push_str(&format!(
                "    {} records the plugin declared it could not write (Envoy refused them, or its log level hid them)\n",
                s.declared_losses
            ));
        }
        if s.in_both_outputs > 0 {
            out.push_str(&format!(
                "    {} records read from both outputs\n",
                s.in_both_outputs
            ));
        }
        if s.unchecked > 0 {
            out.push_str(&format!(
                "    {} records whose chain value was not checked{}\n",
                s.unchecked,
                if keyed { "" } else { " (no key given)" }
            ));
        }
        for b in &s.breaks {
            out.push_str(&break_text(b, inputs));
            out.push('\n');
        }
    }
    for place in &report.unreadable {
        out.push_str(&format!(
            "BREAK{}: a record that cannot be read\n",
            place_text(Some(*place), inputs)
        ));
    }
    let records: u64 = report.streams.iter().map(|s| s.records).sum();
    let verdict = if report.breaks() == 0 {
        "intact"
    } else {
        "BROKEN"
    };
    out.push_str(&format!(
        "{verdict}: {} streams, {records} records, {} breaks{}\n",
        report.streams.len(),
        report.breaks(),
        if keyed {
            ""
        } else {
            "; chain values not checked: no key given"
        }
    ));
    out
}

fn report_json(report: &Report, inputs: &[String], keyed: bool) -> serde_json::Value {
    let place = |p: Option<Place>| {
        p.map(|p| {
            serde_json::json!({
                "input": inputs.get(p.input).map_or("-", String::as_str),
                "line": p.line,
            })
        })
    };
    let streams: Vec<serde_json::Value> = report
        .streams
        .iter()
        .map(|s| {
            let breaks: Vec<serde_json::Value> = s
                .breaks
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "first_seq": b.seq.map(|(a, _)| a),
                        "last_seq": b.seq.map(|(_, z)| z),
                        "at": place(b.place),
                        "what": b.what,
                    })
                })
                .collect();
            serde_json::json!({
                "instance": s.instance,
                "stream": s.stream,
                "key": s.key_id,
                "records": s.records,
                "max_seq": s.max_seq,
                "intervals": s.intervals,
                "open_tail": s.open_tail,
                "closed": s.closed,
                "configuration_only": s.configuration_only,
                "in_both_outputs": s.in_both_outputs,
                "declared_losses": s.declared_losses,
                "unchecked": s.unchecked,
                "configs": s.configs,
                "breaks": breaks,
            })
        })
        .collect();
    serde_json::json!({
        "intact": report.breaks() == 0,
        "keyed": keyed,
        "breaks": report.breaks(),
        "streams": streams,
        "unreadable": report.unreadable.iter().map(|p| place(Some(*p))).collect::<Vec<_>>(),
        "records_outside_streams": report.outside_streams,
        "other_lines": report.other_lines,
    })
}

fn hash(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let variable = take_option(&mut args, "--key-env")?
        .pop()
        .unwrap_or_else(|| HMAC_KEY_ENV.to_string());
    let [value] = args.as_slice() else {
        return Err(USAGE.to_string());
    };
    let key = std::env::var(&variable).map_err(|_| format!("{variable} is not set"))?;
    let key = HashKey::new(key.as_bytes());
    println!(
        "{}\t{}",
        String::from_utf8_lossy(&key.pseudonym(value.as_bytes())),
        key.id
    );
    Ok(ExitCode::SUCCESS)
}

fn derive_key(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let master = take_option(&mut args, "--master")?
        .pop()
        .ok_or_else(|| USAGE.to_string())?;
    let [scope] = args.as_slice() else {
        return Err(USAGE.to_string());
    };
    let text =
        std::fs::read_to_string(&master).map_err(|e| format!("{master}: cannot read: {e}"))?;
    let master_key = TrailKey::parse(&text).map_err(|e| format!("{master}: {e}"))?;
    let key = master_key.derive(scope).map_err(|e| e.0)?;
    println!("{}", key.token());
    Ok(ExitCode::SUCCESS)
}
