//! The canonical form of a request path, which rules match on.
//!
//! Rules must match the resource the upstream will act on, not the bytes a
//! client chose to send: `/admin` must also catch `//admin`, `/%61dmin`,
//! `/admin;x=1`, `/x/../admin` and `\admin`. Envoy's own normalisation is
//! optional (Istio's default leaves most of these alone), so the plugin
//! canonicalises for itself. When in doubt it leans towards over-matching:
//! an audit rule that fires too often is safer than one an attacker can dodge.

use std::borrow::Cow;

/// How the canonical form treats the ambiguous spellings of a slash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CanonicalOptions {
    /// Decode `%2F` and `%5C` to `/` (many upstreams do), rather than keep them as data.
    pub decode_escaped_slashes: bool,
    /// Treat a literal backslash as `/` (Windows-style servers and some frameworks do).
    pub backslash_is_slash: bool,
}

impl Default for CanonicalOptions {
    fn default() -> Self {
        Self {
            decode_escaped_slashes: true,
            backslash_is_slash: true,
        }
    }
}

/// Splits `:path` into the path and its query string (without `?`, fragment
/// dropped). The query is never recorded raw: it routinely carries tokens and personal data.
pub(crate) fn split_query(raw: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some(at) = raw.iter().position(|&b| b == b'?' || b == b'#') else {
        return (raw, None);
    };
    let path = raw.get(..at).unwrap_or_default();
    let rest = raw.get(at..).unwrap_or_default();
    let query = match rest.strip_prefix(b"?") {
        Some(q) => q.split(|&b| b == b'#').next().unwrap_or_default(),
        None => b"",
    };
    (path, Some(query))
}

/// The canonical path: percent-decoded where decoding cannot change meaning,
/// slashes merged, `;params` removed, `.` and `..` resolved. Idempotent.
pub(crate) fn canonicalize(path: &[u8], options: CanonicalOptions) -> Cow<'_, [u8]> {
    if is_plainly_canonical(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(canonicalize_in_full(path, options))
}

