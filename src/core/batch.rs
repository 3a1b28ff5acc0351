//! Reading several Envoy attributes in one host call.
//!
//! Each attribute read is a round trip into Envoy and back into the VM (which
//! allocates for the answer); a record needs about ten. Envoy can evaluate a
//! CEL expression through its `expr_create` / `expr_evaluate` foreign
//! functions, and serialises a CEL list like a header map whose names are the
//! items, each encoded as a single read would encode it (integers and durations
//! as 8-byte little-endian, booleans as one byte, text as it is): one expression
//! listing the attributes fetches them all at once, and callers cannot tell the
//! two paths apart. Nothing is converted to text in the expression: each
//! conversion is a function call and an allocation in Envoy.

use super::headers::HeaderMap;
use super::host::decode_i64;

/// What is asked of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// Its value, in Envoy's encoding (read it with the `Facts` accessor of its type).
    Value,
    /// Only whether it exists: its value is not fetched.
    Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub path: &'static [&'static str],
    pub kind: AttrKind,
    /// Envoy 1.40 has this attribute for every HTTP stream it logs, so the batch
    /// reads it without a presence test (0.15 µs each). Should it ever be absent,
    /// the evaluation fails and the attributes are read one by one: slower, still right.
    pub always: bool,
}

const fn attr(path: &'static [&'static str], kind: AttrKind) -> Attr {
    Attr {
        path,
        kind,
        always: false,
    }
}

/// An attribute Envoy has for every logged HTTP stream (see `Attr::always`).
const fn always(path: &'static [&'static str], kind: AttrKind) -> Attr {
    Attr {
        path,
        kind,
        always: true,
    }
}

/// What every record reads once it is decided, in one call where Envoy allows.
/// The connection's id tells whether its facts (`CONNECTION_FACTS`) are known already.
pub static RECORD_FACTS: [Attr; 6] = RECORD;

/// The same list as a constant, which the longer lists are built from at compile time.
const RECORD: [Attr; 6] = [
    always(&["connection", "id"], AttrKind::Value),
    attr(&["response", "code_details"], AttrKind::Value),
    always(&["response", "flags"], AttrKind::Value),
    always(&["request", "duration"], AttrKind::Value),
    // None for a route without a name, and no cluster for a direct response.
    attr(&["xds", "route_name"], AttrKind::Value),
    attr(&["xds", "cluster_name"], AttrKind::Value),
];

/// A sensitive endpoint's record (an `audit` rule's) also says what RBAC decided. Its
/// metadata is a map, which Envoy 1.40 cannot put in a list: the batch asks only whether it
/// exists, and the map is read on its own when it does.
pub static SENSITIVE_RECORD_FACTS: [Attr; 7] = record_and(&[RBAC_PRESENCE]);

const RBAC_PRESENCE: Attr = attr(
    &["metadata", "filter_metadata", "envoy.filters.http.rbac"],
    AttrKind::Presence,
);

/// A request the rules record whatever its outcome (an `audit` rule, or sampled in) needs
/// its status only for the record: it comes with the rest, saving the status read (a host
/// call that returns data costs about four attributes here), with whether RBAC left a decision.
pub static RECORD_FACTS_WITH_OUTCOME: [Attr; 8] = record_and(&[
    RBAC_PRESENCE,
    // Absent when no response was sent.
    attr(&["response", "code"], AttrKind::Value),
]);

