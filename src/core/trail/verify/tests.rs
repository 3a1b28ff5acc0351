//! Trails written by the real worker and request path, sealed as the adapter seals them, then
//! verified untouched, shuffled, and after every kind of tampering.

use super::*;
use crate::core::config::{LogLevel, LogThreshold, Settings};
use crate::core::envoy::host::FakeHost;
use crate::core::record::config::ConfigRecord;
use crate::core::request::{on_log, Seen};
use crate::core::worker::Worker;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

pub(crate) const MASTER: &str =
    "m-test:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

const CONFIG: &str = r#"{
    "budgets": {"security": {"records_per_second": 1, "burst": 2}},
    "rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"},
        {"name": "orders", "match": {"paths": [{"prefix": "/orders"}]}, "action": "sample", "sample_rate": 0.5}
    ]
}"#;

/// One line of a captured trail: the output it went to and the line as written.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub log: bool,
    pub text: String,
}

/// A trail of one stream: its configuration record, then `intervals` intervals of requests
/// (`steps` picks each request's shape), the last one closing the stream. Request records go
/// to both outputs when `both` is set.
pub(crate) fn trail(key: &str, steps: &[u8], intervals: usize, both: bool) -> Vec<Line> {
    trail_from(0, key, steps, intervals, both)
}

