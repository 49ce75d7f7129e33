//! Statement classification: SQL text → the [`Effect`]s of every statement in it, parsed with
//! sqlparser's PostgreSQL dialect. Pure and total: text that cannot be understood yields an
//! `unknown` effect (critical tier), so policy fails closed, and no input panics.
//!
//! The text is tokenized once and split at top-level `;` (the tokenizer knows comments, nested
//! comments, dollar quoting and `E''` strings), then each statement is parsed on its own: one
//! statement that does not parse costs only itself an `unknown`, never hides its siblings.

mod effect;
mod functions;
mod names;
mod statements;
mod walk;

pub use effect::{Effect, ObjectRef};
pub use policies::model::{db_ops::OperationGroup, db_rules::ObjectResolution};

use policies::model::db_ops::OperationGroup as G;
use sqlparser::{
    dialect::PostgreSqlDialect,
    parser::Parser,
    tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace},
};

/// The longest SQL text classified (the proxy refuses longer queries with SQLSTATE 54000).
pub const MAX_SQL_BYTES: usize = 1 << 20;
/// The most tokens classified: bounds the depth of left-deep expression chains (`1+1+…`),
/// which the parser builds without recursion but which are dropped and walked recursively.
pub const MAX_TOKENS: usize = 20_000;
/// The parser's nesting limit (sub-queries, parentheses).
pub const MAX_NESTING: usize = 50;

/// Classifies `sql`: the effects of every statement, in order (effects of one statement are
/// merged by group and subtype). Never panics; fails closed with an `unknown` effect whose
/// subtype says why (`too_large`, `too_complex`, `tokenize_error`, `parse_error`,
/// `unsupported_statement`).
pub fn classify(sql: &str) -> Vec<Effect> {
    if sql.len() > MAX_SQL_BYTES {
        return vec![Effect::unknown("too_large")];
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return vec![Effect::unknown("tokenize_error")];
    };
    if tokens.len() > MAX_TOKENS {
        return vec![Effect::unknown("too_complex")];
    }
    let mut out = Vec::new();
    let mut chunk: Vec<TokenWithSpan> = Vec::new();
    for t in tokens.into_iter().chain(std::iter::once(TokenWithSpan::wrap(Token::SemiColon))) {
        if t.token == Token::SemiColon {
            if chunk.iter().any(|t| !is_blank(&t.token)) {
                classify_chunk(&dialect, std::mem::take(&mut chunk), &mut out);
            }
            chunk.clear();
        } else {
            chunk.push(t);
        }
    }
    out
}

fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Classifies one statement's tokens.
fn classify_chunk(dialect: &PostgreSqlDialect, tokens: Vec<TokenWithSpan>, out: &mut Vec<Effect>) {
    let first = first_keyword(&tokens);
    let parsed = Parser::new(dialect)
        .with_recursion_limit(MAX_NESTING)
        .with_tokens_with_locations(tokens)
        .parse_statements();
    match parsed {
        Ok(stmts) => {
            for s in &stmts {
                out.extend(walk::Walk::run(s).finish().finish());
            }
        }
        Err(_) => out.push(fallback(first.as_deref())),
    }
}

/// The first word of a statement, upper-cased.
fn first_keyword(tokens: &[TokenWithSpan]) -> Option<String> {
    tokens
        .iter()
        .find(|t| {
            !matches!(
                t.token,
                Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)
                    | Token::Whitespace(_)
            )
        })
        .and_then(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
}

/// Statements sqlparser does not parse, recognised by their first word. Safe because the text
/// was split into single statements first: nothing else can hide behind the keyword.
fn fallback(first: Option<&str>) -> Effect {
    let (group, sub) = match first {
        Some("DO") => (G::Procedural, "do"),
        Some("VACUUM") => (G::Maintenance, "vacuum"),
        Some("ANALYZE" | "ANALYSE") => (G::Maintenance, "analyze"),
        Some("REINDEX") => (G::Maintenance, "reindex"),
        Some("CLUSTER") => (G::Maintenance, "cluster"),
        Some("CHECKPOINT") => (G::Maintenance, "checkpoint"),
        _ => return Effect::unknown("parse_error"),
    };
    Effect { group, ..Effect::unknown(sub) }
}
