//! The root context: one configuration in force (validated at `on_configure`,
//! the previous one kept when a new one is refused), the `config_applied` trail,
//! and the periodic report.

use super::abi::{self, BufferType, MetricType};
use super::active::Active;
use super::emit::emit;
use super::host::BatchTokens;
use crate::core::config::defaults::VERSION as CONFIG_VERSION;
use crate::core::config::{sha256_hex, LogLevel, Settings};
use crate::core::envoy::attributes::{NODE_ID, PLUGIN_NAME, PLUGIN_ROOT_ID};
use crate::core::record::config::{config_history, ConfigRecord, Coverage};
use crate::core::record::RECORD_PREFIX;
use crate::core::worker::{metrics, worker_seed, Worker};
use std::cell::RefCell;
use std::rc::Rc;

/// The root id that selects the network-filter mode (Istio `WasmPlugin` `type: NETWORK`).
const NETWORK_ROOT_ID: &[u8] = b"network";

/// Larger plugin configurations are refused rather than read into the VM.
const MAX_CONFIG_BYTES: usize = 1 << 20;

pub(super) struct Root {
    context_id: u32,
    active: Option<Rc<Active>>,
    /// Root id `network`: a network filter recording TLS handshake failures.
    network: bool,
    memory_gauge: Option<u32>,
    log_hidden_gauge: Option<u32>,
    config_errors: Option<u32>,
    /// Compiled at the first configuration, kept across later ones.
    batches: Option<BatchTokens>,
}

impl Root {
    /// A worker's report: `suppressed` and `accounting` records, the interval's counts
    /// pushed to Envoy's stats, and the VM's memory. Every tick, and once more at the end
    /// (`last`: the stream's final interval).
    fn report(&self, active: &Active, last: bool) {
        let Ok(mut worker) = active.worker.try_borrow_mut() else {
            return;
        };
        // The main thread's VM never serves traffic: it would overwrite the gauge with its own.
        // Its stream is closed all the same, when it wrote a configuration record.
        if worker.requests_seen == 0 && !last {
            return;
        }
        if let Some(threshold) = abi::log_threshold() {
            worker.set_log_threshold(threshold);
        }
        let report = worker.report(&active.settings, abi::now_unix_nanos().unwrap_or(0), last);
        // The gauge first: once a `log_level` record is in the log, the gauge says the same.
        if let Some(gauge) = self.log_hidden_gauge {
            abi::record_metric(gauge, u64::from(worker.records_hidden()));
        }
        let level = worker.own_records_level();
        for line in &report.lines {
            emit(level, line, &mut worker);
        }
        for (id, delta) in active.counters.iter().zip(metrics::values(&report.counts)) {
            if let (Some(id), true) = (id, delta > 0) {
                abi::increment_metric(*id, delta);
            }
        }
        if worker.requests_seen == 0 {
            return;
        }
        if let Some(gauge) = self.memory_gauge {
            abi::record_metric(gauge, abi::vm_memory_bytes());
        }
    }

    pub(super) fn new(context_id: u32) -> Self {
        Self {
            context_id,
            active: None,
            network: false,
            memory_gauge: abi::define_metric(MetricType::Gauge, metrics::VM_MEMORY_BYTES),
            log_hidden_gauge: abi::define_metric(MetricType::Gauge, metrics::LOG_HIDDEN),
            config_errors: abi::define_metric(MetricType::Counter, metrics::CONFIG_ERRORS),
            batches: None,
        }
    }

    /// Logs why the configuration was refused, counts it and records the attempt;
    /// Envoy then keeps the previous configuration (or, at start-up, refuses the listener).
    fn reject(&self, now: u64, bytes: &[u8], reason: &str) -> bool {
        // At `error`, or `critical` where Envoy's log shows no less.
        let level = match abi::log_threshold() {
            Some(threshold) if !threshold.shows(LogLevel::Error) => LogLevel::Critical,
            _ => LogLevel::Error,
        };
        abi::log(
            level,
            &format!("meshaudit: invalid plugin configuration: {reason}"),
        );
        if let Some(id) = self.config_errors {
            abi::increment_metric(id, 1);
        }
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let record = ConfigRecord {
            ts_unix_nanos: now,
            instance: &node_id(),
            stream: None,
            digest: &digest,
            previous_digest: None,
            first_in_vm: false,
            config_version: CONFIG_VERSION,
            rules: Vec::new(),
            error: Some(reason),
            integrity_key: None,
            coverage: None,
        };
        abi::log(level, &format!("{RECORD_PREFIX}{}", record.encode()));
        false
    }

    /// Envoy calls this at shutdown (SIGTERM) and when a configuration change replaces this
    /// root, after its streams have ended: the old context may never tick again, so the
    /// partial interval is reported now, or it would be lost. All of it is written here, so
    /// Envoy need not wait.
    pub(super) fn on_done(&mut self) {
        if let Some(active) = self.active.take() {
            self.report(&active, true);
        }
    }