/// The general algorithm, without the fast path.
pub(crate) fn canonicalize_in_full(path: &[u8], options: CanonicalOptions) -> Vec<u8> {
    let decoded = decode_and_unify_slashes(path, options);
    let ends_with_slash = decoded.last() == Some(&b'/');
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = ends_with_slash;
    for segment in decoded.split(|&b| b == b'/') {
        let segment = strip_params(segment);
        match segment {
            b"" => {}
            b"." => trailing_slash = true,
            b".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    // A trailing "." or ".." leaves a directory, as in RFC 3986's remove_dot_segments.
    trailing_slash |= ends_with_slash;
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    out
}

/// Most paths are canonical already: nothing to decode, merge or resolve. Checked
/// in one pass so the routine path skips the general algorithm's allocations.
fn is_plainly_canonical(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut previous = 0u8;
    for &byte in path {
        if matches!(byte, b'%' | b'\\' | b';') || (byte == b'/' && previous == b'/') {
            return false;
        }
        previous = byte;
    }
    // A `.` or `..` segment anywhere.
    !path
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// `;params` (matrix parameters, `;jsessionid=`) are ignored by rules: many servers drop them.
fn strip_params(segment: &[u8]) -> &[u8] {
    match segment.iter().position(|&b| b == b';') {
        Some(at) => segment.get(..at).unwrap_or_default(),
        None => segment,
    }
}

fn decode_and_unify_slashes(path: &[u8], options: CanonicalOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&byte) = path.get(i) {
        if byte == b'%' {
            if let Some(decoded) = path
                .get(i + 1)
                .zip(path.get(i + 2))
                .and_then(|(&hi, &lo)| Some(hex_value(hi)? << 4 | hex_value(lo)?))
            {
                i += 3;
                if is_unreserved(decoded) {
                    out.push(decoded);
                } else if (decoded == b'/' || decoded == b'\\') && options.decode_escaped_slashes {
                    out.push(b'/');
                } else {
                    // Stays encoded, in one spelling: `%2f` and `%2F` are the same resource.
                    out.push(b'%');
                    out.push(hex_digit_upper(decoded >> 4));
                    out.push(hex_digit_upper(decoded & 0xF));
                }
                continue;
            }
            // `%zz` or a trailing `%`: a literal percent sign, spelt as one so
            // that a second pass cannot decode it into something else.
            out.extend_from_slice(b"%25");
            i += 1;
            continue;
        }
        out.push(if byte == b'\\' && options.backslash_is_slash {
            b'/'
        } else {
            byte
        });
        i += 1;
    }
    out
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn hex_digit_upper(nibble: u8) -> u8 {
    match nibble {
        0..=9 => b'0' + nibble,
        _ => b'A' + (nibble - 10),
    }
}

/// A path glob: `*` matches within one segment, `?` one byte of a segment,
/// and a whole segment `**` any number of segments (including none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    segments: Vec<GlobSegment>,
    /// A pattern ending in `/` only matches paths ending in `/`.
    trailing_slash: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GlobSegment {
    AnySegments,
    Pattern(Vec<u8>),
}

impl Glob {
    /// Compiles a glob. The pattern must start with `/`; `**` must stand alone in a segment.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let body = pattern
            .strip_prefix('/')
            .ok_or_else(|| "must start with '/'".to_string())?;
        let trailing_slash = body.ends_with('/') && !body.is_empty();
        let mut segments = Vec::new();
        for segment in body.split('/').filter(|s| !s.is_empty()) {
            if segment == "**" {
                // Consecutive `**` mean the same as one.
                if segments.last() != Some(&GlobSegment::AnySegments) {
                    segments.push(GlobSegment::AnySegments);
                }
            } else if segment.contains("**") {
                return Err(format!(
                    "'**' must be a whole path segment (as in '/a/**/b'), got segment '{segment}'"
                ));
            } else {
                segments.push(GlobSegment::Pattern(segment.as_bytes().to_vec()));
            }
        }
        Ok(Self {
            segments,
            trailing_slash,
        })
    }

    /// Matches a canonical path (no empty segments except a trailing slash).
    pub fn matches(&self, path: &[u8]) -> bool {
        if self.trailing_slash && path.last() != Some(&b'/') {
            return false;
        }
        let path_segments: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|s| !s.is_empty())
            .collect();
        segments_match(&self.segments, &path_segments)
    }
}

/// What the rules' analysis (`request::analysis`, native only) asks of a glob.
#[cfg(not(target_arch = "wasm32"))]
impl Glob {
    /// The bytes every path this glob matches begins with: up to its first wildcard.
    pub(crate) fn literal_prefix(&self) -> Vec<u8> {
        let mut out = vec![b'/'];
        for (i, segment) in self.segments.iter().enumerate() {
            let GlobSegment::Pattern(pattern) = segment else {
                break;
            };
            if i > 0 {
                out.push(b'/');
            }
            match pattern.iter().position(|&b| b == b'*' || b == b'?') {
                Some(wildcard) => {
                    out.extend_from_slice(pattern.get(..wildcard).unwrap_or_default());
                    break;
                }
                None => out.extend_from_slice(pattern),
            }
        }
        out
    }

    /// `Some(base)` when the glob is literal segments and a final `**` (`/api/**`, base
    /// `/api`): it matches `base` and every path under `base/`. `/**` has base `""`.
    pub(crate) fn subtree(&self) -> Option<Vec<u8>> {
        let (last, literal) = self.segments.split_last()?;
        if *last != GlobSegment::AnySegments || self.trailing_slash {
            return None;
        }
        let mut base = Vec::new();
        for segment in literal {
            match segment {
                GlobSegment::Pattern(p) if !p.iter().any(|&b| b == b'*' || b == b'?') => {
                    base.push(b'/');
                    base.extend_from_slice(p);
                }
                _ => return None,
            }
        }
        Some(base)
    }

    /// The pattern as written, up to repeated slashes and `**`.
    pub(crate) fn pattern(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                GlobSegment::AnySegments => out.push_str("**"),
                GlobSegment::Pattern(p) => out.push_str(&String::from_utf8_lossy(p)),
            }
        }
        if self.trailing_slash || out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// Segment-level matching, where `**` is the star.
fn segments_match(pattern: &[GlobSegment], path: &[&[u8]]) -> bool {
    wildcard_match(
        pattern,
        path,
        |segment| *segment == GlobSegment::AnySegments,
        |glob, segment| matches!(glob, GlobSegment::Pattern(g) if segment_matches(g, segment)),
    )
}

/// Byte-level matching inside one segment, where `*` is the star and `?` any one byte.
pub(crate) fn segment_matches(pattern: &[u8], segment: &[u8]) -> bool {
    wildcard_match(
        pattern,
        segment,
        |&b| b == b'*',
        |&pc, &tc| pc == b'?' || pc == tc,
    )
}

/// The classic linear-backtracking wildcard match: correct for one kind of star,
/// and O(pattern × input) at worst, whatever an attacker sends.
fn wildcard_match<P, T>(
    pattern: &[P],
    input: &[T],
    is_star: impl Fn(&P) -> bool,
    matches_one: impl Fn(&P, &T) -> bool,
) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(item) = input.get(t) {
        match pattern.get(p) {
            Some(pat) if is_star(pat) => {
                star = Some((p, t));
                p += 1;
            }
            Some(pat) if matches_one(pat, item) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).unwrap_or_default().iter().all(is_star)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn canon(path: &str) -> String {
        String::from_utf8(canonicalize(path.as_bytes(), CanonicalOptions::default()).into_owned())
            .unwrap()
    }

    #[test]
    fn spellings_of_admin_all_canonicalise_to_admin() {
        for spelling in [
            "/admin",
            "//admin",
            "/%61dmin",
            "/%61%64%6D%69%6e",
            "/admin;x=1",
            "/x/../admin",
            "/./admin",
            "\\admin",
            "/%2Fadmin",
            "/%5cadmin",
            "/x/%2e%2e/admin",
            "/../../admin",
        ] {
            assert_eq!(canon(spelling), "/admin", "spelling {spelling:?}");
        }
    }

    #[test]
    fn keeps_meaningful_escapes_in_one_spelling() {
        assert_eq!(canon("/a%20b"), "/a%20b");
        assert_eq!(canon("/a%2fb/%3f"), "/a/b/%3F");
        let keep = CanonicalOptions {
            decode_escaped_slashes: false,
            backslash_is_slash: false,
        };
        assert_eq!(&*canonicalize(b"/a%2fb\\c", keep), b"/a%2Fb\\c");
        // Invalid escapes are data, not errors: a literal '%' is spelt `%25`.
        assert_eq!(canon("/a%zz/b%"), "/a%25zz/b%25");
        assert_eq!(canon("/a%2"), "/a%252");
        assert_eq!(canon("/%%32%65"), "/%252e");
    }

    #[test]
    fn trailing_slashes_and_dot_segments() {
        assert_eq!(canon(""), "/");
        assert_eq!(canon("/"), "/");
        assert_eq!(canon("/a/"), "/a/");
        assert_eq!(canon("/a/b/.."), "/a/");
        assert_eq!(canon("/a/."), "/a/");
        assert_eq!(canon("/a//b///"), "/a/b/");
        assert_eq!(canon("/a;p/b;q=1"), "/a/b");
    }

    #[test]
    fn canonicalisation_is_idempotent_on_tricky_inputs() {
        for input in [
            "/%252e%252e/a",
            "/a/%2e./b",
            "/.%2e/x",
            "/a;%2F/b",
            "/%%32%65",
            "/a/..;/b",
        ] {
            let once = canonicalize(input.as_bytes(), CanonicalOptions::default());
            let twice = canonicalize(&once, CanonicalOptions::default());
            assert_eq!(once, twice, "input {input:?}");
        }
    }

    #[test]
    fn query_is_split_off() {
        assert_eq!(
            split_query(b"/a?token=x#f"),
            (&b"/a"[..], Some(&b"token=x"[..]))
        );
        assert_eq!(split_query(b"/a#frag?x"), (&b"/a"[..], Some(&b""[..])));
        assert_eq!(split_query(b"/a"), (&b"/a"[..], None));
    }

    #[test]
    fn glob_segments_and_double_star() {
        let g = Glob::new("/api/v1/users/*/roles").unwrap();
        assert!(g.matches(b"/api/v1/users/42/roles"));
        assert!(!g.matches(b"/api/v1/users/42/x/roles"));
        assert!(!g.matches(b"/api/v1/users/roles"));
        let g = Glob::new("/admin/**").unwrap();
        assert!(g.matches(b"/admin"));
        assert!(g.matches(b"/admin/a/b/c"));
        assert!(!g.matches(b"/administrator"));
        let g = Glob::new("/**/secret").unwrap();
        assert!(g.matches(b"/secret"));
        assert!(g.matches(b"/a/b/secret"));
        assert!(!g.matches(b"/a/b/secret/x"));
        let g = Glob::new("/a/**/b/**/c").unwrap();
        assert!(g.matches(b"/a/x/b/y/z/c"));
        assert!(!g.matches(b"/a/x/c"));
        let g = Glob::new("/file-?.t*t").unwrap();
        assert!(g.matches(b"/file-1.txt"));
        assert!(!g.matches(b"/file-12.txt"));
        let g = Glob::new("/dir/").unwrap();
        assert!(g.matches(b"/dir/"));
        assert!(!g.matches(b"/dir"));
    }

    #[test]
    fn glob_rejects_bad_patterns() {
        assert!(Glob::new("admin").is_err());
        assert!(Glob::new("/a**").is_err());
    }

    #[test]
    fn glob_is_linear_on_hostile_input() {
        let g = Glob::new("/*a*a*a*a*a*a*a*b").unwrap();
        let path = format!("/{}", "a".repeat(4000));
        assert!(!g.matches(path.as_bytes()));
        let g = Glob::new("/**/x/**/x/**/y").unwrap();
        let path = "/x".repeat(2000);
        assert!(!g.matches(path.as_bytes()));
    }
}
