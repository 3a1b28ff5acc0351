//! RFC 3339 timestamps without a date-time dependency.

/// Appends Unix time in nanoseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
/// Written digit by digit into the record: it runs for every record, and `format!` is slow in Wasm.
pub(crate) fn push_rfc3339_millis(out: &mut Vec<u8>, unix_nanos: u64) {
    let millis = unix_nanos / 1_000_000;
    let secs = millis / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, rem / 3600, 2);
    out.push(b':');
    push_digits(out, (rem % 3600) / 60, 2);
    out.push(b':');
    push_digits(out, rem % 60, 2);
    out.push(b'.');
    push_digits(out, millis % 1000, 3);
    out.push(b'Z');
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, value: u64, width: u32) {
    for position in (0..width).rev() {
        let digit = (value / 10u64.pow(position)) % 10;
        out.push(b'0' + digit as u8);
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn rfc3339_millis(unix_nanos: u64) -> String {
        let mut out = Vec::new();
        push_rfc3339_millis(&mut out, unix_nanos);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:34:56.789
        assert_eq!(
            rfc3339_millis(951_827_696_789_000_000),
            "2000-02-29T12:34:56.789Z"
        );
        // 2026-11-25T17:03:59.123Z
        assert_eq!(
            rfc3339_millis(1_795_626_239_123_456_789),
            "2026-11-25T17:03:59.123Z"
        );
    }
}