    pub(super) fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let now = abi::now_unix_nanos().unwrap_or(0);
        let bytes = match plugin_configuration_size {
            0 => Vec::new(),
            size if size > MAX_CONFIG_BYTES => {
                let reason = format!(
                    "the configuration is {size} bytes; at most {MAX_CONFIG_BYTES} are accepted"
                );
                return self.reject(now, &[], &reason);
            }
            size => abi::buffer(BufferType::PluginConfiguration, size).unwrap_or_default(),
        };
        let settings = match Settings::from_json_with_env(&bytes, &|name| std::env::var(name).ok())
        {
            Ok(settings) => settings,
            Err(error) => return self.reject(now, &bytes, &error.to_string()),
        };
        let instance = settings.instance_id.clone().unwrap_or_else(node_id);
        let batches = *self.batches.get_or_insert_with(BatchTokens::compile);
        self.network = abi::property(PLUGIN_ROOT_ID).as_deref() == Some(NETWORK_ROOT_ID);
        let seed = worker_seed(abi::random_u64(), now, self.context_id);
        let mut worker = Worker::new(&settings, instance, seed, now);
        worker.set_node_id(&abi::property(NODE_ID).unwrap_or_default());
        if let Some(threshold) = abi::log_threshold() {
            worker.set_log_threshold(threshold);
        }
        // A configuration replacing another on this same root: the old one's interval is
        // reported before its worker state goes. Streams still under way keep the old
        // configuration, and what they count after this is not reported. Envoy 1.40 starts a
        // new root for a new configuration and ends the old one after its streams (`on_done`,
        // tested), so this covers a host that reconfigures a root in place.
        if let Some(old) = self.active.take() {
            self.report(&old, true);
        }
        announce_config(&settings, &mut worker, now);
        let interval_ms = settings.reporting_interval_seconds.saturating_mul(1000);
        abi::set_tick_period_ms(u32::try_from(interval_ms).unwrap_or(u32::MAX));
        let counters = metrics::counter_names(&settings)
            .iter()
            .map(|name| abi::define_metric(MetricType::Counter, name))
            .collect();
        self.active = Some(Rc::new(Active {
            settings,
            worker: RefCell::new(worker),
            counters,
            batches,
        }));
        true
    }

    pub(super) fn on_tick(&mut self) {
        if let Some(active) = &self.active {
            self.report(active, false);
        }
    }

    /// Root id `network`: its streams are downstream connections, not HTTP streams.
    pub(super) fn network(&self) -> bool {
        self.network
    }

    /// The configuration in force, which a stream created now runs under to its end.
    pub(super) fn active(&self) -> Option<Rc<Active>> {
        self.active.clone()
    }
}

/// The Envoy node id (Istio: `sidecar~<ip>~<pod>.<namespace>~…`), which names this proxy.
fn node_id() -> String {
    abi::property(NODE_ID)
        .filter(|id| !id.is_empty())
        .map_or_else(
            || "unknown".to_string(),
            |id| String::from_utf8_lossy(&id).into_owned(),
        )
}

/// Emits `config_applied` once per change per Envoy process: every worker's VM
/// configures, but only the one that swaps the digest in shared data reports it. Each plugin
/// name and root id has a history of its own (`config_history`).
fn announce_config(settings: &Settings, worker: &mut Worker, now: u64) {
    let read = |path| abi::property(path).unwrap_or_default();
    let key = config_history(&read(PLUGIN_NAME), &read(PLUGIN_ROOT_ID));
    let report = |worker: &mut Worker, previous: Option<&str>, first_in_vm: bool| {
        let seq = worker.next_seq();
        let record = ConfigRecord {
            ts_unix_nanos: now,
            instance: &worker.instance,
            stream: Some((&worker.stream, seq)),
            digest: &settings.digest,
            previous_digest: previous,
            first_in_vm,
            config_version: settings.version,
            rules: settings.rules.iter().map(|r| r.name.as_str()).collect(),
            error: None,
            integrity_key: worker.trail_key_id(),
            coverage: Some(Coverage {
                always_audit_security_outcomes: settings.always_audit_security_outcomes,
                audit_policies: settings.audit_policies,
                records_hidden: worker.records_hidden(),
            }),
        };
        let line = record.encode();
        emit(worker.own_records_level(), &line, worker);
    };
    for _ in 0..4 {
        let (previous, cas) = abi::shared_data(&key);
        if previous.as_deref() == Some(settings.digest.as_bytes()) {
            return;
        }
        match abi::set_shared_data(&key, settings.digest.as_bytes(), cas) {
            Ok(()) => {
                let first_in_vm = previous.is_none();
                let previous = previous.map(|p| String::from_utf8_lossy(&p).into_owned());
                return report(worker, previous.as_deref(), first_in_vm);
            }
            Err(abi::SetSharedError::CasMismatch) => continue,
            Err(abi::SetSharedError::Other(_)) => break,
        }
    }
    // Shared data unavailable or contended: report anyway rather than lose the change.
    report(worker, None, false);
}
