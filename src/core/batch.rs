//! Reading several Envoy attributes in one host call.
//!
//! Each attribute read is a round trip into Envoy and back into the VM (which
//! allocates for the answer); a record needs about ten. Envoy can evaluate a
//! CEL expression through its `expr_create` / `expr_evaluate` foreign
//! functions, and serialises a CEL list like a header map, so one
//! expression listing the attributes fetches them all at once. Values come
//! back as text; this module turns them back into the encodings a single
//! attribute read returns, so callers cannot tell the two paths apart.

use super::headers::HeaderMap;

/// How an attribute is encoded by a single read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// Bytes as they are.
    Bytes,
    /// 8-byte little-endian integer.
    Int,
    /// 8-byte little-endian integer of nanoseconds.
    Duration,
    /// One byte, 0 or 1.
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub path: &'static [&'static str],
    pub kind: AttrKind,
}

const fn attr(path: &'static [&'static str], kind: AttrKind) -> Attr {
    Attr { path, kind }
}

/// What every record reads once it is decided: in one call where Envoy allows.
pub const RECORD_FACTS: [Attr; 8] = [
    attr(&["response", "code_details"], AttrKind::Bytes),
    attr(&["response", "flags"], AttrKind::Int),
    attr(&["request", "duration"], AttrKind::Duration),
    attr(&["source", "address"], AttrKind::Bytes),
    attr(&["xds", "route_name"], AttrKind::Bytes),
    attr(&["xds", "cluster_name"], AttrKind::Bytes),
    attr(&["connection", "tls_version"], AttrKind::Bytes),
    attr(&["connection", "mtls"], AttrKind::Bool),
];

/// A record of a sensitive endpoint (an `audit` rule) also carries RBAC's decision and the
/// caller's rate-limit position: the same call, a longer list.
pub const SENSITIVE_RECORD_FACTS: [Attr; 12] = [
    RECORD_FACTS[0],
    RECORD_FACTS[1],
    RECORD_FACTS[2],
    RECORD_FACTS[3],
    RECORD_FACTS[4],
    RECORD_FACTS[5],
    RECORD_FACTS[6],
    RECORD_FACTS[7],
    attr(
        &["metadata", "filter_metadata", "envoy.filters.http.rbac"],
        AttrKind::Bytes,
    ),
    attr(
        &["response", "headers", "x-ratelimit-limit"],
        AttrKind::Bytes,
    ),
    attr(
        &["response", "headers", "x-ratelimit-remaining"],
        AttrKind::Bytes,
    ),
    attr(
        &["response", "headers", "x-ratelimit-reset"],
        AttrKind::Bytes,
    ),
];

/// Positions in `RECORD_FACTS`.
pub mod fact {
    pub const CODE_DETAILS: usize = 0;
    pub const FLAGS: usize = 1;
    pub const DURATION: usize = 2;
    pub const SOURCE_ADDRESS: usize = 3;
    pub const ROUTE_NAME: usize = 4;
    pub const CLUSTER_NAME: usize = 5;
    pub const TLS_VERSION: usize = 6;
    pub const MTLS: usize = 7;
    /// In `SENSITIVE_RECORD_FACTS` only.
    pub const RBAC: usize = 8;
    pub const RATELIMIT_LIMIT: usize = 9;
    pub const RATELIMIT_REMAINING: usize = 10;
    pub const RATELIMIT_RESET: usize = 11;
}

/// Stands for an absent attribute in the list (no attribute value holds a NUL byte alone).
const ABSENT: &str = "\\x00";

/// The CEL expression that lists `attrs` as strings, absent ones as a lone NUL.
pub fn cel_expression(attrs: &[Attr]) -> String {
    let items: Vec<String> = attrs.iter().map(cel_item).collect();
    format!("[{}]", items.join(", "))
}

