//! Secrets and personal data recognised by their shape, wherever they sit in a path segment,
//! a query or `;` parameter value or a recorded header value: each is replaced by a typed
//! placeholder. One left-to-right pass, linear in the input: every detector starts at a
//! position the pass has not yet consumed and either consumes what it recognised or lets
//! the pass move on past the run it looked at.
//!
//! What each detector takes (README, "What is never logged"):
//! - `{jwt}`: `eyJ…` then two `.`-separated base64url parts (the signature may be empty);
//! - `{token}`: a well-known key format (`KEY_PREFIXES`); a run of `min_token_chars`+ hex
//!   digits in one case, with letters and digits; or a base64url word of `min_token_chars`+
//!   characters with letters and digits, not all hex and not a slug;
//! - `{iban}`: a country code, check digits and 11–30 letters or digits, compact or in groups
//!   of four, whose ISO 7064 mod-97 checksum holds;
//! - `{card}`: 13–19 digits, spaces or hyphens between them, that pass the Luhn check;
//! - `{digits}`: any other run of `min_digits`+ digits with the separators people type in
//!   phone and account numbers (`-`, `.`, space, `(`, `)`, `+`).
//!
//! Kept: UUIDs, typed hex ids (one or two capitals and lowercase hex: Twilio's SIDs), dotted
//! IPv4 addresses, digits next to a hex letter (part of an object id or a short hash), and
//! anything shorter than the thresholds.

/// What a run was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Jwt,
    Token,
    Iban,
    Card,
    Digits,
}

impl Shape {
    pub(crate) fn placeholder(self) -> &'static str {
        match self {
            Shape::Jwt => "{jwt}",
            Shape::Token => "{token}",
            Shape::Iban => "{iban}",
            Shape::Card => "{card}",
            Shape::Digits => "{digits}",
        }
    }
}

/// Key formats that name their issuer: (prefix, fewest characters after it). All take
/// base64url characters after the prefix.
const KEY_PREFIXES: [(&[u8], usize); 17] = [
    (b"AKIA", 16), // AWS access key id
    (b"ASIA", 16), // AWS temporary access key id
    (b"ghp_", 30), // GitHub personal, OAuth, user, server and refresh tokens
    (b"gho_", 30),
    (b"ghu_", 30),
    (b"ghs_", 30),
    (b"ghr_", 30),
    (b"github_pat_", 22),
    (b"glpat-", 20), // GitLab personal access token
    (b"xoxb-", 10),  // Slack bot, user, app and refresh tokens
    (b"xoxp-", 10),
    (b"xoxa-", 10),
    (b"xoxr-", 10),
    (b"sk_live_", 16), // Stripe secret and restricted keys
    (b"rk_live_", 16),
    (b"AIza", 35), // Google API key
    (b"npm_", 36), // npm access token
];

/// The settings the detectors take (`redaction` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Detectors {
    /// JWTs, key formats, tokens, IBANs and cards.
    pub secrets: bool,
    pub min_token_chars: usize,
    /// 0: digit runs are kept.
    pub min_digits: usize,
}

/// A base64url character: what tokens and JWT parts are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn run_end(input: &[u8], from: usize, part_of: impl Fn(u8) -> bool) -> usize {
    input
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| !part_of(b)))
        .map_or(input.len(), |n| from + n)
}

