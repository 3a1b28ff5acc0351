//! A small JSON line writer for audit records.
//!
//! Not serde_json: its string escaping leaves DEL, C1 controls, U+2028/U+2029
//! and bidi overrides as they are, which line-based shippers and log viewers
//! misread. Here every value is escaped so that one record is always one
//! line of valid JSON, and every string can be capped in bytes.

use super::time::push_rfc3339_millis;
use crate::core::redact::hex;
use std::io::Write as _;

/// Bytes written into a JSON string as they are: printable ASCII but `"` and `\`.
/// A table: one load per byte where the comparisons cost several in Wasm.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated by the compiler: an index out of range would fail the build, not the filter"
)]
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0x20;
    while byte < 0x7f {
        table[byte] = byte != b'"' as usize && byte != b'\\' as usize;
        byte += 1;
    }
    table
};

fn is_plain(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| PLAIN.get(usize::from(b)).copied().unwrap_or(false))
}

/// Text appended to a capped string: the original length lets a reader see how much was cut.
const TRUNCATION_MARKER: &str = "...[truncated, ";

pub(crate) struct JsonWriter {
    /// Bytes, not a `String`: only valid UTF-8 is ever appended, so the text is
    /// checked once in `finish` instead of value by value.
    out: Vec<u8>,
    /// Whether the next value in the current object or array needs a comma before it.
    needs_comma: bool,
}

impl Default for JsonWriter {
    fn default() -> Self {
        // Most records fit: one allocation, no regrowth.
        Self::with_capacity(1024)
    }
}

impl JsonWriter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
            needs_comma: false,
        }
    }

    pub(crate) fn finish(self) -> String {
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn separate(&mut self) {
        if self.needs_comma {
            self.out.push(b',');
        }
        self.needs_comma = true;
    }

    pub(crate) fn begin_object(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.needs_comma = false;
    }

    pub(crate) fn end_object(&mut self) {
        self.out.push(b'}');
        self.needs_comma = true;
    }

    pub(crate) fn begin_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.needs_comma = false;
    }

    pub(crate) fn end_array(&mut self) {
        self.out.push(b']');
        self.needs_comma = true;
    }

    /// Writes an object key that is a constant of the program (hence `'static`):
    /// written as it is, without the check a name from the configuration gets
    /// (`name_key`); a record has some forty keys.
    pub(crate) fn key(&mut self, key: &'static str) {
        debug_assert!(is_plain(key.as_bytes()), "key {key:?} needs escaping");
        self.out.reserve(key.len() + 4);
        if std::mem::replace(&mut self.needs_comma, false) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// Writes an object key from the configuration (a header or rule name). Those are
    /// validated as HTTP tokens or rule names; anything else would still be escaped.
    pub(crate) fn name_key(&mut self, name: &str) {
        self.separate();
        escape_into(&mut self.out, name.as_bytes(), usize::MAX);
        self.out.push(b':');
        self.needs_comma = false;
    }

    pub(crate) fn object_field(&mut self, key: &'static str) {
        self.key(key);
        self.begin_object();
    }

    pub(crate) fn array_field(&mut self, key: &'static str) {
        self.key(key);
        self.begin_array();
    }

    /// A string value from arbitrary bytes, escaped and capped at `cap` input bytes.
    pub(crate) fn bytes_value(&mut self, value: &[u8], cap: usize) {
        self.separate();
        escape_into(&mut self.out, value, cap);
    }

    pub(crate) fn str_value(&mut self, value: &str) {
        self.bytes_value(value.as_bytes(), usize::MAX);
    }

    pub(crate) fn bytes_field(&mut self, key: &'static str, value: &[u8], cap: usize) {
        self.key(key);
        self.bytes_value(value, cap);
    }

    pub(crate) fn str_field(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.str_value(value);
    }

    pub(crate) fn opt_bytes_field(&mut self, key: &'static str, value: Option<&[u8]>, cap: usize) {
        if let Some(value) = value {
            self.bytes_field(key, value, cap);
        }
    }

    pub(crate) fn opt_str_field(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str_field(key, value);
        }
    }

    pub(crate) fn u64_field(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.separate();
        push_u64(&mut self.out, value);
    }

    pub(crate) fn i64_field(&mut self, key: &'static str, value: i64) {
        self.key(key);
        self.separate();
        if value < 0 {
            self.out.push(b'-');
        }
        push_u64(&mut self.out, value.unsigned_abs());
    }

    /// A time as RFC 3339 text in UTC, to the millisecond.
    pub(crate) fn timestamp_field(&mut self, key: &'static str, unix_nanos: u64) {
        self.key(key);
        self.separate();
        self.out.push(b'"');
        push_rfc3339_millis(&mut self.out, unix_nanos);
        self.out.push(b'"');
    }

    pub(crate) fn bool_field(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.separate();
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// Finite numbers only; rates and ratios are always in range when they get here.
    pub(crate) fn f64_field(&mut self, key: &'static str, value: f64) {
        self.key(key);
        self.separate();
        if !value.is_finite() {
            self.out.extend_from_slice(b"null");
        } else if value.fract() == 0.0 && (0.0..1e15).contains(&value) {
            // Whole numbers (a sample rate of 1) as `Display` writes them, without its cost.
            push_u64(&mut self.out, value as u64);
        } else {
            let _ = write!(self.out, "{value}");
        }
    }
}

