//! Candidate confirmation: edges, checksums (Luhn, IBAN mod 97), issuer and SSN ranges, phone
//! plans, JWT headers. A check may narrow the span (an IBAN cut to its country's length, a URL
//! reduced to its password) or refuse the candidate.

/// How a detector confirms a regex candidate.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// Accept as matched.
    None,
    /// Vendor token: no token byte on either side (alphanumerics plus `extra`) and at least
    /// `min_classes` of upper/lower/digit, so docs placeholders (`sk-xxxx…`) pass.
    Token {
        extra: &'static [u8],
        min_classes: u8,
    },
    Email,
    Phone,
    Card,
    Ssn,
    Iban,
    AwsSecret,
    Slack,
    Jwt,
    UrlPassword,
}

impl Check {
    /// The confirmed span inside `text`, or `None` when the candidate `[s, e)` is refused.
    pub(crate) fn confirm(self, text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
        let b = text.as_bytes();
        let m = &b[s..e];
        let ok = match self {
            Check::None => true,
            Check::Token { extra, min_classes } => {
                edges_free(b, s, e, extra) && classes(m) >= min_classes && distinct(m) >= 8
            }
            Check::Email => email_ok(b, s, e),
            Check::Phone => digit_edges_ok(b, s, e) && phone_ok(m),
            Check::Card => digit_edges_ok(b, s, e) && card_ok(m),
            Check::Ssn => digit_edges_ok(b, s, e) && ssn_ok(m),
            Check::Iban => return iban_span(b, s, e),
            Check::AwsSecret => {
                // `=` may precede (`KEY=…`) but never follow: a padded blob is not a key.
                (s == 0 || !is_word(b[s - 1], b"/+"))
                    && b.get(e).is_none_or(|&c| !is_word(c, b"/+="))
                    && classes(m) == 3
                    && aws_context(b, s)
            }
            Check::Slack => edges_free(b, s, e, b"-_") && m.iter().any(u8::is_ascii_digit),
            Check::Jwt => jwt_ok(b, s, e),
            Check::UrlPassword => return url_password(b, s, e),
        };
        ok.then_some((s, e))
    }
}

fn is_word(c: u8, extra: &[u8]) -> bool {
    c.is_ascii_alphanumeric() || extra.contains(&c)
}

/// Neither neighbour is a token byte, so a match is not a slice of a longer identifier or blob.
fn edges_free(b: &[u8], s: usize, e: usize, extra: &[u8]) -> bool {
    (s == 0 || !is_word(b[s - 1], extra)) && b.get(e).is_none_or(|&c| !is_word(c, extra))
}

fn classes(m: &[u8]) -> u8 {
    u8::from(m.iter().any(u8::is_ascii_uppercase))
        + u8::from(m.iter().any(u8::is_ascii_lowercase))
        + u8::from(m.iter().any(u8::is_ascii_digit))
}

fn distinct(m: &[u8]) -> usize {
    let mut seen = [false; 256];
    m.iter().filter(|&&c| !std::mem::replace(&mut seen[usize::from(c)], true)).count()
}

/// A number is not glued to letters, nor part of a longer dotted/dashed number (dates,
/// versions, order references).
fn digit_edges_ok(b: &[u8], s: usize, e: usize) -> bool {
    let glued = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let joiner = |c: u8| matches!(c, b'.' | b'-' | b'/' | b':' | b'+');
    if s > 0 {
        let p = b[s - 1];
        if glued(p) || (joiner(p) && s >= 2 && b[s - 2].is_ascii_digit()) {
            return false;
        }
    }
    !b.get(e).is_some_and(|&n| glued(n) || (joiner(n) && b.get(e + 1).is_some_and(u8::is_ascii_digit)))
}

fn digits(m: &[u8]) -> Vec<u8> {
    m.iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0').collect()
}

