//! Every reading of a request a real upstream could act on, and where they disagree.
//!
//! A rule is only as strong as the plugin's reading of the request agrees with the
//! upstream's. So a rule matches when any plausible reading matches it: the method from the
//! request line, from every method-override header and from a `_method` query parameter
//! (Symfony and Laravel read it from the query too; one in a POST body is beyond what the
//! plugin reads); the path from `:path` and from the headers some frameworks and IIS-fronted
//! applications route on (`X-Original-URL`, `X-Rewrite-URL`, the class of CVE-2018-14773); the
//! host as a DNS name (case, one trailing dot and the port ignored, as nginx and most upstreams
//! do). Each reading can only make a rule match more, never less: over-matching is the safe
//! side for an audit. A request whose readings disagree is ambiguous, and says how
//! (`request.ambiguities`). All of it is worked out from the header map already read.

use super::inputs::KnownHeaders;
use crate::core::envoy::identity::dns_name;
use crate::core::path::{canonicalize, split_query, CanonicalOptions};

/// The kinds of ambiguity, in the order of their bits.
const AMBIGUITY_CODES: [&str; 10] = [
    "method_override_conflict",
    "method_override_not_post",
    "method_in_query",
    "routing_header",
    "host_trailing_dot",
    "path_semicolon",
    "path_encoded_slash",
    "path_backslash",
    "path_dot_segment",
    "authority_userinfo",
];

const METHOD_OVERRIDE_CONFLICT: u16 = 1;
const METHOD_OVERRIDE_NOT_POST: u16 = 1 << 1;
const METHOD_IN_QUERY: u16 = 1 << 2;
const ROUTING_HEADER: u16 = 1 << 3;
const HOST_TRAILING_DOT: u16 = 1 << 4;
const PATH_SEMICOLON: u16 = 1 << 5;
const PATH_ENCODED_SLASH: u16 = 1 << 6;
const PATH_BACKSLASH: u16 = 1 << 7;
const PATH_DOT_SEGMENT: u16 = 1 << 8;
const AUTHORITY_USERINFO: u16 = 1 << 9;

/// How a request's readings disagree (`request.ambiguities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ambiguities(u16);

impl Ambiguities {
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// With the path's own ambiguities, when they were not worked out before matching.
    pub(crate) fn with_path(self, path: &[u8]) -> Self {
        Self(self.0 | path_ambiguities(path))
    }

    /// The codes, in a fixed order.
    pub(crate) fn codes(self) -> impl Iterator<Item = &'static str> {
        AMBIGUITY_CODES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, code)| *code)
    }
}

/// Where an override method comes from, in the order of `Readings::method_overrides`.
pub(crate) const OVERRIDE_SOURCES: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "_method",
];

/// The routing headers, in the order of `Readings::routing_paths` sources (`KnownHeaders::routing`).
pub(crate) const ROUTING_SOURCES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// A path a routing header names.
#[derive(Debug)]
pub(crate) struct RoutedPath<'a> {
    /// The header (`ROUTING_SOURCES`).
    pub source: &'static str,
    /// Its value as sent.
    pub sent: &'a [u8],
    /// The canonical form of its path, which rules match.
    pub canonical: Vec<u8>,
}

/// The readings of one request beyond its request line.
#[derive(Debug, Default)]
pub(super) struct Readings<'a> {
    /// Methods the overrides name, by `OVERRIDE_SOURCES`.
    pub method_overrides: [Option<&'a [u8]>; 4],
    /// The paths the routing headers that were sent name.
    pub routing_paths: Vec<RoutedPath<'a>>,
    pub ambiguities: Ambiguities,
}

