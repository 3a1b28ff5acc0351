//! The trail's tamper evidence: every record of a worker's stream is sealed with a keyed
//! chain value, and `verify` proves a captured trail complete and untampered.
//!
//! The canonical bytes (the README's "Proving the trail" states the same for third parties):
//! a sealed record is `B,"chain":{"key":"<id>","prev":"<p>","mac":"<m>"}}`, where `B` is the
//! record as encoded without its closing `}`, `<p>` the previous record's `<m>` in the stream
//! (32 zeros for its first), and `<m>` the first 16 bytes, in lowercase hex, of BLAKE3 in keyed
//! mode under the stream's 32-byte key over every byte before `,"mac":"`. `B` holds the stream
//! id and the sequence number, so a record cannot be moved to another place or stream.

// The answers read records natively; none of it is linked into the module.
#[cfg(not(target_arch = "wasm32"))]
pub mod event;
#[cfg(not(target_arch = "wasm32"))]
pub mod policy;
#[cfg(not(target_arch = "wasm32"))]
pub mod summary;
pub mod verify;

use crate::core::redact::hex;
use std::fmt;

/// Bytes of a chain value: 128 bits, the tag length of HMAC-SHA-256-128 (RFC 4868).
pub(crate) const MAC_BYTES: usize = 16;

/// What opens the chain member; what follows it, up to the record's end, is the seal.
pub(crate) const CHAIN_MEMBER: &str = ",\"chain\":{\"key\":\"";
/// Between the key id and the previous chain value.
const PREV_MEMBER: &str = "\",\"prev\":\"";
/// What follows the bytes the chain value covers.
const MAC_MEMBER: &str = ",\"mac\":\"";

/// Longest key id accepted: it is written into every record.
pub(crate) const MAX_KEY_ID_BYTES: usize = 96;

/// The label under which a workload's key is derived from a master key.
const DERIVE_LABEL: &[u8] = b"meshaudit trail key\0";

/// A trail key and its public id. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TrailKey {
    pub id: String,
    key: [u8; 32],
}

impl fmt::Debug for TrailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrailKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a key token was refused; never shows the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Whether a key id's characters are all allowed (`A-Z a-z 0-9 . _ - / @`), and its length.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/@".contains(&b))
}

impl TrailKey {
    /// A key token, `<id>:<64 hex digits>`: what `MESHAUDIT_TRAIL_KEY` and a key-set file hold.
    pub fn parse(token: &str) -> Result<Self, KeyError> {
        // Bytes, not `str` searching: it keeps the module small.
        let token = token.trim_ascii();
        let colon = token
            .bytes()
            .rposition(|b| b == b':')
            .ok_or_else(|| KeyError("is not <key id>:<64 hex digits>".into()))?;
        let (id, hex_key) = (
            token.get(..colon).unwrap_or_default(),
            token.get(colon + 1..).unwrap_or_default(),
        );
        if !valid_key_id(id) {
            return Err(KeyError(format!(
                "key id {id:?} is not 1 to {MAX_KEY_ID_BYTES} of A-Z a-z 0-9 . _ - / @"
            )));
        }
        let key = parse_hex(hex_key)
            .ok_or_else(|| KeyError(format!("key {id:?} is not 64 hex digits (32 bytes)")))?;
        Ok(Self {
            id: id.to_string(),
            key,
        })
    }

