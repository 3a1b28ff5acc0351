//! The network mode's facts at connection close, as Envoy's answer to the attribute batch
//! (the serialised list the plugin decodes) and as single reads: at most one connection
//! record, one valid JSON line within its cap.
#![no_main]

mod common;

use common::{check_record, fields, FuzzHost};
use libfuzzer_sys::fuzz_target;
use meshaudit::core::{on_connection_close, Settings, Worker};
use std::sync::OnceLock;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        Settings::from_json(br#"{"network": {"record_connections": true}}"#)
            .expect("a fixed configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, batch, failure, details, address, principal] = fields(data, 6)[..] else {
        return;
    };
    let mut host = FuzzHost {
        batch: (flags.first().is_some_and(|b| b & 1 == 1)).then(|| batch.to_vec()),
        ..FuzzHost::default()
    };
    host.properties.insert(
        "connection.transport_failure_reason".into(),
        failure.to_vec(),
    );
    host.properties
        .insert("connection.termination_details".into(), details.to_vec());
    host.properties
        .insert("source.address".into(), address.to_vec());
    host.properties
        .insert("destination.address".into(), address.to_vec());
    host.properties
        .insert("connection.mtls".into(), flags.to_vec());
    host.properties.insert(
        "connection.uri_san_peer_certificate".into(),
        principal.to_vec(),
    );
    host.properties.insert(
        "metadata.filter_metadata.envoy.common.access_log_hint".into(),
        flags.to_vec(),
    );
    let settings = settings();
    let mut worker = Worker::new(settings, "fuzz".into(), 7, 0);
    let data_seen = flags.first().is_some_and(|b| b & 2 == 2);
    if let Some(line) = on_connection_close(settings, &mut worker, &host, data_seen) {
        check_record(settings, &line);
    }
});