/// `RECORD_FACTS` then `extra`: the positions in `fact` hold in every list that starts with them.
// Only ever evaluated by the compiler (in statics): a wrong length fails the build.
#[allow(clippy::indexing_slicing)]
const fn record_and<const N: usize>(extra: &[Attr]) -> [Attr; N] {
    assert!(N == RECORD.len() + extra.len());
    let mut out = [RECORD[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < RECORD.len() {
            RECORD[i]
        } else {
            extra[i - RECORD.len()]
        };
        i += 1;
    }
    out
}

/// What a connection's records share: read once per connection (see `connection`).
/// Attributes of a session that does not exist (plaintext, no peer certificate) come back absent.
pub static CONNECTION_FACTS: [Attr; 7] = [
    always(&["source", "address"], AttrKind::Value),
    attr(&["connection", "tls_version"], AttrKind::Value),
    always(&["connection", "mtls"], AttrKind::Value),
    attr(&["connection", "uri_san_peer_certificate"], AttrKind::Value),
    attr(&["connection", "subject_peer_certificate"], AttrKind::Value),
    attr(
        &["connection", "sha256_peer_certificate_digest"],
        AttrKind::Value,
    ),
    attr(
        &["connection", "uri_san_local_certificate"],
        AttrKind::Value,
    ),
];

/// Positions in `RECORD_FACTS`, `SENSITIVE_RECORD_FACTS` and `RECORD_FACTS_WITH_OUTCOME`.
pub mod fact {
    pub const CONNECTION_ID: usize = 0;
    pub const CODE_DETAILS: usize = 1;
    pub const FLAGS: usize = 2;
    pub const DURATION: usize = 3;
    pub const ROUTE_NAME: usize = 4;
    pub const CLUSTER_NAME: usize = 5;
    /// In `SENSITIVE_RECORD_FACTS` and `RECORD_FACTS_WITH_OUTCOME`.
    pub const RBAC_PRESENT: usize = 6;
    /// In `RECORD_FACTS_WITH_OUTCOME` only.
    pub const STATUS: usize = 7;
}

/// Positions in `CONNECTION_FACTS`.
pub mod connection_fact {
    pub const SOURCE_ADDRESS: usize = 0;
    pub const TLS_VERSION: usize = 1;
    pub const MTLS: usize = 2;
    pub const PEER_URI_SAN: usize = 3;
    pub const PEER_SUBJECT: usize = 4;
    pub const PEER_CERT_SHA256: usize = 5;
    pub const LOCAL_URI_SAN: usize = 6;
}

/// The CEL expression that lists `attrs`, absent ones as empty strings. An empty
/// value carries nothing a record would show, so the two need no telling apart
/// (present integers and booleans are never empty); a literal NUL as the marker
/// measured 1.7 µs more per evaluation in Envoy 1.40.
pub fn cel_expression(attrs: &[Attr]) -> String {
    let items: Vec<String> = attrs.iter().map(cel_item).collect();
    format!("[{}]", items.join(", "))
}

/// `has(a.b) ? a.b : absent`, or for a key that is not an identifier (a header name,
/// a filter name with dots) `'k' in a.b ? a.b['k'] : absent`; just `a.b` when it is always there.
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
    if attr.kind == AttrKind::Presence {
        return present;
    }
    if attr.always {
        return value;
    }
    format!("{present} ? {value} : ''")
}

/// The values of a batch of attributes, in the order asked, borrowed where they lie.
/// Empty values count as absent (see `cel_expression`).
#[derive(Debug)]
pub enum Facts {
    /// Envoy's answer to the batch expression.
    Batched(HeaderMap),
    /// One read per attribute.
    Single(Vec<Option<Vec<u8>>>),
}

impl Facts {
    /// The evaluated list; `None` if it does not have the expected shape
    /// (the caller then reads one by one).
    pub fn from_answer(answer: Vec<u8>, attrs: &[Attr]) -> Option<Self> {
        let list = HeaderMap::from_serialized(answer);
        (list.len() == attrs.len()).then_some(Self::Batched(list))
    }

