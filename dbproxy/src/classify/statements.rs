//! The effects a statement has by its kind, before its sub-queries and function calls (which
//! the walk adds). Anything not mapped here is `unknown`: the list is an allowlist.

use policies::{engine::db::DbObject, model::db_ops::OperationGroup as G};
use sqlparser::ast::{
    AlterTableOperation, CopySource, CopyTarget, Expr, FromTable, MergeAction, ObjectName, ObjectType,
    OnConflictAction, OnInsert, Reset, Set, Statement, TableFactor, TableObject, TableWithJoins,
    TransactionAccessMode, TransactionMode, Visit, Visitor,
};

use super::{names, walk::Walk};

/// Adds the kind-specific effects of `stmt` (called for every statement, nested ones too).
pub(crate) fn primary(stmt: &Statement, w: &mut Walk) {
    match stmt {
        Statement::Query(_) => w.reads = true,
        Statement::Insert(ins) => {
            let target = match &ins.table {
                TableObject::TableName(n) => vec![w.target(names::relation(n))],
                _ => Vec::new(),
            };
            if let Some(OnInsert::OnConflict(c)) = &ins.on
                && matches!(c.action, OnConflictAction::DoUpdate(_))
            {
                w.out.add_where(G::Modify, Some("upsert"), target.clone(), None);
            }
            w.out.add(G::Write, None, target);
        }
        Statement::Update(u) => {
            let target = table_of(&u.table).map(|n| w.target(names::relation(n))).into_iter().collect();
            w.out.add_where(G::Modify, None, target, Some(meaningful_where(u.selection.as_ref())));
        }
        Statement::Delete(d) => {
            let froms = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let mut target: Vec<DbObject> = d.tables.iter().map(names::relation).collect();
            target.extend(froms.iter().filter_map(table_of).map(names::relation));
            let target = target.into_iter().map(|o| w.target(o)).collect();
            w.out.add_where(G::Delete, None, target, Some(meaningful_where(d.selection.as_ref())));
        }
        Statement::Merge(m) => {
            let target: Vec<DbObject> = match &m.table {
                TableFactor::Table { name, .. } => vec![w.target(names::relation(name))],
                _ => Vec::new(),
            };
            for c in &m.clauses {
                match &c.action {
                    MergeAction::Insert(_) => w.out.add(G::Write, Some("merge"), target.clone()),
                    MergeAction::Update(_) => {
                        w.out.add_where(G::Modify, Some("merge"), target.clone(), Some(true))
                    }
                    MergeAction::Delete { .. } => {
                        w.out.add_where(G::Delete, Some("merge"), target.clone(), Some(true))
                    }
                    MergeAction::DoNothing { .. } => {}
                }
            }
        }
        Statement::Truncate(t) => {
            let objs = t.table_names.iter().map(|t| w.target(names::relation(&t.name))).collect();
            w.out.add(G::Delete, Some("truncate"), objs);
        }
        Statement::Copy { source, to, target, .. } => copy(w, source, *to, target),
        Statement::Lock(l) => {
            let objs = l.tables.iter().map(|t| w.target(names::relation(&t.name))).collect();
            w.out.add(G::Lock, Some("lock_table"), objs);
        }
        Statement::Set(s) => set(w, s),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => w.out.add(G::Privilege, Some("reset_all"), vec![DbObject::Setting("all".into())]),
            Reset::SessionAuthorization => guc(w, "session_authorization", "reset"),
            Reset::ConfigurationParameter(n) => guc(w, &names::dotted(n), "reset"),
        },
        Statement::ShowVariable { variable } => {
            let name = variable.iter().map(names::fold).collect::<Vec<_>>().join(".");
            w.out.add(G::Session, Some("show"), vec![DbObject::Setting(name)]);
        }
        Statement::Discard { object_type } => {
            let sub = format!("discard_{}", object_type.to_string().to_lowercase());
            w.out.add(G::Session, Some(&sub), Vec::new());
        }
        Statement::StartTransaction { modes, .. } => {
            w.out.add(G::Transaction, Some("begin"), read_write(modes, "transaction_read_only"))
        }
        Statement::Commit { .. } => w.out.add(G::Transaction, Some("commit"), Vec::new()),
        Statement::Rollback { savepoint: None, .. } => {
            w.out.add(G::Transaction, Some("rollback"), Vec::new())
        }
        Statement::Rollback { savepoint: Some(_), .. } => {
            w.out.add(G::Transaction, Some("rollback_to_savepoint"), Vec::new())
        }
        Statement::Savepoint { .. } => w.out.add(G::Transaction, Some("savepoint"), Vec::new()),
        Statement::ReleaseSavepoint { .. } => {
            w.out.add(G::Transaction, Some("release_savepoint"), Vec::new())
        }
        Statement::LISTEN { channel } => w.out.add(G::Notify, Some("listen"), vec![channel_of(channel)]),
        Statement::UNLISTEN { channel } => w.out.add(G::Notify, Some("unlisten"), vec![channel_of(channel)]),
        Statement::NOTIFY { channel, .. } => w.out.add(G::Notify, Some("notify"), vec![channel_of(channel)]),
        Statement::Vacuum(v) => {
            let objs = v.table_name.iter().map(|n| w.target(names::relation(n))).collect();
            w.out.add(G::Maintenance, Some("vacuum"), objs);
        }
        Statement::Analyze(a) => {
            let objs = a.table_name.iter().map(|n| w.target(names::relation(n))).collect();
            w.out.add(G::Maintenance, Some("analyze"), objs);
        }
        Statement::CreateTable(c) => create(w, "create_table", names::relation(&c.name)),
        Statement::CreateView(c) => create(w, "create_view", names::relation(&c.name)),
        Statement::CreateIndex(c) => create(w, "create_index", names::relation(&c.table_name)),
        Statement::CreateSequence { name, .. } => create(w, "create_sequence", names::relation(name)),
        Statement::CreateSchema { schema_name, .. } => {
            w.out.add(G::SchemaCreate, Some("create_schema"), vec![DbObject::Name(schema_name.to_string())])
        }
        Statement::CreateDatabase { db_name, .. } => {
            w.out.add(G::SchemaCreate, Some("create_database"), vec![DbObject::Name(names::dotted(db_name))])
        }
        Statement::CreateType { name, .. } => create(w, "create_type", DbObject::Name(names::dotted(name))),
        Statement::CreateDomain(d) => create(w, "create_domain", DbObject::Name(names::dotted(&d.name))),
        Statement::CreateExtension(e) => {
            w.out.add(G::SchemaCreate, Some("create_extension"), vec![DbObject::Name(names::fold(&e.name))])
        }
        Statement::CreateFunction(f) => {
            w.out.add(G::Procedural, Some("create_function"), vec![names::function(&f.name)])
        }
        Statement::CreateProcedure { name, .. } => {
            w.out.add(G::Procedural, Some("create_procedure"), vec![names::function(name)])
        }
        Statement::CreateTrigger(_) => w.out.add(G::Procedural, Some("create_trigger"), Vec::new()),
        Statement::Call(f) => w.out.add(G::Procedural, Some("call"), vec![names::function(&f.name)]),
        Statement::CreateRole(r) => {
            let roles = r.names.iter().map(|n| DbObject::Role(names::dotted(n))).collect();
            w.out.add(G::Privilege, Some("create_role"), roles)
        }
        Statement::CreateUser(_) => w.out.add(G::Privilege, Some("create_role"), Vec::new()),
        Statement::AlterRole { name, .. } => {
            w.out.add(G::Privilege, Some("alter_role"), vec![DbObject::Role(names::fold(name))])
        }
        Statement::AlterUser(_) => w.out.add(G::Privilege, Some("alter_role"), Vec::new()),
        Statement::Grant(_) => w.out.add(G::Privilege, Some("grant"), Vec::new()),
        Statement::Revoke(_) => w.out.add(G::Privilege, Some("revoke"), Vec::new()),
        Statement::CreatePolicy(_) | Statement::AlterPolicy(_) | Statement::DropPolicy(_) => {
            w.out.add(G::Privilege, Some("row_security_policy"), Vec::new())
        }
        Statement::CreateServer(_) => w.out.add(G::UnsafeIo, Some("create_server"), Vec::new()),
        Statement::AlterTable(a) => {
            let o = w.target(names::relation(&a.name));
            for op in &a.operations {
                match op {
                    AlterTableOperation::OwnerTo { .. } => {
                        w.out.add(G::Privilege, Some("alter_owner"), vec![o.clone()])
                    }
                    AlterTableOperation::EnableRowLevelSecurity
                    | AlterTableOperation::DisableRowLevelSecurity
                    | AlterTableOperation::ForceRowLevelSecurity
                    | AlterTableOperation::NoForceRowLevelSecurity => {
                        w.out.add(G::Privilege, Some("row_security"), vec![o.clone()])
                    }
                    _ => w.out.add(G::SchemaAlter, Some("alter_table"), vec![o.clone()]),
                }
            }
        }
        Statement::AlterIndex { name, .. } => alter(w, "alter_index", names::relation(name)),
        Statement::AlterView { name, .. } => alter(w, "alter_view", names::relation(name)),
        Statement::AlterSchema(_) => w.out.add(G::SchemaAlter, Some("alter_schema"), Vec::new()),
        Statement::AlterType(_) => w.out.add(G::SchemaAlter, Some("alter_type"), Vec::new()),
        Statement::AlterFunction(_) => w.out.add(G::SchemaAlter, Some("alter_function"), Vec::new()),
        Statement::Comment { object_name, .. } => {
            alter(w, "comment", DbObject::Name(names::dotted(object_name)))
        }
        Statement::Drop { object_type, names: dropped, .. } => drop(w, *object_type, dropped),
        Statement::DropFunction(_) | Statement::DropProcedure { .. } => {
            w.out.add(G::SchemaDestroy, Some("drop_function"), Vec::new())
        }
        Statement::DropTrigger(_) => w.out.add(G::SchemaDestroy, Some("drop_trigger"), Vec::new()),
        Statement::DropExtension(_) => w.out.add(G::SchemaDestroy, Some("drop_extension"), Vec::new()),
        Statement::DropDomain(_) => w.out.add(G::SchemaDestroy, Some("drop_domain"), Vec::new()),
        Statement::Prepare { .. } | Statement::Explain { .. } => {}
        Statement::Execute { name, .. } => {
            // The proxy substitutes the effects it recorded at PREPARE; unknown until then.
            let objs = name.iter().map(|n| DbObject::Name(names::dotted(n))).collect();
            w.out.add(G::Unknown, Some("execute_prepared"), objs);
        }
        Statement::Deallocate { .. } => w.out.add(G::Session, Some("deallocate"), Vec::new()),
        Statement::Declare { .. } => w.reads = true,
        Statement::Fetch { .. } => w.out.add(G::Read, Some("fetch"), Vec::new()),
        Statement::Close { .. } => w.out.add(G::Session, Some("close_cursor"), Vec::new()),
        Statement::Load { .. } => w.out.add(G::UnsafeIo, Some("load_library"), Vec::new()),
        _ => w.out.add(G::Unknown, Some("unsupported_statement"), Vec::new()),
    }
}