/// `has(a.b) ? a.b : absent`, or for a key that is not an identifier (a header name,
/// a filter name with dots) `'k' in a.b ? a.b['k'] : absent`.
fn cel_item(attr: &Attr) -> String {
    let (parent, last) = match attr.path.split_last() {
        Some((last, parent)) => (parent.join("."), *last),
        None => (String::new(), ""),
    };
    let identifier = last.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let (present, value) = if identifier {
        let path = attr.path.join(".");
        (format!("has({path})"), path)
    } else {
        (
            format!("'{last}' in {parent}"),
            format!("{parent}['{last}']"),
        )
    };
    let value = match attr.kind {
        AttrKind::Bytes => value,
        AttrKind::Int | AttrKind::Duration | AttrKind::Bool => format!("string({value})"),
    };
    format!("{present} ? {value} : '{ABSENT}'")
}

/// Decodes an evaluated list back into single-read encodings; `None` if the
/// answer does not have the expected shape (the caller then reads one by one).
pub fn decode(bytes: Vec<u8>, attrs: &[Attr]) -> Option<Vec<Option<Vec<u8>>>> {
    let list = HeaderMap::from_serialized(bytes);
    if list.len() != attrs.len() {
        return None;
    }
    Some(
        list.iter()
            .zip(attrs)
            .map(|((value, _), attr)| {
                if value == b"\0" {
                    return None;
                }
                match attr.kind {
                    AttrKind::Bytes => Some(value.to_vec()),
                    AttrKind::Int => text(value)?
                        .parse::<i64>()
                        .ok()
                        .map(|n| n.to_le_bytes().to_vec()),
                    AttrKind::Duration => {
                        duration_nanos(text(value)?).map(|n| n.to_le_bytes().to_vec())
                    }
                    AttrKind::Bool => match value {
                        b"true" => Some(vec![1]),
                        b"false" => Some(vec![0]),
                        _ => None,
                    },
                }
            })
            .collect(),
    )
}

fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok()
}

/// CEL's duration text, `1.5s` or `0.000313308s`, in nanoseconds.
fn duration_nanos(text: &str) -> Option<i64> {
    let seconds = text.strip_suffix('s')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: i64 = whole.parse().ok()?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    whole.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::headers::serialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn builds_one_expression_for_all_attributes() {
        let expr = cel_expression(&RECORD_FACTS[..3]);
        assert_eq!(
            expr,
            "[has(response.code_details) ? response.code_details : '\\x00', \
             has(response.flags) ? string(response.flags) : '\\x00', \
             has(request.duration) ? string(request.duration) : '\\x00']"
        );
    }

    #[test]
    fn decodes_what_envoy_1_40_answered() {
        // As Envoy serialised the list for a direct response on plaintext (seen in e2e).
        let answer = serialize(&[
            ("direct_response", b""),
            ("0", b""),
            ("0.000313308s", b""),
            ("127.0.0.1:50860", b""),
            ("direct", b""),
            ("\0", b""),
            ("\0", b""),
            ("false", b""),
        ]);
        let values = decode(answer, &RECORD_FACTS).unwrap();
        assert_eq!(
            values[fact::CODE_DETAILS].as_deref(),
            Some(&b"direct_response"[..])
        );
        assert_eq!(values[fact::FLAGS], Some(0i64.to_le_bytes().to_vec()));
        assert_eq!(
            values[fact::DURATION],
            Some(313_308i64.to_le_bytes().to_vec())
        );
        assert_eq!(values[fact::CLUSTER_NAME], None);
        assert_eq!(values[fact::TLS_VERSION], None);
        assert_eq!(values[fact::MTLS], Some(vec![0]));
    }

    #[test]
    fn keys_that_are_not_identifiers_are_indexed() {
        let expr = cel_expression(&SENSITIVE_RECORD_FACTS[8..10]);
        assert_eq!(
            expr,
            "['envoy.filters.http.rbac' in metadata.filter_metadata ? metadata.filter_metadata['envoy.filters.http.rbac'] : '\\x00', \
             'x-ratelimit-limit' in response.headers ? response.headers['x-ratelimit-limit'] : '\\x00']"
        );
    }

    #[test]
    fn odd_answers_fall_back_rather_than_mislead() {
        assert!(decode(serialize(&[("x", b"")]), &RECORD_FACTS).is_none());
        assert!(decode(b"garbage".to_vec(), &RECORD_FACTS).is_none());
        assert_eq!(duration_nanos("2s"), Some(2_000_000_000));
        assert_eq!(duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(duration_nanos("1.5"), None);
        assert_eq!(duration_nanos("0.1234567891s"), None);
    }
}
