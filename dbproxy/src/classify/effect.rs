//! [`Effect`]: what one statement does, and the builder that merges repeated effects.

use policies::{
    engine::db::{DbObject, EffectView},
    model::{db_ops::OperationGroup, db_rules::ObjectResolution},
};

/// An object an effect touches (a typed name, folded as Postgres folds it).
pub type ObjectRef = DbObject;

/// One effect of a statement: its operation group, an optional subtype, the objects it
/// touches and how they were resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The operation group.
    pub group: OperationGroup,
    /// Detail within the group (`truncate`, `set_role`, `server_file_read`, …).
    pub subtype: Option<String>,
    /// The objects touched, deduplicated, in order of appearance.
    pub objects: Vec<ObjectRef>,
    /// `unqualified_syntactic` when any relation object has no schema, else `qualified_syntactic`.
    pub resolution: ObjectResolution,
    /// For `modify`/`delete` of UPDATE/DELETE: whether a meaningful top-level WHERE exists.
    pub has_where: Option<bool>,
}

impl Effect {
    /// The borrowed view the policy engine decides on.
    pub fn view(&self) -> EffectView<'_> {
        EffectView {
            group: self.group,
            subtype: self.subtype.as_deref(),
            objects: &self.objects,
            resolution: self.resolution,
            has_where: self.has_where,
        }
    }

    /// The effect of a statement that could not be understood: critical tier, denied unless a
    /// rule names `unknown` itself.
    pub fn unknown(subtype: &str) -> Effect {
        Effect {
            group: OperationGroup::Unknown,
            subtype: Some(subtype.to_string()),
            objects: Vec::new(),
            resolution: ObjectResolution::Unresolved,
            has_where: None,
        }
    }
}

/// Collects effects; an effect with the same group, subtype and WHERE flag as an earlier one
/// merges its objects into it.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    pub(crate) effects: Vec<Effect>,
}

impl Builder {
    pub(crate) fn add(&mut self, group: OperationGroup, subtype: Option<&str>, objects: Vec<ObjectRef>) {
        self.add_where(group, subtype, objects, None);
    }

    pub(crate) fn add_where(
        &mut self,
        group: OperationGroup,
        subtype: Option<&str>,
        objects: Vec<ObjectRef>,
        has_where: Option<bool>,
    ) {
        let same =
            |e: &&mut Effect| e.group == group && e.subtype.as_deref() == subtype && e.has_where == has_where;
        let e = match self.effects.iter_mut().find(same) {
            Some(e) => e,
            None => {
                self.effects.push(Effect {
                    group,
                    subtype: subtype.map(str::to_string),
                    objects: Vec::with_capacity(objects.len()),
                    resolution: ObjectResolution::QualifiedSyntactic,
                    has_where,
                });
                self.effects.last_mut().expect("just pushed")
            }
        };
        for o in objects {
            if !e.objects.contains(&o) {
                e.objects.push(o);
            }
        }
    }

    /// Sets each effect's resolution from its relation objects.
    pub(crate) fn finish(mut self) -> Vec<Effect> {
        for e in &mut self.effects {
            if e.group == OperationGroup::Unknown {
                continue;
            }
            let unqualified = e.objects.iter().any(|o| matches!(o, DbObject::Relation { schema: None, .. }));
            e.resolution = if unqualified {
                ObjectResolution::UnqualifiedSyntactic
            } else {
                ObjectResolution::QualifiedSyntactic
            };
        }
        self.effects
    }
}

/// One effect, flattened for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectSummary {
    /// Operation group (`read`, `delete`, …).
    pub group: &'static str,
    /// Subtype, if any.
    pub subtype: Option<String>,
    /// The objects, as text (`public.users`, `setting:search_path`, …).
    pub objects: Vec<String>,
}

impl From<&Effect> for EffectSummary {
    fn from(e: &Effect) -> Self {
        EffectSummary {
            group: e.group.as_str(),
            subtype: e.subtype.clone(),
            objects: e.objects.iter().map(|o| o.to_string()).collect(),
        }
    }
}