fn channel_of(i: &sqlparser::ast::Ident) -> DbObject {
    DbObject::Channel(names::fold(i))
}

fn create(w: &mut Walk, sub: &str, o: DbObject) {
    let o = w.target(o);
    w.out.add(G::SchemaCreate, Some(sub), vec![o]);
}

fn alter(w: &mut Walk, sub: &str, o: DbObject) {
    let o = w.target(o);
    w.out.add(G::SchemaAlter, Some(sub), vec![o]);
}

fn drop(w: &mut Walk, t: ObjectType, dropped: &[ObjectName]) {
    let relation_like = matches!(
        t,
        ObjectType::Table
            | ObjectType::View
            | ObjectType::MaterializedView
            | ObjectType::Index
            | ObjectType::Sequence
    );
    let objs: Vec<DbObject> = dropped
        .iter()
        .map(|n| {
            let o = if relation_like { names::relation(n) } else { DbObject::Name(names::dotted(n)) };
            w.target(o)
        })
        .collect();
    if matches!(t, ObjectType::Role | ObjectType::User) {
        let roles = dropped.iter().map(|n| DbObject::Role(names::dotted(n))).collect();
        return w.out.add(G::Privilege, Some("drop_role"), roles);
    }
    let sub = format!("drop_{}", t.to_string().to_lowercase().replace(' ', "_"));
    w.out.add(G::SchemaDestroy, Some(&sub), objs);
}