    /// The key of one workload, derived from a master key: `<scope>@<master id>`, its key
    /// BLAKE3-keyed(master, "meshaudit trail key\0" ‖ scope). Each sidecar holds only its own;
    /// the verifier, holding the master, derives it from the id in the records.
    pub fn derive(&self, scope: &str) -> Result<Self, KeyError> {
        if scope.contains('@') || scope.contains(':') {
            return Err(KeyError(format!("scope {scope:?} holds '@' or ':'")));
        }
        let id = format!("{scope}@{}", self.id);
        if !valid_key_id(&id) {
            return Err(KeyError(format!(
                "derived key id {id:?} is not 1 to {MAX_KEY_ID_BYTES} of A-Z a-z 0-9 . _ - / @"
            )));
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(DERIVE_LABEL);
        hasher.update(scope.as_bytes());
        Ok(Self {
            id,
            key: *hasher.finalize().as_bytes(),
        })
    }

    /// The token that gives this key to a sidecar (`MESHAUDIT_TRAIL_KEY`).
    pub fn token(&self) -> String {
        format!("{}:{}", self.id, hex(&self.key))
    }

    /// The chain value of a record: over its text up to `,"mac":"`.
    pub(crate) fn mac(&self, covered: &[u8]) -> [u8; MAC_BYTES] {
        let mut out = [0u8; MAC_BYTES];
        for (dst, src) in out
            .iter_mut()
            .zip(blake3::keyed_hash(&self.key, covered).as_bytes())
        {
            *dst = *src;
        }
        out
    }
}

/// Exactly `2 * N` hex digits, either case, as bytes.
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let nibble = |digit: u8| {
        char::from(digit)
            .to_digit(16)
            .and_then(|n| u8::try_from(n).ok())
    };
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = nibble(*high)? << 4 | nibble(*low)?;
    }
    Some(out)
}

/// A stream's chain: its key and the last record's chain value.
#[derive(Debug, Clone)]
pub struct Chain {
    key: TrailKey,
    prev: [u8; MAC_BYTES],
}

/// Bytes the seal adds to a record, beyond the key id.
const SEAL_BYTES: usize =
    CHAIN_MEMBER.len() + 2 * 2 * MAC_BYTES + r#"","prev":"","mac":""}}"#.len();

impl Chain {
    pub fn new(key: TrailKey) -> Self {
        Self {
            key,
            prev: [0; MAC_BYTES],
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key.id
    }

    /// Seals the next record of the stream, `prefix` written before it in the same buffer
    /// (Envoy's log line carries one): `prefix` + the record with its chain member.
    pub fn seal(&mut self, prefix: &str, record: &str) -> String {
        let body = record.strip_suffix('}').unwrap_or(record);
        let mut out =
            String::with_capacity(prefix.len() + body.len() + SEAL_BYTES + self.key.id.len());
        out.push_str(prefix);
        out.push_str(body);
        out.push_str(CHAIN_MEMBER);
        out.push_str(&self.key.id);
        out.push_str(PREV_MEMBER);
        out.push_str(&hex(&self.prev));
        out.push('"');
        let covered = out.get(prefix.len()..).unwrap_or_default();
        let mac = self.key.mac(covered.as_bytes());
        out.push_str(MAC_MEMBER);
        out.push_str(&hex(&mac));
        out.push_str("\"}}");
        self.prev = mac;
        out
    }
}

/// A sealed record split into its body and its seal, as `verify` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seal<'a> {
    pub body: &'a str,
    /// The bytes the chain value covers.
    pub covered: &'a str,
    pub key_id: &'a str,
    pub prev: [u8; MAC_BYTES],
    pub mac: [u8; MAC_BYTES],
}

