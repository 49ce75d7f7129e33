//! The shape of a statement text: the text with its plain literals cut out. Clients send the
//! same statement again and again with other values inlined (`WHERE id = 41`, `= 42`, …);
//! texts of one shape parse to the same tree up to those values, so [`super::AnalysisCache`]
//! can keep one analysis per shape instead of one per text.
//!
//! The scanner is deliberately narrow, and a text it is not sure of has no shape (it is then
//! memoised by exact text only). A plain literal is
//! - an integer: a run of at most 18 ASCII digits that starts a token and is followed by none of
//!   `.`, `e`, `E`, a letter, a digit, `_`, `$` or a non-ASCII byte (no decimals, exponents,
//!   hex, `1_000` or junk that a lexer might read otherwise);
//! - a string: `'…'` with no `'` or `\` inside, not followed by `'` (no doubled quotes) and
//!   not preceded by an identifier byte, `&`, `'` or `"` (so no `E''`, `B''`, `X''`, `N''` or
//!   `U&''` prefixes, whose content a lexer reads otherwise).
//!
//! A text holding a comment (`--`, `/*`), a `$` that does not start a `$n` parameter (dollar
//! quoting), a NUL byte or an unterminated quote has no shape. Within those limits every
//! lexer (sqlparser's and the server's) ends each literal where the scanner does whatever its
//! digits or characters, so two texts of one shape tokenize alike up to literal values.
//!
//! That values do not matter to an analysis is not assumed here: the cache stores an analysis
//! under its shape only after checking it against sqlparser's tokens and a re-analysis with
//! other values ([`other_values`]).

use std::ops::Range;

/// The longest integer literal of a shape: any run of 18 digits fits the `u64` and `i64` the
/// parser reads some integers into (`varchar(n)`, `FETCH n`, …), so no value of a shape makes
/// the parser fail where another succeeds.
const MAX_DIGITS: usize = 18;

/// Marks a literal's place in a shape key; the byte after it is `n` or `s` for its kind. NUL
/// never occurs in a text that has a shape.
const MARK: char = '\0';

