//! A whole header map as Envoy serialises it for `proxy_get_header_map_pairs`:
//! `u32 count`, then `count` pairs of `u32 key_len, u32 value_len`, then each
//! key and value followed by a NUL byte; all integers little-endian.
//! Reading the whole map is one host call, cheaper than several single reads.

/// A view over a serialised header map, read in place (no index is built: the
/// routine path walks it once); malformed input yields fewer (or no) pairs.
#[derive(Debug, Default)]
pub struct HeaderMap {
    bytes: Vec<u8>,
}

/// Upper bound on pairs decoded, whatever the count field claims.
const MAX_PAIRS: usize = 8192;

impl HeaderMap {
    pub fn from_serialized(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// All `(name, value)` pairs, in order.
    pub fn iter(&self) -> Pairs<'_> {
        let count = read_u32(&self.bytes, 0).unwrap_or(0).min(MAX_PAIRS);
        Pairs {
            bytes: &self.bytes,
            remaining: count,
            sizes_at: 4,
            data_at: count.saturating_mul(8).saturating_add(4),
        }
    }

    /// The name of the `i`-th pair (the `i`-th item of a list, which Envoy serialises as names).
    pub fn key_at(&self, i: usize) -> Option<&[u8]> {
        self.iter().nth(i).map(|(key, _)| key)
    }

    /// The first value of `name` (Envoy keeps names lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// The pairs of a `HeaderMap`: the sizes come first, then each name and value, NUL-terminated.
pub struct Pairs<'a> {
    bytes: &'a [u8],
    remaining: usize,
    sizes_at: usize,
    data_at: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let pair = self.decode_next();
        // A malformed pair ends the map.
        self.remaining = if pair.is_some() {
            self.remaining - 1
        } else {
            0
        };
        pair
    }
}

impl<'a> Pairs<'a> {
    fn decode_next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let key_len = read_u32(self.bytes, self.sizes_at)?;
        let value_len = read_u32(self.bytes, self.sizes_at.checked_add(4)?)?;
        let key_end = self.data_at.checked_add(key_len)?;
        let value_start = key_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let key = self.bytes.get(self.data_at..key_end)?;
        let value = self.bytes.get(value_start..value_end)?;
        // The value's NUL terminator must be there too.
        self.bytes.get(value_end)?;
        self.sizes_at += 8;
        self.data_at = value_end + 1;
        Some((key, value))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let array: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(array)).ok()
}

/// Serialises pairs the way Envoy does; for tests and the fake host.
pub fn serialize<K: AsRef<[u8]>>(pairs: &[(K, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (k, v) in pairs {
        let k = k.as_ref();
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trips_including_binary_and_repeated_names() {
        let bytes = serialize(&[
            (":path", b"/a"),
            ("cookie", b"a=1"),
            ("x", b"\xff\x00y"),
            ("cookie", b"b=2"),
        ]);
        let map = HeaderMap::from_serialized(bytes);
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(":path"), Some(&b"/a"[..]));
        assert_eq!(map.get("x"), Some(&b"\xff\x00y"[..]));
        assert_eq!(
            map.get_all("cookie").collect::<Vec<_>>(),
            [&b"a=1"[..], b"b=2"]
        );
        assert_eq!(map.get("missing"), None);
    }

    #[test]
    fn malformed_input_never_panics() {
        for bytes in [
            vec![],
            vec![1, 0, 0],
            vec![255, 255, 255, 255],
            vec![1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0],
            vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', 0, b'b', 0],
        ] {
            let map = HeaderMap::from_serialized(bytes);
            assert!(map.len() <= 1);
        }
        let truncated = serialize(&[("a", b"1"), ("b", b"2")]);
        let map = HeaderMap::from_serialized(truncated[..truncated.len() - 2].to_vec());
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("a"), Some(&b"1"[..]));
    }
}
