//! `unix_socket_rules` compiled for one session: first match wins; no match is left to the
//! caller, whose default reaches only the session's own sockets and the workspace.

use std::path::Path;

use crate::{
    Decision,
    matchers::path_glob::CompiledGlob,
    model::unix::{UnixOperation, UnixSocketRule},
};

/// Rule name of the decision when no Unix-socket rule matches and the default refuses.
pub const DEFAULT_DENY_UNIX: &str = "default-deny-unix";

/// What a Unix socket operation targets.
#[derive(Debug, Clone, Copy)]
pub enum UnixTarget<'a> {
    /// A normalised absolute path.
    Path(&'a Path),
    /// An abstract name (without the leading NUL).
    Abstract(&'a [u8]),
}

struct Compiled {
    globs: Vec<CompiledGlob>,
    any_path: bool,
    ops: Vec<UnixOperation>,
    decision: Decision,
}

/// The compiled rules.
pub struct UnixRules {
    rules: Vec<Compiled>,
}

impl UnixRules {
    /// Compile `rules`, expanding `~` and `${VAR}` with `vars`. A glob with an unset variable
    /// matches nothing.
    pub fn new(rules: &[UnixSocketRule], vars: &dyn Fn(&str) -> Option<String>) -> UnixRules {
        let rules = rules
            .iter()
            .map(|r| Compiled {
                globs: r.paths.iter().filter_map(|g| CompiledGlob::compile(g.as_str(), vars)).collect(),
                any_path: r.paths.is_empty(),
                ops: r.operations.clone(),
                decision: Decision { verdict: r.decision, rule: r.name.clone(), message: r.message.clone() },
            })
            .collect();
        UnixRules { rules }
    }

    /// The first rule matching `target` and `op`, if any.
    pub fn decide(&self, target: UnixTarget<'_>, op: UnixOperation) -> Option<&Decision> {
        self.rules
            .iter()
            .find(|r| {
                let op_ok = r.ops.is_empty() || r.ops.iter().any(|o| *o == op || *o == UnixOperation::All);
                let path_ok = r.any_path
                    || r.globs.iter().any(|g| match target {
                        UnixTarget::Path(p) => g.matches_path(p),
                        UnixTarget::Abstract(n) => g.matches_abstract(n),
                    });
                op_ok && path_ok
            })
            .map(|r| &r.decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    #[test]
    fn first_match_wins_and_operations_filter() {
        let policy = crate::load_policy(
            "unix_socket_rules:\n  \
             - {name: no-docker, paths: [/var/run/docker.sock], operations: [connect], decision: deny}\n  \
             - {name: pg, paths: ['/tmp/.s.PGSQL.*'], decision: allow}\n  \
             - {name: bus, paths: ['@dbus-*'], decision: deny}\n",
            "t.yaml",
        )
        .unwrap();
        let rules = UnixRules::new(&policy.unix_socket_rules, &|_| None);
        let d = rules
            .decide(UnixTarget::Path(Path::new("/var/run/docker.sock")), UnixOperation::Connect)
            .unwrap();
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, "no-docker"));
        assert!(
            rules.decide(UnixTarget::Path(Path::new("/var/run/docker.sock")), UnixOperation::Bind).is_none()
        );
        let d =
            rules.decide(UnixTarget::Path(Path::new("/tmp/.s.PGSQL.5432")), UnixOperation::Connect).unwrap();
        assert_eq!(d.rule, "pg");
        let d = rules.decide(UnixTarget::Abstract(b"dbus-1"), UnixOperation::Connect).unwrap();
        assert_eq!(d.rule, "bus");
        assert!(rules.decide(UnixTarget::Path(Path::new("/srv/x.sock")), UnixOperation::Connect).is_none());
    }
}