/// A text's shape: the key (the text with each plain literal replaced by a mark and its kind)
/// and where the literals are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) key: String,
    /// Byte ranges of the literals in the text, in order (strings with their quotes).
    pub(crate) literals: Vec<Range<usize>>,
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The shape of `sql`, or `None` when the text holds anything the scanner does not vouch for.
pub(crate) fn shape(sql: &str) -> Option<Shape> {
    let s = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    // Start of the text not yet copied to the key.
    let mut copied = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            0 => return None,
            b'-' if s.get(i + 1) == Some(&b'-') => return None,
            b'/' if s.get(i + 1) == Some(&b'*') => return None,
            // `U&"…"` identifiers take an escape character from a later `UESCAPE '…'`.
            b'&' if s.get(i + 1) == Some(&b'"') => return None,
            b'$' => {
                // `$n` parameters are part of the shape; any other `$` may open a dollar quote.
                let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                i += 1 + digits;
            }
            b'"' => {
                // A quoted identifier, `""` inside it being one quote.
                let mut j = i + 1;
                loop {
                    match s.get(j) {
                        None => return None,
                        Some(b'"') if s.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            b'\'' => {
                let prev = i.checked_sub(1).map(|p| s[p]);
                if prev.is_some_and(|p| ident_byte(p) || matches!(p, b'&' | b'\'' | b'"')) {
                    return None;
                }
                let len = s[i + 1..].iter().position(|&c| matches!(c, b'\'' | b'\\' | 0))?;
                let end = i + 1 + len;
                if s[end] != b'\'' || s.get(end + 1) == Some(&b'\'') {
                    return None;
                }
                key.push_str(&sql[copied..i]);
                key.push(MARK);
                key.push('s');
                literals.push(i..end + 1);
                i = end + 1;
                copied = i;
            }
            b'0'..=b'9' => {
                if i.checked_sub(1).is_some_and(|p| s[p] == b'.') {
                    return None;
                }
                let end = i + s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                if end - i > MAX_DIGITS || s.get(end).is_some_and(|&n| ident_byte(n) || n == b'.') {
                    return None;
                }
                key.push_str(&sql[copied..i]);
                key.push(MARK);
                key.push('n');
                literals.push(i..end);
                i = end;
                copied = i;
            }
            _ if ident_byte(b) => {
                // A word: digits and `$` inside it are part of it.
                i += s[i..].iter().take_while(|&&c| ident_byte(c)).count();
            }
            _ => i += 1,
        }
    }
    key.push_str(&sql[copied..]);
    Some(Shape { key, literals })
}

/// `sql` with every literal of `shape` replaced by another value of its kind, different from
/// the one written: a text of the same shape whose analysis must equal `sql`'s if values do
/// not matter to it.
pub(crate) fn other_values(sql: &str, shape: &Shape) -> String {
    let mut out = String::with_capacity(sql.len() + 16 * shape.literals.len());
    let mut copied = 0;
    for r in &shape.literals {
        out.push_str(&sql[copied..r.start]);
        let lit = &sql[r.clone()];
        let other = if lit.starts_with('\'') {
            if lit == "'agentsh_probe_value'" { "'agentsh_probe_other'" } else { "'agentsh_probe_value'" }
        } else if lit == "7" {
            "8"
        } else {
            "7"
        };
        out.push_str(other);
        copied = r.end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape(sql).map(|s| s.key.replace(MARK, "#"))
    }

    #[test]
    fn plain_literals_are_cut_out() {
        assert_eq!(
            key("SELECT abalance FROM a WHERE aid = 12345;").unwrap(),
            "SELECT abalance FROM a WHERE aid = #n;"
        );
        assert_eq!(
            key("SELECT * FROM t WHERE name = 'bob' AND x IN (1,2)").unwrap(),
            "SELECT * FROM t WHERE name = #s AND x IN (#n,#n)"
        );
        assert_eq!(key("SELECT 'a', 'b'").unwrap(), "SELECT #s, #s");
        assert_eq!(key("SELECT ''").unwrap(), "SELECT #s");
        assert_eq!(key("SELECT -5").unwrap(), "SELECT -#n");
        assert_eq!(key("SELECT 123456789012345678").unwrap(), "SELECT #n");
        // Digits inside words, parameters and quoted identifiers stay.
        assert_eq!(key("SELECT t1.c2 FROM t1 WHERE a = $1").unwrap(), "SELECT t1.c2 FROM t1 WHERE a = $1");
        assert_eq!(
            key(r#"SELECT "it's 5" FROM "a""b" WHERE x = 5"#).unwrap(),
            r#"SELECT "it's 5" FROM "a""b" WHERE x = #n"#
        );
        assert_eq!(key("SELECT 'é' FROM tàble9").unwrap(), "SELECT #s FROM tàble9");
        assert_eq!(key("SELECT a$b, a$1 FROM t").unwrap(), "SELECT a$b, a$1 FROM t");
        let s = shape("SELECT 'ab', 42").unwrap();
        assert_eq!(s.literals, vec![7..11, 13..15]);
    }

    #[test]
    fn texts_the_scanner_does_not_vouch_for_have_no_shape() {
        for t in [
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT $$x$$",
            "SELECT $tag$x$tag$",
            "SELECT E'\\n'",
            "SELECT 'a\\'",
            "SELECT 'it''s'",
            "SELECT X'ff'",
            "SELECT B'01'",
            "SELECT N'x'",
            "SELECT U&'d'",
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 1e5",
            "SELECT 0x1f",
            "SELECT 1_000",
            "SELECT 1234567890123456789",
            "SELECT 5abc",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT '\0'",
            "SELECT U&\"d!0061ta\" UESCAPE '!'",
        ] {
            assert_eq!(key(t), None, "{t}");
        }
    }

    #[test]
    fn other_values_differ_in_every_literal_and_keep_the_shape() {
        for t in ["SELECT 7, 'agentsh_probe_value', 1, 'x'", "SELECT nextval('s') WHERE 8 = 7"] {
            let s = shape(t).unwrap();
            let o = other_values(t, &s);
            let so = shape(&o).unwrap();
            assert_eq!(so.key, s.key);
            for (a, b) in s.literals.iter().zip(&so.literals) {
                assert_ne!(&t[a.clone()], &o[b.clone()], "{t} → {o}");
            }
        }
    }
}