impl Detectors {
    /// `input` with every recognised run replaced by its placeholder; `None` when nothing was.
    pub(crate) fn scrub(&self, input: &[u8]) -> Option<Vec<u8>> {
        if !self.may_hold_a_shape(input) {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut at = 0;
        while let Some(&b) = input.get(at) {
            let previous = at.checked_sub(1).and_then(|p| input.get(p)).copied();
            match self.step(input, at, b, previous) {
                Step::Found(shape, end) => {
                    let out = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
                    out.extend_from_slice(input.get(copied..at).unwrap_or_default());
                    out.extend_from_slice(shape.placeholder().as_bytes());
                    copied = end;
                    at = end;
                }
                Step::Skip(next) => at = next.max(at + 1),
            }
        }
        let mut out = out?;
        out.extend_from_slice(input.get(copied..).unwrap_or_default());
        Some(out)
    }

    /// One cheap pass: every shape needs a word of 10+ base64url characters (a JWT's header is
    /// the shortest) or enough digits (an IBAN has at least 9), so most values are passed over.
    fn may_hold_a_shape(&self, input: &[u8]) -> bool {
        let digits_needed = match self.min_digits {
            0 => 9,
            n => n.min(9),
        };
        let (mut digits, mut run) = (0, 0);
        for &b in input {
            digits += usize::from(b.is_ascii_digit());
            run = if is_token_byte(b) { run + 1 } else { 0 };
            if run >= 10 || digits >= digits_needed {
                return true;
            }
        }
        false
    }

    fn step(&self, input: &[u8], at: usize, b: u8, previous: Option<u8>) -> Step {
        let in_word = previous.is_some_and(is_token_byte);
        if is_token_byte(b) && !in_word {
            if let Some(step) = self.word(input, at) {
                return step;
            }
        }
        // A JWT, a key or an IBAN after a `-` or `_` inside a word (`iban-DE89…`).
        if self.secrets && in_word && previous.is_some_and(|p| !p.is_ascii_alphanumeric()) {
            let end = run_end(input, at, is_token_byte);
            if let Some(end) = jwt(input, at, end) {
                return Step::Found(Shape::Jwt, end);
            }
            if has_key_prefix(input.get(at..end).unwrap_or_default()) {
                return Step::Found(Shape::Token, end);
            }
            if let Some(end) = iban(input, at) {
                return Step::Found(Shape::Iban, end);
            }
        }
        if b.is_ascii_digit() || matches!(b, b'+' | b'(') {
            return self.digit_run(input, at);
        }
        // Letters inside a word start nothing: on to the next digit or separator.
        if b.is_ascii_alphabetic() {
            return Step::Skip(run_end(input, at, |b| b.is_ascii_alphabetic()));
        }
        Step::Skip(at + 1)
    }

    /// The detectors that look at a whole word (a run of base64url characters) from its
    /// start; `Skip` past a word that is kept whole, `None` to look inside it.
    fn word(&self, input: &[u8], start: usize) -> Option<Step> {
        let end = run_end(input, start, is_token_byte);
        let word = input.get(start..end).unwrap_or_default();
        if is_uuid(word) {
            return Some(Step::Skip(end));
        }
        if self.secrets {
            if let Some(jwt_end) = jwt(input, start, end) {
                return Some(Step::Found(Shape::Jwt, jwt_end));
            }
            if has_key_prefix(word) || looks_random(word, self.min_token_chars) {
                // Base64 padding belongs to the token.
                return Some(Step::Found(
                    Shape::Token,
                    run_end(input, end, |b| b == b'='),
                ));
            }
            if let Some(iban_end) = iban(input, start) {
                return Some(Step::Found(Shape::Iban, iban_end));
            }
        }
        None
    }

    /// Digits and separators from `start`; skips past the run when it is not recognised.
    fn digit_run(&self, input: &[u8], start: usize) -> Step {
        let is_separator = |b: u8| matches!(b, b'-' | b'.' | b' ' | b'(' | b')' | b'+');
        let end = run_end(input, start, |b| b.is_ascii_digit() || is_separator(b));
        let run = input.get(start..end).unwrap_or_default();
        // Ends on its last digit: trailing separators are not part of the number.
        let Some(last) = run.iter().rposition(u8::is_ascii_digit) else {
            return Step::Skip(end);
        };
        let run = run.get(..=last).unwrap_or_default();
        let digits = run.iter().filter(|b| b.is_ascii_digit()).count();
        // Digits next to a hex letter are part of a hex id (an object id, a typed id, a hash).
        let is_hex_letter = |at: Option<usize>| {
            at.and_then(|at| input.get(at))
                .is_some_and(|b| b.is_ascii_hexdigit() && b.is_ascii_alphabetic())
        };
        let in_hex = is_hex_letter(start.checked_sub(1)) || is_hex_letter(Some(start + last + 1));
        if self.min_digits == 0 || digits < self.min_digits || in_hex || is_ipv4(run) {
            return Step::Skip(end);
        }
        let card_separators = run
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b' ' || b == b'-');
        let shape = if self.secrets && (13..=19).contains(&digits) && card_separators && luhn(run) {
            Shape::Card
        } else {
            Shape::Digits
        };
        Step::Found(shape, start + last + 1)
    }
}

