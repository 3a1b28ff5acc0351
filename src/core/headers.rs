//! A whole header map as Envoy serialises it for `proxy_get_header_map_pairs`:
//! `u32 count`, then `count` pairs of `u32 key_len, u32 value_len`, then each
//! key and value followed by a NUL byte; all integers little-endian.
//! Reading the whole map is one host call, cheaper than several single reads.

/// A borrowed view over a serialised header map; malformed input yields fewer (or no) pairs.
#[derive(Debug, Default)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    /// Byte ranges of each key and value inside `bytes`.
    pairs: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

/// Upper bound on pairs decoded, whatever the count field claims.
const MAX_PAIRS: usize = 8192;

impl HeaderMap {
    pub fn from_serialized(bytes: Vec<u8>) -> Self {
        let pairs = decode_ranges(&bytes).unwrap_or_default();
        Self { bytes, pairs }
    }

    /// All `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(k, v)| {
            (
                self.bytes.get(k.clone()).unwrap_or_default(),
                self.bytes.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    /// The name of the `i`-th pair (the `i`-th item of a list, which Envoy serialises as names).
    pub fn key_at(&self, i: usize) -> Option<&[u8]> {
        let (key, _) = self.pairs.get(i)?;
        self.bytes.get(key.clone())
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
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let array: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(array)).ok()
}

type Ranges = Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>;

fn decode_ranges(bytes: &[u8]) -> Option<Ranges> {
    let count = read_u32(bytes, 0)?.min(MAX_PAIRS);
    let mut sizes_at = 4usize;
    let mut data_at = count.checked_mul(8)?.checked_add(4)?;
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = read_u32(bytes, sizes_at)?;
        let value_len = read_u32(bytes, sizes_at + 4)?;
        sizes_at += 8;
        let key = data_at..data_at.checked_add(key_len)?;
        let value_start = key.end.checked_add(1)?;
        let value = value_start..value_start.checked_add(value_len)?;
        data_at = value.end.checked_add(1)?;
        if data_at > bytes.len() {
            return Some(pairs);
        }
        pairs.push((key, value));
    }
    Some(pairs)
}

/// Serialises pairs the way Envoy does; for tests and the fake host.
pub fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
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
