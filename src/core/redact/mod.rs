//! What never reaches a record in clear: credentials in headers, the query
//! string, personal data in paths. Pseudonyms are keyed (HMAC-SHA-256) so that
//! the same value maps to the same pseudonym under one key, without the key
//! ever being in the plugin configuration (which Envoy's config dump shows).

#[cfg(test)]
mod corpus;
mod names;
mod shapes;

use crate::core::bytes::find;
use crate::core::path::segment_matches;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

use crate::core::record::json::push_u64;
pub(crate) use names::is_credential_name;
pub(crate) use shapes::Detectors;

/// Headers that carry credentials: never recorded in clear, even when a rule allow-lists them.
pub(crate) const SENSITIVE_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Headers whose values are URLs: recorded without userinfo, fragment or query (but for
/// allow-listed parameters), their path redacted like the request's. A rule's header entry
/// adds more (`url: true`).
pub(crate) const URL_HEADERS: [&str; 5] = [
    "referer",
    "origin",
    "location",
    "x-original-url",
    "x-rewrite-url",
];

/// Query parameters whose values are masked even when allow-listed.
pub(crate) const SENSITIVE_QUERY_PARAMS: [&str; 20] = [
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "code",
    "sig",
    "signature",
    "auth",
    "session",
    "sessionid",
    "jwt",
    "x-amz-signature",
];

/// Shorter keys are refused: a pseudonym is only as strong as its key.
pub(crate) const MIN_HASH_KEY_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    Omit,
    Mask,
    Hash,
}

/// The HMAC key and its public id. `Debug` never shows the key.
#[derive(Clone)]
pub struct HashKey {
    key: Vec<u8>,
    /// `k-` and the first 8 hex digits of SHA-256 over a label and the key: names
    /// the key in records (so pseudonyms from different keys are not compared) without revealing it.
    pub id: String,
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HashKey {
    pub fn new(key: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"meshaudit key id\0");
        hasher.update(key);
        let id = format!("k-{}", hex(hasher.finalize().get(..4).unwrap_or_default()));
        Self {
            key: key.to_vec(),
            id,
        }
    }

    /// `hmac-sha256:` and the first 128 bits of HMAC-SHA-256(key, value), in hex.
    pub fn pseudonym(&self, value: &[u8]) -> Vec<u8> {
        let mac = hmac_sha256(&self.key, value);
        format!("hmac-sha256:{}", hex(mac.get(..16).unwrap_or_default())).into_bytes()
    }
}

/// HMAC-SHA-256 (RFC 2104) over `sha2`; small enough not to warrant another dependency.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest = Sha256::digest(key);
        for (dst, src) in block_key.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block_key.iter_mut().zip(key.iter()) {
            *dst = *src;
        }
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| char::from_digit(u32::from(nibble), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0xF));
    }
    out
}

/// Masks a credential: keeps an auth scheme (`Bearer`, `Basic`…) so an auditor
/// sees the kind of credential, plus the length, never the secret itself.
pub(crate) fn mask(value: &[u8]) -> Vec<u8> {
    let scheme = value.split(|&b| b == b' ').next().filter(|s| {
        value.len() > s.len()
            && (1..=16).contains(&s.len())
            && s.iter().all(u8::is_ascii_alphabetic)
    });
    let mut out = Vec::with_capacity(40);
    if let Some(scheme) = scheme {
        out.extend_from_slice(scheme);
        out.push(b' ');
    }
    push_masked(value.len(), &mut out);
    out
}

/// `[masked, N bytes]`: what stands for a value whose length is all a record says of it.
fn push_masked(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(b"[masked, ");
    push_u64(out, len as u64);
    out.extend_from_slice(b" bytes]");
}

/// A placeholder for path segments that match a glob.
#[derive(Debug, Clone)]
pub struct SegmentPlaceholder {
    pub glob: Vec<u8>,
    /// Written as is, e.g. `{user}`.
    pub placeholder: String,
}

/// Validated redaction settings.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// Built-in and operator-listed; lowercase.
    pub sensitive_headers: Vec<String>,
    pub sensitive_header_action: Redact,
    pub hash_key: Option<HashKey>,
    /// Allow-listed query and `;` parameters (lowercase); empty: the query is dropped.
    pub query_params: Vec<String>,
    /// Built-in and operator-listed; lowercase.
    pub sensitive_query_params: Vec<String>,
    /// Names the credential-word pattern does not make sensitive (lowercase).
    pub not_sensitive: Vec<String>,
    pub email_placeholder: bool,
    pub(crate) detectors: Detectors,
    pub segment_placeholders: Vec<SegmentPlaceholder>,
}

/// A header value ready for the record, and whether it is a keyed pseudonym.
pub struct Redacted {
    pub value: Vec<u8>,
    pub hashed: bool,
}