/// The same, for a stream started `start` seconds after the first.
pub(crate) fn trail_from(
    start: u64,
    key: &str,
    steps: &[u8],
    intervals: usize,
    both: bool,
) -> Vec<Line> {
    let env = |name: &str| (name == "MESHAUDIT_TRAIL_KEY").then(|| key.to_string());
    let config = if both {
        CONFIG.replacen('{', r#"{"output": {"filter_state": true},"#, 1)
    } else {
        CONFIG.to_string()
    };
    let settings = Settings::from_json_with_env(config.as_bytes(), &env).unwrap();
    let instance = "sidecar~10.0.0.1~cart-7d9f.shop~shop.svc.cluster.local".to_string();
    let mut worker = Worker::new(&settings, instance, 7 + start, 0);
    let mut lines = Vec::new();
    let mut write = |worker: &mut Worker, json: &str, request: bool| {
        let text = worker.seal(RECORD_PREFIX, json);
        if request && both {
            lines.push(Line {
                log: false,
                text: text.get(RECORD_PREFIX.len()..).unwrap().to_string(),
            });
        }
        lines.push(Line { log: true, text });
    };
    let seq = worker.next_seq();
    let applied = ConfigRecord {
        ts_unix_nanos: start * 1_000_000_000,
        instance: &worker.instance.clone(),
        stream: Some((&worker.stream.clone(), seq)),
        digest: &settings.digest,
        previous_digest: None,
        first_in_vm: true,
        config_version: 1,
        rules: Vec::new(),
        error: None,
        integrity_key: worker.trail_key_id(),
        coverage: None,
    }
    .encode();
    write(&mut worker, &applied, false);
    let mut now = (1 + start) * 1_000_000_000;
    let per_interval = steps.len().div_ceil(intervals.max(1)).max(1);
    for (i, chunk) in steps.chunks(per_interval).enumerate() {
        for &step in chunk {
            now += 10_000_000;
            let (path, status) = match step % 5 {
                0 => ("/admin/users", 200),
                1 => ("/orders/1", 200),
                2 => ("/healthz", 200),
                3 => ("/admin/keys", 403),
                _ => ("/products", 401),
            };
            let host = FakeHost::request("GET", path, status)
                .with_property("source.address", format!("10.1.0.{}:4000", step % 3));
            let host = FakeHost { now, ..host };
            if let Some(json) = on_log(&settings, &mut worker, Seen::Headers, &host) {
                write(&mut worker, &json, true);
            }
        }
        let last = i + 1 == steps.len().div_ceil(per_interval);
        for line in worker.report(&settings, now + 1, last).lines {
            write(&mut worker, &line, false);
        }
    }
    lines
}

fn verify(lines: &[Line], keys: &[&str]) -> Report {
    let mut set = KeySet::default();
    for key in keys {
        set.add(TrailKey::parse(key).unwrap());
    }
    let mut verifier = Verifier::new(set);
    for (i, line) in lines.iter().enumerate() {
        let input = usize::from(!line.log);
        verifier.line(
            &line.text,
            Place {
                input,
                line: i as u64 + 1,
            },
        );
    }
    verifier.finish()
}

fn seq_of(line: &Line) -> u64 {
    let record = extract(&line.text).unwrap().0;
    read_envelope(&record).unwrap().seq.unwrap()
}

fn all_breaks(report: &Report) -> Vec<&Break> {
    report.streams.iter().flat_map(|s| &s.breaks).collect()
}

/// Whether some break names this sequence number.
fn located(report: &Report, seq: u64) -> bool {
    all_breaks(report)
        .iter()
        .any(|b| b.seq.is_some_and(|(a, z)| a <= seq && seq <= z))
}

const STEPS: [u8; 24] = [
    0, 1, 2, 3, 4, 0, 0, 3, 3, 3, 1, 1, 2, 0, 4, 4, 4, 3, 0, 1, 2, 3, 0, 0,
];

#[test]
fn an_untouched_trail_is_intact_and_settled_interval_by_interval() {
    let lines = trail(MASTER, &STEPS, 3, false);
    let report = verify(&lines, &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    let [stream] = report.streams.as_slice() else {
        panic!("one stream: {report:?}")
    };
    assert_eq!(stream.records, lines.len() as u64);
    assert_eq!(stream.intervals, 3);
    assert!(stream.closed);
    assert_eq!(stream.open_tail, 0);
    assert_eq!(stream.unchecked, 0);
    assert_eq!(stream.key_id.as_deref(), Some("m-test"));
    assert_eq!(stream.configs.len(), 1);
    // The budget refused records, so the trail holds suppressed records to add up.
    assert!(lines
        .iter()
        .any(|l| l.text.contains(r#""kind":"suppressed""#)));
}

#[test]
fn every_deleted_record_is_named_by_its_sequence_number() {
    let lines = trail(MASTER, &STEPS, 3, false);
    // The last record of the last stream has nothing after it: see the next test.
    for i in 0..lines.len() - 1 {
        let mut cut = lines.clone();
        let gone = cut.remove(i);
        let report = verify(&cut, &[MASTER]);
        let seq = seq_of(&gone);
        assert!(located(&report, seq), "deleting seq {seq}: {report:#?}");
    }
}

#[test]
fn a_stream_that_ends_unclosed_before_its_proxys_next_one_is_a_break() {
    let first = trail(MASTER, &STEPS, 2, false);
    // The proxy restarted: a new stream, written later.
    let second = trail_from(3600, MASTER, &STEPS[..4], 1, false);
    let mut both = first.clone();
    both.extend(second.iter().cloned());
    let report = verify(&both, &[MASTER]);
    assert_eq!(report.streams.len(), 2);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    let mut cut = first[..first.len() - 1].to_vec();
    cut.extend(second.iter().cloned());
    let report = verify(&cut, &[MASTER]);
    let last = seq_of(&first[first.len() - 1]);
    assert!(located(&report, last), "{report:#?}");
}

#[test]
fn an_edited_record_fails_its_chain_value_where_it_is() {
    let lines = trail(MASTER, &STEPS, 3, false);
    for (i, line) in lines.iter().enumerate() {
        let mut edited = lines.clone();
        // The budget's kind becomes another: a plausible, still valid JSON edit.
        let text = line.text.replacen("\"ts\":\"", "\"ts\":\"1", 1);
        edited[i].text = text;
        let report = verify(&edited, &[MASTER]);
        let seq = seq_of(line);
        let b = all_breaks(&report);
        assert!(
            b.iter().any(|b| b.seq == Some((seq, seq))
                && b.place
                    == Some(Place {
                        input: 0,
                        line: i as u64 + 1
                    })
                && b.what.contains("edited, or forged")),
            "{b:#?}"
        );
    }
}

#[test]
fn a_duplicated_record_is_named_and_a_record_in_both_outputs_is_not() {
    let lines = trail(MASTER, &STEPS, 3, true);
    let report = verify(&lines, &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    let requests = lines.iter().filter(|l| !l.log).count() as u64;
    assert!(requests > 0);
    assert_eq!(report.streams[0].in_both_outputs, requests);
    for i in [0, 5, lines.len() - 1] {
        let mut doubled = lines.clone();
        doubled.push(lines[i].clone());
        let report = verify(&doubled, &[MASTER]);
        let seq = seq_of(&lines[i]);
        assert!(
            all_breaks(&report)
                .iter()
                .any(|b| b.seq == Some((seq, seq)) && b.what.contains("twice")),
            "{report:#?}"
        );
    }
}

#[test]
fn a_forged_record_or_one_sealed_with_another_key_is_refused() {
    let lines = trail(MASTER, &STEPS, 3, false);
    let other = "m-test:ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let forged = trail(other, &STEPS, 3, false);
    let mut mixed = lines.clone();
    mixed[4] = forged[4].clone();
    let report = verify(&mixed, &[MASTER]);
    let seq = seq_of(&lines[4]);
    assert!(located(&report, seq), "{report:#?}");
    // A record with its seal cut off.
    let mut unsealed = lines.clone();
    let at = unsealed[6].text.rfind(",\"chain\":").unwrap();
    unsealed[6].text = format!("{}}}", &unsealed[6].text[..at]);
    let report = verify(&unsealed, &[MASTER]);
    assert!(all_breaks(&report)
        .iter()
        .any(|b| b.what.contains("no chain value")));
    // A key the verifier does not hold.
    let report = verify(&lines, &[other.replacen("m-test", "m-other", 1).as_str()]);
    assert!(all_breaks(&report)
        .iter()
        .any(|b| b.what.contains("not in the key set")));
}

#[test]
fn a_tail_cut_before_the_next_accounting_record_is_found_there() {
    let lines = trail(MASTER, &STEPS, 3, false);
    let accounting: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].text.contains(r#""kind":"accounting""#))
        .collect();
    let (second, last) = (accounting[1], accounting[2]);
    let mut cut: Vec<Line> = lines[..=second].to_vec();
    cut.push(lines[last].clone());
    let report = verify(&cut, &[MASTER]);
    let first_cut = seq_of(&lines[second + 1]);
    assert!(located(&report, first_cut), "{report:#?}");
    // Cut after the last accounting record of an open stream: not confirmed yet, and said so.
    let open = trail(MASTER, &STEPS, 3, false);
    let mut open: Vec<Line> = open[..accounting[1] + 3].to_vec();
    open.truncate(accounting[1] + 3);
    let report = verify(&open, &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    assert_eq!(report.streams[0].open_tail, 2);
    assert!(!report.streams[0].closed);
}

#[test]
fn records_the_log_level_hid_are_declared_losses_not_breaks() {
    let env = |name: &str| (name == "MESHAUDIT_TRAIL_KEY").then(|| MASTER.to_string());
    let config = r#"{"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]}"#;
    let settings = Settings::from_json_with_env(config.as_bytes(), &env).unwrap();
    let mut worker = Worker::new(&settings, "p".into(), 7, 0);
    let mut lines = Vec::new();
    for (i, status) in [200, 200, 200].into_iter().enumerate() {
        if i == 1 {
            worker.set_log_threshold(LogThreshold::From(LogLevel::Error));
        } else {
            worker.set_log_threshold(LogThreshold::From(LogLevel::Trace));
        }
        let host = FakeHost::request("GET", "/admin/x", status);
        let json = on_log(&settings, &mut worker, Seen::Headers, &host).unwrap();
        let text = worker.seal(RECORD_PREFIX, &json);
        // Envoy's log drops the hidden one.
        if i != 1 {
            lines.push(Line { log: true, text });
        }
    }
    for line in worker.report(&settings, 5, true).lines {
        let text = worker.seal(RECORD_PREFIX, &line);
        lines.push(Line { log: true, text });
    }
    let report = verify(&lines, &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    assert_eq!(report.streams[0].declared_losses, 1);
}

#[test]
fn a_workloads_derived_key_verifies_under_its_master_and_only_in_its_namespace() {
    let master = TrailKey::parse(MASTER).unwrap();
    let shop = master.derive("shop/cart").unwrap().token();
    let report = verify(&trail(&shop, &STEPS, 2, false), &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    assert_eq!(
        report.streams[0].key_id.as_deref(),
        Some("shop/cart@m-test")
    );
    // A key for another namespace cannot speak for this proxy.
    let other = master.derive("billing/api").unwrap().token();
    let report = verify(&trail(&other, &STEPS, 2, false), &[MASTER]);
    assert!(all_breaks(&report)
        .iter()
        .any(|b| b.what.contains("is for namespace \"billing\"")));
}

#[test]
fn without_a_key_the_structure_is_still_checked() {
    let lines = trail(MASTER, &STEPS, 3, false);
    let report = verify(&lines, &[]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    assert_eq!(report.streams[0].unchecked, lines.len() as u64);
    let mut cut = lines.clone();
    let gone = cut.remove(3);
    assert!(located(&verify(&cut, &[]), seq_of(&gone)));
}

#[test]
fn lines_wrapped_by_a_log_shipper_are_read() {
    let lines = trail(MASTER, &STEPS, 1, false);
    let wrapped: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            log: true,
            text: serde_json::json!({"log": format!("[info] wasm log: {}\n", l.text), "stream": "stderr"})
                .to_string(),
        })
        .collect();
    let report = verify(&wrapped, &[MASTER]);
    assert_eq!(all_breaks(&report), Vec::<&Break>::new());
    assert_eq!(report.streams[0].records, lines.len() as u64);
}

#[test]
fn hostile_sequence_numbers_and_intervals_are_reported_not_a_panic() {
    let mut verifier = Verifier::new(KeySet::default());
    let record = |kind: &str, seq: u64, rest: &str| {
        format!(
            r#"{{"v":1,"ts":"2026-12-02T00:00:00.000Z","kind":"{kind}","instance":"p","stream":"s","seq":{seq}{rest},"chain":{{"key":"k","prev":"{z}","mac":"{z}"}}}}"#,
            z = "0".repeat(32)
        )
    };
    let accounting = r#","interval":{"start":"x","end":"y","first_seq":0,"config":"c"},"totals":{"requests":1},"records_by_kind":{},"by_rule":{}"#;
    for (i, line) in [
        record("access", u64::MAX, ""),
        record("accounting", u64::MAX - 1, accounting),
        record(
            "accounting",
            3,
            &accounting.replace("\"first_seq\":0", "\"first_seq\":9"),
        ),
        record("access", 0, ""),
    ]
    .iter()
    .enumerate()
    {
        verifier.line(
            line,
            Place {
                input: 0,
                line: i as u64 + 1,
            },
        );
    }
    let report = verifier.finish();
    assert!(report.breaks() > 0);
    assert!(all_breaks(&report)
        .iter()
        .any(|b| b.what.contains("after its own record")));
}

#[test]
fn ranges_count_and_find_what_is_missing() {
    let mut r = Ranges::default();
    for seq in [5, 1, 2, 3, 9, 4] {
        assert!(r.insert(seq, ()));
    }
    assert!(!r.insert(3, ()));
    assert_eq!(r.0.len(), 2);
    assert_eq!(r.count_within(0, 10), 6);
    assert_eq!(r.count_within(2, 5), 3);
    assert_eq!(r.missing_within(0, 12), vec![(0, 0), (6, 8), (10, 11)]);
    r.insert_range(6, 8);
    assert_eq!(r.missing_within(0, 10), vec![(0, 0)]);
    assert_eq!(r.0.len(), 1);
}

#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_shuffle_of_an_untouched_trail_verifies(
            steps in proptest::collection::vec(0u8..5, 1..40),
            intervals in 1usize..5,
            both in any::<bool>(),
            order in proptest::collection::vec(any::<u32>(), 200),
        ) {
            let mut lines = trail(MASTER, &steps, intervals, both);
            let mut keyed: Vec<(u32, Line)> = lines.drain(..).zip(order.iter().cycle()).map(|(l, k)| (*k, l)).collect();
            keyed.sort_by_key(|(k, _)| *k);
            let shuffled: Vec<Line> = keyed.into_iter().map(|(_, l)| l).collect();
            let report = verify(&shuffled, &[MASTER]);
            prop_assert_eq!(all_breaks(&report), Vec::<&Break>::new());
            prop_assert!(report.streams[0].closed);
        }

        #[test]
        fn any_single_tampering_is_found_and_located(
            steps in proptest::collection::vec(0u8..5, 1..40),
            intervals in 1usize..5,
            kind in 0u8..4,
            at in any::<prop::sample::Index>(),
            other in any::<prop::sample::Index>(),
            shuffle in any::<bool>(),
        ) {
            let lines = trail(MASTER, &steps, intervals, false);
            let i = at.index(lines.len());
            // Deleting the last record of the trail's last stream leaves nothing to tell:
            // the stream looks open (`a_stream_that_ends_unclosed…` covers the rest).
            prop_assume!(!(kind == 0 && i + 1 == lines.len()));
            let seq = seq_of(&lines[i]);
            let mut tampered = lines.clone();
            match kind {
                // Deletion.
                0 => { tampered.remove(i); }
                // Duplication, anywhere.
                1 => { let j = other.index(lines.len() + 1); tampered.insert(j, lines[i].clone()); }
                // An edit inside the record.
                2 => {
                    let text = &lines[i].text;
                    let at = text.find("\"kind\":\"").unwrap();
                    tampered[i].text = format!("{}\"kind\":\"X{}", &text[..at], &text[at + 8..]);
                }
                // A record inserted with a forged seal, in the place of another.
                _ => {
                    let forged = trail(&MASTER.replacen("00", "ff", 1), &steps, intervals, false);
                    tampered[i] = forged[i].clone();
                }
            }
            if shuffle {
                tampered.reverse();
            }
            let report = verify(&tampered, &[MASTER]);
            prop_assert!(located(&report, seq), "kind {} at seq {}: {:#?}", kind, seq, report);
        }

        #[test]
        fn any_tail_cut_is_found_at_the_next_accounting_record(
            steps in proptest::collection::vec(0u8..5, 4..40),
            cut in any::<prop::sample::Index>(),
            length in 1usize..6,
        ) {
            let lines = trail(MASTER, &steps, 2, false);
            let accounting: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].text.contains(r#""kind":"accounting""#))
                .collect();
            // Cut records from somewhere before the final accounting record, up to it.
            let last = accounting[accounting.len() - 1];
            let from = cut.index(last);
            let to = (from + length).min(last);
            prop_assume!(to > from);
            let mut tampered = lines[..from].to_vec();
            tampered.extend_from_slice(&lines[to..]);
            let report = verify(&tampered, &[MASTER]);
            prop_assert!(located(&report, seq_of(&lines[from])), "{:#?}", report);
        }
    }
}