impl<'a> Readings<'a> {
    /// `path` and `query`: `:path` split; `canonical`: the path's canonical form. The
    /// path's own ambiguities (a scan of it) only with `scan_path`: rules need them only
    /// when one matches on ambiguity, and a record adds them (`with_path`).
    pub(super) fn of(
        known: &KnownHeaders<'a>,
        (path, query): (&[u8], Option<&'a [u8]>),
        canonical: &[u8],
        options: CanonicalOptions,
        scan_path: bool,
    ) -> Self {
        let mut bits = if scan_path { path_ambiguities(path) } else { 0 };
        let [a, b, c] = known.method_overrides;
        let in_query = query.and_then(method_in_query);
        let method_overrides = [a, b, c, in_query];
        let mut first: Option<&[u8]> = None;
        for method in method_overrides.iter().flatten() {
            match first {
                None => first = Some(method),
                Some(seen) if !seen.eq_ignore_ascii_case(method) => {
                    bits |= METHOD_OVERRIDE_CONFLICT;
                }
                Some(_) => {}
            }
        }
        if first.is_some() && known.method.is_none_or(|m| m != b"POST") {
            bits |= METHOD_OVERRIDE_NOT_POST;
        }
        if in_query.is_some() {
            bits |= METHOD_IN_QUERY;
        }
        let mut routing_paths = Vec::new();
        for (source, header) in ROUTING_SOURCES.iter().zip(known.routing) {
            let Some(sent) = header else { continue };
            let routed = canonicalize(routed_path(sent), options).into_owned();
            if routed != canonical {
                bits |= ROUTING_HEADER;
            }
            routing_paths.push(RoutedPath {
                source,
                sent,
                canonical: routed,
            });
        }
        if known.authority.is_some_and(|a| dns_name(a).1) {
            bits |= HOST_TRAILING_DOT;
        }
        if known.authority_userinfo {
            bits |= AUTHORITY_USERINFO;
        }
        Self {
            method_overrides,
            routing_paths,
            ambiguities: Ambiguities(bits),
        }
    }
}

/// `_method` in a query string, as frameworks that honour it read it (the first one).
fn method_in_query(query: &[u8]) -> Option<&[u8]> {
    query
        .split(|&b| b == b'&')
        .find_map(|param| param.strip_prefix(b"_method="))
        .filter(|method| !method.is_empty())
}

/// The path a routing header names: a path, or an absolute URL's path; without its query.
fn routed_path(value: &[u8]) -> &[u8] {
    let without_scheme = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        value
            .get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .and_then(|_| value.get(scheme.len()..))
    });
    let path = match without_scheme {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'/')
            .and_then(|at| rest.get(at..))
            .unwrap_or(b"/"),
        None => value,
    };
    split_query(path).0
}