/// Splits a record at its chain member; `None` when it has none, or a malformed one.
/// The member is the record's last: found from the end, so no value can imitate it
/// (a `"` inside a string value is always escaped).
pub(crate) fn unseal(record: &str) -> Option<Seal<'_>> {
    // From the end, by the seal's fixed shape: `…","prev":"<32>","mac":"<32>"}}`.
    let hex = MAC_BYTES * 2;
    let before_end = record.strip_suffix("\"}}")?;
    let (rest, mac) = before_end.split_at_checked(before_end.len().checked_sub(hex)?)?;
    let covered = rest.strip_suffix(MAC_MEMBER)?;
    let quoted = covered.strip_suffix('"')?;
    let (rest, prev) = quoted.split_at_checked(quoted.len().checked_sub(hex)?)?;
    let rest = rest.strip_suffix(PREV_MEMBER)?;
    // The key id is at most MAX_KEY_ID_BYTES: the member's opening is found near the end.
    let window = rest
        .len()
        .saturating_sub(MAX_KEY_ID_BYTES + CHAIN_MEMBER.len());
    let at = (window..rest.len()).rev().find(|&i| {
        rest.get(i..)
            .is_some_and(|tail| tail.starts_with(CHAIN_MEMBER))
    })?;
    let body = rest.get(..at)?;
    let key_id = rest.get(at + CHAIN_MEMBER.len()..)?;
    if !valid_key_id(key_id) {
        return None;
    }
    Some(Seal {
        body,
        covered,
        key_id,
        prev: parse_hex(prev)?,
        mac: parse_hex(mac)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    pub(crate) const TOKEN: &str =
        "m-2026:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_record_is_valid_json_that_unseals_to_what_was_hashed() {
        let key = TrailKey::parse(TOKEN).unwrap();
        let mut chain = Chain::new(key.clone());
        let first = chain.seal("", r#"{"v":1,"seq":0}"#);
        let second = chain.seal("meshaudit.record ", r#"{"v":1,"seq":1}"#);
        let value: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(value["chain"]["key"], "m-2026");
        assert_eq!(value["chain"]["prev"], "0".repeat(32));
        let a = unseal(&first).unwrap();
        assert_eq!(a.body, r#"{"v":1,"seq":0"#);
        assert_eq!(a.mac, key.mac(a.covered.as_bytes()));
        // Everything before `,"mac":"`, the prev value's closing quote included.
        assert!(a
            .covered
            .ends_with(&format!("\"prev\":\"{}\"", "0".repeat(32))));
        assert!(first[a.covered.len()..].starts_with(",\"mac\":\""));
        let b = unseal(second.strip_prefix("meshaudit.record ").unwrap()).unwrap();
        assert_eq!(b.prev, a.mac, "each record names the one before it");
        assert_eq!(b.mac, key.mac(b.covered.as_bytes()));
        // The capacity was right: one allocation.
        assert!(first.capacity() == first.len());
    }

    #[test]
    fn key_tokens_are_checked_and_never_shown() {
        let key = TrailKey::parse(TOKEN).unwrap();
        assert_eq!(TrailKey::parse(&key.token()).unwrap(), key);
        assert!(!format!("{key:?}").contains("0001020304"));
        for (bad, why) in [
            ("nocolon", "is not <key id>:<64 hex digits>"),
            (":00", "key id \"\" is not"),
            ("a b:00", "key id \"a b\" is not"),
            ("k:0011", "key \"k\" is not 64 hex digits"),
            (&format!("k:{}", "zz".repeat(32)), "is not 64 hex digits"),
        ] {
            let error = TrailKey::parse(bad).unwrap_err().0;
            assert!(error.contains(why), "{bad}: {error}");
            assert!(!error.contains("zzzz"), "the key is never in a message");
        }
    }

    #[test]
    fn derived_keys_differ_by_scope_and_name_their_master() {
        let master = TrailKey::parse(TOKEN).unwrap();
        let a = master.derive("shop/checkout").unwrap();
        let b = master.derive("shop/cart").unwrap();
        assert_eq!(a.id, "shop/checkout@m-2026");
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, master.key);
        assert_eq!(a, master.derive("shop/checkout").unwrap());
        assert!(master.derive("a@b").is_err());
    }

    #[test]
    fn unseal_refuses_what_is_not_a_seal() {
        assert!(unseal(r#"{"v":1}"#).is_none());
        let key = TrailKey::parse(TOKEN).unwrap();
        let sealed = Chain::new(key).seal("", r#"{"v":1}"#);
        assert!(unseal(&sealed[..sealed.len() - 1]).is_none());
        assert!(unseal(&sealed.replace("\"mac\":\"", "\"mac\":\"x")).is_none());
        // A string value that spells the member is escaped, so the real one is still found.
        let tricky = format!(
            "{{\"v\":1,\"x\":{}}}",
            serde_json::to_string(&sealed).unwrap()
        );
        let sealed_tricky = Chain::new(TrailKey::parse(TOKEN).unwrap()).seal("", &tricky);
        assert_eq!(
            unseal(&sealed_tricky).unwrap().body,
            &tricky[..tricky.len() - 1]
        );
    }
}
