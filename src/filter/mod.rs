//! The Proxy-Wasm adapter: as thin as it can be. `root` (configure, the config
//! trail, the periodic report), `http` (an HTTP stream: decide in `on_log`, emit),
//! `network` (a downstream connection in network mode: handshake failures),
//! `emit` (where records go), `host` (`core::Host` over `abi`, the non-panicking
//! host calls).

mod abi;
mod active;
mod emit;
mod host;
mod http;
mod network;
mod root;

use crate::core::config::LogLevel;

proxy_wasm::main! {{
    // The SDK's own hook unwraps its log call and prints the panic message,
    // which may hold request bytes. This one says only that audit stopped.
    std::panic::set_hook(Box::new(|_| {
        let _ = abi::log(LogLevel::Critical, "meshaudit: internal error; audit on this worker has stopped");
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}
