//! One configuration in force, shared by the root and the contexts created under it.

use super::host::{BatchTokens, EnvoyHost};
use crate::core::config::Settings;
use crate::core::worker::Worker;
use std::cell::RefCell;

/// One configuration in force, shared by the streams created under it.
pub(super) struct Active {
    pub(super) settings: Settings,
    pub(super) worker: RefCell<Worker>,
    /// Envoy counter ids, in the order of `metrics::counter_names`.
    pub(super) counters: Vec<Option<u32>>,
    pub(super) batches: BatchTokens,
}

impl Active {
    pub(super) fn host(&self) -> EnvoyHost {
        EnvoyHost {
            batches: self.batches,
        }
    }

    /// Runs a stream's callback under the configuration it was created with. A stream
    /// outliving a configuration change keeps the old one, whose worker state it then ends in.
    pub(super) fn run(
        active: Option<&Self>,
        callback: impl FnOnce(&Settings, &mut Worker, &EnvoyHost),
    ) {
        let Some(active) = active else { return };
        let Ok(mut worker) = active.worker.try_borrow_mut() else {
            return;
        };
        callback(&active.settings, &mut worker, &active.host());
    }
}