fn email_ok(b: &[u8], s: usize, e: usize) -> bool {
    let local_byte = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    if s > 0 && local_byte(b[s - 1]) {
        return false;
    }
    if b.get(e).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return false;
    }
    let m = &b[s..e];
    let Some(at) = m.iter().position(|&c| c == b'@') else { return false };
    let (local, domain) = (&m[..at], &m[at + 1..]);
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') || local.windows(2).any(|w| w == b"..") {
        return false;
    }
    // Retina asset names (`icon@2x.png`) have an e-mail's shape.
    let first = domain.split(|&c| c == b'.').next().unwrap_or_default();
    let retina = first.len() >= 2
        && first.last() == Some(&b'x')
        && first[..first.len() - 1].iter().all(u8::is_ascii_digit);
    !retina
}

fn nanp_ok(d: &[u8]) -> bool {
    d.len() == 10 && d[0] >= 2 && d[3] >= 2 && !(d[1] == 1 && d[2] == 1)
}

fn phone_ok(m: &[u8]) -> bool {
    let d = digits(m);
    if m[0] == b'+' {
        if !(8..=15).contains(&d.len()) {
            return false;
        }
        return d[0] != 1 || (d.len() == 11 && nanp_ok(&d[1..]));
    }
    if m[0] == b'0' {
        return (10..=11).contains(&d.len());
    }
    let national = if d.len() == 11 { &d[1..] } else { &d[..] };
    nanp_ok(national)
}

/// The issuer networks' prefix ranges and lengths.
fn issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d[..k].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p(2)) && n == 16,
        2 => (2221..=2720).contains(&p(4)) && n == 16,
        3 => {
            (matches!(p(2), 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
                || (((300..=305).contains(&p(3)) || p(4) == 3095 || matches!(p(2), 36 | 38 | 39))
                    && (14..=19).contains(&n))
        }
        6 => {
            (p(4) == 6011 || (644..=649).contains(&p(3)) || matches!(p(2), 62 | 65)) && (16..=19).contains(&n)
        }
        _ => false,
    }
}

/// Luhn checksum over ASCII digits (separators ignored; any other byte fails).
pub fn luhn_valid(number: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0;
    for c in number.bytes().rev() {
        match c {
            b'0'..=b'9' => {
                let mut v = u32::from(c - b'0');
                if count % 2 == 1 {
                    v *= 2;
                    if v > 9 {
                        v -= 9;
                    }
                }
                sum += v;
                count += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    count > 0 && sum.is_multiple_of(10)
}

fn card_ok(m: &[u8]) -> bool {
    let d = digits(m);
    if !(13..=19).contains(&d.len()) || !issuer_ok(&d) {
        return false;
    }
    let seps: Vec<u8> = m.iter().copied().filter(|c| !c.is_ascii_digit()).collect();
    if let Some(&sep) = seps.first() {
        if seps.iter().any(|&c| c != sep) {
            return false;
        }
        let groups: Vec<usize> = m.split(|&c| c == sep).map(<[u8]>::len).collect();
        let fours = groups.len() >= 3
            && groups[..groups.len() - 1].iter().all(|&g| g == 4)
            && (1..=4).contains(&groups[groups.len() - 1]);
        let amex_diners = matches!(groups.as_slice(), [4, 6, 5] | [4, 6, 4]);
        if !fours && !amex_diners {
            return false;
        }
    }
    // Luhn over the ASCII form; `m` only holds digits and the separator here.
    luhn_valid(std::str::from_utf8(m).unwrap_or("x"))
}

fn ssn_ok(m: &[u8]) -> bool {
    let d = digits(m);
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    // Never issued: area 000, 666, 900-999; group 00; serial 0000; and the two numbers printed
    // on sample cards.
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !matches!((area, group, serial), (78, 5, 1120) | (219, 9, 9999))
}

/// Length of the IBAN of each country in the SWIFT registry.
fn iban_length(cc: &[u8]) -> Option<usize> {
    const TABLE: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BI", 27),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DJ", 27),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FK", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HN", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"LY", 25),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MN", 20),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NI", 28),
        (b"NL", 18),
        (b"NO", 15),
        (b"OM", 23),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"RU", 33),
        (b"SA", 24),
        (b"SC", 31),
        (b"SD", 18),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"SO", 23),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
        (b"YE", 30),
    ];
    TABLE.iter().find(|(c, _)| &c[..] == cc).map(|&(_, n)| n)
}