impl Redaction {
    /// Listed, or a credential name by pattern that the operator did not exempt.
    pub fn is_sensitive_header(&self, name: &str) -> bool {
        self.is_sensitive(&self.sensitive_headers, name.as_bytes())
    }

    /// `decoded` the name percent-decoded, in the case it was sent (which splits
    /// `accessToken` into words).
    fn is_sensitive_param(&self, decoded: &[u8]) -> bool {
        self.is_sensitive(&self.sensitive_query_params, decoded)
    }

    /// In `listed`, or a credential name by pattern not in `not_sensitive`; any case.
    fn is_sensitive(&self, listed: &[String], name: &[u8]) -> bool {
        let within = |list: &[String]| list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        within(listed) || (is_credential_name(name) && !within(&self.not_sensitive))
    }

    fn is_allowed_param(&self, decoded: &[u8]) -> bool {
        self.query_params
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(decoded))
    }

    /// The recorded form of a header value, or `None` when it is omitted. Sensitive headers
    /// are never in clear, whatever the rule says; a clear value has its secret shapes
    /// replaced, and a URL (`URL_HEADERS`, or `url` from the rule) is redacted as one.
    pub fn header(
        &self,
        name: &str,
        redact: Option<Redact>,
        url: bool,
        value: Vec<u8>,
    ) -> Option<Redacted> {
        let action = match redact {
            Some(action) => Some(action),
            None if self.is_sensitive_header(name) => Some(self.sensitive_header_action),
            None => None,
        };
        match action {
            None if url || URL_HEADERS.contains(&name) => Some(Redacted {
                value: self.url(&value),
                hashed: false,
            }),
            None => Some(Redacted {
                value: self.scrub(&value).into_owned(),
                hashed: false,
            }),
            Some(Redact::Omit) => None,
            Some(Redact::Mask) => Some(Redacted {
                value: mask(&value),
                hashed: false,
            }),
            // Validation guarantees a key whenever `hash` can be chosen; without one, mask.
            Some(Redact::Hash) => Some(match &self.hash_key {
                Some(key) => Redacted {
                    value: key.pseudonym(&value),
                    hashed: true,
                },
                None => Redacted {
                    value: mask(&value),
                    hashed: false,
                },
            }),
        }
    }

    /// The allow-listed parameters of a query string (without `?`, split on `&` and `;`),
    /// sensitive values masked and secret shapes replaced; `None` when nothing is kept.
    pub fn query(&self, query: &[u8]) -> Option<Vec<u8>> {
        if self.query_params.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut start = 0usize;
        for param in query.split(|&b| b == b'&' || b == b';') {
            // The separator this parameter followed in the query, kept as sent.
            let separator = start.checked_sub(1).and_then(|p| query.get(p)).copied();
            start += param.len() + 1;
            let (raw_name, value) = split_param(param);
            let name = percent_decode_lossy(raw_name);
            if !self.is_allowed_param(&name) {
                continue;
            }
            if !out.is_empty() {
                out.push(separator.unwrap_or(b'&'));
            }
            out.extend_from_slice(raw_name);
            if let Some(value) = value {
                out.push(b'=');
                self.push_param_value(&name, value, &mut out);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// An allow-listed, not sensitive value with its secret shapes replaced; otherwise masked.
    /// `name` percent-decoded.
    fn push_param_value(&self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        if self.is_allowed_param(name) && !self.is_sensitive_param(name) {
            out.extend_from_slice(&self.scrub(value));
        } else {
            push_masked(value.len(), out);
        }
    }

    /// The path with segments that look like personal data replaced by placeholders.
    /// Borrows the path when nothing in it is replaced (the common case: no copy).
    pub fn path<'a>(&self, path: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied_to = 0;
        let mut at = 0;
        for segment in path.split(|&b| b == b'/') {
            if let Some(redacted) = self.segment(segment) {
                let out = out.get_or_insert_with(|| Vec::with_capacity(path.len()));
                out.extend_from_slice(path.get(copied_to..at).unwrap_or_default());
                out.extend_from_slice(&redacted);
                copied_to = at + segment.len();
            }
            at += segment.len() + 1;
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(path.get(copied_to..).unwrap_or_default());
                Cow::Owned(out)
            }
            None => Cow::Borrowed(path),
        }
    }

    /// A segment's recorded form when it differs: a whole-segment placeholder, or its secret
    /// shapes replaced and its `;` parameters redacted like query parameters.
    fn segment(&self, segment: &[u8]) -> Option<Vec<u8>> {
        if segment.is_empty() {
            return None;
        }
        // Lowercase words (most segments): no shape, e-mail or parameter can be in them.
        let plain = segment
            .iter()
            .all(|&b| b.is_ascii_lowercase() || matches!(b, b'-' | b'.' | b'~'));
        let decoded = percent_decode_lossy(segment);
        if !plain && self.email_placeholder && looks_like_email(&decoded) {
            return Some(b"{email}".to_vec());
        }
        if let Some(p) = self
            .segment_placeholders
            .iter()
            .find(|p| segment_matches(&p.glob, &decoded))
        {
            return Some(p.placeholder.as_bytes().to_vec());
        }
        if plain {
            return None;
        }
        let tail_start = segment
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(segment.len());
        let (name, tail) = segment.split_at(tail_start);
        let name = self.scrub(name);
        let mut params = Vec::with_capacity(tail.len());
        for param in tail.split(|&b| b == b';').skip(1) {
            params.push(b';');
            match split_param(param) {
                (raw_name, Some(value)) => {
                    params.extend_from_slice(raw_name);
                    params.push(b'=');
                    self.push_param_value(&percent_decode_lossy(raw_name), value, &mut params);
                }
                (bare, None) => params.extend_from_slice(&self.scrub(bare)),
            }
        }
        if matches!(name, Cow::Borrowed(_)) && params == tail {
            return None;
        }
        let mut out = name.into_owned();
        out.extend_from_slice(&params);
        Some(out)
    }

    /// A value with its secret shapes replaced (`shapes`); looked at percent-decoded, and
    /// written decoded, with `%/?#;&=`, spaces and bytes outside ASCII re-escaped, when a
    /// shape was found in an escaped value.
    fn scrub<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        match percent_decode_lossy(value) {
            Cow::Borrowed(_) => self
                .detectors
                .scrub(value)
                .map_or(Cow::Borrowed(value), Cow::Owned),
            Cow::Owned(decoded) => match self.detectors.scrub(&decoded) {
                Some(scrubbed) => Cow::Owned(percent_encode_reserved(&scrubbed)),
                None => Cow::Borrowed(value),
            },
        }
    }

    /// A URL-valued header: no userinfo, no fragment, the path redacted like the request's,
    /// the query only with allow-listed parameters.
    fn url(&self, value: &[u8]) -> Vec<u8> {
        let value = value.split(|&b| b == b'#').next().unwrap_or_default();
        let (before_query, query) = match value.iter().position(|&b| b == b'?') {
            Some(at) => (value.get(..at).unwrap_or_default(), value.get(at + 1..)),
            None => (value, None),
        };
        let mut out = Vec::with_capacity(value.len());
        let path = match find(before_query, b"://") {
            Some(scheme_end) => {
                let authority_start = scheme_end + 3;
                let rest = before_query.get(authority_start..).unwrap_or_default();
                let authority_len = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                out.extend_from_slice(before_query.get(..authority_start).unwrap_or_default());
                out.extend_from_slice(
                    strip_userinfo(rest.get(..authority_len).unwrap_or_default()).0,
                );
                rest.get(authority_len..).unwrap_or_default()
            }
            None => before_query,
        };
        out.extend_from_slice(&self.path(path));
        if let Some(kept) = query.and_then(|q| self.query(q)) {
            out.push(b'?');
            out.extend_from_slice(&kept);
        }
        out
    }
}

