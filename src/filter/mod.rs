//! The Proxy-Wasm adapter: as thin as it can be. Root context (configure,
//! config trail), HTTP context (capture, decide in `on_log`, emit).

mod abi;
mod host;

use crate::core::audit::{self, RequestCapture, Worker};
use crate::core::network;
use crate::core::record::{ConfigRecord, RECORD_PREFIX};
use crate::core::settings::{LogLevel, Settings, CONFIG_VERSION};
use abi::{set_tick_period_ms, BufferType, MetricType};
use host::EnvoyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

/// The root id that selects the network-filter mode (Istio `WasmPlugin` `type: NETWORK`).
const NETWORK_ROOT_ID: &[u8] = b"network";

/// Larger plugin configurations are refused rather than read into the VM.
const MAX_CONFIG_BYTES: usize = 1 << 20;

proxy_wasm::main! {{
    // The SDK's own hook unwraps its log call and prints the panic message,
    // which may hold request bytes. This one says only that audit stopped.
    std::panic::set_hook(Box::new(|_| {
        abi::log(LogLevel::Critical, "meshaudit: internal error; audit on this worker has stopped");
    }));
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// One configuration in force, shared by the streams created under it.
struct Active {
    settings: Settings,
    worker: RefCell<Worker>,
}

#[derive(Default)]
struct Root {
    active: Option<Rc<Active>>,
    /// Root id `network`: a network filter recording TLS handshake failures.
    network: bool,
    /// Gauge `wasmcustom.meshaudit.vm_memory_bytes`.
    memory_gauge: Option<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let now = abi::now_unix_nanos().unwrap_or(0);
        let bytes = match plugin_configuration_size {
            0 => Vec::new(),
            size if size > MAX_CONFIG_BYTES => {
                return reject(now, &[], &format!("the configuration is {size} bytes; at most {MAX_CONFIG_BYTES} are accepted"));
            }
            size => abi::buffer(BufferType::PluginConfiguration, size).unwrap_or_default(),
        };
        let settings = match Settings::from_json_with_env(&bytes, &|name| std::env::var(name).ok())
        {
            Ok(settings) => settings,
            Err(error) => return reject(now, &bytes, &error.to_string()),
        };
        let instance = settings.instance_id.clone().unwrap_or_else(node_id);
        self.network = abi::property(&["plugin_root_id"]).as_deref() == Some(NETWORK_ROOT_ID);
        announce_config(&settings, &instance, now);
        let interval_ms = settings.reporting_interval_seconds.saturating_mul(1000);
        set_tick_period_ms(u32::try_from(interval_ms).unwrap_or(u32::MAX));
        self.memory_gauge = abi::define_metric(MetricType::Gauge, "meshaudit.vm_memory_bytes");
        self.active = Some(Rc::new(Active {
            worker: RefCell::new(Worker::new(instance, now ^ 0x6d65_7368_6175_6469)),
            settings,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(active) = &self.active else { return };
        let served = active
            .worker
            .try_borrow()
            .is_ok_and(|w| w.requests_seen > 0);
        // Only a VM that serves traffic reports: the main thread's VM would overwrite the gauge.
        if let (true, Some(gauge)) = (served, self.memory_gauge) {
            abi::record_metric(gauge, abi::vm_memory_bytes());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        // The SDK panics on `None` here: always answer.
        Some(if self.network {
            ContextType::StreamContext
        } else {
            ContextType::HttpContext
        })
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Connection {
            active: self.active.clone(),
        }))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context: the SDK panics on `None`.
        Some(Box::new(Stream {
            active: self.active.clone(),
            capture: None,
        }))
    }
}

/// The Envoy node id (Istio: `sidecar~<ip>~<pod>.<namespace>~…`), which names this proxy.
fn node_id() -> String {
    abi::property(&["xds", "node", "id"])
        .filter(|id| !id.is_empty())
        .map_or_else(
            || "unknown".to_string(),
            |id| String::from_utf8_lossy(&id).into_owned(),
        )
}

/// Logs why the configuration was refused and records the attempt; Envoy
/// then keeps the previous configuration (or, at start-up, refuses the listener).
fn reject(now: u64, bytes: &[u8], reason: &str) -> bool {
    abi::log(
        LogLevel::Error,
        &format!("meshaudit: invalid plugin configuration: {reason}"),
    );
    let digest = format!("sha256:{}", crate::core::settings::sha256_hex(bytes));
    let record = ConfigRecord {
        ts_unix_nanos: now,
        instance: &node_id(),
        digest: &digest,
        previous_digest: None,
        config_version: CONFIG_VERSION,
        rules: Vec::new(),
        error: Some(reason),
    };
    abi::log(
        LogLevel::Error,
        &format!("{RECORD_PREFIX}{}", record.encode()),
    );
    false
}

/// Emits `config_applied` once per change per Envoy process: every worker's VM
/// configures, but only the one that swaps the digest in shared data reports it.
fn announce_config(settings: &Settings, instance: &str, now: u64) {
    let key = format!(
        "meshaudit.config_digest.{}",
        abi::property(&["plugin_name"])
            .map_or_else(String::new, |n| String::from_utf8_lossy(&n).into_owned())
    );
    let report = |previous: Option<&str>| {
        let record = ConfigRecord {
            ts_unix_nanos: now,
            instance,
            digest: &settings.digest,
            previous_digest: previous,
            config_version: settings.version,
            rules: settings.rules.iter().map(|r| r.name.as_str()).collect(),
            error: None,
        };
        emit(settings.log_level, &record.encode());
    };
    for _ in 0..4 {
        let (previous, cas) = abi::shared_data(&key);
        if previous.as_deref() == Some(settings.digest.as_bytes()) {
            return;
        }
        match abi::set_shared_data(&key, settings.digest.as_bytes(), cas) {
            Ok(()) => {
                let previous = previous.map(|p| String::from_utf8_lossy(&p).into_owned());
                return report(previous.as_deref());
            }
            Err(abi::SetSharedError::CasMismatch) => continue,
            Err(abi::SetSharedError::Other(_)) => break,
        }
    }
    // Shared data unavailable or contended: report anyway rather than lose the change.
    report(None);
}

fn emit(level: LogLevel, json: &str) {
    abi::log(level, &format!("{RECORD_PREFIX}{json}"));
}

/// A downstream connection, in network-filter mode.
struct Connection {
    active: Option<Rc<Active>>,
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_log(&mut self) {
        let Some(active) = &self.active else { return };
        let Ok(mut worker) = active.worker.try_borrow_mut() else {
            return;
        };
        if let Some(json) = network::on_connection_close(&active.settings, &mut worker, &EnvoyHost)
        {
            emit(active.settings.log_level, &json);
        }
    }
}

struct Stream {
    active: Option<Rc<Active>>,
    capture: Option<RequestCapture>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(active) = &self.active {
            self.capture = Some(RequestCapture::read(&active.settings, &EnvoyHost));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(active) = &self.active else { return };
        let Ok(mut worker) = active.worker.try_borrow_mut() else {
            return;
        };
        if let Some(json) = audit::on_log(
            &active.settings,
            &mut worker,
            self.capture.take(),
            &EnvoyHost,
        ) {
            emit(active.settings.log_level, &json);
        }
    }
}
