//! Statement text for the audit log, from the same tokenizer the classifier uses: the
//! [`redact`]ed text (literals replaced by `$n` placeholders, comments dropped, the rest as
//! written) and the [`digest`] of the [`normalize`]d text (literals and placeholders as `?`,
//! whitespace and comments folded to one space, unquoted words lower-cased), so the same
//! statement with other values has the same digest. Pure.

use sqlparser::{
    dialect::PostgreSqlDialect,
    tokenizer::{Token, Tokenizer, Whitespace},
};

/// What [`redact`] returns for text the tokenizer refuses (it may hold anything).
pub const UNREADABLE: &str = "[REDACTED: not tokenizable]";

pub(crate) fn tokens(sql: &str) -> Option<Vec<Token>> {
    if sql.len() > super::MAX_SQL_BYTES {
        return None;
    }
    Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()
}

pub(crate) fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
    )
}

fn placeholder_number(t: &Token) -> Option<u32> {
    match t {
        Token::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
        _ => None,
    }
}

/// `sql` with every literal replaced by a `$n` placeholder (numbered after the highest one
/// already in the text) and comments replaced by a space; everything else as written.
pub fn redact(sql: &str) -> String {
    match tokens(sql) {
        Some(tokens) => redact_tokens(tokens.iter()),
        None => UNREADABLE.to_string(),
    }
}

/// [`redact`] of a tokenized text. Written in place, token by token: this runs for every
/// statement the proxy sees.
pub(crate) fn redact_tokens<'a>(tokens: impl Iterator<Item = &'a Token> + Clone) -> String {
    use std::fmt::Write;
    let mut next = tokens.clone().filter_map(placeholder_number).max().unwrap_or(0);
    let mut out = String::new();
    for t in tokens {
        match t {
            t if is_literal(t) => {
                next += 1;
                let _ = write!(out, "${next}");
            }
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                out.push(' ')
            }
            Token::Word(w) if w.quote_style.is_none() => out.push_str(&w.value),
            t => {
                let _ = write!(out, "{t}");
            }
        }
    }
    out
}

