//! Credential names by pattern: a header, query or `;` parameter name is sensitive when one
//! of its words is a credential word, so `X-Amz-Security-Token`, `accessToken` and
//! `private_token` are caught without being listed, while `keyword` and `author` are not.
//!
//! Words are split at `-`, `_`, `.` and other punctuation, at a lowercase-to-uppercase step
//! (`accessToken`) and before the last capital of a capital run (`APIKey`: `API`, `Key`).
//! A credential word does not count when the word before it says it is not a secret
//! (`pageToken`, `Idempotency-Key`, `Sec-WebSocket-Key`, `public_key`) or a later word says the
//! name is about the credential rather than the credential itself (`token_type`, `auth_url`).
//! The operator extends the lists (`redaction.sensitive_headers`, `sensitive_query_params`)
//! and exempts names (`redaction.not_sensitive`).

/// Words that make a name sensitive.
const CREDENTIAL_WORDS: [&str; 21] = [
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "key",
    "apikey",
    "signature",
    "sig",
    "credential",
    "credentials",
    "session",
    "auth",
    "cookie",
    "jwt",
    "assertion",
    "bearer",
    "sessionid",
    "jsessionid",
    "phpsessid",
];

/// A word before a credential word that makes it something else: pagination and
/// synchronisation cursors, idempotency and database keys, public halves, protocol nonces.
const NOT_SECRET_BEFORE: [&str; 14] = [
    "page",
    "next",
    "continuation",
    "sync",
    "resume",
    "idempotency",
    "public",
    "sort",
    "partition",
    "primary",
    "foreign",
    "row",
    "websocket",
    "csrf",
];

/// A later word that makes the name describe a credential without carrying one.
const DESCRIBING_AFTER: [&str; 18] = [
    "type",
    "types",
    "name",
    "names",
    "url",
    "uri",
    "endpoint",
    "expires",
    "expiry",
    "expiration",
    "ttl",
    "length",
    "method",
    "methods",
    "scheme",
    "version",
    "algorithm",
    "hint",
];

/// Whether `name` (any case) is a credential name by pattern.
pub(crate) fn is_credential_name(name: &[u8]) -> bool {
    let mut previous: &[u8] = b"";
    let mut credential_at = None;
    for (i, word) in words(name).enumerate() {
        let is = |list: &[&str]| list.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(word));
        if credential_at.is_some() && is(&DESCRIBING_AFTER) {
            credential_at = None;
        }
        if credential_at.is_none()
            && is(&CREDENTIAL_WORDS)
            && !NOT_SECRET_BEFORE
                .iter()
                .any(|w| w.as_bytes().eq_ignore_ascii_case(previous))
        {
            credential_at = Some(i);
        }
        previous = word;
    }
    credential_at.is_some()
}

/// The words of a name, as slices of it.
fn words(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut at = 0;
    std::iter::from_fn(move || {
        while at <= name.len() {
            let b = name.get(at).copied();
            let previous = at.checked_sub(1).and_then(|p| name.get(p)).copied();
            let next = name.get(at + 1).copied();
            let step_up = b.is_some_and(|b| b.is_ascii_uppercase())
                && previous.is_some_and(|p| {
                    p.is_ascii_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
                });
            let ends = !b.is_some_and(|b| b.is_ascii_alphanumeric()) || step_up;
            let word_start = start;
            at += 1;
            if ends {
                // A separator is not part of the next word; a capital starts it.
                start = if step_up { at - 1 } else { at };
                if at - 1 > word_start {
                    return name.get(word_start..at - 1);
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn splits_names_into_words() {
        let split = |name: &str| -> Vec<String> {
            words(name.as_bytes())
                .map(|w| String::from_utf8(w.to_ascii_lowercase()).unwrap())
                .collect()
        };
        assert_eq!(
            split("X-Amz-Security-Token"),
            ["x", "amz", "security", "token"]
        );
        assert_eq!(split("accessToken"), ["access", "token"]);
        assert_eq!(split("APIKey"), ["api", "key"]);
        assert_eq!(split("private_token"), ["private", "token"]);
        assert_eq!(split("oauth2Token"), ["oauth2", "token"]);
        assert_eq!(split("--"), Vec::<String>::new());
    }

    #[test]
    fn credential_words_make_a_name_sensitive() {
        for name in [
            "x-auth-token",
            "x-amz-security-token",
            "x-goog-api-key",
            "api-key",
            "x-access-token",
            "X-Amz-Security-Token",
            "X-Amz-Credential",
            "X-Goog-Signature",
            "accessToken",
            "auth_token",
            "private_token",
            "client_secret",
            "JSESSIONID",
            "sessionid",
            "x-session-id",
            "PASSWORD",
        ] {
            assert!(is_credential_name(name.as_bytes()), "{name}");
        }
        for name in [
            "keyword",
            "author",
            "authority",
            "sec-websocket-key",
            "Idempotency-Key",
            "pageToken",
            "nextPageToken",
            "NextToken",
            "token_type",
            "x-request-id",
            "public_key",
            "monkey",
            "tokenizer",
            "",
        ] {
            assert!(!is_credential_name(name.as_bytes()), "{name}");
        }
    }
}