/// The relation a FROM item names, if it is a plain table.
fn table_of(t: &TableWithJoins) -> Option<&ObjectName> {
    match &t.relation {
        TableFactor::Table { name, args: None, .. } => Some(name),
        _ => None,
    }
}

/// A WHERE counts only if it refers to a column: `WHERE true` or `WHERE 1 = 1` filter nothing.
fn meaningful_where(selection: Option<&Expr>) -> bool {
    struct Columns(bool);
    impl Visitor for Columns {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
            if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                self.0 = true;
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let Some(e) = selection else { return false };
    let mut c = Columns(false);
    let _ = e.visit(&mut c);
    c.0
}

fn copy(w: &mut Walk, source: &CopySource, to: bool, target: &CopyTarget) {
    let objs: Vec<DbObject> = match source {
        CopySource::Table { table_name, .. } => vec![w.target(names::relation(table_name))],
        CopySource::Query(_) => Vec::new(),
    };
    let (group, sub) = if to { (G::BulkExport, "copy_to") } else { (G::BulkLoad, "copy_from") };
    match target {
        CopyTarget::Stdin | CopyTarget::Stdout => w.out.add(group, Some(sub), objs),
        CopyTarget::File { filename } => {
            let sub = if to { "copy_to_path" } else { "copy_from_path" };
            w.out.add(G::UnsafeIo, Some(sub), vec![DbObject::Path(filename.clone())]);
            w.out.add(group, Some(if to { "copy_to" } else { "copy_from" }), objs);
        }
        CopyTarget::Program { command } => {
            let sub = if to { "copy_to_program" } else { "copy_from_program" };
            let argv0 = command.split_whitespace().next().unwrap_or_default().to_string();
            w.out.add(G::UnsafeIo, Some(sub), vec![DbObject::Program(argv0)]);
            w.out.add(group, Some(if to { "copy_to" } else { "copy_from" }), objs);
        }
    }
}

/// Settings whose change alters privileges or how later SQL is parsed.
pub(crate) const PRIVILEGED_SETTINGS: &[&str] = &[
    "backslash_quote",
    "client_encoding",
    "default_transaction_read_only",
    "role",
    "row_security",
    "session_authorization",
    "session_replication_role",
    "standard_conforming_strings",
    "transaction_read_only",
];

/// One `SET`/`RESET` of a setting: `role`, `session_authorization` and parse- or
/// privilege-altering settings are `privilege`, others `session`; `LOCAL` changes nothing.
fn guc(w: &mut Walk, name: &str, verb: &str) {
    let name = name.to_lowercase();
    let sub = match name.as_str() {
        "role" => "set_role",
        "session_authorization" => "set_session_authorization",
        "search_path" => "set_search_path",
        _ => verb,
    };
    let group = if PRIVILEGED_SETTINGS.contains(&name.as_str()) { G::Privilege } else { G::Session };
    w.out.add(group, Some(sub), vec![DbObject::Setting(name)]);
}

/// `[setting]` when `modes` ask for READ WRITE (the setting that changes), else nothing.
fn read_write(modes: &[TransactionMode], setting: &str) -> Vec<DbObject> {
    let rw = modes.iter().any(|m| matches!(m, TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)));
    if rw { vec![DbObject::Setting(setting.to_string())] } else { Vec::new() }
}

