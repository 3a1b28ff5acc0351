//! An HTTP stream: decided in `on_log`; read while it passes only where a rule records
//! requests' starts.

use super::active::Active;
use super::emit::{emit, emit_request_record};
use crate::core::request::{self, Seen};
use std::rc::Rc;

/// One HTTP stream (a Proxy-Wasm HTTP context).
pub(super) struct RequestContext {
    active: Option<Rc<Active>>,
    /// What passed this filter; `LocalReply` until the request headers do (if they never
    /// do, a filter before it replied locally).
    seen: Seen,
}

impl RequestContext {
    /// A stream under the configuration in force when it began (`None`: records nothing).
    pub(super) fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            seen: Seen::LocalReply,
        }
    }

    pub(super) fn on_request_headers(&mut self) {
        self.seen = Seen::Headers;
        // No host call unless a rule records starts: everything else is read once, in on_log.
        if !self
            .active
            .as_deref()
            .is_some_and(|active| active.settings.reads.start)
        {
            return;
        }
        Active::run(self.active.as_deref(), |settings, worker, host| {
            if let Some(json) = request::on_request_start(settings, worker, host) {
                // To Envoy's log alone: Envoy's access loggers run when the stream ends.
                emit(settings.log_level, &json, worker);
                self.seen = Seen::Started;
            }
        });
    }

    pub(super) fn on_log(&mut self) {
        Active::run(self.active.as_deref(), |settings, worker, host| {
            if let Some(json) = request::on_log(settings, worker, self.seen, host) {
                emit_request_record(settings, &json, worker);
            }
        });
    }
}
