//! `database_rules` compiled for one service, and the statement decision: each effect on its
//! own, a deny on any object wins, everything else needs strict coverage of every object, and
//! the verdicts fold to the most restrictive (deny > approve > redirect > audit > allow).

use super::{DEFAULT_DENY_STATEMENT, effect::EffectView, objects::ObjectFilters};
use crate::{
    Decision, Verdict,
    model::{
        db_ops::OperationGroup,
        db_rules::{DbDecision, DbStatementRule, DenyModeInTx, ObjectResolution},
    },
};

/// One statement rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct StatementRule {
    name: String,
    decision: DbDecision,
    message: Option<String>,
    /// Bit `g as u32` set for every operation group the rule names.
    groups: u32,
    subtypes: Vec<String>,
    resolution: Option<ObjectResolution>,
    require_where: bool,
    filters: Option<ObjectFilters>,
    redirect: Option<String>,
    deny_mode_in_tx: DenyModeInTx,
}

fn bit(g: OperationGroup) -> u32 {
    1 << (g as u32)
}

impl StatementRule {
    pub(crate) fn new(r: &DbStatementRule) -> StatementRule {
        StatementRule {
            name: r.name.clone(),
            decision: r.decision,
            message: r.message.clone(),
            groups: r.operations.iter().flat_map(|o| o.groups()).fold(0, |m, g| m | bit(*g)),
            subtypes: r.subtypes.clone(),
            resolution: r.match_object_resolution.filter(|m| *m != ObjectResolution::Any),
            require_where: r.require_where,
            filters: ObjectFilters::new(&r.schemas, &r.objects, &r.relations, &r.functions),
            redirect: r.redirect.as_ref().map(|d| d.relation.clone()),
            deny_mode_in_tx: r.deny_mode_in_tx.unwrap_or_default(),
        }
    }

    fn is_deny(&self) -> bool {
        self.decision == DbDecision::Deny
    }

    /// Whether the rule applies to the effect at all (group, subtype, resolution, WHERE).
    /// `require_where` reads naturally on both sides: an allow covers only filtered
    /// statements, a deny fires only on unfiltered ones.
    fn applies(&self, e: &EffectView<'_>) -> bool {
        if self.groups & bit(e.group) == 0 {
            return false;
        }
        if !self.subtypes.is_empty() && !e.subtype.is_some_and(|s| self.subtypes.iter().any(|t| t == s)) {
            return false;
        }
        if self.resolution.is_some_and(|r| r != e.resolution) {
            return false;
        }
        match (self.require_where, e.has_where) {
            (true, Some(has)) => has != self.is_deny(),
            _ => true,
        }
    }

    /// Whether the rule covers object slot `i` of `e` (`None`: an effect without objects,
    /// which only a rule without object filters covers).
    fn covers(&self, e: &EffectView<'_>, i: Option<usize>) -> bool {
        match (&self.filters, i) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(f), Some(i)) => f.matches(&e.objects[i], self.is_deny()),
        }
    }
}

/// Restrictiveness rank of a statement verdict; implicit deny ranks with deny.
fn rank(d: DbDecision) -> u8 {
    match d {
        DbDecision::Allow => 0,
        DbDecision::Audit => 1,
        DbDecision::Redirect => 2,
        DbDecision::Approve => 3,
        DbDecision::Deny => 4,
    }
}

/// The decision on a whole statement (every effect of every statement in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementDecision {
    /// The verdict to enforce, naming its rule. `approve` stays `Approve` here, and
    /// [`Verdict::permits`] is false for it: the proxy refuses until approvals exist. A
    /// `redirect` is enforced as `Deny` until the rewriter exists (see `db_verdict`).
    pub decision: Decision,
    /// The verdict as the rules said it, including `redirect`.
    pub db_verdict: DbDecision,
    /// The index of the effect that decided (`None` for a statement without effects).
    pub effect_index: Option<usize>,
    /// Every `audit` rule that matched, for the event.
    pub audit_rules: Vec<String>,
    /// The target relation of a deciding `redirect` rule.
    pub redirect_relation: Option<String>,
    /// How a deny inside a transaction is handled.
    pub deny_mode_in_tx: DenyModeInTx,
}

impl StatementDecision {
    /// Whether the proxy forwards the statement.
    pub fn permits(&self) -> bool {
        self.decision.verdict.permits()
    }