    fn raw(&self, i: usize) -> Option<&[u8]> {
        let value = match self {
            Self::Batched(list) => list.key_at(i),
            Self::Single(values) => values.get(i)?.as_deref(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// A text or bytes attribute.
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        self.raw(i)
    }

    /// An integer attribute (signed or not, as Envoy encodes both).
    pub fn int(&self, i: usize) -> Option<i64> {
        decode_i64(self.raw(i)?)
    }

    /// A boolean attribute.
    pub fn flag(&self, i: usize) -> Option<bool> {
        match self.raw(i)? {
            [byte] => Some(*byte == 1),
            _ => None,
        }
    }

    /// A `Presence` attribute: whether it exists (`None` if the answer is unreadable).
    pub fn present(&self, i: usize) -> Option<bool> {
        match self {
            Self::Batched(_) => self.flag(i),
            Self::Single(values) => Some(values.get(i)?.is_some()),
        }
    }

    /// A duration attribute, in nanoseconds.
    pub fn duration_nanos(&self, i: usize) -> Option<i64> {
        self.int(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::headers::serialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A CEL list as Envoy serialises it: the items as names, empty values.
    fn list(items: &[&[u8]]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = items.iter().map(|item| (*item, &b""[..])).collect();
        serialize(&pairs)
    }

    #[test]
    fn builds_one_expression_for_all_attributes() {
        let expr = cel_expression(&RECORD_FACTS[1..4]);
        assert_eq!(
            expr,
            "[has(response.code_details) ? response.code_details : '', \
             response.flags, \
             request.duration]"
        );
    }

    #[test]
    fn decodes_what_envoy_1_40_answered() {
        // As Envoy serialises the list for a direct response on plaintext: each item
        // as a single read encodes it, the absent cluster as the empty string.
        let (id, flags, nanos) = (
            7u64.to_le_bytes(),
            0i64.to_le_bytes(),
            12_345_678i64.to_le_bytes(),
        );
        let answer = list(&[&id, b"direct_response", &flags, &nanos, b"direct", b""]);
        let facts = Facts::from_answer(answer, &RECORD_FACTS).unwrap();
        assert_eq!(facts.int(fact::CONNECTION_ID), Some(7));
        assert_eq!(
            facts.bytes(fact::CODE_DETAILS),
            Some(&b"direct_response"[..])
        );
        assert_eq!(facts.int(fact::FLAGS), Some(0));
        assert_eq!(facts.duration_nanos(fact::DURATION), Some(12_345_678));
        assert_eq!(facts.bytes(fact::ROUTE_NAME), Some(&b"direct"[..]));
        assert_eq!(facts.bytes(fact::CLUSTER_NAME), None);

        let answer = list(&[b"127.0.0.1:50860", b"", &[0], b"", b"", b"", b""]);
        let facts = Facts::from_answer(answer, &CONNECTION_FACTS).unwrap();
        assert_eq!(facts.flag(connection_fact::MTLS), Some(false));
        assert_eq!(facts.bytes(connection_fact::TLS_VERSION), None);
        assert_eq!(facts.bytes(connection_fact::PEER_URI_SAN), None);
    }

    #[test]
    fn longer_lists_keep_the_record_positions() {
        assert_eq!(SENSITIVE_RECORD_FACTS[..6], RECORD_FACTS);
        assert_eq!(RECORD_FACTS_WITH_OUTCOME[..6], RECORD_FACTS);
        for list in [&SENSITIVE_RECORD_FACTS[..], &RECORD_FACTS_WITH_OUTCOME[..]] {
            assert_eq!(list[fact::RBAC_PRESENT].kind, AttrKind::Presence);
        }
        assert_eq!(
            RECORD_FACTS_WITH_OUTCOME[fact::STATUS].path,
            ["response", "code"]
        );
    }

    #[test]
    fn single_reads_answer_like_the_batch() {
        let facts = Facts::Single(vec![
            Some(7i64.to_le_bytes().to_vec()),
            Some(b"via_upstream".to_vec()),
            Some(0i64.to_le_bytes().to_vec()),
            Some(12_000_000i64.to_le_bytes().to_vec()),
            Some(Vec::new()),
            None,
        ]);
        assert_eq!(facts.int(fact::CONNECTION_ID), Some(7));
        assert_eq!(facts.bytes(fact::CODE_DETAILS), Some(&b"via_upstream"[..]));
        assert_eq!(facts.duration_nanos(fact::DURATION), Some(12_000_000));
        assert_eq!(facts.bytes(fact::ROUTE_NAME), None, "empty is absent");
        assert_eq!(facts.bytes(fact::CLUSTER_NAME), None);
        assert_eq!(facts.int(99), None);
        assert_eq!(Facts::Single(vec![Some(vec![1])]).flag(0), Some(true));
        assert_eq!(Facts::Single(vec![Some(vec![1, 0])]).flag(0), None);
    }

    #[test]
    fn presence_is_asked_without_fetching_the_value() {
        assert_eq!(
            cel_expression(&SENSITIVE_RECORD_FACTS[fact::RBAC_PRESENT..]),
            "['envoy.filters.http.rbac' in metadata.filter_metadata]"
        );
        // Envoy encodes a boolean as one byte.
        for (answer, present) in [(1u8, true), (0, false)] {
            let mut items: Vec<&[u8]> = vec![b""; SENSITIVE_RECORD_FACTS.len()];
            let byte = [answer];
            items[fact::RBAC_PRESENT] = &byte;
            let facts = Facts::from_answer(list(&items), &SENSITIVE_RECORD_FACTS).unwrap();
            assert_eq!(facts.present(fact::RBAC_PRESENT), Some(present));
        }
        let single = Facts::Single(vec![Some(b"x".to_vec()), None]);
        assert_eq!(single.present(0), Some(true));
        assert_eq!(single.present(1), Some(false));
    }

    #[test]
    fn keys_that_are_not_identifiers_are_indexed() {
        const HEADER: Attr = attr(
            &["response", "headers", "x-ratelimit-limit"],
            AttrKind::Value,
        );
        assert_eq!(
            cel_expression(&[HEADER]),
            "['x-ratelimit-limit' in response.headers ? response.headers['x-ratelimit-limit'] : '']"
        );
    }

    #[test]
    fn odd_answers_fall_back_rather_than_mislead() {
        assert!(Facts::from_answer(list(&[b"x"]), &RECORD_FACTS).is_none());
        assert!(Facts::from_answer(b"garbage".to_vec(), &RECORD_FACTS).is_none());
        let with_duration = |value: &[u8]| {
            let mut items: Vec<&[u8]> = vec![b""; RECORD_FACTS.len()];
            items[fact::DURATION] = value;
            Facts::from_answer(list(&items), &RECORD_FACTS)
                .unwrap()
                .duration_nanos(fact::DURATION)
        };
        assert_eq!(with_duration(&1_500i64.to_le_bytes()), Some(1_500));
        assert_eq!(with_duration(b"1.5s"), None, "text where a number belongs");
        assert_eq!(with_duration(&[1, 2, 3]), None);
    }
}
