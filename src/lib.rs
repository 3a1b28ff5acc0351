//! meshaudit: a Proxy-Wasm filter that turns every Envoy sidecar into an audit point.
//!
//! `core` holds all the logic and never touches the host ABI; `filter` is the thin
//! adapter Envoy loads (the ABI's exports, root and HTTP contexts, host calls).

// The lints (no panics, no indexing, no unsafe code outside the ABI layer) are in
// Cargo.toml's [lints] table, which also covers the commands and the examples.

pub mod core;

#[cfg(feature = "filter")]
mod filter;