/// The canonical form hashed by [`digest`]: literals and placeholders are `?`, runs of
/// whitespace and comments one space (none at the ends or before a final `;`), unquoted words
/// lower-case. Text the tokenizer refuses is only whitespace-folded.
pub fn normalize(sql: &str) -> String {
    match tokens(sql) {
        Some(tokens) => normalize_tokens(tokens.iter()),
        None => sql.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn normalize_tokens<'a>(tokens: impl Iterator<Item = &'a Token>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut space = false;
    for t in tokens {
        if matches!(t, Token::Whitespace(_) | Token::EOF) {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        match t {
            t if is_literal(t) || matches!(t, Token::Placeholder(_)) => out.push('?'),
            // `str::to_lowercase` for the rest: it folds a final sigma as Unicode says.
            Token::Word(w) if w.quote_style.is_none() && w.value.is_ascii() => {
                out.extend(w.value.bytes().map(|b| char::from(b.to_ascii_lowercase())))
            }
            Token::Word(w) if w.quote_style.is_none() => out.push_str(&w.value.to_lowercase()),
            t => {
                let _ = write!(out, "{t}");
            }
        }
    }
    while out.ends_with(';') || out.ends_with(' ') {
        out.pop();
    }
    out
}

/// `sha256:<hex>` of [`normalize`]`(sql)`.
pub fn digest(sql: &str) -> String {
    hashed(&normalize(sql))
}

/// [`digest`] of a tokenized text.
pub(crate) fn digest_tokens<'a>(tokens: impl Iterator<Item = &'a Token>) -> String {
    hashed(&normalize_tokens(tokens))
}

fn hashed(normal: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = ring::digest::digest(&ring::digest::SHA256, normal.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_numbered_placeholders_and_comments_go() {
        assert_eq!(
            redact("SELECT * FROM users WHERE email = 'a@b.c' AND id > 42 -- secret\n"),
            "SELECT * FROM users WHERE email = $1 AND id > $2  \n"
        );
        assert_eq!(
            redact("UPDATE t SET a = $1, b = 'x' WHERE id = $2"),
            "UPDATE t SET a = $1, b = $3 WHERE id = $2"
        );
        assert_eq!(
            redact("ALTER ROLE app PASSWORD 'hunter2'; SELECT $$dollar$$, E'esc', X'ff', 1.5e3"),
            "ALTER ROLE app PASSWORD $1; SELECT $2, $3, $4, $5"
        );
        assert_eq!(redact("SELECT name FROM items ORDER BY id"), "SELECT name FROM items ORDER BY id");
        assert_eq!(redact("SELECT /* x */ \"Quoted\".col FROM t"), "SELECT   \"Quoted\".col FROM t");
        assert_eq!(redact("SELECT 'unterminated"), UNREADABLE);
    }

    #[test]
    fn normal_form_folds_values_whitespace_comments_and_case() {
        assert_eq!(
            normalize("  SELECT  *\n\tFROM Users -- c\n WHERE id = 7 AND n = 'x';  "),
            "select * from users where id = ? and n = ?"
        );
        assert_eq!(normalize("select \"Users\".ID from \"Users\""), "select \"Users\".id from \"Users\"");
        assert_eq!(normalize("SELECT $1"), "select ?");
        assert_eq!(normalize("SELECT 'open"), "SELECT 'open");
    }

    #[test]
    fn one_tokenization_gives_the_same_digest_and_text() {
        for sql in [
            "SELECT * FROM users WHERE id = 1 -- c\n",
            "UPDATE t SET a = $1, b = 'x' WHERE id = $2; DELETE FROM t",
            "SELECT 'open",
            "",
            "BEGIN; SELECT $$x$$; COMMIT",
        ] {
            let a = crate::classify::analyze(sql);
            assert_eq!((&*a.digest, &*a.redacted), (digest(sql).as_str(), redact(sql).as_str()), "{sql}");
            assert_eq!(a.statements, crate::classify::classify_statements(sql));
        }
    }

    /// The forms as first written, one `to_string` per token: the in-place writers must give
    /// the same text (digests are compared across releases).
    fn reference(tokens: &[Token]) -> (String, String) {
        let mut next = tokens.iter().filter_map(placeholder_number).max().unwrap_or(0);
        let mut redacted = String::new();
        for t in tokens {
            match t {
                t if is_literal(t) => {
                    next += 1;
                    redacted.push('$');
                    redacted.push_str(&next.to_string());
                }
                Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                    redacted.push(' ')
                }
                t => redacted.push_str(&t.to_string()),
            }
        }
        let mut normal = String::new();
        let mut space = false;
        for t in tokens {
            let text = match t {
                Token::Whitespace(_) | Token::EOF => {
                    space = !normal.is_empty();
                    continue;
                }
                t if is_literal(t) || matches!(t, Token::Placeholder(_)) => "?".to_string(),
                Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
                t => t.to_string(),
            };
            if space {
                normal.push(' ');
                space = false;
            }
            normal.push_str(&text);
        }
        while normal.ends_with(';') || normal.ends_with(' ') {
            normal.pop();
        }
        (redacted, normal)
    }

    #[test]
    fn in_place_forms_match_the_token_by_token_reference() {
        let corpus = include_str!("../../testdata/classify_corpus.sql");
        let extra = [
            "SELECT ΣΟΦΟΣ, Straße, \"MiXeD\" FROM ÉTÉ WHERE x = $2 AND y = 'z' -- c\n;",
            "select $1, $10, 1e5, E'\\n', B'101', X'ff', $tag$body$tag$ /* c */ ; ; ",
            "",
        ];
        for sql in corpus.split("\n====\n").chain(extra) {
            let Some(tokens) = tokens(sql) else { continue };
            let (redacted, normal) = reference(&tokens);
            assert_eq!(redact_tokens(tokens.iter()), redacted, "{sql}");
            assert_eq!(normalize_tokens(tokens.iter()), normal, "{sql}");
        }
    }

    #[test]
    fn digest_is_stable_across_values_and_layout_but_not_across_statements() {
        let a = digest("SELECT * FROM users WHERE id = 1");
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert_eq!(a, digest("select *\n  from USERS where id = 99 /* other */;"));
        assert_eq!(a, digest("SELECT * FROM users WHERE id = $1"));
        assert_ne!(a, digest("SELECT * FROM users WHERE id > 1"));
        assert_ne!(a, digest("SELECT * FROM \"USERS\" WHERE id = 1"));
        assert_ne!(digest("DELETE FROM users"), digest("DELETE FROM orders"));
        // The empty normal form still has a digest (of nothing), and it is deterministic.
        assert_eq!(digest(" ; "), digest(""));
    }
}
