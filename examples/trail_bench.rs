//! `meshaudit verify`'s throughput on one core: `cargo run --release --features cli --example trail_bench`.
//! Writes a sealed trail the way the plugin does (the core's request path and reports, one
//! record per request, an accounting record every 1,000 requests, in Envoy's log format),
//! then verifies it as the command does, line by line, and prints records per second and the
//! verifier's peak memory; then reads the same trail as `meshaudit summary` does and answers
//! it, side by side. RECORDS sets the trail's size (default 1,000,000).

use meshaudit::core::trail::event::{Trail, Window};
use meshaudit::core::trail::summary::summarize;
use meshaudit::core::trail::verify::{KeySet, Verifier};
use meshaudit::core::trail::TrailKey;
#[path = "common/mod.rs"]
mod common;

use meshaudit::core::{on_log, Seen, Settings, Worker};
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

const KEY: &str = "m-bench:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn peak_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let env = |name: &str| (name == "MESHAUDIT_TRAIL_KEY").then(|| KEY.to_string());
    let config = br#"{"budgets": {"security": {"records_per_second": 1000000}, "routine": {"records_per_second": 1000000}},
        "rules": [{"name": "all", "action": "audit"}]}"#;
    let settings = Settings::from_json_with_env(config, &env)?;
    let mut worker = Worker::new(
        &settings,
        "sidecar~10.1.2.3~api-7d9f.shop~shop.svc.cluster.local".into(),
        1,
        0,
    );
    let path = std::env::temp_dir().join("meshaudit-trail-bench.log");
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    let mut request = common::host("/products/42?page=2");
    let mut written = 0u64;
    let mut bytes = 0u64;
    while written < records {
        request.now += 1_000_000;
        if let Some(json) = on_log(&settings, &mut worker, Seen::Headers, &request) {
            let line = worker.seal("[info] wasm log meshaudit: meshaudit.record ", &json);
            bytes += line.len() as u64;
            writeln!(out, "{line}")?;
            written += 1;
        }
        if written % 1000 == 0 {
            for json in worker.report(&settings, request.now, false).lines {
                writeln!(out, "{}", worker.seal("meshaudit.record ", &json))?;
                written += 1;
            }
        }
    }
    for json in worker.report(&settings, request.now + 1, true).lines {
        writeln!(out, "{}", worker.seal("meshaudit.record ", &json))?;
        written += 1;
    }
    out.flush()?;
    drop(out);
    let memory_before = peak_memory_kib();

    let mut keys = KeySet::default();
    keys.add(TrailKey::parse(KEY)?);
    let mut verifier = Verifier::new(keys);
    let started = Instant::now();
    verifier.read(
        BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?),
        0,
    )?;
    let report = verifier.finish();
    let seconds = started.elapsed().as_secs_f64();
    let memory_verified = peak_memory_kib();

    let started = Instant::now();
    let mut trail = Trail::default();
    let window = Window::default();
    trail.read(
        BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?),
        &window,
    )?;
    trail.sort();
    let summary = summarize(&trail, &window, false);
    let summary_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let breaks = report.breaks();
    println!(
        "verified {written} records ({:.0} bytes each) in {seconds:.2} s: {:.0} records/s on one core; {breaks} breaks; peak memory {} KiB before verifying, {} KiB after",
        bytes as f64 / records as f64,
        written as f64 / seconds,
        memory_before,
        memory_verified
    );
    println!(
        "summarized {} records in {summary_seconds:.2} s: {:.0} records/s on one core ({:.2}x verify's time); peak memory {} KiB after",
        summary.records,
        summary.records as f64 / summary_seconds,
        summary_seconds / seconds,
        peak_memory_kib()
    );
    if summary.records != written {
        return Err("the summary did not read every record".into());
    }
    if breaks > 0 || report.streams.first().is_none_or(|s| !s.closed) {
        return Err("the benchmark's own trail did not verify".into());
    }
    Ok(())
}
