//! `meshaudit test CONFIG CASES.yaml`: rule tests, each case a request and what the plugin
//! must do with it, checked by `explain` (the plugin's own `on_log`, natively). And where a
//! configuration comes from: a JSON file, or the one plugin configuration inside a YAML
//! manifest (a WasmPlugin's or TrafficExtension's `pluginConfig`, an EnvoyFilter's or an Envoy
//! bootstrap's Wasm `configuration`).

use meshaudit::core::{explain, Explanation, Probe};
use serde::Deserialize;
use serde_json::Value;

/// One case, as written in the YAML list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Case {
    /// `METHOD /path?query`.
    request: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    status: Option<u16>,
    details: Option<String>,
    principal: Option<String>,
    trace_id: Option<String>,
    authority: Option<String>,
    /// Expected: is a record written?
    recorded: bool,
    /// Expected first matching rule; `"-"`: no rule matches.
    rule: Option<String>,
    /// Expected record kind (`access`, `denied`, `auth_failure`...), for a recorded case.
    kind: Option<String>,
    /// Expected: is a `started` record written when the request headers pass (`record_start`)?
    started: Option<bool>,
}

impl Case {
    pub(crate) fn probe(&self) -> Result<Probe, String> {
        let (method, path) = request_line(&self.request)?;
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if let Some(trace) = &self.trace_id {
            headers.push(("traceparent".into(), traceparent(trace)?));
        }
        Ok(Probe {
            method,
            path,
            authority: self.authority.clone(),
            headers,
            status: Some(self.status.unwrap_or(ANSWERED)),
            details: self.details.clone(),
            principal: self.principal.clone(),
        })
    }

    /// What differs from the expectation, one line each; empty when the case passes.
    pub(crate) fn diff(&self, e: &Explanation) -> Vec<String> {
        let mut out = Vec::new();
        let recorded = e.record.is_some();
        if recorded != self.recorded {
            out.push(format!(
                "recorded: expected {}, got {recorded}",
                self.recorded
            ));
        }
        let first = e
            .first_match()
            .and_then(|i| e.rules.get(i))
            .map_or("-", |r| r.name.as_str());
        if let Some(rule) = &self.rule {
            if rule != first {
                out.push(format!("rule: expected {rule:?}, got {first:?}"));
            }
        }
        if let Some(kind) = &self.kind {
            let got = e
                .record
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_string));
            match got {
                Some(got) if got == *kind => {}
                Some(got) => out.push(format!("kind: expected {kind:?}, got {got:?}")),
                None => out.push(format!("kind: expected {kind:?}, got no record")),
            }
        }
        if let Some(started) = self.started {
            let got = e.started.is_some();
            if got != started {
                out.push(format!("started: expected {started}, got {got}"));
            }
        }
        out
    }

    pub(crate) fn request(&self) -> &str {
        &self.request
    }
}

/// The status of a request described without one: answered by the application.
pub(crate) const ANSWERED: u16 = 200;

/// `METHOD /path?query`, as cases and `explain --request` write a request.
pub(crate) fn request_line(text: &str) -> Result<(String, String), String> {
    text.split_once(' ')
        .filter(|(m, p)| !m.is_empty() && p.trim().starts_with('/'))
        .map(|(m, p)| (m.to_string(), p.trim().to_string()))
        .ok_or_else(|| format!("request {text:?}: write it as 'METHOD /path?query'"))
}

/// A W3C `traceparent` for a trace id.
pub(crate) fn traceparent(trace: &str) -> Result<String, String> {
    if trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "trace id {trace:?}: 32 hex digits (a W3C trace id)"
        ));
    }
    Ok(format!(
        "00-{}-00f067aa0ba902b7-01",
        trace.to_ascii_lowercase()
    ))
}

pub(crate) fn read_cases(file: &str) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: cannot read: {e}"))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("{file}: {e}"))
}

/// The plugin configuration in `bytes`, as the plugin receives it: the JSON itself, or the one
/// configuration a YAML manifest or Envoy bootstrap holds.
pub(crate) fn plugin_config(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('{') {
        return Ok(bytes.to_vec());
    }
    let mut found = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        collect(&value, &mut found);
    }
    match found.len() {
        1 => found.pop().ok_or_else(String::new),
        0 => Err("neither JSON nor a manifest with a plugin configuration (pluginConfig, or a Wasm filter's configuration)".to_string()),
        n => Err(format!(
            "{n} plugin configurations; put the one to check in a file of its own"
        )),
    }
}

fn collect(value: &Value, found: &mut Vec<Vec<u8>>) {
    match value {
        Value::Object(map) => {
            if let Some(config @ Value::Object(_)) = map.get("pluginConfig") {
                found.push(config.to_string().into_bytes());
            }
            // Envoy's Wasm filter: `configuration: {"@type": ...StringValue, value: "<json>"}`.
            if let Some(Value::Object(c)) = map.get("configuration") {
                let string_value = c
                    .get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.protobuf.StringValue"));
                if let (true, Some(Value::String(json))) = (string_value, c.get("value")) {
                    found.push(json.clone().into_bytes());
                }
            }
            for (key, v) in map {
                if key != "pluginConfig" {
                    collect(v, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
        _ => {}
    }
}

pub(crate) fn run(settings: &meshaudit::core::Settings, cases_file: &str) -> Result<bool, String> {
    let cases = read_cases(cases_file)?;
    if cases.is_empty() {
        return Err(format!("{cases_file}: no cases"));
    }
    let mut failed = 0;
    for (i, case) in cases.iter().enumerate() {
        let probe = case
            .probe()
            .map_err(|e| format!("{cases_file}: case {i}: {e}"))?;
        let diff = case.diff(&explain(settings, &probe));
        if !diff.is_empty() {
            failed += 1;
            println!("{cases_file}: case {i} ({}): FAILED", case.request());
            for line in diff {
                println!("    {line}");
            }
        }
    }
    if failed == 0 {
        println!("{cases_file}: ok ({} cases)", cases.len());
    } else {
        println!("{cases_file}: {failed} of {} cases failed", cases.len());
    }
    Ok(failed == 0)
}
