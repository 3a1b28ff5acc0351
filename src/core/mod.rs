//! The pure core: configuration, rules, sampling, redaction and the record.
//! Nothing here imports the Proxy-Wasm SDK; `cargo test --no-default-features`
//! builds it without the SDK to keep it that way.

pub mod audit;
pub mod batch;
pub mod config;
pub mod connection;
pub mod decide;
pub mod flags;
pub mod headers;
pub mod host;
pub mod identity;
pub mod json;
pub mod jsonpath;
pub mod metrics;
pub mod network;
pub mod path;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests;
pub mod record;
pub mod redact;
pub mod sample;
pub mod settings;
pub mod time;
pub mod volume;
pub mod worker;
