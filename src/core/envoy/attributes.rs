//! Every Envoy attribute, header and metadata name the plugin reads, and the
//! batches that read several attributes in one host call, decoded into structs.
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
//!
//! A batch is declared once (`attribute_batch!`): its attribute list and the
//! struct it decodes into come from the same lines, so a fact cannot be read
//! from a position its list does not have.

use super::headers::{HeaderMap, Pairs};

// Attributes (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes).
pub(crate) const CONNECTION_ID: &[&str] = &["connection", "id"];
pub(crate) const CONNECTION_MTLS: &[&str] = &["connection", "mtls"];
pub(crate) const TLS_VERSION: &[&str] = &["connection", "tls_version"];
pub(crate) const PEER_URI_SAN: &[&str] = &["connection", "uri_san_peer_certificate"];
pub(crate) const PEER_SUBJECT: &[&str] = &["connection", "subject_peer_certificate"];
pub(crate) const PEER_CERT_SHA256: &[&str] = &["connection", "sha256_peer_certificate_digest"];
pub(crate) const LOCAL_URI_SAN: &[&str] = &["connection", "uri_san_local_certificate"];
pub(crate) const TRANSPORT_FAILURE: &[&str] = &["connection", "transport_failure_reason"];
/// Why Envoy closed the connection itself, e.g. the network RBAC filter's
/// `rbac_access_denied_matched_policy[…]`.
pub(crate) const TERMINATION_DETAILS: &[&str] = &["connection", "termination_details"];
pub(crate) const SOURCE_ADDRESS: &[&str] = &["source", "address"];
pub(crate) const DESTINATION_ADDRESS: &[&str] = &["destination", "address"];
pub(crate) const RESPONSE_CODE: &[&str] = &["response", "code"];
pub(crate) const CODE_DETAILS: &[&str] = &["response", "code_details"];
pub(crate) const RESPONSE_FLAGS: &[&str] = &["response", "flags"];
pub(crate) const REQUEST_DURATION: &[&str] = &["request", "duration"];
/// The gRPC status as Envoy reads it: the `grpc-status` trailer, else the header (a
/// trailers-only response, as every local reply to a gRPC client is), else inferred from
/// the HTTP status (`Grpc::Utility::httpToGrpcStatus`); -1 for a value Envoy cannot parse.
pub(crate) const GRPC_STATUS: &[&str] = &["response", "grpc_status"];
/// Absent for a route without a name.
pub(crate) const ROUTE_NAME: &[&str] = &["xds", "route_name"];
/// Absent for a direct response.
pub(crate) const CLUSTER_NAME: &[&str] = &["xds", "cluster_name"];
pub(crate) const NODE_ID: &[&str] = &["xds", "node", "id"];
/// `envoy.config.core.v3.TrafficDirection` of the listener: 1 inbound, 2 outbound.
pub(crate) const LISTENER_DIRECTION: &[&str] = &["xds", "listener_direction"];
/// The Istio object a route was built from (a VirtualService), on outbound sidecar and
/// gateway routes; the default inbound route has none.
pub(crate) const ROUTE_ISTIO_CONFIG: &[&str] = &[
    "xds",
    "route_metadata",
    "filter_metadata",
    "istio",
    "config",
];
/// The DestinationRule that shaped the upstream cluster, where one did.
pub(crate) const CLUSTER_ISTIO_CONFIG: &[&str] = &[
    "xds",
    "cluster_metadata",
    "filter_metadata",
    "istio",
    "config",
];
pub(crate) const PLUGIN_NAME: &[&str] = &["plugin_name"];
pub(crate) const PLUGIN_ROOT_ID: &[&str] = &["plugin_root_id"];
/// RBAC's dynamic metadata: `enforced_*` and `[<prefix>]shadow_*` keys.
pub(crate) const RBAC_METADATA: &[&str] =
    &["metadata", "filter_metadata", "envoy.filters.http.rbac"];
/// Set by an RBAC filter with `action: LOG` (how Istio compiles an `AUDIT` AuthorizationPolicy):
/// `true` when one of its policies matched the request, `false` when none did.
pub(crate) const ACCESS_LOG_HINT: &[&str] = &[
    "metadata",
    "filter_metadata",
    "envoy.common",
    "access_log_hint",
];
/// jwt_authn's dynamic metadata namespace; the verified payload is under the
/// provider's `payload_in_metadata` key.
pub(crate) const JWT_METADATA: &str = "envoy.filters.http.jwt_authn";