    fn implicit(effect_index: Option<usize>, message: String) -> StatementDecision {
        StatementDecision {
            decision: Decision {
                verdict: Verdict::Deny,
                rule: DEFAULT_DENY_STATEMENT.to_string(),
                message: Some(message),
            },
            db_verdict: DbDecision::Deny,
            effect_index,
            audit_rules: Vec::new(),
            redirect_relation: None,
            deny_mode_in_tx: DenyModeInTx::default(),
        }
    }

    fn from_rule(rule: &StatementRule, effect_index: usize) -> StatementDecision {
        let verdict = match rule.decision {
            DbDecision::Allow => Verdict::Allow,
            DbDecision::Audit => Verdict::Audit,
            DbDecision::Approve => Verdict::Approve,
            DbDecision::Deny | DbDecision::Redirect => Verdict::Deny,
        };
        let message = match (rule.decision, &rule.message) {
            (DbDecision::Redirect, None) => Some("statement redirect is not supported yet".to_string()),
            (_, m) => m.clone(),
        };
        StatementDecision {
            decision: Decision { verdict, rule: rule.name.clone(), message },
            db_verdict: rule.decision,
            effect_index: Some(effect_index),
            audit_rules: Vec::new(),
            redirect_relation: rule.redirect.clone(),
            deny_mode_in_tx: rule.deny_mode_in_tx,
        }
    }
}

/// What one effect came to.
enum Outcome<'r> {
    Rule(&'r StatementRule),
    Uncovered(String),
}

impl Outcome<'_> {
    fn rank(&self) -> u8 {
        match self {
            Outcome::Rule(r) => rank(r.decision),
            Outcome::Uncovered(_) => 4,
        }
    }
}

fn uncovered_message(e: &EffectView<'_>, i: Option<usize>) -> String {
    let what = match e.subtype {
        Some(s) => format!("{}/{}", e.group.as_str(), s),
        None => e.group.as_str().to_string(),
    };
    match i {
        Some(i) => format!("{what} on {} is not covered by any rule", e.objects[i]),
        None => format!("{what} is not covered by any rule"),
    }
}

/// Evaluates one effect against `rules` (already scoped to the service).
fn decide_effect<'r>(
    rules: &'r [StatementRule],
    e: &EffectView<'_>,
    audits: &mut Vec<String>,
) -> Outcome<'r> {
    let applicable = || rules.iter().filter(|r| r.applies(e));
    let slots: Vec<Option<usize>> =
        if e.objects.is_empty() { vec![None] } else { (0..e.objects.len()).map(Some).collect() };
    // A deny on any object decides the effect.
    for r in applicable().filter(|r| r.is_deny()) {
        if slots.iter().any(|&i| r.covers(e, i)) {
            return Outcome::Rule(r);
        }
    }
    // Every slot must be covered; each slot folds its covering rules to the most restrictive.
    let mut worst: Option<&StatementRule> = None;
    for &i in &slots {
        let mut slot: Option<&StatementRule> = None;
        for r in applicable().filter(|r| !r.is_deny() && r.covers(e, i)) {
            if r.decision == DbDecision::Audit && !audits.contains(&r.name) {
                audits.push(r.name.clone());
            }
            if slot.is_none_or(|s| rank(r.decision) > rank(s.decision)) {
                slot = Some(r);
            }
        }
        match slot {
            None => return Outcome::Uncovered(uncovered_message(e, i)),
            Some(s) if worst.is_none_or(|w| rank(s.decision) > rank(w.decision)) => worst = Some(s),
            Some(_) => {}
        }
    }
    match worst {
        Some(r) => Outcome::Rule(r),
        None => Outcome::Uncovered(uncovered_message(e, None)),
    }
}

/// Decides a statement: every effect evaluated, the most restrictive outcome wins, the first
/// effect breaking a tie. No effects at all (an empty query string) is allowed by no rule and
/// denied.
pub(crate) fn decide(rules: &[StatementRule], effects: &[EffectView<'_>]) -> StatementDecision {
    let mut audits = Vec::new();
    let mut best: Option<(usize, Outcome<'_>)> = None;
    for (i, e) in effects.iter().enumerate() {
        let out = decide_effect(rules, e, &mut audits);
        if best.as_ref().is_none_or(|(_, b)| out.rank() > b.rank()) {
            best = Some((i, out));
        }
    }
    let mut d = match best {
        None => StatementDecision::implicit(None, "empty statement".to_string()),
        Some((i, Outcome::Uncovered(m))) => StatementDecision::implicit(Some(i), m),
        Some((i, Outcome::Rule(r))) => StatementDecision::from_rule(r, i),
    };
    d.audit_rules = audits;
    d
}