/// Writes `value` as a quoted JSON string. Invalid UTF-8 bytes are written as
/// the text `\xNN`, so a reader sees exactly which bytes were sent.
fn escape_into(out: &mut Vec<u8>, value: &[u8], cap: usize) {
    let (kept, truncated) = if value.len() > cap {
        (floor_char_boundary(value, cap), true)
    } else {
        (value, false)
    };
    out.reserve(kept.len() + 2);
    out.push(b'"');
    // The common case: printable ASCII with nothing to escape, copied in one go.
    if is_plain(kept) {
        out.extend_from_slice(kept);
    } else {
        push_escaped_bytes(out, kept);
    }
    if truncated {
        out.extend_from_slice(TRUNCATION_MARKER.as_bytes());
        push_u64(out, u64::try_from(value.len()).unwrap_or(u64::MAX));
        out.extend_from_slice(b" bytes]");
    }
    out.push(b'"');
}

/// Escapes arbitrary bytes: valid text escaped where needed, invalid bytes as `\xNN`.
fn push_escaped_bytes(out: &mut Vec<u8>, kept: &[u8]) {
    for chunk in kept.utf8_chunks() {
        push_escaped(out, chunk.valid());
        for byte in chunk.invalid() {
            out.extend_from_slice(b"\\\\x");
            out.extend_from_slice(hex(&[*byte]).as_bytes());
        }
    }
}

/// Decimal digits of `value`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Cuts at most `cap` bytes without splitting a UTF-8 sequence (invalid bytes count as one).
fn floor_char_boundary(value: &[u8], cap: usize) -> &[u8] {
    let mut end = cap.min(value.len());
    // A UTF-8 continuation byte is 0b10xx_xxxx; step back over at most 3 of them.
    let mut steps = 0;
    while end > 0 && steps < 3 && value.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end -= 1;
        steps += 1;
    }
    value.get(..end).unwrap_or_default()
}

/// Appends valid text, copying runs that need no escape in one go (the common case).
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        // Only these bytes can start a character that needs escaping; other
        // non-ASCII characters are checked one by one below.
        if byte >= 0x20 && byte != b'"' && byte != b'\\' && byte < 0x7f {
            continue;
        }
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: its character was handled at its lead byte
        }
        let Some(ch) = text.get(i..).and_then(|rest| rest.chars().next()) else {
            continue;
        };
        if byte >= 0x80 && !needs_unicode_escape(ch) {
            continue;
        }
        out.extend_from_slice(text.get(start..i).unwrap_or_default().as_bytes());
        escape_char(out, ch);
        start = i + ch.len_utf8();
    }
    out.extend_from_slice(text.get(start..).unwrap_or_default().as_bytes());
}

