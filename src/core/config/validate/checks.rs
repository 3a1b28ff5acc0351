//! Small named checks every section's validation uses, and the error they give.

use crate::core::config::defaults::{Bounded, MAX_RULE_NAME_BYTES};
use crate::core::config::raw::WholeNumber;
use std::fmt;

/// Longest path, principal or placeholder pattern accepted.
pub(super) const MAX_PATTERN_BYTES: usize = 1024;

/// A configuration error: where in the JSON, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending value, such as `rules[2].sample_rate` (empty: the whole document).
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn error(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A whole-number setting: its default when absent, else a value in its range.
pub(super) fn bounded(
    at: &str,
    value: Option<WholeNumber>,
    bounds: Bounded,
) -> Result<usize, ConfigError> {
    check_range(at, value, bounds.default, bounds.min..=bounds.max)
}

pub(super) fn check_rate(at: &str, rate: f64) -> Result<f64, ConfigError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(error(
            at,
            format!("must be a fraction from 0 to 1, got {rate}"),
        ))
    }
}

pub(super) fn check_range(
    at: &str,
    value: Option<WholeNumber>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ConfigError> {
    let value = value.map_or(default, |v| v.0);
    if !range.contains(&value) {
        return Err(error(
            at,
            format!(
                "must be from {} to {}, got {value}",
                range.start(),
                range.end()
            ),
        ));
    }
    usize::try_from(value).map_err(|_| error(at, format!("{value} is too large for this platform")))
}

pub(super) fn check_rule_name(at: &str, name: &str) -> Result<(), ConfigError> {
    // `defaults::RULE_NAME_PATTERN`, byte by byte.
    let valid = name.len() <= MAX_RULE_NAME_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(error(
            at,
            format!(
                "{:?} is not a valid rule name: use 1 to {MAX_RULE_NAME_BYTES} of a-z, 0-9, '-', '_', starting with a letter or digit",
                name
            ),
        ))
    }
}

pub(super) fn check_header_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(error(at, format!("{:?} is not an HTTP header name", name)));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(error(
            at,
            format!(
                "header names are matched in lowercase, as Envoy stores them; write {:?}",
                name.to_ascii_lowercase()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_printable(at: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(error(
            at,
            format!("must be 1 to {max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// RFC 7230 token characters: what method and header names are made of.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
