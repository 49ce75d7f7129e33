//! Statement classification: SQL text → the [`Effect`]s of every statement in it, parsed with
//! sqlparser's PostgreSQL dialect. Pure and total: text that cannot be understood yields an
//! `unknown` effect (critical tier), so policy fails closed, and no input panics.
//!
//! The text is tokenized once and split at top-level `;` (the tokenizer knows comments, nested
//! comments, dollar quoting and `E''` strings), then each statement is parsed on its own: one
//! statement that does not parse costs only itself an `unknown`, never hides its siblings.

mod cache;
mod effect;
mod functions;
mod names;
mod normalize;
mod shape;
mod statements;
mod walk;

pub use cache::{AnalysisCache, DEFAULT_GENERATION, DEFAULT_MAX_TEXT};
pub use effect::{Effect, EffectSummary, ObjectRef};
pub use normalize::{digest, normalize, redact};
pub use policies::model::{db_ops::OperationGroup, db_rules::ObjectResolution};

use std::sync::Arc;

use policies::model::db_ops::OperationGroup as G;
use sqlparser::{
    ast::Statement,
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
    classify_statements(sql).into_iter().flat_map(|c| c.effects).collect()
}

/// What a statement does to the session's SQL-level prepared statements (`PREPARE`,
/// `EXECUTE`, `DEALLOCATE`, `DISCARD ALL`); names are folded as Postgres folds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedOp {
    /// `PREPARE name AS …`: the statement's effects are those of the prepared statement.
    Prepare(String),
    /// `EXECUTE name`: its effects include `unknown/execute_prepared`, which the proxy
    /// replaces with the effects recorded at `PREPARE`.
    Execute(String),
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// `DEALLOCATE ALL` or `DISCARD ALL`.
    DeallocateAll,
}

/// One statement of a text: its effects and what it does to prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The statement's effects (merged by group and subtype).
    pub effects: Vec<Effect>,
    /// Its prepared-statement operation, if any.
    pub prepared: Option<PreparedOp>,
}

impl Classified {
    fn failed(why: &'static str) -> Vec<Classified> {
        vec![Classified { effects: vec![Effect::unknown(why)], prepared: None }]
    }
}

/// [`classify`], statement by statement (a statement that does not parse is one entry).
pub fn classify_statements(sql: &str) -> Vec<Classified> {
    match tokenize(sql) {
        Ok(tokens) => classify_tokens(tokens),
        Err(why) => Classified::failed(why),
    }
}

/// A text classified, with what the audit log shows of it, from one tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// [`classify_statements`].
    pub statements: Vec<Classified>,
    /// [`digest`].
    pub digest: Arc<str>,
    /// [`redact`].
    pub redacted: Arc<str>,
    /// The effects of every statement, in order (`statements`' effects, flattened).
    pub effects: Vec<Effect>,
    /// `effects` as the audit log shows them, made once for every event of the text.
    pub summary: Arc<[EffectSummary]>,
}

impl Analysis {
    fn new(statements: Vec<Classified>, digest: String, redacted: String) -> Analysis {
        let effects: Vec<Effect> = statements.iter().flat_map(|c| c.effects.iter().cloned()).collect();
        let summary = effects.iter().map(EffectSummary::from).collect();
        Analysis { statements, digest: digest.into(), redacted: redacted.into(), effects, summary }
    }
}

/// [`classify_statements`], [`digest`] and [`redact`] of `sql`, tokenizing it once.
pub fn analyze(sql: &str) -> Analysis {
    match tokenize(sql) {
        Ok(tokens) => {
            let digest = normalize::digest_tokens(tokens.iter().map(|t| &t.token));
            let redacted = normalize::redact_tokens(tokens.iter().map(|t| &t.token));
            Analysis::new(classify_tokens(tokens), digest, redacted)
        }
        Err(why) => Analysis::new(Classified::failed(why), digest(sql), redact(sql)),
    }
}

/// The tokens of `sql`, or why it is not classified.
fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, &'static str> {
    if sql.len() > MAX_SQL_BYTES {
        return Err("too_large");
    }
    let tokens =
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().map_err(|_| "tokenize_error")?;
    if tokens.len() > MAX_TOKENS {
        return Err("too_complex");
    }
    Ok(tokens)
}

/// Splits the tokens at top-level `;` and classifies each statement.
fn classify_tokens(tokens: Vec<TokenWithSpan>) -> Vec<Classified> {
    let dialect = PostgreSqlDialect {};
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
fn classify_chunk(dialect: &PostgreSqlDialect, tokens: Vec<TokenWithSpan>, out: &mut Vec<Classified>) {
    let first = first_keyword(&tokens);
    let parsed = Parser::new(dialect)
        .with_recursion_limit(MAX_NESTING)
        .with_tokens_with_locations(tokens)
        .parse_statements();
    match parsed {
        Ok(stmts) => {
            for s in &stmts {
                let effects = walk::Walk::run(s).finish().finish();
                out.push(Classified { effects, prepared: prepared_op(s) });
            }
        }
        Err(_) => out.push(Classified { effects: vec![fallback(first.as_deref())], prepared: None }),
    }
}

fn prepared_op(s: &Statement) -> Option<PreparedOp> {
    use sqlparser::ast::DiscardObject;
    Some(match s {
        Statement::Prepare { name, .. } => PreparedOp::Prepare(names::fold(name)),
        Statement::Execute { name: Some(name), immediate: false, .. } => {
            PreparedOp::Execute(names::dotted(name))
        }
        Statement::Deallocate { name, .. }
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
        {
            PreparedOp::DeallocateAll
        }
        Statement::Deallocate { name, .. } => PreparedOp::Deallocate(names::fold(name)),
        Statement::Discard { object_type: DiscardObject::ALL } => PreparedOp::DeallocateAll,
        _ => return None,
    })
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