fn escape_char(out: &mut Vec<u8>, ch: char) {
    match ch {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if needs_unicode_escape(c) => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(b"\\u");
                out.extend_from_slice(hex(&unit.to_be_bytes()).as_bytes());
            }
        }
        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

/// Characters that are valid JSON but break lines, terminals or the reading order in viewers.
fn needs_unicode_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'          // C0 controls
        | '\u{7f}'..='\u{9f}'       // DEL and C1 controls
        | '\u{200e}' | '\u{200f}'   // left-to-right / right-to-left marks
        | '\u{2028}' | '\u{2029}'   // line and paragraph separators
        | '\u{202a}'..='\u{202e}'   // bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}'   // bidi isolates
        | '\u{feff}'                // byte-order mark
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn encode(value: &[u8], cap: usize) -> String {
        let mut w = JsonWriter::default();
        w.bytes_value(value, cap);
        w.finish()
    }

    #[test]
    fn escapes_what_breaks_lines_and_viewers() {
        let input = "a\"b\\c\nd\re\u{7f}f\u{85}g\u{2028}h\u{202e}i\u{0}".as_bytes();
        let out = encode(input, usize::MAX);
        assert_eq!(out, r#""a\"b\\c\nd\re\u007ff\u0085g\u2028h\u202ei\u0000""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back.as_bytes(), input);
    }

    #[test]
    fn invalid_utf8_is_shown_as_hex_text() {
        let out = encode(b"ok\xff\xfe!", usize::MAX);
        assert_eq!(out, r#""ok\\xff\\xfe!""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "ok\\xff\\xfe!");
    }

    #[test]
    fn caps_at_a_char_boundary_and_says_the_original_length() {
        // "é" is two bytes: a cap of 2 must not split it.
        let out = encode("aéb".as_bytes(), 2);
        assert_eq!(out, r#""a...[truncated, 4 bytes]""#);
        assert_eq!(encode(b"abc", 3), r#""abc""#);
    }

    #[test]
    fn numbers_read_back_as_written() {
        for n in [0, 7, 10, 1_000_000, u64::MAX] {
            let mut w = JsonWriter::default();
            w.begin_object();
            w.u64_field("n", n);
            w.end_object();
            let back: serde_json::Value = serde_json::from_str(&w.finish()).unwrap();
            assert_eq!(back["n"].as_u64(), Some(n));
        }
        for (rate, text) in [
            (1.0, "1"),
            (0.01, "0.01"),
            (0.5, "0.5"),
            (0.0, "0"),
            (3.0, "3"),
        ] {
            let mut w = JsonWriter::default();
            w.begin_object();
            w.f64_field("r", rate);
            w.end_object();
            assert_eq!(w.finish(), format!(r#"{{"r":{text}}}"#), "{rate}");
        }
        assert_eq!(encode(b"\x01\xc2\x85", usize::MAX), r#""\u0001\u0085""#);
    }

    #[test]
    fn builds_nested_objects_with_commas() {
        let mut w = JsonWriter::default();
        w.begin_object();
        w.u64_field("n", 7);
        w.object_field("o");
        w.str_field("s", "x");
        w.bool_field("b", true);
        w.end_object();
        w.array_field("a");
        w.str_value("p");
        w.str_value("q");
        w.end_array();
        w.f64_field("r", 0.25);
        w.f64_field("nan", f64::NAN);
        w.end_object();
        let line = w.finish();
        assert_eq!(
            line,
            r#"{"n":7,"o":{"s":"x","b":true},"a":["p","q"],"r":0.25,"nan":null}"#
        );
        serde_json::from_str::<serde_json::Value>(&line).unwrap();
    }

    #[test]
    fn names_from_the_configuration_are_escaped_as_keys() {
        let mut w = JsonWriter::default();
        w.begin_object();
        w.str_field("k", "v");
        w.name_key("x-api-key");
        w.str_value("1");
        w.name_key("odd\"name\n");
        w.begin_object();
        w.end_object();
        w.end_object();
        let line = w.finish();
        assert_eq!(line, r#"{"k":"v","x-api-key":"1","odd\"name\n":{}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(parsed["odd\"name\n"].is_object());
    }
}
