//! Every default of the plugin configuration, and the range of each whole-number
//! setting, named once. The validator applies them, the generated JSON Schema
//! carries them (`default`, `minimum`, `maximum`), and a test holds the README's
//! configuration table to that schema. The defaults of enumerations are their
//! `DEFAULT` constants in `raw` (`RawRedact`, `RawSubject`, `RawLevel`).

/// A whole-number setting: its default and the values the validator accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounded {
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// The only configuration schema version so far.
pub(crate) const VERSION: u64 = 1;
pub(crate) const LOG_LEVEL: &str = "warn";
pub(crate) const ALWAYS_AUDIT_SECURITY_OUTCOMES: bool = true;
pub(crate) const DEFAULT_SAMPLE_RATE: f64 = 0.01;

pub(crate) const DECODE_ESCAPED_SLASHES: bool = true;
pub(crate) const BACKSLASH_IS_SLASH: bool = true;

pub(crate) const MAX_FIELD_BYTES: Bounded = Bounded {
    default: 1024,
    min: 64,
    max: 65_536,
};
pub(crate) const MAX_RECORD_BYTES: Bounded = Bounded {
    default: 16 * 1024,
    min: 4096,
    max: 1_048_576,
};

pub(crate) const REPORTING_INTERVAL_SECONDS: Bounded = Bounded {
    default: 10,
    min: 1,
    max: 3600,
};

pub(crate) const SHADOW_RESULTS: bool = false;
pub(crate) const AUDIT_POLICIES: bool = true;
pub(crate) const RECORD_CONNECTIONS: bool = false;
pub(crate) const TRUST_FORWARDED_ADDRESS: bool = false;
pub(crate) const OUTPUT_LOG: bool = true;
pub(crate) const OUTPUT_FILTER_STATE: bool = false;

/// Records per second of the security budget; its burst is twice that.
pub(crate) const SECURITY_RECORDS_PER_SECOND: f64 = 1000.0;
/// Records per second of the routine budget; its burst is twice that.
pub(crate) const ROUTINE_RECORDS_PER_SECOND: f64 = 100.0;
/// A budget's rate, records per second (`records_per_second` has no default).
pub(crate) const RECORDS_PER_SECOND_MIN: f64 = 0.001;
pub(crate) const RECORDS_PER_SECOND_MAX: f64 = 1_000_000.0;
/// A budget's burst; its default is twice the rate, at least 1.
pub(crate) const BURST_MIN: u64 = 1;
pub(crate) const BURST_MAX: u64 = 1_000_000;
pub(crate) const MAX_SUPPRESSED_CALLERS: Bounded = Bounded {
    default: 256,
    min: 1,
    max: 65_536,
};

pub(crate) const CALLER_WINDOW_SECONDS: Bounded = Bounded {
    default: 60,
    min: 1,
    max: 86_400,
};
pub(crate) const MAX_CALLERS: Bounded = Bounded {
    default: 1024,
    min: 1,
    max: 65_536,
};

pub(crate) const HASH_KEY_ENV: &str = "MESHAUDIT_HMAC_KEY";
/// When set in the VM's environment, every record is sealed (`core::trail`).
pub(crate) const TRAIL_KEY_ENV: &str = "MESHAUDIT_TRAIL_KEY";
pub(crate) const EMAIL_PLACEHOLDER: bool = true;
pub(crate) const SECRET_SHAPES: bool = true;
/// 32 characters: 128 bits of hex, 192 of base64url; shorter random runs are too often ids.
pub(crate) const MIN_TOKEN_CHARS: Bounded = Bounded {
    default: 32,
    min: 16,
    max: 1024,
};
pub(crate) const MIN_DIGITS: Bounded = Bounded {
    default: 9,
    min: 0,
    max: 64,
};

/// Rule names become parts of Envoy stat names: no `.`, and a leading letter or
/// digit keeps `_default` (requests no rule matched) unambiguous.
#[cfg(any(feature = "schema", test))]
pub(crate) const RULE_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";
pub(crate) const CASE_INSENSITIVE: bool = false;
pub(crate) const MAX_RULE_NAME_BYTES: usize = 64;
pub(crate) const MAX_RULES: usize = 256;

/// A budget's burst when none is given: twice the rate, at least 1.
pub(crate) const fn default_burst(records_per_second: f64) -> f64 {
    let twice = records_per_second * 2.0;
    let whole = twice as u64 as f64;
    let ceil = if whole < twice { whole + 1.0 } else { whole };
    if ceil < 1.0 {
        1.0
    } else {
        ceil
    }
}
