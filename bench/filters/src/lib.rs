//! Two reference filters for the benchmark, selected by root id.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root { reference: false }));
}}

struct Root {
    reference: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.reference = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .is_some_and(|id| id == b"reference");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { reference: self.reference, path_len: 0 }))
    }
}

struct Stream {
    reference: bool,
    path_len: usize,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.reference {
            self.path_len = proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path")
                .ok()
                .flatten()
                .map_or(0, |p| p.len());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.reference {
            let status = proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten();
            // Keep the reads from being optimised away.
            if status.is_some_and(|s| s.len() + self.path_len == usize::MAX) {
                let _ = proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Trace, "unreachable");
            }
        }
    }
}
