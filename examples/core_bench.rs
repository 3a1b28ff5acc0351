//! The core's own cost per request, natively, without Envoy: `cargo run --release --example core_bench`.
//! The benchmark (bench/run.py) reports it beside the in-Envoy numbers. ITERATIONS sets the
//! loop count; ONLY=<name prefix> runs one case (for a profiler).

#[path = "common/mod.rs"]
mod common;

use common::host;
use meshaudit::core::{on_log, Seen, Settings, Worker};
use std::hint::black_box;
use std::time::Instant;

/// Runs one case; an error says which case is broken.
fn measure(name: &str, config: &str, path: &str, expect_record: bool) -> Result<(), String> {
    measure_sealed(name, config, path, expect_record, false)
}

/// The trail key of the sealed case: every record gets its chain value, as the adapter writes it.
const TRAIL_KEY: &str = "m-bench:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn measure_sealed(
    name: &str,
    config: &str,
    path: &str,
    expect_record: bool,
    sealed: bool,
) -> Result<(), String> {
    // ONLY=<name prefix> runs one case, for profiling it alone.
    if std::env::var("ONLY").is_ok_and(|only| !name.starts_with(&only)) {
        return Ok(());
    }
    let settings = Settings::from_json_with_env(config.as_bytes(), &|variable| match variable {
        "MESHAUDIT_HMAC_KEY" => Some("bench-key-0123456789abcdef".into()),
        "MESHAUDIT_TRAIL_KEY" if sealed => Some(TRAIL_KEY.into()),
        _ => None,
    })
    .map_err(|e| format!("{name}: {e}"))?;
    let mut worker = Worker::new(&settings, "bench".into(), 1, 0);
    let host = host(path);
    let iterations: u32 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // The record as the adapter hands it to Envoy: after the log prefix, sealed when keyed.
    let run = |worker: &mut Worker| {
        on_log(&settings, worker, Seen::Headers, &host)
            .map(|json| worker.seal("meshaudit.record ", &json))
    };
    let first = run(&mut worker);
    if first.is_some() != expect_record {
        return Err(format!("{name}: expected a record: {expect_record}"));
    }
    if std::env::var("SHOW").is_ok() {
        println!("{}", first.unwrap_or_default());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(run(&mut worker));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{name:<44} {ns:>8.0} ns/request");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let unbounded = r#""budgets": {"security": {"records_per_second": 1000000}, "routine": {"records_per_second": 1000000}}"#;
    let cases = [
        measure(
            "routine, sampled out (rate 1%)",
            r#"{"default_sample_rate": 0.01}"#,
            "/products/42",
            false,
        ),
        measure(
            "routine, dropped by a rule",
            r#"{"rules": [{"name": "health", "match": {"paths": [{"prefix": "/products"}]}, "action": "drop"}]}"#,
            "/products/42",
            false,
        ),
        measure(
            "audit every request, level metadata",
            &format!(r#"{{{unbounded}, "rules": [{{"name": "all", "action": "audit"}}]}}"#),
            "/products/42?page=2",
            true,
        ),
        measure_sealed(
            "audit every request, level metadata, sealed",
            &format!(r#"{{{unbounded}, "rules": [{{"name": "all", "action": "audit"}}]}}"#),
            "/products/42?page=2",
            true,
            true,
        ),
        measure(
            "audit, level request, redaction and hashing",
            &format!(
                r#"{{{unbounded}, "redaction": {{"query_params": ["page", "token"]}},
                "rules": [{{"name": "all", "action": "audit", "level": "request",
                "request_headers": ["user-agent", {{"name": "authorization", "redact": "hash"}}]}}]}}"#
            ),
            "/users/jane@example.com/orders?page=2&token=abc",
            true,
        ),
    ];
    for case in cases {
        if let Err(e) = case {
            eprintln!("core_bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
