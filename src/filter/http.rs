//! An HTTP stream: nothing read while it passes, everything decided in `on_log`.

use super::active::Active;
use super::emit::emit_request_record;
use crate::core::request;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// One HTTP stream (a Proxy-Wasm HTTP context).
pub(super) struct RequestContext {
    pub(super) active: Option<Rc<Active>>,
    /// The request headers passed this filter; if not, a filter before it replied locally.
    pub(super) headers_seen: bool,
}

impl Context for RequestContext {}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // No host call here: everything is read once, in on_log.
        self.headers_seen = true;
        Action::Continue
    }

    fn on_log(&mut self) {
        Active::at_end(self.active.as_deref(), |settings, worker, host| {
            if let Some(json) = request::on_log(settings, worker, self.headers_seen, host) {
                emit_request_record(settings, &json, worker);
            }
        });
    }
}