// Response headers.
pub(crate) const STATUS_HEADER: &str = ":status";
/// A rate limiter's headers (Envoy's local and global rate limit filters, draft 03
/// of the IETF RateLimit fields), which limiters send together.
pub(crate) const RATE_LIMIT_LIMIT_HEADER: &str = "x-ratelimit-limit";
pub(crate) const RATE_LIMIT_REMAINING_HEADER: &str = "x-ratelimit-remaining";
pub(crate) const RATE_LIMIT_RESET_HEADER: &str = "x-ratelimit-reset";
/// The gRPC status message: a trailer from a server, a header in a trailers-only response.
pub(crate) const GRPC_MESSAGE: &str = "grpc-message";

/// What is asked of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// Its value, in Envoy's encoding.
    Value,
    /// Only whether it exists: its value is not fetched.
    Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub path: &'static [&'static str],
    pub kind: AttrKind,
    /// Envoy 1.40 has this attribute for every HTTP stream it logs, so the batch
    /// reads it without a presence test. Should it ever be absent, the evaluation
    /// fails and the attributes are read one by one: slower, still right.
    pub always: bool,
}

/// An attribute that may be absent: asked with a presence test.
const fn optional(path: &'static [&'static str], kind: AttrKind) -> Attr {
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

/// Envoy serialises integer attributes as 8-byte little-endian.
pub(crate) fn decode_i64(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_le_bytes(array))
}

/// Envoy serialises a boolean as one byte.
pub(crate) fn decode_flag(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [byte] => Some(*byte == 1),
        _ => None,
    }
}

/// How a batch item is decoded, and what is asked of Envoy for it.
pub(crate) trait Decode {
    const KIND: AttrKind;
    type Value<'a>;
    fn decode(item: Item<'_>) -> Self::Value<'_>;
}

/// One item of an answer: the value as Envoy sent it, and whether it came in a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    value: Option<&'a [u8]>,
    batched: bool,
}

impl<'a> Item<'a> {
    /// Empty values count as absent (see `cel_expression`).
    fn present_value(self) -> Option<&'a [u8]> {
        self.value.filter(|v| !v.is_empty())
    }
}

/// Text or bytes.
pub(crate) enum Bytes {}
/// An integer, signed or not (Envoy encodes both alike).
pub(crate) enum Int {}
/// A duration, in nanoseconds.
pub(crate) enum Nanos {}
/// A boolean.
pub(crate) enum Flag {}
/// Whether the attribute exists (`AttrKind::Presence`).
pub(crate) enum Presence {}

impl Decode for Bytes {
    const KIND: AttrKind = AttrKind::Value;
    type Value<'a> = Option<&'a [u8]>;
    fn decode(item: Item<'_>) -> Option<&[u8]> {
        item.present_value()
    }
}

impl Decode for Int {
    const KIND: AttrKind = AttrKind::Value;
    type Value<'a> = Option<i64>;
    fn decode(item: Item<'_>) -> Option<i64> {
        decode_i64(item.present_value()?)
    }
}

impl Decode for Nanos {
    const KIND: AttrKind = AttrKind::Value;
    type Value<'a> = Option<i64>;
    fn decode(item: Item<'_>) -> Option<i64> {
        Int::decode(item)
    }
}

impl Decode for Flag {
    const KIND: AttrKind = AttrKind::Value;
    type Value<'a> = Option<bool>;
    fn decode(item: Item<'_>) -> Option<bool> {
        decode_flag(item.present_value()?)
    }
}

impl Decode for Presence {
    const KIND: AttrKind = AttrKind::Presence;
    /// `None` when the answer is unreadable.
    type Value<'a> = Option<bool>;
    fn decode(item: Item<'_>) -> Option<bool> {
        if item.batched {
            Flag::decode(item)
        } else {
            Some(item.value.is_some())
        }
    }
}

/// The batches, each compiled once per root context by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Record,
    SensitiveRecord,
    RecordWithOutcome,
    Connection,
    ConnectionEnd,
    Start,
}

impl Batch {
    pub const ALL: [Batch; 6] = [
        Batch::Record,
        Batch::SensitiveRecord,
        Batch::RecordWithOutcome,
        Batch::Connection,
        Batch::ConnectionEnd,
        Batch::Start,
    ];

