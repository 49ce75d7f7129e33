//! A session's prepared statements and portals as the proxy knows them, so a statement is
//! decided again when it runs (Execute, SQL `EXECUTE`) on the rules in force then, not only
//! when it was prepared.
//!
//! Protocol-level statements (Parse) and SQL-level ones (`PREPARE`) share one namespace on the
//! server, and so they do here: `EXECUTE q` may run a Parse'd `q`, and Bind may use a
//! `PREPARE`d one. What the proxy cannot know (whether the server accepted a statement) is
//! resolved towards refusal: preparing a name that is already known adds the new effects to
//! the old (the server keeps one of the two), and a statement or portal the proxy has no
//! record of is refused at Execute.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use policies::model::db_ops::OperationGroup;

use super::events::{ParamSummary, StatementInfo};
use crate::{
    classify::{Analysis, Classified, Effect, PreparedOp},
    wire::{Bind, Target},
};

/// A statement the session may run later: its text and effects as classified when prepared.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) text: Arc<str>,
    pub(crate) effects: Arc<[Effect]>,
    /// Parameter types declared at Parse.
    pub(crate) param_types: Arc<[u32]>,
    /// The statement's `PREPARE`/`EXECUTE`/`DEALLOCATE`s, applied when it runs (a Parse of
    /// `EXECUTE q` is resolved again at each Execute); `None` when it has none.
    pub(crate) sql_ops: Option<Arc<[Classified]>>,
    /// What an Execute of it reports, made once at Parse (`None` for a SQL `PREPARE`).
    pub(crate) info: Option<Arc<StatementInfo>>,
}

/// What the proxy knows of a statement or portal name.
#[derive(Debug, Clone)]
pub(crate) enum Slot<T> {
    /// Let through when prepared (or bound).
    Known(T),
    /// Refused when prepared: the server never got it, and the refusal was reported then.
    Refused,
}

/// A bound portal: its statement and the parameters, summarised.
#[derive(Debug, Clone)]
pub(crate) struct Portal {
    pub(crate) statement: Option<String>,
    pub(crate) prepared: Prepared,
    pub(crate) params: ParamSummary,
}

/// The statements and portals of one session.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    named: HashMap<String, Slot<Prepared>>,
    /// Shared with each Execute that runs them (an Execute per row batch costs no copy).
    portals: HashMap<String, Slot<Arc<Portal>>>,
}

fn merge(old: &Prepared, new: &Prepared) -> Prepared {
    let mut effects = old.effects.to_vec();
    effects.extend(new.effects.iter().cloned());
    Prepared { effects: effects.into(), ..new.clone() }
}

impl Statements {
    /// A Parse (or `PREPARE`) of `name` was let through (`Some`) or refused (`None`).
    pub(crate) fn prepared(&mut self, name: &str, p: Option<Prepared>) {
        let slot = match (p, self.named.get(name)) {
            // The unnamed statement is replaced by every Parse, even one that fails.
            (None, _) if name.is_empty() => Slot::Refused,
            (Some(p), _) if name.is_empty() => Slot::Known(p),
            // A refused Parse of a name the server already holds leaves the server's.
            (None, Some(_)) => return,
            (None, None) => Slot::Refused,
            (Some(p), Some(Slot::Known(old))) => Slot::Known(merge(old, &p)),
            (Some(p), _) => Slot::Known(p),
        };
        self.named.insert(name.to_string(), slot);
    }

    /// A Bind was forwarded: the portal now runs the named statement, if the proxy knows it.
    pub(crate) fn bound(&mut self, b: &Bind<'_>) {
        let slot = match self.named.get(b.statement) {
            Some(Slot::Known(p)) => {
                let binary = match b.param_formats.as_slice() {
                    [] => 0,
                    [one] => {
                        if *one == 1 {
                            b.params.len()
                        } else {
                            0
                        }
                    }
                    many => many.iter().filter(|f| **f == 1).count(),
                };
                let params = ParamSummary {
                    count: b.params.len(),
                    types: p.param_types.clone(),
                    binary,
                    nulls: b.params.iter().filter(|v| v.is_none()).count(),
                };
                let statement = Some(b.statement.to_string());
                Slot::Known(Arc::new(Portal { statement, prepared: p.clone(), params }))
            }
            Some(Slot::Refused) => Slot::Refused,
            None => {
                self.portals.remove(b.portal);
                return;
            }
        };
        match self.portals.get_mut(b.portal) {
            Some(held) => *held = slot,
            None => {
                self.portals.insert(b.portal.to_string(), slot);
            }
        }
    }

    /// The portal an Execute names, if the proxy knows it.
    pub(crate) fn portal(&self, name: &str) -> Option<&Slot<Arc<Portal>>> {
        self.portals.get(name)
    }

    /// A Close was forwarded.
    pub(crate) fn closed(&mut self, target: Target, name: &str) {
        match target {
            Target::Statement => self.named.remove(name),
            Target::Portal => self.portals.remove(name).map(|_| Slot::Refused),
        };
    }

