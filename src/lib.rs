//! meshaudit: a Proxy-Wasm filter that turns every Envoy sidecar into an audit point.
//!
//! `core` holds all the logic and never touches the SDK; `filter` is the thin
//! adapter Envoy loads (`main!`, root and HTTP contexts, host calls).

// A panic kills the worker's VM (traffic then fails open or closed) and its
// message may carry request bytes into Envoy's log: the filter never panics.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod core;

#[cfg(feature = "filter")]
mod filter;
