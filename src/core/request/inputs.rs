//! The request as the flow reads it: the headers it needs, picked out of the
//! request header map in one pass (one host call for all of them).

use crate::core::config::RecordedHeader;
use crate::core::envoy::grpc::is_grpc_content_type;
use crate::core::envoy::headers::HeaderMap;
use crate::core::redact::{strip_userinfo, Redaction};
use crate::core::sample::{self, b3_trace_id, traceparent, Rng, SampleKey};

/// The request headers the flow reads, picked out in one pass over the map
/// (the first value of each, as Envoy keeps names lowercase).
#[derive(Debug, Default)]
pub(super) struct KnownHeaders<'a> {
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    /// Without `userinfo@`, which rules never see and records never carry.
    pub authority: Option<&'a [u8]>,
    /// `:authority` (a `Host` header) carried `userinfo@`: a credential, or a confusion attempt.
    pub authority_userinfo: bool,
    pub content_type: Option<&'a [u8]>,
    /// The headers clients use to tunnel a method through POST (rules match on
    /// them too), in order of precedence.
    pub method_overrides: [Option<&'a [u8]>; 3],
    /// `x-original-url`, `x-rewrite-url`: the path some applications route on instead.
    pub routing: [Option<&'a [u8]>; 2],
    pub request_id: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
    pub x_b3_traceid: Option<&'a [u8]>,
    pub b3_single: Option<&'a [u8]>,
}

impl<'a> KnownHeaders<'a> {
    pub(super) fn find(map: &'a HeaderMap) -> Self {
        let mut known = Self::default();
        for (name, value) in map.iter() {
            let slot = match name {
                b":method" => &mut known.method,
                b":path" => &mut known.path,
                b":authority" => &mut known.authority,
                b"content-type" => &mut known.content_type,
                b"x-http-method-override" => &mut known.method_overrides[0],
                b"x-http-method" => &mut known.method_overrides[1],
                b"x-method-override" => &mut known.method_overrides[2],
                b"x-original-url" => &mut known.routing[0],
                b"x-rewrite-url" => &mut known.routing[1],
                b"x-request-id" => &mut known.request_id,
                b"traceparent" => &mut known.traceparent,
                b"x-b3-traceid" => &mut known.x_b3_traceid,
                b"b3" => &mut known.b3_single,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        if let Some(authority) = known.authority {
            (known.authority, known.authority_userinfo) = {
                let (host, had) = strip_userinfo(authority);
                (Some(host), had)
            };
        }
        known
    }

    /// A gRPC call (or gRPC-Web), by its content type: its status is worth a read.
    pub(super) fn is_grpc(&self) -> bool {
        self.content_type.is_some_and(is_grpc_content_type)
    }

    /// The B3 trace id, from `x-b3-traceid` or the single `b3` header.
    pub(super) fn b3_trace_id(&self) -> Option<&'a [u8]> {
        self.x_b3_traceid.or(self.b3_single).and_then(b3_trace_id)
    }
}

/// The sampling draw: from the trace id when the request has one, so every hop agrees.
pub(super) fn sampling_draw(known: &KnownHeaders, rng: &mut Rng) -> (SampleKey, u64) {
    if let Some(parent) = known.traceparent.and_then(traceparent) {
        return (SampleKey::TraceId, sample::hash_id(parent.trace_id));
    }
    if let Some(id) = known.b3_trace_id() {
        return (SampleKey::B3TraceId, sample::hash_id(id));
    }
    match known.request_id.filter(|id| !id.is_empty()) {
        Some(id) => (SampleKey::RequestId, sample::hash_id(id)),
        None => (SampleKey::Random, rng.next_u64()),
    }
}

/// The rule's allow-listed headers, repeated ones joined by `, `, each redacted as
/// configured; and whether any value is a keyed pseudonym.
pub(super) fn recorded_headers<'a>(
    map: &HeaderMap,
    wanted: &'a [RecordedHeader],
    redaction: &Redaction,
) -> (Vec<(&'a str, Vec<u8>)>, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut hashed = false;
    for RecordedHeader { name, redact, url } in wanted {
        let mut joined: Option<Vec<u8>> = None;
        for value in map.get_all(name) {
            match &mut joined {
                Some(all) => {
                    all.extend_from_slice(b", ");
                    all.extend_from_slice(value);
                }
                None => joined = Some(value.to_vec()),
            }
        }
        if let Some(redacted) =
            joined.and_then(|value| redaction.header(name, *redact, *url, value))
        {
            hashed |= redacted.hashed;
            out.push((name.as_str(), redacted.value));
        }
    }
    (out, hashed)
}