    pub fn attrs(self) -> &'static [Attr] {
        match self {
            Batch::Record => &RecordFacts::ATTRS,
            Batch::SensitiveRecord => &SensitiveRecordFacts::ATTRS,
            Batch::RecordWithOutcome => &OutcomeRecordFacts::ATTRS,
            Batch::Connection => &ConnectionAttrs::ATTRS,
            Batch::ConnectionEnd => &ConnectionEndFacts::ATTRS,
            Batch::Start => &StartFacts::ATTRS,
        }
    }

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A struct a batch's answer decodes into.
pub trait Decoded<'a>: Sized {
    const BATCH: Batch;
    fn read(items: &mut Items<'a>) -> Self;
}

/// Declares a batch: a struct with one field per attribute, its attribute list
/// (`ATTRS`, in field order), and its decoder. `..field: Base` first makes the
/// batch start with another's attributes.
macro_rules! attribute_batch {
    (
        $(#[$meta:meta])*
        pub struct $name:ident for $batch:ident {
            $(..$base_field:ident: $base:ident,)?
            $(
                $(#[$field_meta:meta])*
                $field:ident: $decode:ident = $availability:ident($path:expr),
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name<'a> {
            $(pub(crate) $base_field: $base<'a>,)?
            $(
                $(#[$field_meta])*
                pub(crate) $field: <$decode as Decode>::Value<'a>,
            )*
        }

        impl $name<'_> {
            /// The attributes, in the order they are asked and decoded.
            pub(crate) const ATTRS: [Attr; $(<$base<'static>>::ATTRS.len() +)? [$(stringify!($field)),*].len()] =
                concat(
                    &[$(&<$base<'static>>::ATTRS)?],
                    &[$($availability($path, <$decode as Decode>::KIND)),*],
                );
        }

        impl<'a> Decoded<'a> for $name<'a> {
            const BATCH: Batch = Batch::$batch;
            fn read(items: &mut Items<'a>) -> Self {
                Self {
                    $($base_field: $base::read(items),)?
                    $($field: items.next::<$decode>(),)*
                }
            }
        }
    };
}

attribute_batch! {
    /// What every record reads once it is decided. The connection's id tells whether
    /// its facts (`ConnectionAttrs`) are known already.
    pub struct RecordFacts for Record {
        connection_id: Int = always(CONNECTION_ID),
        code_details: Bytes = optional(CODE_DETAILS),
        flags: Int = always(RESPONSE_FLAGS),
        duration: Nanos = always(REQUEST_DURATION),
        route_name: Bytes = optional(ROUTE_NAME),
        cluster_name: Bytes = optional(CLUSTER_NAME),
        listener_direction: Int = optional(LISTENER_DIRECTION),
        route_config: Bytes = optional(ROUTE_ISTIO_CONFIG),
        cluster_config: Bytes = optional(CLUSTER_ISTIO_CONFIG),
        /// The stream's, which Envoy may have derived from `X-Forwarded-For` (see `envoy::source`).
        source_address: Bytes = always(SOURCE_ADDRESS),
    }
}

attribute_batch! {
    /// A sensitive endpoint's record (an `audit` rule's) also says what RBAC decided. Its
    /// metadata is a map, which Envoy 1.40 cannot put in a list: the batch asks only whether
    /// it exists, and the map is read on its own when it does.
    pub struct SensitiveRecordFacts for SensitiveRecord {
        ..record: RecordFacts,
        rbac_present: Presence = optional(RBAC_METADATA),
    }
}

attribute_batch! {
    /// A request the rules record whatever its outcome (an `audit` rule, or sampled in)
    /// needs its status only for the record: it comes with the rest, saving the status
    /// read (a host call that returns data costs more than several batch items: bench/README.md), with
    /// whether RBAC left a decision.
    pub struct OutcomeRecordFacts for RecordWithOutcome {
        ..record: RecordFacts,
        rbac_present: Presence = optional(RBAC_METADATA),
        /// Absent when no response was sent.
        status: Int = optional(RESPONSE_CODE),
        audit_hint: Flag = optional(ACCESS_LOG_HINT),
    }
}

attribute_batch! {
    /// What a connection's records share: read once per connection (see `ConnectionFacts`).
    /// Attributes of a session that does not exist (plaintext, no peer certificate) come back absent.
    pub struct ConnectionAttrs for Connection {
        tls_version: Bytes = optional(TLS_VERSION),
        mtls: Flag = always(CONNECTION_MTLS),
        peer_uri_san: Bytes = optional(PEER_URI_SAN),
        peer_subject: Bytes = optional(PEER_SUBJECT),
        peer_cert_sha256: Bytes = optional(PEER_CERT_SHA256),
        local_uri_san: Bytes = optional(LOCAL_URI_SAN),
    }
}

attribute_batch! {
    /// How a connection ended, read once per connection in network mode: a failed
    /// handshake, the network RBAC filter's denial, a mesh AUDIT policy's mark (which the
    /// network RBAC filter sets on the connection), and the listener's direction.
    pub struct ConnectionEndFacts for ConnectionEnd {
        /// At the connection level: the directly connected peer.
        source_address: Bytes = always(SOURCE_ADDRESS),
        transport_failure: Bytes = optional(TRANSPORT_FAILURE),
        termination_details: Bytes = optional(TERMINATION_DETAILS),
        audit_hint: Flag = optional(ACCESS_LOG_HINT),
        listener_direction: Int = optional(LISTENER_DIRECTION),
    }
}

attribute_batch! {
    /// What a `started` record reads when the request headers pass: the caller and the
    /// route. No response exists yet, and no upstream cluster: the router picks it later.
    pub struct StartFacts for Start {
        connection_id: Int = always(CONNECTION_ID),
        route_name: Bytes = optional(ROUTE_NAME),
        listener_direction: Int = optional(LISTENER_DIRECTION),
        route_config: Bytes = optional(ROUTE_ISTIO_CONFIG),
        source_address: Bytes = always(SOURCE_ADDRESS),
    }
}

/// `head` then `tail`, as one array.
#[expect(
    clippy::indexing_slicing,
    reason = "only ever evaluated by the compiler (in constants): a wrong length fails the build"
)]
const fn concat<const N: usize>(head: &[&[Attr]], tail: &[Attr]) -> [Attr; N] {
    const FILLER: Attr = optional(&[], AttrKind::Value);
    let mut out = [FILLER; N];
    let mut n = 0;
    let mut h = 0;
    while h < head.len() {
        let mut i = 0;
        while i < head[h].len() {
            out[n] = head[h][i];
            n += 1;
            i += 1;
        }
        h += 1;
    }
    let mut i = 0;
    while i < tail.len() {
        out[n] = tail[i];
        n += 1;
        i += 1;
    }
    assert!(n == N);
    out
}

/// The CEL expression that lists `attrs`, absent ones as empty strings. An empty
/// value carries nothing a record would show, so the two need no telling apart
/// (present integers and booleans are never empty); a literal NUL as the marker
/// was measurably dearer per evaluation in Envoy 1.40 (bench/README.md).
pub(crate) fn cel_expression(attrs: &[Attr]) -> String {
    let items: Vec<String> = attrs.iter().map(cel_item).collect();
    format!("[{}]", items.join(", "))
}

/// `has(a.b) ? a.b : absent`, or for a key that is not an identifier (a header name,
/// a filter name with dots) `'k' in a.b ? a.b['k'] : absent`; just `a.b` when it is always
/// there. A path of four or more segments tests every level from the second, since a
/// missing map in between would make the evaluation fail rather than answer absent.
fn cel_item(attr: &Attr) -> String {
    let levels = attr.path.len();
    let value = cel_path(attr.path);
    let present = if levels <= 3 {
        cel_presence(attr.path)
    } else {
        (2..=levels)
            .filter_map(|n| attr.path.get(..n))
            .map(cel_presence)
            .collect::<Vec<_>>()
            .join(" && ")
    };
    if attr.kind == AttrKind::Presence {
        return present;
    }
    if attr.always {
        return value;
    }
    format!("{present} ? {value} : ''")
}

fn is_identifier(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `a.b['k'].c`: identifiers selected, other keys indexed.
fn cel_path(path: &[&str]) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i == 0 {
            out.push_str(segment);
        } else if is_identifier(segment) {
            out.push('.');
            out.push_str(segment);
        } else {
            out.push_str(&format!("['{segment}']"));
        }
    }
    out
}

/// Whether the last segment of `path` exists in its parent.
fn cel_presence(path: &[&str]) -> String {
    match path.split_last() {
        Some((last, parent)) if !is_identifier(last) => {
            format!("'{last}' in {}", cel_path(parent))
        }
        _ => format!("has({})", cel_path(path)),
    }
}

/// The values of a batch of attributes, in the order asked.
#[derive(Debug)]
pub enum Answer {
    /// Envoy's answer to the batch expression.
    Batched(HeaderMap),
    /// One read per attribute.
    Single(Vec<Option<Vec<u8>>>),
}

impl Answer {
    /// The evaluated list of `batch`; `None` if it does not have the expected shape
    /// (the caller then reads one by one).
    pub fn from_batch(answer: Vec<u8>, batch: Batch) -> Option<Self> {
        let list = HeaderMap::from_serialized(answer);
        (list.len() == batch.attrs().len()).then_some(Self::Batched(list))
    }

    /// The answer decoded into its batch's struct, borrowing the values where they lie.
    pub fn decode<'a, B: Decoded<'a>>(&'a self) -> B {
        let mut items = match self {
            Self::Batched(list) => Items::Batched(list.iter()),
            Self::Single(values) => Items::Single(values.iter()),
        };
        B::read(&mut items)
    }
}

/// The items of an answer, decoded in order (one pass over a batched answer).
pub enum Items<'a> {
    Batched(Pairs<'a>),
    Single(std::slice::Iter<'a, Option<Vec<u8>>>),
}

impl<'a> Items<'a> {
    fn next<D: Decode>(&mut self) -> D::Value<'a> {
        let item = match self {
            Self::Batched(pairs) => Item {
                value: pairs.next().map(|(name, _)| name),
                batched: true,
            },
            Self::Single(values) => Item {
                value: values.next().and_then(Option::as_deref),
                batched: false,
            },
        };
        D::decode(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::headers::serialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A CEL list as Envoy serialises it: the items as names, empty values.
    fn list(items: &[&[u8]]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = items.iter().map(|item| (*item, &b""[..])).collect();
        serialize(&pairs)
    }

    #[test]
    fn builds_one_expression_for_all_attributes() {
        let expr = cel_expression(&RecordFacts::ATTRS[1..4]);
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
        let inbound = 1i64.to_le_bytes();
        let vs = b"/apis/networking.istio.io/v1/namespaces/shop/virtual-service/direct";
        let answer = list(&[
            &id,
            b"direct_response",
            &flags,
            &nanos,
            b"direct",
            b"",
            &inbound,
            vs,
            b"",
            b"203.0.113.9:0",
        ]);
        let answer = Answer::from_batch(answer, Batch::Record).unwrap();
        let facts: RecordFacts = answer.decode();
        assert_eq!(facts.connection_id, Some(7));
        assert_eq!(facts.source_address, Some(&b"203.0.113.9:0"[..]));
        assert_eq!(facts.code_details, Some(&b"direct_response"[..]));
        assert_eq!(facts.flags, Some(0));
        assert_eq!(facts.duration, Some(12_345_678));
        assert_eq!(facts.route_name, Some(&b"direct"[..]));
        assert_eq!(facts.cluster_name, None);
        assert_eq!(facts.listener_direction, Some(1));
        assert_eq!(facts.route_config, Some(&vs[..]));
        assert_eq!(facts.cluster_config, None);

        let answer = list(&[b"", &[0], b"", b"", b"", b""]);
        let answer = Answer::from_batch(answer, Batch::Connection).unwrap();
        let facts: ConnectionAttrs = answer.decode();
        assert_eq!(facts.mtls, Some(false));
        assert_eq!(facts.tls_version, None);
        assert_eq!(facts.peer_uri_san, None);
    }

    #[test]
    fn longer_lists_start_with_the_record_list() {
        let n = RecordFacts::ATTRS.len();
        assert_eq!(SensitiveRecordFacts::ATTRS[..n], RecordFacts::ATTRS);
        assert_eq!(OutcomeRecordFacts::ATTRS[..n], RecordFacts::ATTRS);
        assert_eq!(SensitiveRecordFacts::ATTRS[n].kind, AttrKind::Presence);
        assert_eq!(OutcomeRecordFacts::ATTRS[n].kind, AttrKind::Presence);
        assert_eq!(OutcomeRecordFacts::ATTRS[n + 1].path, RESPONSE_CODE);
        assert_eq!(OutcomeRecordFacts::ATTRS[n + 2].path, ACCESS_LOG_HINT);
        for batch in Batch::ALL {
            assert_eq!(Batch::ALL[batch.index()], batch);
        }
    }

    #[test]
    fn single_reads_answer_like_the_batch() {
        let answer = Answer::Single(vec![
            Some(7i64.to_le_bytes().to_vec()),
            Some(b"via_upstream".to_vec()),
            Some(0i64.to_le_bytes().to_vec()),
            Some(12_000_000i64.to_le_bytes().to_vec()),
            Some(Vec::new()),
            None,
        ]);
        let facts: RecordFacts = answer.decode();
        assert_eq!(facts.connection_id, Some(7));
        assert_eq!(facts.code_details, Some(&b"via_upstream"[..]));
        assert_eq!(facts.duration, Some(12_000_000));
        assert_eq!(facts.route_name, None, "empty is absent");
        assert_eq!(facts.cluster_name, None);
        // Fewer values than attributes: the missing ones are absent.
        let short: OutcomeRecordFacts = answer.decode();
        assert_eq!((short.rbac_present, short.status), (Some(false), None));
        let flag = |bytes: Vec<u8>| {
            Flag::decode(Item {
                value: Some(&bytes),
                batched: false,
            })
        };
        assert_eq!(flag(vec![1]), Some(true));
        assert_eq!(flag(vec![1, 0]), None);
    }

    #[test]
    fn presence_is_asked_without_fetching_the_value() {
        let n = RecordFacts::ATTRS.len();
        assert_eq!(
            cel_expression(&SensitiveRecordFacts::ATTRS[n..]),
            "['envoy.filters.http.rbac' in metadata.filter_metadata]"
        );
        // Envoy encodes a boolean as one byte.
        for (answer, present) in [(1u8, true), (0, false)] {
            let mut items: Vec<&[u8]> = vec![b""; SensitiveRecordFacts::ATTRS.len()];
            let byte = [answer];
            items[n] = &byte;
            let answer = Answer::from_batch(list(&items), Batch::SensitiveRecord).unwrap();
            let facts: SensitiveRecordFacts = answer.decode();
            assert_eq!(facts.rbac_present, Some(present));
        }
        let single = |value: Option<Vec<u8>>| {
            let mut values = vec![None; n];
            values.push(value);
            let answer = Answer::Single(values);
            answer.decode::<SensitiveRecordFacts>().rbac_present
        };
        assert_eq!(single(Some(b"x".to_vec())), Some(true));
        assert_eq!(single(None), Some(false));
    }

    #[test]
    fn keys_that_are_not_identifiers_are_indexed() {
        const HEADER: Attr = optional(
            &["response", "headers", "x-ratelimit-limit"],
            AttrKind::Value,
        );
        assert_eq!(
            cel_expression(&[HEADER]),
            "['x-ratelimit-limit' in response.headers ? response.headers['x-ratelimit-limit'] : '']"
        );
    }

    #[test]
    fn deep_paths_test_every_level() {
        let hint = OutcomeRecordFacts::ATTRS.last().unwrap();
        assert_eq!(hint.path, ACCESS_LOG_HINT);
        assert_eq!(
            cel_expression(std::slice::from_ref(hint)),
            "[has(metadata.filter_metadata) && 'envoy.common' in metadata.filter_metadata \
             && has(metadata.filter_metadata['envoy.common'].access_log_hint) \
             ? metadata.filter_metadata['envoy.common'].access_log_hint : '']"
        );
    }

    #[test]
    fn odd_answers_fall_back_rather_than_mislead() {
        assert!(Answer::from_batch(list(&[b"x"]), Batch::Record).is_none());
        assert!(Answer::from_batch(b"garbage".to_vec(), Batch::Record).is_none());
        let with_duration = |value: &[u8]| {
            let mut items: Vec<&[u8]> = vec![b""; RecordFacts::ATTRS.len()];
            items[3] = value;
            let answer = Answer::from_batch(list(&items), Batch::Record).unwrap();
            answer.decode::<RecordFacts>().duration
        };
        assert_eq!(with_duration(&1_500i64.to_le_bytes()), Some(1_500));
        assert_eq!(with_duration(b"1.5s"), None, "text where a number belongs");
        assert_eq!(with_duration(&[1, 2, 3]), None);
    }
}
