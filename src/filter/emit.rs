//! Where records go: Envoy's log, and the stream's filter state for Envoy's
//! access loggers. A refusal is counted, so its sequence gap is explained.

use super::abi;
use crate::core::config::{LogLevel, Settings};
use crate::core::record::RECORD_PREFIX;
use crate::core::worker::Worker;

/// Writes one record of the worker's stream to Envoy's log, sealed; a refusal is counted, so
/// its sequence gap is explained.
pub(super) fn emit(level: LogLevel, json: &str, worker: &mut Worker) {
    let line = worker.seal(RECORD_PREFIX, json);
    if !abi::log(level, &line) {
        worker.note_sink_error();
    }
}

/// The filter state name (`wasm.` + this) Envoy's access loggers read a request record from.
const FILTER_STATE_RECORD: &str = "meshaudit_record";

/// A request record: to Envoy's log and/or, for Envoy's access loggers, to the
/// stream's filter state (set in on_log, it is still there when they run).
/// Sealed once: both outputs carry the same bytes.
pub(super) fn emit_request_record(settings: &Settings, json: &str, worker: &mut Worker) {
    let line = worker.seal(RECORD_PREFIX, json);
    let record = line.get(RECORD_PREFIX.len()..).unwrap_or_default();
    if settings.output.log && !abi::log(settings.log_level, &line) {
        worker.note_sink_error();
    }
    if settings.output.filter_state
        && !abi::set_filter_state(FILTER_STATE_RECORD, record.as_bytes())
    {
        worker.note_sink_error();
    }
}
