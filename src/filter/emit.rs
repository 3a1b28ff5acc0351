//! Where records go: Envoy's log, and the stream's filter state for Envoy's
//! access loggers. A refusal is counted, so its sequence gap is explained.

use super::abi;
use crate::core::config::{LogLevel, Settings};
use crate::core::record::RECORD_PREFIX;
use crate::core::worker::Worker;

/// Writes one record to Envoy's log; a refusal is counted, so its sequence gap is explained.
pub(super) fn emit(level: LogLevel, json: &str, worker: &mut Worker) {
    // Not format!: its machinery is slow in Wasm, and this runs for every record.
    let mut line = String::with_capacity(RECORD_PREFIX.len() + json.len());
    line.push_str(RECORD_PREFIX);
    line.push_str(json);
    if !abi::log(level, &line) {
        worker.note_sink_error();
    }
}

/// The filter state name (`wasm.` + this) Envoy's access loggers read a request record from.
const FILTER_STATE_RECORD: &str = "meshaudit_record";

/// A request record: to Envoy's log and/or, for Envoy's access loggers, to the
/// stream's filter state (set in on_log, it is still there when they run).
pub(super) fn emit_request_record(settings: &Settings, json: &str, worker: &mut Worker) {
    if settings.output.log {
        emit(settings.log_level, json, worker);
    }
    if settings.output.filter_state && !abi::set_filter_state(FILTER_STATE_RECORD, json.as_bytes())
    {
        worker.note_sink_error();
    }
}
