//! Envoy's response flags (`response.flags`, `%RESPONSE_FLAGS%`), decoded to their short names.

/// Short names by bit position, in the order of Envoy's `CoreResponseFlag` enum (1.40).
const SHORT_NAMES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// The short names of the set bits; a bit this version does not know is written as `bitN`.
pub(crate) fn short_names(flags: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| flags & (1u64 << bit) != 0)
        .map(|bit| match SHORT_NAMES.get(bit) {
            Some(name) => (*name).to_string(),
            None => format!("bit{bit}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn decodes_known_and_unknown_bits() {
        assert!(short_names(0).is_empty());
        assert_eq!(short_names(1 << 11), ["RL"], "a rate limiter refused");
        assert_eq!(
            short_names(0b10 | 1 << 12 | 1 << 40),
            ["UH", "UAEX", "bit40"]
        );
    }
}