    /// [`Statements::resolve`] of an analysed text: its own effects, borrowed, unless it holds
    /// an `EXECUTE`.
    pub(crate) fn resolve_analysis<'a>(&self, a: &'a Analysis) -> Cow<'a, [Effect]> {
        if a.statements.iter().any(|c| matches!(c.prepared, Some(PreparedOp::Execute(_)))) {
            Cow::Owned(self.resolve(&a.statements))
        } else {
            Cow::Borrowed(&a.effects)
        }
    }

    /// The effects of `stmts`, with each `EXECUTE name` standing for the effects recorded for
    /// `name` (it stays `unknown`, so refused, when nothing is recorded).
    pub(crate) fn resolve(&self, stmts: &[Classified]) -> Vec<Effect> {
        let mut out = Vec::new();
        for c in stmts {
            let target = match &c.prepared {
                Some(PreparedOp::Execute(name)) => match self.named.get(name) {
                    Some(Slot::Known(p)) => Some(p),
                    _ => None,
                },
                _ => None,
            };
            for e in &c.effects {
                match target {
                    Some(p) if is_execute_placeholder(e) => out.extend(p.effects.iter().cloned()),
                    _ => out.push(e.clone()),
                }
            }
        }
        out
    }

    /// `stmts` (text `text`) were forwarded: record their `PREPARE`s and forget what they
    /// deallocate.
    pub(crate) fn ran(&mut self, text: &str, stmts: &[Classified]) {
        for c in stmts {
            match &c.prepared {
                Some(PreparedOp::Prepare(name)) => {
                    let effects = self.resolve(std::slice::from_ref(c));
                    let p = Prepared {
                        text: text.into(),
                        effects: effects.into(),
                        param_types: Arc::new([]),
                        sql_ops: None,
                        info: None,
                    };
                    self.prepared(name, Some(p));
                }
                Some(PreparedOp::Deallocate(name)) => {
                    self.named.remove(name);
                }
                // The unnamed statement is not among the server's named ones.
                Some(PreparedOp::DeallocateAll) => self.named.retain(|k, _| k.is_empty()),
                Some(PreparedOp::Execute(_)) | None => {}
            }
        }
    }
}

fn is_execute_placeholder(e: &Effect) -> bool {
    e.group == OperationGroup::Unknown && e.subtype.as_deref() == Some("execute_prepared")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_statements;

    fn prep(sql: &str) -> Prepared {
        Prepared {
            text: sql.into(),
            effects: crate::classify(sql).into(),
            param_types: Arc::new([23]),
            sql_ops: None,
            info: None,
        }
    }

    fn groups(effects: &[Effect]) -> Vec<&'static str> {
        effects.iter().map(|e| e.group.as_str()).collect()
    }

    fn bind<'a>(portal: &'a str, statement: &'a str, params: Vec<Option<&'a [u8]>>) -> Bind<'a> {
        Bind { portal, statement, param_formats: vec![1], params, result_formats: vec![] }
    }

    #[test]
    fn sql_execute_stands_for_what_was_prepared_and_deallocate_forgets_it() {
        let mut s = Statements::default();
        let prepare = classify_statements("PREPARE q AS DELETE FROM items WHERE id = $1");
        s.ran("PREPARE q AS DELETE FROM items WHERE id = $1", &prepare);
        let exec = classify_statements("EXECUTE q(1)");
        assert_eq!(groups(&s.resolve(&exec)), ["delete"]);
        // Parameters of EXECUTE keep their own effects.
        assert_eq!(groups(&s.resolve(&classify_statements("EXECUTE q(wipe())"))), ["delete", "procedural"]);
        s.ran("DEALLOCATE q", &classify_statements("DEALLOCATE q"));
        assert_eq!(groups(&s.resolve(&exec)), ["unknown"]);
        s.ran("x", &classify_statements("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2"));
        s.ran("DISCARD ALL", &classify_statements("DISCARD ALL"));
        assert_eq!(groups(&s.resolve(&classify_statements("EXECUTE b"))), ["unknown"]);
    }

    #[test]
    fn a_name_prepared_twice_carries_both_effects_and_protocol_names_are_shared() {
        let mut s = Statements::default();
        s.prepared("q", Some(prep("SELECT 1")));
        s.prepared("q", Some(prep("DELETE FROM items")));
        let exec = classify_statements("EXECUTE q");
        assert_eq!(groups(&s.resolve(&exec)), ["read", "delete"]);
        // A refused re-Parse of a held name leaves it; a refused unnamed Parse replaces it.
        s.prepared("q", None);
        assert!(matches!(s.named.get("q"), Some(Slot::Known(_))));
        s.prepared("", Some(prep("SELECT 1")));
        s.prepared("", None);
        s.bound(&bind("", "", vec![]));
        assert!(matches!(s.portal(""), Some(Slot::Refused)));
    }

    #[test]
    fn portals_follow_binds_and_closes_and_count_parameters_without_values() {
        let mut s = Statements::default();
        s.prepared("st", Some(prep("SELECT $1::int")));
        s.bound(&bind("p", "st", vec![Some(b"\0\0\0\x01"), None]));
        let Some(Slot::Known(p)) = s.portal("p") else { panic!("portal") };
        assert_eq!(p.params, ParamSummary { count: 2, types: Arc::from([23]), binary: 2, nulls: 1 });
        // Binding an unknown statement forgets the portal: Execute will refuse it.
        s.bound(&bind("p", "nope", vec![]));
        assert!(s.portal("p").is_none());
        s.bound(&bind("p", "st", vec![]));
        s.closed(Target::Portal, "p");
        assert!(s.portal("p").is_none());
        s.closed(Target::Statement, "st");
        s.bound(&bind("p", "st", vec![]));
        assert!(s.portal("p").is_none());
    }
}
