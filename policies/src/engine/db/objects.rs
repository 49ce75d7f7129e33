//! The object filters of one statement rule (`schemas`, `objects`, `relations`, `functions`)
//! compiled, and the per-object test. Ambiguity resolves against the agent: an unqualified name
//! is covered by an allow only through a pattern that names no schema, but a deny reads it as
//! [`ASSUMED_SCHEMA`]`.name`, where the default search path puts it (the catalog is not
//! consulted yet, and the proxy pins `search_path`).

/// The schema a deny rule assumes for an unqualified name.
pub const ASSUMED_SCHEMA: &str = "public";

use super::{effect::DbObject, glob::glob_match};
use crate::model::db_rules::{ObjectKind, ObjectPattern, StructuredObject};

/// A structured object pattern, kind-checked at load.
#[derive(Debug, Clone)]
enum Structured {
    Path(String),
    Program(String),
    Endpoint { host: String, port: Option<u16> },
}

/// The compiled object filters of a rule. Empty filters mean "any object".
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectFilters {
    schemas: Vec<String>,
    names: Vec<String>,
    structured: Vec<Structured>,
    relations: Vec<String>,
    functions: Vec<String>,
}

/// Splits `schema.name` at the last dot; `None` schema when there is no dot.
fn split_qualified(pattern: &str) -> (Option<&str>, &str) {
    match pattern.rsplit_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, pattern),
    }
}

impl ObjectFilters {
    pub(crate) fn new(
        schemas: &[crate::model::values::NameGlob],
        objects: &[ObjectPattern],
        relations: &[crate::model::values::NameGlob],
        functions: &[crate::model::values::NameGlob],
    ) -> Option<ObjectFilters> {
        if schemas.is_empty() && objects.is_empty() && relations.is_empty() && functions.is_empty() {
            return None;
        }
        let mut f = ObjectFilters {
            schemas: schemas.iter().map(|g| g.as_str().to_string()).collect(),
            relations: relations.iter().map(|g| g.as_str().to_string()).collect(),
            // `schema.name(args)`: argument lists are not known syntactically, so match the name.
            functions: functions
                .iter()
                .map(|g| g.as_str().split_once('(').map_or(g.as_str(), |(n, _)| n).to_string())
                .collect(),
            ..ObjectFilters::default()
        };
        for o in objects {
            match o {
                ObjectPattern::Name(g) => f.names.push(g.as_str().to_string()),
                ObjectPattern::Structured(s) => f.structured.extend(structured(s)),
            }
        }
        Some(f)
    }

    /// Whether `object` is matched. `deny` selects the fail-closed reading of unqualified names.
    pub(crate) fn matches(&self, object: &DbObject, deny: bool) -> bool {
        self.schema_matches(object, deny)
            || self.names.iter().any(|g| name_matches(g, object, deny))
            || self.structured.iter().any(|s| structured_matches(s, object))
            || self.qualified_matches(&self.relations, object, deny, true)
            || self.qualified_matches(&self.functions, object, deny, false)
    }

    fn schema_matches(&self, object: &DbObject, deny: bool) -> bool {
        if !matches!(object, DbObject::Relation { .. } | DbObject::Function { .. }) {
            return false;
        }
        match object.schema() {
            Some(s) => self.schemas.iter().any(|g| glob_match(g, s)),
            None => deny && self.schemas.iter().any(|g| glob_match(g, ASSUMED_SCHEMA)),
        }
    }

    fn qualified_matches(&self, globs: &[String], object: &DbObject, deny: bool, relation: bool) -> bool {
        let right_kind = match object {
            DbObject::Relation { .. } => relation,
            DbObject::Function { .. } => !relation,
            _ => false,
        };
        if !right_kind || globs.is_empty() {
            return false;
        }
        match object.schema() {
            Some(s) => globs.iter().any(|g| {
                let (gs, gn) = split_qualified(g);
                gs.is_none_or(|gs| glob_match(gs, s)) && glob_match(gn, object.name())
            }),
            None => {
                deny && globs.iter().any(|g| {
                    let (gs, gn) = split_qualified(g);
                    gs.is_none_or(|gs| glob_match(gs, ASSUMED_SCHEMA)) && glob_match(gn, object.name())
                })
            }
        }
    }
}

fn structured(s: &StructuredObject) -> Option<Structured> {
    Some(match s.kind {
        ObjectKind::FilesystemPath => Structured::Path(s.path.clone()?),
        ObjectKind::Program => Structured::Program(s.argv0.as_ref()?.as_str().to_string()),
        ObjectKind::ExternalEndpoint => {
            Structured::Endpoint { host: s.host.as_ref()?.as_str().to_string(), port: s.port }
        }
    })
}

fn structured_matches(s: &Structured, object: &DbObject) -> bool {
    match (s, object) {
        (Structured::Path(g), DbObject::Path(p)) => glob_match(g, p),
        (Structured::Program(g), DbObject::Program(p)) => glob_match(g, p),
        (Structured::Endpoint { host, port }, DbObject::Endpoint { host: h, port: p }) => {
            glob_match(host, h) && port.is_none_or(|want| *p == Some(want))
        }
        _ => false,
    }
}

/// A name glob against any object: relations by `name` or `schema.name`; an unqualified
/// relation meets a deny pattern `schema.name` as `public.name`.
fn name_matches(glob: &str, object: &DbObject, deny: bool) -> bool {
    match object {
        DbObject::Relation { schema, name } | DbObject::Function { schema, name } => {
            let (gs, gn) = split_qualified(glob);
            match (gs, schema) {
                (None, _) => glob_match(gn, name),
                (Some(gs), Some(s)) => glob_match(gs, s) && glob_match(gn, name),
                (Some(gs), None) => deny && glob_match(gs, ASSUMED_SCHEMA) && glob_match(gn, name),
            }
        }
        DbObject::Endpoint { .. } => glob_match(glob, object.name()) || glob_match(glob, &object.to_string()),
        other => glob_match(glob, other.name()),
    }
}
