//! The statement facts a decision is made on: effects with typed objects, as pure data. The
//! classifier (in `dbproxy`) produces them; this crate never parses SQL.

use std::fmt;

use crate::model::{db_ops::OperationGroup, db_rules::ObjectResolution};

/// One object an effect touches, with its kind. Names are folded the way Postgres folds them
/// (unquoted identifiers lower-cased, quoted ones kept), so rules compare like the server does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DbObject {
    /// A table, view or sequence; `schema` is set only when written.
    Relation {
        /// Schema as written (folded), if qualified.
        schema: Option<String>,
        /// Relation name (folded).
        name: String,
    },
    /// A configuration parameter (GUC), lower-cased.
    Setting(String),
    /// A function or procedure; `schema` is set only when written.
    Function {
        /// Schema as written (folded), if qualified.
        schema: Option<String>,
        /// Function name (folded).
        name: String,
    },
    /// A server-side file path (`COPY … TO '/path'`, `pg_read_file('/path')`).
    Path(String),
    /// A server-side program, by its first word (`COPY … PROGRAM 'argv0 …'`).
    Program(String),
    /// A network endpoint reached from the server (`dblink`, foreign servers).
    Endpoint {
        /// Host name or address, lower-cased.
        host: String,
        /// Port, when known.
        port: Option<u16>,
    },
    /// A LISTEN/NOTIFY channel.
    Channel(String),
    /// A role name (GRANT, SET ROLE, CREATE ROLE).
    Role(String),
    /// Any other named object (database, schema, extension, prepared statement).
    Name(String),
}

impl DbObject {
    /// An unqualified or qualified relation.
    pub fn relation(schema: Option<&str>, name: &str) -> DbObject {
        DbObject::Relation { schema: schema.map(str::to_string), name: name.to_string() }
    }

    /// The schema part of a relation or function, if written.
    pub fn schema(&self) -> Option<&str> {
        match self {
            DbObject::Relation { schema, .. } | DbObject::Function { schema, .. } => schema.as_deref(),
            _ => None,
        }
    }

    /// The object's main name: relation or function name, setting, path, program, host, etc.
    pub fn name(&self) -> &str {
        match self {
            DbObject::Relation { name, .. } | DbObject::Function { name, .. } => name,
            DbObject::Setting(s)
            | DbObject::Path(s)
            | DbObject::Program(s)
            | DbObject::Channel(s)
            | DbObject::Role(s)
            | DbObject::Name(s) => s,
            DbObject::Endpoint { host, .. } => host,
        }
    }

    /// The kind as used in events (`relation`, `setting`, `function`, `filesystem_path`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            DbObject::Relation { .. } => "relation",
            DbObject::Setting(_) => "setting",
            DbObject::Function { .. } => "function",
            DbObject::Path(_) => "filesystem_path",
            DbObject::Program(_) => "program",
            DbObject::Endpoint { .. } => "external_endpoint",
            DbObject::Channel(_) => "channel",
            DbObject::Role(_) => "role",
            DbObject::Name(_) => "name",
        }
    }
}

impl fmt::Display for DbObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbObject::Relation { schema: Some(s), name } | DbObject::Function { schema: Some(s), name } => {
                write!(f, "{s}.{name}")
            }
            DbObject::Endpoint { host, port: Some(p) } => write!(f, "{host}:{p}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One effect of a statement as the decision engine sees it. Borrowed, so the classifier's
/// output is viewed without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectView<'a> {
    /// The operation group.
    pub group: OperationGroup,
    /// The subtype (`set_role`, `truncate`, `server_file_read`, …), if any.
    pub subtype: Option<&'a str>,
    /// Every object the effect touches; empty when it touches none (`SELECT 1`, `BEGIN`).
    pub objects: &'a [DbObject],
    /// How the relation objects were resolved.
    pub resolution: ObjectResolution,
    /// For `modify`/`delete` from UPDATE/DELETE: whether a meaningful top-level `WHERE` exists
    /// (`WHERE true` and other column-free predicates do not count). `None` elsewhere.
    pub has_where: Option<bool>,
}