fn set(w: &mut Walk, s: &Set) {
    match s {
        Set::SingleAssignment { variable, .. } => guc(w, &names::dotted(variable), "set"),
        Set::ParenthesizedAssignments { variables, .. } => {
            for v in variables {
                guc(w, &names::dotted(v), "set");
            }
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                guc(w, &names::dotted(&a.name), "set");
            }
        }
        Set::SetRole { .. } => guc(w, "role", "set"),
        Set::SetSessionAuthorization(_) => guc(w, "session_authorization", "set"),
        Set::SetTimeZone { .. } => guc(w, "timezone", "set"),
        Set::SetNames { .. } | Set::SetNamesDefault {} => guc(w, "client_encoding", "set"),
        // The session default is a privilege-level setting; `SET TRANSACTION READ WRITE` only
        // names the setting it changes (a read-only session refuses both).
        Set::SetTransaction { modes, session: true, .. } => {
            let objs = read_write(modes, "default_transaction_read_only");
            let group = if objs.is_empty() { G::Transaction } else { G::Privilege };
            w.out.add(group, Some("set_session_characteristics"), objs)
        }
        Set::SetTransaction { modes, .. } => {
            w.out.add(G::Transaction, Some("set_transaction"), read_write(modes, "transaction_read_only"))
        }
        Set::SetSessionParam(_) => w.out.add(G::Session, Some("set"), Vec::new()),
    }
}
