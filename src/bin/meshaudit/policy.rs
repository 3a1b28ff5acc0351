//! `meshaudit policy suggest` (an Istio ALLOW AuthorizationPolicy from a workload's observed
//! traffic) and `meshaudit policy impact` (what each dry-run policy would have denied).

use crate::answers::{self, counted, thousands};
use meshaudit::core::trail::policy::{self, Impact, SuggestOptions, Suggestion};
use std::fmt::Write as _;
use std::process::ExitCode;

/// Distinct values in one path segment from which `suggest` writes `{*}`.
const DEFAULT_THRESHOLD: usize = 5;

pub(crate) fn policy(args: &[String]) -> Result<ExitCode, String> {
    match args.split_first() {
        Some((sub, rest)) if sub == "suggest" => suggest(rest),
        Some((sub, rest)) if sub == "impact" => impact(rest),
        _ => Err(crate::USAGE.to_string()),
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `spiffe://cluster.local/ns/pay/sa/api` → (`pay`, `api`).
fn namespace_and_account(principal: &str) -> Option<(&str, &str)> {
    let path = principal.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa)) => Some((ns, sa)),
        _ => None,
    }
}

fn suggest(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let local_principal = crate::take_option(&mut args, "--workload")?.pop();
    let instance_prefix = crate::take_option(&mut args, "--instance")?.pop();
    let selectors = crate::take_option(&mut args, "--selector")?;
    let name = crate::take_option(&mut args, "--name")?.pop();
    let namespace = crate::take_option(&mut args, "--namespace")?.pop();
    let config = crate::take_option(&mut args, "--config")?.pop();
    let threshold = match crate::take_option(&mut args, "--generalise")?.pop() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("--generalise: {n:?} is not a number of values (0: never)"))?,
        None => DEFAULT_THRESHOLD,
    };
    let allow_incomplete = answers::take_flag(&mut args, "--allow-incomplete");
    let inputs = answers::inputs(&mut args)?;
    answers::no_unknown_options(&args)?;
    if local_principal.is_none() && instance_prefix.is_none() {
        return Err("policy suggest: name the workload: --workload SPIFFE-ID (its own identity) and/or --instance PREFIX (its proxies' instance names)".into());
    }
    if selectors.is_empty() {
        return Err("policy suggest: --selector KEY=VALUE (the workload's labels) is required: a policy without a selector applies to every workload of the namespace".into());
    }
    let mut labels = Vec::new();
    for selector in &selectors {
        let (key, value) = selector
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--selector: {selector:?} is not KEY=VALUE"))?;
        labels.push((key.to_string(), value.to_string()));
    }
    let protected = match &config {
        Some(file) => Some(policy::protected_prefixes(&crate::load(file, true)?)),
        None => None,
    };
    let options = SuggestOptions {
        local_principal: local_principal.clone(),
        instance_prefix,
        threshold,
        protected,
    };
    let trail = answers::read(&inputs)?;
    let suggestion = policy::suggest(&trail, &options);
    if suggestion.evidence.count == 0 {
        eprintln!("meshaudit policy suggest: no allowed request with a caller principal to the workload in the trail");
        return Ok(ExitCode::FAILURE);
    }
    if !suggestion.incomplete.is_empty() && !allow_incomplete {
        eprintln!("meshaudit policy suggest: refused: the trail may not hold every request to the workload, so a policy from it could deny real traffic:");
        for reason in &suggestion.incomplete {
            eprintln!("  - {reason}");
        }
        eprintln!("Capture with the learning configuration (README, \"Policies from the trail\"), or pass --allow-incomplete to see a draft.");
        return Ok(ExitCode::FAILURE);
    }
    let from_principal = local_principal.as_deref().and_then(namespace_and_account);
    let namespace = namespace
        .or_else(|| from_principal.map(|(ns, _)| ns.to_string()))
        .ok_or("policy suggest: --namespace is required when --workload does not name it")?;
    let name = name.unwrap_or_else(|| {
        let base = from_principal.map_or("workload", |(_, sa)| sa);
        format!("{base}-observed")
    });
    print!(
        "{}",
        policy_yaml(
            &suggestion,
            &name,
            &namespace,
            &labels,
            threshold,
            config.is_some()
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn policy_yaml(
    s: &Suggestion,
    name: &str,
    namespace: &str,
    labels: &[(String, String)],
    threshold: usize,
    configured: bool,
) -> String {
    let mut out = String::new();
    let e = &s.evidence;
    let _ = writeln!(
        out,
        "# meshaudit policy suggest: {} allowed requests to the workload from {} to {}, seen by {}.",
        thousands(e.count),
        e.first,
        e.last,
        s.instances.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        out,
        "# It allows what was seen and nothing else. Review it, apply it with the annotation\n# istio.io/dry-run: \"true\" first, and read `meshaudit policy impact` before enforcing it.\n# Paths: {{*}} where {threshold} or more values were seen in a segment, or a privacy placeholder stood{}.",
        if configured {
            "; never within an audit rule's literal prefix"
        } else {
            "; sensitive paths as written (no --config)"
        }
    );
    for reason in &s.incomplete {
        let _ = writeln!(out, "# WARNING: INCOMPLETE TRAIL: {reason}");
    }
    if s.without_principal.count > 0 {
        let w = &s.without_principal;
        let _ = writeln!(
            out,
            "# NOT COVERED: {} allowed requests without a caller principal (plaintext), {} to {}: no rule can name their caller.",
            thousands(w.count),
            w.first,
            w.last
        );
    }
    for path in &s.unexpressible {
        let _ = writeln!(
            out,
            "# NOT COVERED: {} (Istio would read it as a wildcard or a template)",
            quoted(path)
        );
    }
    let _ = writeln!(out, "apiVersion: security.istio.io/v1");
    let _ = writeln!(out, "kind: AuthorizationPolicy");
    let _ = writeln!(out, "metadata:");
    let _ = writeln!(out, "  name: {}", quoted(name));
    let _ = writeln!(out, "  namespace: {}", quoted(namespace));
    let _ = writeln!(out, "spec:");
    let _ = writeln!(out, "  selector:");
    let _ = writeln!(out, "    matchLabels:");
    for (key, value) in labels {
        let _ = writeln!(out, "      {}: {}", quoted(key), quoted(value));
    }
    let _ = writeln!(out, "  action: ALLOW");
    let _ = writeln!(out, "  rules:");
    for rule in &s.rules {
        let e = &rule.evidence;
        let _ = writeln!(
            out,
            "  # {}: {}, first {}, last {}",
            rule.principal,
            counted(e.count, "request"),
            e.first,
            e.last
        );
        // Istio names principals without the scheme.
        let principal = rule
            .principal
            .strip_prefix("spiffe://")
            .unwrap_or(&rule.principal);
        let _ = writeln!(out, "  - from:");
        let _ = writeln!(out, "    - source:");
        let _ = writeln!(out, "        principals: [{}]", quoted(principal));
        let _ = writeln!(out, "    to:");
        for operation in &rule.operations {
            let methods: Vec<String> = operation.methods.iter().map(|m| quoted(m)).collect();
            let _ = writeln!(out, "    - operation:");
            let _ = writeln!(out, "        methods: [{}]", methods.join(", "));
            let _ = writeln!(out, "        paths:");
            for (path, e, distinct) in &operation.paths {
                let seen = if *distinct > 1 {
                    format!(" ({} distinct paths)", thousands(*distinct))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "        - {}  # {}{seen}, first {}, last {}",
                    quoted(path),
                    counted(e.count, "request"),
                    e.first,
                    e.last
                );
            }
        }
    }
    out
}

fn impact(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let json = answers::take_flag(&mut args, "--json");
    let inputs = answers::inputs(&mut args)?;
    answers::no_unknown_options(&args)?;
    let trail = answers::read(&inputs)?;
    let impacts = policy::impact(&trail);
    let suppressed: u64 = trail
        .records
        .iter()
        .filter_map(|r| r.suppressed.as_ref())
        .filter(|s| s.kind == "shadow_denied")
        .fold(0u64, |sum, s| sum.saturating_add(s.count));
    if json {
        println!("{}", impact_json(&impacts, suppressed));
    } else {
        print!("{}", impact_text(&impacts, suppressed));
    }
    Ok(ExitCode::SUCCESS)
}

fn impact_text(impacts: &[Impact], suppressed: u64) -> String {
    let mut out =
        String::from("meshaudit policy impact: what each dry-run policy would have denied\n");
    if impacts.is_empty() {
        out.push_str("  no dry-run result in the trail (the plugin records them with authorization.shadow_results: true)\n");
    }
    if suppressed > 0 {
        let _ = writeln!(
            out,
            "  WARNING: {} shadow_denied records were suppressed by a budget: the counts below are lower bounds",
            thousands(suppressed)
        );
    }
    for i in impacts {
        let e = &i.would_deny;
        let prefix = if i.prefix.is_empty() {
            String::new()
        } else {
            format!(" ({})", i.prefix)
        };
        if e.count == 0 {
            let _ = writeln!(
                out,
                "\n{}{prefix}: would deny nothing; matched and would allow {} requests",
                i.policy,
                thousands(i.would_allow)
            );
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}{prefix}: would deny {} from {}, {} to {}{}",
            i.policy,
            counted(e.count, "request"),
            counted(i.callers.len() as u64, "caller"),
            e.first,
            e.last,
            if i.would_allow > 0 {
                format!("; matched and would allow {}", thousands(i.would_allow))
            } else {
                String::new()
            }
        );
        let mut callers: Vec<(&String, &u64)> = i.callers.iter().collect();
        callers.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (caller, n) in callers.iter().take(10) {
            let _ = writeln!(out, "  caller    {:>8}  {caller}", thousands(**n));
        }
        let mut endpoints: Vec<(&String, &u64)> = i.endpoints.iter().collect();
        endpoints.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (endpoint, n) in endpoints.iter().take(10) {
            let _ = writeln!(out, "  endpoint  {:>8}  {endpoint}", thousands(**n));
        }
        for (ts, caller, endpoint, id) in &i.latest {
            let _ = writeln!(
                out,
                "  latest    {ts}  {caller}  {endpoint}  (request {id})"
            );
        }
    }
    out
}

fn impact_json(impacts: &[Impact], suppressed: u64) -> String {
    let policies: Vec<serde_json::Value> = impacts
        .iter()
        .map(|i| {
            serde_json::json!({
                "policy": i.policy,
                "prefix": i.prefix,
                "would_deny": i.would_deny.count,
                "first": i.would_deny.first,
                "last": i.would_deny.last,
                "would_allow": i.would_allow,
                "callers": i.callers,
                "endpoints": i.endpoints,
                "latest": i.latest.iter().map(|(ts, caller, endpoint, id)| serde_json::json!({
                    "ts": ts, "caller": caller, "endpoint": endpoint, "request_id": id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "policies": policies,
        "suppressed_shadow_denied": suppressed,
    }))
    .unwrap_or_default()
}
