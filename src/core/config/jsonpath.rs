//! The JSON path of a parse error, from the position serde_json reports.
//!
//! serde_json says where it stopped (line, column); this walks the text up to
//! there and names the value it was in, like `rules[2].action`. It replaces a
//! path-tracking deserializer, which doubled the size of every configuration
//! deserializer in the `.wasm`.

enum Frame {
    Object { key: Option<String> },
    Array { index: usize, started: bool },
}

/// The path of the value at (`line`, `column`) (1-based, bytes), or `""` for the document.
pub(crate) fn path_at(text: &[u8], line: usize, column: usize) -> String {
    let Some(end) = offset(text, line, column) else {
        return String::new();
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < end {
        let Some(&byte) = text.get(i) else { break };
        match byte {
            b'{' | b'[' => {
                start_value(&mut stack);
                if byte == b'{' {
                    stack.push(Frame::Object { key: None });
                    expect_key = true;
                } else {
                    stack.push(Frame::Array {
                        index: 0,
                        started: false,
                    });
                }
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { key }) => {
                        *key = None;
                        expect_key = true;
                    }
                    Some(Frame::Array { index, started }) => {
                        *index += 1;
                        *started = false;
                    }
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let close = string_end(text, i + 1);
                if expect_key {
                    if let Some(Frame::Object { key }) = stack.last_mut() {
                        let raw = text.get(i + 1..close.min(text.len())).unwrap_or_default();
                        *key = Some(String::from_utf8_lossy(raw).into_owned());
                    }
                    expect_key = false;
                } else {
                    start_value(&mut stack);
                }
                i = close + 1;
            }
            b if b.is_ascii_whitespace() || b == b':' => i += 1,
            _ => {
                // A number or a literal: one value.
                start_value(&mut stack);
                while text
                    .get(i)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    i += 1;
                }
            }
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(key) } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Array {
                index,
                started: true,
            } => path.push_str(&format!("[{index}]")),
            _ => {}
        }
    }
    path
}

/// A value starts in the innermost container: in an array, that is its current element.
fn start_value(stack: &mut [Frame]) {
    if let Some(Frame::Array { started, .. }) = stack.last_mut() {
        *started = true;
    }
}

/// The index of the quote closing a string whose content starts at `from`.
fn string_end(text: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(&b) = text.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    text.len()
}

/// The byte offset just after (`line`, `column`).
fn offset(text: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut line_start = 0;
    for _ in 1..line {
        line_start += text.get(line_start..)?.iter().position(|&b| b == b'\n')? + 1;
    }
    Some((line_start + column).min(text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_the_value_at_the_position() {
        let text = br#"{"rules": [{"name": "a\"b", "action": "audt"}]}"#;
        // Just after "audt".
        assert_eq!(path_at(text, 1, 44), "rules[0].action");
        // On the closing brace of the rule.
        assert_eq!(path_at(text, 1, 45), "rules[0]");
        assert_eq!(path_at(b"[", 1, 1), "");
        assert_eq!(path_at(b"{\n  \"a\": [1,\n  2.5]}", 3, 5), "a[1]");
        assert_eq!(path_at(b"{}", 0, 0), "");
    }
}
