//! What never reaches a record in clear.

/// Headers that carry credentials: recorded masked even when a rule allow-lists them.
pub const SENSITIVE_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_HEADERS.contains(&name)
}

/// Masks a credential: keeps an auth scheme (`Bearer`, `Basic`…) so an auditor
/// sees the kind of credential, plus the length, never the secret itself.
pub fn mask(value: &[u8]) -> Vec<u8> {
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
    out.extend_from_slice(format!("[masked, {} bytes]", value.len()).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn keeps_the_scheme_and_length_only() {
        assert_eq!(
            mask(b"Bearer eyJhbGciOi.secret"),
            b"Bearer [masked, 24 bytes]"
        );
        assert_eq!(mask(b"session=abcdef"), b"[masked, 14 bytes]");
        // A scheme-looking secret with no credential after it is not kept.
        assert_eq!(mask(b"hunter"), b"[masked, 6 bytes]");
        assert!(is_sensitive_header("cookie"));
        assert!(!is_sensitive_header("user-agent"));
    }
}
