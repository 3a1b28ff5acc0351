//! The pure core: everything the plugin decides and writes. Nothing here touches
//! the Proxy-Wasm ABI; `cargo test --no-default-features` builds it without the
//! adapter to keep it that way.
//!
//! By stage, in the order a request meets them (docs/ARCHITECTURE.md walks
//! through them): `config` (the operator's JSON to immutable settings), `envoy`
//! (the host and every fact read from it), `request` (one HTTP stream, decided)
//! and `network` (one connection), `record` (every record kind and its
//! encoding), `worker` (per-VM state: budgets, counters, the stream), `trail` (each
//! record's seal, and the verifier of a captured trail). `path`, `redact` and `sample`
//! serve several stages.
#![forbid(unsafe_code)]
// Without the adapter, what only it uses (the network mode's entry, the attribute
// names it reads itself, the batch expressions it compiles) has no user.
#![cfg_attr(
    not(feature = "filter"),
    allow(dead_code, unused_imports, reason = "used by the adapter only")
)]

pub(crate) mod bytes;
pub(crate) mod config;
pub(crate) mod envoy;
pub(crate) mod network;
pub(crate) mod path;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests;
pub(crate) mod record;
pub(crate) mod redact;
pub(crate) mod request;
pub(crate) mod sample;
pub mod trail;
pub(crate) mod worker;

// What the native commands and examples use; the rest stays inside the crate.
#[cfg(not(target_arch = "wasm32"))]
pub use config::config_errors;
pub use config::raw::RawConfig;
pub use config::{Action, ConfigError, Settings};
pub use envoy::attributes::{Answer, Batch};
pub use envoy::headers::serialize as serialize_header_map;
pub use envoy::host::Host;
pub use network::on_connection_close;
pub use redact::HashKey;
#[cfg(not(target_arch = "wasm32"))]
pub use request::analysis::{warnings as rule_warnings, Warning};
#[cfg(not(target_arch = "wasm32"))]
pub use request::explain::{explain, Explanation, Probe, RuleTrace};
pub use request::{on_log, on_request_start, Seen};
pub use worker::Worker;
