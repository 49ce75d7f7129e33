//! One walk over a parsed statement: every nested statement (data-modifying CTEs, `COPY
//! (query)`, `EXPLAIN ANALYZE`, `PREPARE`) adds its own effects, every relation read is
//! collected, and every function call is classified.

use std::ops::ControlFlow;

use policies::{engine::db::DbObject, model::db_ops::OperationGroup as G};
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select, Statement, TableFactor,
    Value, Visit, Visitor,
};

use super::{effect::Builder, functions, names, statements};

/// State of the walk over one top-level statement.
#[derive(Default)]
pub(crate) struct Walk {
    pub(crate) out: Builder,
    /// Relations seen, in order (reads unless they are a statement's target or a CTE).
    relations: Vec<DbObject>,
    /// Relations written, created or otherwise targeted: one occurrence each is not a read.
    pub(crate) targets: Vec<DbObject>,
    /// CTE names in the statement.
    ctes: Vec<String>,
    /// The next relation is a table function's name, not a relation.
    skip_relation: bool,
    /// A query reads even when it names no relation (`SELECT 1`).
    pub(crate) reads: bool,
    /// `SELECT … FOR UPDATE/SHARE` somewhere in the statement.
    row_lock: bool,
}

impl Walk {
    pub(crate) fn target(&mut self, o: DbObject) -> DbObject {
        self.targets.push(o.clone());
        o
    }

    /// Walks `stmt` and returns its effects.
    pub(crate) fn run(stmt: &Statement) -> Walk {
        let mut w = Walk::default();
        let _ = stmt.visit(&mut w);
        w
    }

    /// The collected reads and row locks, appended after the statements' own effects.
    pub(crate) fn finish(mut self) -> super::effect::Builder {
        let mut reads = std::mem::take(&mut self.relations);
        for t in &self.targets {
            if let Some(i) = reads.iter().position(|r| r == t) {
                reads.remove(i);
            }
        }
        let ctes = &self.ctes;
        reads.retain(|r| !matches!(r, DbObject::Relation { schema: None, name } if ctes.contains(name)));
        if self.row_lock {
            self.out.add(G::Lock, Some("row_lock"), reads.clone());
        }
        if self.reads || !reads.is_empty() {
            self.out.add(G::Read, None, reads);
        }
        self.out
    }

    fn function(&mut self, name: &ObjectName, args: Option<&FunctionArguments>) {
        let (schema, fname) = names::split(name);
        let Some((group, subtype)) = functions::classify(schema.as_deref(), &fname) else { return };
        let literal = args.and_then(first_string_arg);
        let object = match (group, literal) {
            (G::UnsafeIo, Some(p)) if functions::takes_path(subtype) => DbObject::Path(p),
            (G::Privilege, _) if subtype == "set_config" => {
                DbObject::Setting(literal_or_any(args.and_then(first_string_arg)).to_lowercase())
            }
            (G::Write, Some(seq)) => sequence_object(&seq),
            (G::Notify, Some(ch)) => DbObject::Channel(ch),
            _ => names::function(name),
        };
        self.out.add(group, Some(subtype), vec![object]);
    }
}

fn literal_or_any(s: Option<String>) -> String {
    s.unwrap_or_else(|| "*".to_string())
}

/// `nextval('app.seq')`: the regclass text, split at the last dot (quotes are rare here).
fn sequence_object(text: &str) -> DbObject {
    let folded = text.to_lowercase();
    match folded.rsplit_once('.') {
        Some((s, n)) => DbObject::relation(Some(s), n),
        None => DbObject::relation(None, &folded),
    }
}

/// The first argument when it is a string literal.
fn first_string_arg(args: &FunctionArguments) -> Option<String> {
    let FunctionArguments::List(list) = args else { return None };
    let expr = match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
        FunctionArg::Named { arg: FunctionArgExpr::Expr(e), .. } => e,
        _ => return None,
    };
    let mut e = expr;
    while let Expr::Cast { expr, .. } = e {
        e = expr;
    }
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            Value::DollarQuotedString(d) => Some(d.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        statements::primary(stmt, self);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            self.ctes.extend(with.cte_tables.iter().map(|c| names::fold(&c.alias.name)));
        }
        // `FOR UPDATE OF alias` names aliases, not relations: lock every relation read.
        if !q.locks.is_empty() {
            self.row_lock = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            let objs: Vec<DbObject> = into
                .targets
                .iter()
                .map(|t| match t {
                    Expr::Identifier(i) => DbObject::relation(None, &names::fold(i)),
                    Expr::CompoundIdentifier(p) => {
                        let n = ObjectName::from(p.clone());
                        names::relation(&n)
                    }
                    other => DbObject::Name(other.to_string()),
                })
                .map(|o| self.target(o))
                .collect();
            self.out.add(G::SchemaCreate, Some("select_into"), objs);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args: Some(args), .. } = tf {
            self.skip_relation = true;
            let args = FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: args.args.clone(),
                clauses: Vec::new(),
            });
            self.function(name, Some(&args));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.skip_relation) {
            return ControlFlow::Continue(());
        }
        self.relations.push(names::relation(name));
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.function(&f.name, Some(&f.args));
        }
        ControlFlow::Continue(())
    }
}
