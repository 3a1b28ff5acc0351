//! The Proxy-Wasm adapter: as thin as it can be. `root` (configure, the config
//! trail, the periodic report), `http` (an HTTP stream: decide in `on_log`, emit),
//! `network` (a downstream connection in network mode: handshake failures),
//! `emit` (where records go), `host` (`core::Host` over `abi`, the non-panicking
//! host calls), `dispatch` (the ABI's exports, the contexts they are for).

mod abi;
mod active;
mod dispatch;
mod emit;
mod host;
mod http;
mod network;
mod root;
