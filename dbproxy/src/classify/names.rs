//! Identifier folding the way Postgres does it: unquoted names are lower-cased, quoted names kept.

use policies::engine::db::DbObject;
use sqlparser::ast::{Ident, ObjectName};

/// One identifier, folded.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// The folded identifier parts of a name (function-valued parts, a dialect extension, become `?`).
fn parts(name: &ObjectName) -> Vec<String> {
    name.0.iter().map(|p| p.as_ident().map_or_else(|| "?".to_string(), fold)).collect()
}

/// `(schema, name)`: `db.schema.name` keeps the schema (Postgres insists `db` is the current one).
pub(crate) fn split(name: &ObjectName) -> (Option<String>, String) {
    let mut p = parts(name);
    let last = p.pop().unwrap_or_default();
    (p.pop(), last)
}

/// A relation object.
pub(crate) fn relation(name: &ObjectName) -> DbObject {
    let (schema, name) = split(name);
    DbObject::Relation { schema, name }
}

/// A function object.
pub(crate) fn function(name: &ObjectName) -> DbObject {
    let (schema, name) = split(name);
    DbObject::Function { schema, name }
}

/// A dotted name (`a.b`) for settings and other named objects.
pub(crate) fn dotted(name: &ObjectName) -> String {
    parts(name).join(".")
}