/// The spellings upstreams split on, where the canonical form differs from what was sent.
fn path_ambiguities(path: &[u8]) -> u16 {
    let mut bits = 0;
    if path.contains(&b';') {
        bits |= PATH_SEMICOLON;
    }
    if path.contains(&b'\\') {
        bits |= PATH_BACKSLASH;
    }
    let escapes = path.windows(3).filter(|w| w.first() == Some(&b'%'));
    for escape in escapes {
        if escape.eq_ignore_ascii_case(b"%2f") || escape.eq_ignore_ascii_case(b"%5c") {
            bits |= PATH_ENCODED_SLASH;
        }
    }
    let is_dot = |segment: &[u8]| {
        let mut rest = segment;
        let mut dots = 0;
        while !rest.is_empty() {
            if let Some(tail) = rest.strip_prefix(b".") {
                rest = tail;
            } else if rest
                .get(..3)
                .is_some_and(|e| e.eq_ignore_ascii_case(b"%2e"))
            {
                rest = rest.get(3..).unwrap_or_default();
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    };
    if path
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| is_dot(segment.split(|&b| b == b';').next().unwrap_or_default()))
    {
        bits |= PATH_DOT_SEGMENT;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::headers::{serialize, HeaderMap};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn readings(headers: &[(&str, &str)]) -> Vec<&'static str> {
        let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let map = HeaderMap::from_serialized(serialize(&pairs));
        let known = KnownHeaders::find(&map);
        let (path, query) = split_query(known.path.unwrap_or_default());
        let options = CanonicalOptions::default();
        let canonical = canonicalize(path, options);
        let scanned = Readings::of(&known, (path, query), &canonical, options, true).ambiguities;
        let later = Readings::of(&known, (path, query), &canonical, options, false).ambiguities;
        assert_eq!(
            later.with_path(path),
            scanned,
            "a record says the same either way"
        );
        scanned.codes().collect()
    }

    fn get(path: &str) -> Vec<&'static str> {
        readings(&[
            (":method", "GET"),
            (":path", path),
            (":authority", "api.example.com"),
        ])
    }

    #[test]
    fn plain_requests_are_not_ambiguous() {
        for path in [
            "/admin/users",
            "/a/b.c/d",
            "/...",
            "/a/.hidden",
            "/%41dmin",
            "/a?x=..;y",
        ] {
            assert_eq!(get(path), Vec::<&str>::new(), "{path}");
        }
    }

    #[test]
    fn path_spellings_upstreams_split_on() {
        assert_eq!(get("/admin;jsessionid=1/x"), ["path_semicolon"]);
        assert_eq!(get("/api%2Fadmin"), ["path_encoded_slash"]);
        assert_eq!(get("/api%5cadmin"), ["path_encoded_slash"]);
        assert_eq!(get("/api\\admin"), ["path_backslash"]);
        for dots in [
            "/x/../admin",
            "/./admin",
            "/x/%2e%2e/admin",
            "/x/.%2E/admin",
            "/x/..;/admin",
        ] {
            assert!(get(dots).contains(&"path_dot_segment"), "{dots}");
        }
    }

    #[test]
    fn method_tunnels() {
        let with = |method: &str, path: &str, extra: &[(&str, &str)]| {
            let mut headers = vec![(":method", method), (":path", path)];
            headers.extend_from_slice(extra);
            readings(&headers)
        };
        assert_eq!(
            with("POST", "/x", &[("x-http-method-override", "DELETE")]),
            Vec::<&str>::new()
        );
        assert_eq!(
            with(
                "POST",
                "/x",
                &[
                    ("x-http-method-override", "GET"),
                    ("x-http-method", "DELETE")
                ]
            ),
            ["method_override_conflict"]
        );
        assert_eq!(
            with(
                "POST",
                "/x",
                &[
                    ("x-http-method-override", "delete"),
                    ("x-http-method", "DELETE")
                ]
            ),
            Vec::<&str>::new(),
            "the same method in two spellings"
        );
        assert_eq!(
            with("GET", "/x", &[("x-method-override", "DELETE")]),
            ["method_override_not_post"]
        );
        assert_eq!(with("POST", "/x?_method=DELETE", &[]), ["method_in_query"]);
        assert_eq!(
            with(
                "POST",
                "/x?a=1&_method=PUT",
                &[("x-http-method-override", "DELETE")]
            ),
            ["method_override_conflict", "method_in_query"]
        );
        assert_eq!(
            with("POST", "/x?_methods=PUT&x_method=1", &[]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn routing_headers_and_hosts() {
        let with = |extra: &[(&str, &str)]| {
            let mut headers = vec![(":method", "GET"), (":path", "/public")];
            headers.extend_from_slice(extra);
            readings(&headers)
        };
        assert_eq!(
            with(&[("x-original-url", "/admin/users")]),
            ["routing_header"]
        );
        assert_eq!(
            with(&[("x-rewrite-url", "http://h/admin?x=1")]),
            ["routing_header"]
        );
        assert_eq!(with(&[("x-original-url", "/public")]), Vec::<&str>::new());
        assert_eq!(
            with(&[("x-original-url", "//public/./")]),
            ["routing_header"]
        );
        assert_eq!(
            with(&[(":authority", "api.example.com.")]),
            ["host_trailing_dot"]
        );
        assert_eq!(
            with(&[(":authority", "API.example.com.:443")]),
            ["host_trailing_dot"]
        );
        assert_eq!(
            with(&[(":authority", "api.example.com:443")]),
            Vec::<&str>::new()
        );
        assert_eq!(routed_path(b"HTTPS://h:1/a/b?c"), b"/a/b");
        assert_eq!(routed_path(b"http://h"), b"/");
        assert_eq!(routed_path(b"/a#f"), b"/a");
    }
}
