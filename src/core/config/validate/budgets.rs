//! `budgets` and `rate_limit`: what may be written per worker, and the plugin's own
//! per-caller counts.

use super::checks::{bounded, check_range, error, ConfigError};
use crate::core::config::defaults::{
    default_burst, BURST_MAX, BURST_MIN, CALLER_WINDOW_SECONDS, MAX_CALLERS,
    MAX_SUPPRESSED_CALLERS, RECORDS_PER_SECOND_MAX, RECORDS_PER_SECOND_MIN,
    ROUTINE_RECORDS_PER_SECOND, SECURITY_RECORDS_PER_SECOND,
};
use crate::core::config::raw::{RawBudget, RawBudgets, RawRateLimit};
use crate::core::config::settings::{Budget, Budgets, CallerWindow};

pub(super) fn budgets(raw: Option<RawBudgets>) -> Result<Budgets, ConfigError> {
    let raw = raw.unwrap_or_default();
    Ok(Budgets {
        security: budget(
            "budgets.security",
            raw.security.as_ref(),
            SECURITY_RECORDS_PER_SECOND,
        )?,
        routine: budget(
            "budgets.routine",
            raw.routine.as_ref(),
            ROUTINE_RECORDS_PER_SECOND,
        )?,
        max_suppressed_callers: bounded(
            "budgets.max_suppressed_callers",
            raw.max_suppressed_callers,
            MAX_SUPPRESSED_CALLERS,
        )?,
    })
}

pub(super) fn rate_limit(raw: Option<RawRateLimit>) -> Result<CallerWindow, ConfigError> {
    let raw = raw.unwrap_or_default();
    Ok(CallerWindow {
        window_seconds: bounded(
            "rate_limit.window_seconds",
            raw.window_seconds,
            CALLER_WINDOW_SECONDS,
        )? as u64,
        max_callers: bounded("rate_limit.max_callers", raw.max_callers, MAX_CALLERS)?,
    })
}

/// A token bucket; `default_rate` when absent (a class budget), its burst by default twice the rate.
pub(super) fn budget(
    at: &str,
    raw: Option<&RawBudget>,
    default_rate: f64,
) -> Result<Budget, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Budget {
            per_second: default_rate,
            burst: default_burst(default_rate),
        });
    };
    let rate = raw.records_per_second;
    if !(rate.is_finite() && (RECORDS_PER_SECOND_MIN..=RECORDS_PER_SECOND_MAX).contains(&rate)) {
        return Err(error(
            format!("{at}.records_per_second"),
            format!(
                "must be from {RECORDS_PER_SECOND_MIN} to {RECORDS_PER_SECOND_MAX}, got {rate}"
            ),
        ));
    }
    let burst = match raw.burst {
        None => default_burst(rate),
        Some(burst) => check_range(
            &format!("{at}.burst"),
            Some(burst),
            BURST_MIN,
            BURST_MIN..=BURST_MAX,
        )? as f64,
    };
    Ok(Budget {
        per_second: rate,
        burst,
    })
}
