//! An HTTP stream: nothing read while it passes, everything decided in `on_log`.

use super::active::Active;
use super::emit::emit_request_record;
use crate::core::request;
use std::rc::Rc;

/// One HTTP stream (a Proxy-Wasm HTTP context).
pub(super) struct RequestContext {
    active: Option<Rc<Active>>,
    /// The request headers passed this filter; if not, a filter before it replied locally.
    headers_seen: bool,
}

impl RequestContext {
    /// A stream under the configuration in force when it began (`None`: records nothing).
    pub(super) fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            headers_seen: false,
        }
    }

    pub(super) fn on_request_headers(&mut self) {
        // No host call here: everything is read once, in on_log.
        self.headers_seen = true;
    }

    pub(super) fn on_log(&mut self) {
        Active::at_end(self.active.as_deref(), |settings, worker, host| {
            if let Some(json) = request::on_log(settings, worker, self.headers_seen, host) {
                emit_request_record(settings, &json, worker);
            }
        });
    }
}
