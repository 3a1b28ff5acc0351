//! Any bytes as Envoy's serialised request header map (the one host call every request
//! makes): decoded without a panic, and the request recorded as one valid line.
#![no_main]

mod common;

use common::{check_record, FuzzHost};
use libfuzzer_sys::fuzz_target;
use meshaudit::core::{on_log, Seen, Settings, Worker};
use std::sync::OnceLock;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        Settings::from_json(
            br#"{"rules": [{"name": "all", "action": "audit", "level": "request",
                 "request_headers": ["user-agent", "authorization", "x-a"]}]}"#,
        )
        .expect("a fixed configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let settings = settings();
    let host = FuzzHost {
        request_map: data.to_vec(),
        ..FuzzHost::default()
    };
    let mut worker = Worker::new(settings, "fuzz".into(), 7, 0);
    let line = on_log(settings, &mut worker, Seen::Headers, &host)
        .expect("an audit rule records every request");
    check_record(settings, &line);
});