enum Step {
    /// Recognised up to (not including) the offset.
    Found(Shape, usize),
    /// Nothing here: resume at the offset.
    Skip(usize),
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(word: &[u8]) -> bool {
    word.len() == 36
        && word.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Four dot-separated groups of one to three digits.
fn is_ipv4(run: &[u8]) -> bool {
    let mut groups = 0;
    for group in run.split(|&b| b == b'.') {
        groups += 1;
        if group.is_empty() || group.len() > 3 || !group.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    groups == 4
}

/// The end of a JWT starting at `start`, whose first part ends at `first_end`.
fn jwt(input: &[u8], start: usize, first_end: usize) -> Option<usize> {
    let header = input.get(start..first_end)?;
    if !header.starts_with(b"eyJ") || header.len() < 10 {
        return None;
    }
    let mut end = first_end;
    for part in 0..2 {
        if input.get(end) != Some(&b'.') {
            return None;
        }
        let part_end = run_end(input, end + 1, is_token_byte);
        // The payload is never empty; the signature is with `alg: none`.
        if part == 0 && part_end == end + 1 {
            return None;
        }
        end = part_end;
    }
    Some(end)
}

fn has_key_prefix(word: &[u8]) -> bool {
    // The shortest format is a Slack token: `xoxb-` and 10 more.
    word.len() >= 15
        && KEY_PREFIXES
            .iter()
            .any(|(prefix, tail)| word.starts_with(prefix) && word.len() >= prefix.len() + tail)
}

/// A piece of `min`+ hex digits in one case (a hex key, also after a `key-` prefix), or a
/// base64url word of `min`+ characters with letters and digits that is not a slug (pieces
/// between `-`/`_` each a lowercase word or number: `release-notes-2024`). One or
/// two capitals before lowercase hex make a typed id (a Twilio SID: `AC` and 32 hex
/// digits), not a secret. No test of randomness, which would miss some random runs: a long
/// identifier with digits (`ListMembershipsForOrganization2024`) is taken for a token too.
fn looks_random(word: &[u8], min: usize) -> bool {
    if word.len() < min {
        return false;
    }
    let has_both =
        |s: &[u8]| s.iter().any(u8::is_ascii_digit) && s.iter().any(u8::is_ascii_alphabetic);
    let one_case_hex = |s: &[u8]| {
        s.iter().all(u8::is_ascii_hexdigit)
            && !(s.iter().any(u8::is_ascii_lowercase) && s.iter().any(u8::is_ascii_uppercase))
    };
    let mut slug = true;
    for piece in word.split(|&b| b == b'-' || b == b'_') {
        if piece.len() >= min && one_case_hex(piece) && has_both(piece) {
            return true;
        }
        slug &= is_slug_piece(piece);
    }
    if slug || !has_both(word) {
        return false;
    }
    let capitals = word.iter().take_while(|b| b.is_ascii_uppercase()).count();
    let after = word.get(capitals..).unwrap_or_default();
    let typed_id = (1..=2).contains(&capitals)
        && after
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    !typed_id && !word.iter().all(u8::is_ascii_hexdigit)
}

/// A word or number of a slug: lowercase letters and digits that change over at most once
/// (`notes`, `2024`, `50p`, `v2`).
fn is_slug_piece(piece: &[u8]) -> bool {
    let changes = piece
        .windows(2)
        .filter(|pair| matches!(pair, [a, b] if a.is_ascii_digit() != b.is_ascii_digit()))
        .count();
    changes <= 1
        && piece
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// An IBAN from `start`, compact or in groups of four separated by single spaces.
fn iban(input: &[u8], start: usize) -> Option<usize> {
    // Most words fail here: two letters, then two digits.
    let head = input.get(start..start + 4)?;
    if !(head.iter().take(2).all(u8::is_ascii_alphabetic)
        && head.iter().skip(2).all(u8::is_ascii_digit))
    {
        return None;
    }
    let mut buffer = [0u8; 34];
    let mut len = 0;
    let mut at = start;
    let mut group = 0;
    while let Some(&b) = input.get(at) {
        if b.is_ascii_alphanumeric() && len < buffer.len() {
            if let Some(slot) = buffer.get_mut(len) {
                *slot = b.to_ascii_uppercase();
            }
            len += 1;
            group += 1;
            at += 1;
        } else if b == b' '
            && group == 4
            && input.get(at + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            group = 0;
            at += 1;
        } else {
            break;
        }
    }
    // A space taken before a short last group that is not followed by the rest of an IBAN.
    let ends_word = !input.get(at).is_some_and(u8::is_ascii_alphanumeric);
    let chars = buffer.get(..len)?;
    let (country, check) = (chars.get(..2)?, chars.get(2..4)?);
    let valid_shape = (15..=34).contains(&chars.len())
        && ends_word
        && country.iter().all(u8::is_ascii_uppercase)
        && check.iter().all(u8::is_ascii_digit);
    (valid_shape && iban_checksum(chars)).then_some(at)
}

/// ISO 7064 mod 97-10: the first four characters moved to the end, letters as 10–35.
fn iban_checksum(chars: &[u8]) -> bool {
    let (head, rest) = chars.split_at(4.min(chars.len()));
    let mut remainder: u32 = 0;
    for &b in rest.iter().chain(head) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// The Luhn check over the digits of `run`.
fn luhn(run: &[u8]) -> bool {
    let mut sum = 0;
    for (i, d) in run
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        sum += if i % 2 == 1 {
            if d * 2 > 9 {
                d * 2 - 9
            } else {
                d * 2
            }
        } else {
            d
        };
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ON: Detectors = Detectors {
        secrets: true,
        min_token_chars: 32,
        min_digits: 9,
    };

    fn scrubbed(input: &str) -> String {
        ON.scrub(input.as_bytes())
            .map_or_else(|| input.to_owned(), |out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn each_shape_becomes_its_placeholder() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        for (input, expected) in [
            (jwt.to_owned(), "{jwt}".to_owned()),
            (format!("x-{jwt}.pdf"), "x-{jwt}.pdf".to_owned()),
            (
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJqIn0.".into(),
                "{jwt}".into(),
            ),
            ("card-4111111111111111".into(), "card-{card}".into()),
            ("4111111111111111.pdf".into(), "{card}.pdf".into()),
            ("4111 1111 1111 1111".into(), "{card}".into()),
            ("tel:+14155550100".into(), "tel:{digits}".into()),
            ("+44 (20) 7946 0958".into(), "{digits}".into()),
            ("order123456789".into(), "order{digits}".into()),
            ("DE89370400440532013000".into(), "{iban}".into()),
            (
                "iban-DE89 3704 0044 0532 0130 00-x".into(),
                "iban-{iban}-x".into(),
            ),
            ("gb82west12345698765432".into(), "{iban}".into()),
            ("AKIAIOSFODNN7EXAMPLE".into(), "{token}".into()),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789".into(),
                "{token}".into(),
            ),
            ("0123456789abcdef0123456789abcdef".into(), "{token}".into()),
            (
                "key=dGhpcyBpcyBhIHNlY3JldCB0b2tlbjEyMw==".into(),
                "key={token}".into(),
            ),
            ("Zx9Kq2Lm8Rt4Vb7Np3Wc6Hd1Fs5Gy0Jk".into(), "{token}".into()),
        ] {
            assert_eq!(scrubbed(&input), expected, "{input}");
        }
    }

    #[test]
    fn ordinary_values_are_kept() {
        for input in [
            "123e4567-e89b-12d3-a456-426614174000",
            "507f1f77bcf86cd799439011",
            "12345678",
            "2024-03-15",
            "v1.2.3",
            "192.168.100.200",
            "how-to-configure-the-service-mesh-in-2024-properly",
            "internationalization-localization-2",
            "DE89370400440532013001",
            "eyJhbGciOi",
            "keyword",
            "abcdefghijklmnopqrstuvwxyzabcdefgh",
        ] {
            assert_eq!(scrubbed(input), input);
        }
        // The price of catching every random run: a long identifier with digits is one too.
        assert_eq!(scrubbed("ListMembershipsForOrganization2024"), "{token}");
        // A card number that fails Luhn is still a long number.
        assert_eq!(scrubbed("4111-1111-1111-1112"), "{digits}");
    }

    #[test]
    fn thresholds_and_switches_apply() {
        let off = Detectors {
            secrets: false,
            min_token_chars: 32,
            min_digits: 0,
        };
        assert_eq!(off.scrub(b"4111111111111111"), None);
        assert_eq!(off.scrub(b"0123456789abcdef0123456789abcdef"), None);
        let short = Detectors {
            min_token_chars: 16,
            ..ON
        };
        assert_eq!(
            short.scrub(b"0123456789abcdef").as_deref(),
            Some(&b"{token}"[..])
        );
        assert_eq!(ON.scrub(b"0123456789abcdef"), None);
    }

    #[test]
    fn the_pass_is_linear() {
        // Inputs that would make a restart-at-every-byte scanner quadratic still finish.
        let long = "1-".repeat(100_000) + &"x".repeat(100_000) + " " + &"eyJ.".repeat(10_000);
        let out = scrubbed(&long);
        assert!(out.starts_with("{digits}"), "{}", &out[..40]);
    }
}