/// An authority without `userinfo@` (RFC 3986), and whether it had one. Envoy strips it
/// from absolute-form targets, not from a `Host` header that carries it.
pub(crate) fn strip_userinfo(authority: &[u8]) -> (&[u8], bool) {
    match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => (authority.get(at + 1..).unwrap_or_default(), true),
        None => (authority, false),
    }
}

/// `name=value` at the first `=`; `name` alone has no value.
fn split_param(param: &[u8]) -> (&[u8], Option<&[u8]>) {
    match param.iter().position(|&b| b == b'=') {
        Some(at) => (param.get(..at).unwrap_or_default(), param.get(at + 1..)),
        None => (param, None),
    }
}

fn percent_encode_reserved(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if matches!(b, b'%' | b'/' | b'?' | b'#' | b';' | b'&' | b'=') || !b.is_ascii_graphic() {
            out.push(b'%');
            out.extend_from_slice(hex(&[b]).as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// `local@domain.tld`, possibly with `;params` after it.
fn looks_like_email(segment: &[u8]) -> bool {
    let Some(at) = segment.iter().position(|&b| b == b'@') else {
        return false;
    };
    let domain = segment.get(at + 1..).unwrap_or_default();
    at > 0
        && domain
            .iter()
            .position(|&b| b == b'.')
            .is_some_and(|dot| dot > 0 && dot + 1 < domain.len())
}

/// Decodes every valid `%XX` (for detection only; invalid escapes stay as they are).
fn percent_decode_lossy(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let decoded = (b == b'%')
            .then(|| {
                let hi = (*input.get(i + 1)? as char).to_digit(16)?;
                let lo = (*input.get(i + 2)? as char).to_digit(16)?;
                u8::try_from(hi * 16 + lo).ok()
            })
            .flatten();
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The built-in redaction: what an empty configuration gives.
    fn builtin() -> Redaction {
        crate::core::config::Settings::from_json(b"{}")
            .unwrap()
            .redaction
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_hide_the_key() {
        let key = HashKey::new(b"0123456789abcdef0123456789abcdef");
        let other = HashKey::new(b"another key of sixteen+ bytes!!");
        let a = key.pseudonym(b"Bearer token-1");
        assert_eq!(a, key.pseudonym(b"Bearer token-1"));
        assert_ne!(a, key.pseudonym(b"Bearer token-2"));
        assert_ne!(a, other.pseudonym(b"Bearer token-1"));
        // Known answers, computed independently (Python's hmac and hashlib).
        assert_eq!(a, b"hmac-sha256:03b06a8e439df6fda46c6f5d6f4b4607");
        assert_eq!(key.id, "k-c674b906");
        assert_ne!(key.id, other.id);
        assert!(!format!("{key:?}").contains("0123456789"));
    }

    #[test]
    fn keeps_the_scheme_and_length_only() {
        assert_eq!(
            mask(b"Bearer eyJhbGciOi.secret"),
            b"Bearer [masked, 24 bytes]"
        );
        assert_eq!(mask(b"session=abcdef"), b"[masked, 14 bytes]");
        // A scheme-looking secret with no credential after it is not kept.
        assert_eq!(mask(b"hunter"), b"[masked, 6 bytes]");
    }

    #[test]
    fn sensitive_headers_are_never_clear() {
        let r = builtin();
        assert_eq!(
            r.header("user-agent", None, false, b"curl".to_vec())
                .unwrap()
                .value,
            b"curl"
        );
        assert_eq!(
            r.header("cookie", None, false, b"a=1".to_vec())
                .unwrap()
                .value,
            b"[masked, 3 bytes]"
        );
        assert!(r
            .header("cookie", Some(Redact::Omit), false, b"a=1".to_vec())
            .is_none());
        // `hash` without a key (validation prevents it) falls back to a mask, not to clear text.
        let h = r
            .header("x-user", Some(Redact::Hash), false, b"jane".to_vec())
            .unwrap();
        assert_eq!(
            (h.value.as_slice(), h.hashed),
            (&b"[masked, 4 bytes]"[..], false)
        );
        let keyed = Redaction {
            hash_key: Some(HashKey::new(b"0123456789abcdef")),
            ..builtin()
        };
        let h = keyed
            .header("x-user", Some(Redact::Hash), false, b"jane".to_vec())
            .unwrap();
        assert!(h.hashed && h.value.starts_with(b"hmac-sha256:"));
    }

    #[test]
    fn query_keeps_only_allow_listed_params_and_masks_secrets() {
        let r = Redaction {
            query_params: vec!["page".into(), "token".into(), "q".into()],
            ..builtin()
        };
        assert_eq!(
            r.query(b"page=2&email=jane%40x.com&TOKEN=abc123&q&Page=3")
                .unwrap(),
            b"page=2&TOKEN=[masked, 6 bytes]&q&Page=3"
        );
        assert_eq!(r.query(b"other=1"), None);
        // Split on `;` too, and credential names by pattern in the case they were sent.
        let r = Redaction {
            query_params: vec![
                "page".into(),
                "accesstoken".into(),
                "x-amz-credential".into(),
            ],
            ..builtin()
        };
        assert_eq!(
            r.query(b"page=1;token=s3cr3t&accessToken=abc&X-Amz-Credential=AKIA%2F1")
                .unwrap(),
            b"page=1&accessToken=[masked, 3 bytes]&X-Amz-Credential=[masked, 8 bytes]"
        );
        assert_eq!(
            builtin().query(b"page=2"),
            None,
            "no allow-list: nothing kept"
        );
    }

    #[test]
    fn personal_data_in_paths_becomes_placeholders() {
        let r = Redaction {
            segment_placeholders: vec![SegmentPlaceholder {
                glob: b"user-*".to_vec(),
                placeholder: "{user}".into(),
            }],
            ..builtin()
        };
        let cases: &[(&str, &str)] = &[
            ("/users/jane@example.com/orders", "/users/{email}/orders"),
            ("/users/jane%40example.com", "/users/{email}"),
            ("/cards/4111-1111-1111-1111", "/cards/{card}"),
            ("/cards/4111-1111-1111-1112", "/cards/{digits}"),
            ("/call/+44 (20) 7946 0958", "/call/{digits}"),
            ("/orders/12345678", "/orders/12345678"),
            ("/profiles/user-42/x", "/profiles/{user}/x"),
            ("/a@b", "/a@b"),
            ("//x/", "//x/"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                String::from_utf8(r.path(path.as_bytes()).into_owned()).unwrap(),
                *expected,
                "{path}"
            );
        }
    }
}
