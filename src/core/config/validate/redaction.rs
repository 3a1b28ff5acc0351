//! `redaction`: what is kept out of records, or pseudonymised.

use super::checks::{bounded, check_header_name, error, ConfigError, MAX_PATTERN_BYTES};
use crate::core::config::defaults::{
    EMAIL_PLACEHOLDER, MIN_DIGITS, MIN_TOKEN_CHARS, SECRET_SHAPES,
};
use crate::core::config::raw::{RawRedact, RawRedaction};
use crate::core::redact::{
    Detectors, Redact, Redaction, SegmentPlaceholder, SENSITIVE_HEADERS, SENSITIVE_QUERY_PARAMS,
};

pub(super) fn redact_from_raw(raw: RawRedact) -> Redact {
    match raw {
        RawRedact::Omit => Redact::Omit,
        RawRedact::Mask => Redact::Mask,
        RawRedact::Hash => Redact::Hash,
    }
}

pub(super) fn redaction(raw: RawRedaction) -> Result<Redaction, ConfigError> {
    let mut redaction = Redaction {
        sensitive_headers: SENSITIVE_HEADERS.iter().map(|s| (*s).to_string()).collect(),
        sensitive_header_action: redact_from_raw(RawRedact::DEFAULT),
        hash_key: None,
        query_params: Vec::new(),
        sensitive_query_params: SENSITIVE_QUERY_PARAMS
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
        not_sensitive: Vec::new(),
        email_placeholder: EMAIL_PLACEHOLDER,
        detectors: Detectors {
            secrets: raw.secret_shapes.unwrap_or(SECRET_SHAPES),
            min_token_chars: bounded(
                "redaction.min_token_chars",
                raw.min_token_chars,
                MIN_TOKEN_CHARS,
            )?,
            min_digits: MIN_DIGITS.default as usize,
        },
        segment_placeholders: Vec::new(),
    };
    for (j, name) in raw.sensitive_headers.iter().enumerate() {
        check_header_name(&format!("redaction.sensitive_headers[{j}]"), name)?;
        if !redaction.is_sensitive_header(name) {
            redaction.sensitive_headers.push(name.clone());
        }
    }
    if let Some(action) = raw.sensitive_header_action {
        redaction.sensitive_header_action = redact_from_raw(action);
    }
    if let Some(variable) = &raw.hash_key_env {
        let valid = variable
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && variable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(error(
                "redaction.hash_key_env",
                format!("{:?} is not an environment variable name", variable),
            ));
        }
    }
    for (field, names, into) in [
        (
            "query_params",
            &raw.query_params,
            &mut redaction.query_params,
        ),
        (
            "sensitive_query_params",
            &raw.sensitive_query_params,
            &mut redaction.sensitive_query_params,
        ),
        (
            "not_sensitive",
            &raw.not_sensitive,
            &mut redaction.not_sensitive,
        ),
    ] {
        for (j, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > 128 || name.contains(['&', '=', '#', ';']) {
                return Err(error(
                    format!("redaction.{field}[{j}]"),
                    format!(
                        "{:?} is not a name: 1 to 128 bytes, without '&', '=', '#' or ';'",
                        name
                    ),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if !into.contains(&lower) {
                into.push(lower);
            }
        }
    }
    if let Some(placeholders) = raw.path_placeholders {
        redaction.email_placeholder = placeholders.email.unwrap_or(EMAIL_PLACEHOLDER);
        redaction.detectors.min_digits = bounded(
            "redaction.path_placeholders.min_digits",
            placeholders.min_digits,
            MIN_DIGITS,
        )?;
        for (j, p) in placeholders.segments.into_iter().enumerate() {
            let at = format!("redaction.path_placeholders.segments[{j}]");
            if p.glob.is_empty() || p.glob.contains('/') || p.glob.len() > MAX_PATTERN_BYTES {
                return Err(error(
                    format!("{at}.glob"),
                    "a glob over one path segment: no '/', 1 to 1024 bytes (e.g. \"user-*\")",
                ));
            }
            let valid_name = (1..=32).contains(&p.placeholder.len())
                && p.placeholder
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(error(
                    format!("{at}.placeholder"),
                    format!(
                        "{:?} is not a placeholder name: use 1 to 32 of a-z, 0-9, '_' (written as {{name}})",
                        p.placeholder
                    ),
                ));
            }
            redaction.segment_placeholders.push(SegmentPlaceholder {
                glob: p.glob.into_bytes(),
                placeholder: format!("{{{}}}", p.placeholder),
            });
        }
    }
    Ok(redaction)
}