fn mod97(compact: &[u8]) -> bool {
    let rotated = compact[4..].iter().chain(&compact[..4]);
    let mut r = 0u32;
    for &c in rotated {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        r = if v >= 10 { (r * 100 + v) % 97 } else { (r * 10 + v) % 97 };
    }
    r == 1
}

/// A full IBAN (spaces allowed): known country, exact length and mod-97 remainder 1.
pub fn iban_valid(iban: &str) -> bool {
    let compact: Vec<u8> = iban.bytes().filter(|&c| c != b' ').collect();
    compact.len() >= 5
        && iban_length(&compact[..2]) == Some(compact.len())
        && compact[2..4].iter().all(u8::is_ascii_digit)
        && mod97(&compact)
}

/// Cuts the greedy candidate to the country's length; spaces only between groups of four.
fn iban_span(b: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if s > 0 && b[s - 1].is_ascii_alphanumeric() {
        return None;
    }
    let want = iban_length(&b[s..s + 2])?;
    let mut compact = Vec::with_capacity(want);
    let mut i = s;
    while compact.len() < want {
        let c = *b.get(i)?;
        if c == b' ' {
            if compact.len() % 4 != 0 || b.get(i + 1) == Some(&b' ') || i + 1 >= e {
                return None;
            }
        } else if c.is_ascii_uppercase() || c.is_ascii_digit() {
            compact.push(c);
        } else {
            return None;
        }
        i += 1;
    }
    let end_ok = b.get(i).is_none_or(|c| !c.is_ascii_alphanumeric());
    (end_ok && mod97(&compact)).then_some((s, i))
}

fn aws_context(b: &[u8], s: usize) -> bool {
    const WORDS: &[&[u8]] = &[
        b"aws_secret",
        b"aws-secret",
        b"aws secret",
        b"secret_access_key",
        b"secretaccesskey",
        b"secret access key",
    ];
    let window = &b[s.saturating_sub(96)..s];
    WORDS.iter().any(|w| window.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
}

/// Base64url (no padding) decoder for the JWT header.
fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn jwt_ok(b: &[u8], s: usize, e: usize) -> bool {
    if !edges_free(b, s, e, b"-_") {
        return false;
    }
    // A fourth dotted part means a JWE or something else; not a signed token we understand.
    if b.get(e) == Some(&b'.') && b.get(e + 1).is_some_and(|&c| is_word(c, b"-_")) {
        return false;
    }
    let header = b[s..e].split(|&c| c == b'.').next().unwrap_or_default();
    let Some(json) = b64url_decode(header) else { return false };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
        .is_ok_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

/// Narrows `scheme://user:pass@host` to `pass`; template references and placeholders pass.
fn url_password(b: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if s > 0 && b[s - 1].is_ascii_alphanumeric() {
        return None;
    }
    let m = &b[s..e];
    let auth = m.windows(3).position(|w| w == b"://")? + 3;
    let at = auth + m[auth..].iter().position(|&c| c == b'@')?;
    let colon = auth + m[auth..at].iter().position(|&c| c == b':')?;
    let pass = &m[colon + 1..at];
    let template = matches!(pass.first(), Some(b'$' | b'{' | b'%' | b'<'))
        || pass.iter().all(|&c| c == b'*')
        || pass.starts_with(b"[REDACTED:");
    (!pass.is_empty() && !template).then_some((s + colon + 1, s + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_round() {
        assert_eq!(b64url_decode(b"eyJhbGciOiJIUzI1NiJ9").as_deref(), Some(&br#"{"alg":"HS256"}"#[..]));
        assert_eq!(b64url_decode(b"YQ").as_deref(), Some(&b"a"[..]));
        assert!(b64url_decode(b"Y").is_none());
    }
}
