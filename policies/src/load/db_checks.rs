//! Cross-field checks of the database sections: credentials, plaintext upstreams, references
//! from rules to `db_services`, and the combinations dbproxy.md §1 refuses at load.

use std::{net::IpAddr, time::Duration};

use super::{
    path::YamlPath,
    validate::{Validator, is_env_name},
};
use crate::{
    Policy, Verdict,
    model::{
        db_rules::{DbDecision, MatchKind, ObjectKind, ObjectPattern},
        db_service::{DbService, DbTlsMode},
    },
};

/// The longest an `approve` on a statement may wait.
const MAX_APPROVAL: Duration = Duration::from_secs(600);

fn is_private_or_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

impl Policy {
    pub(super) fn check_db(&self, v: &mut Validator) {
        let services = YamlPath::root().key("db_services");
        for (name, svc) in &self.db_services {
            check_service(v, &services.key(name.clone()), name, svc);
        }
        self.check_connection_rules(v);
        self.check_statement_rules(v);
    }

    /// The service a rule names, reporting an unknown one at `at`.
    fn service_ref(&self, v: &mut Validator, at: YamlPath, name: &Option<String>) -> Option<&DbService> {
        let name = name.as_ref()?;
        let svc = self.db_services.get(name);
        if svc.is_none() {
            let known: Vec<&str> = self.db_services.keys().map(String::as_str).collect();
            let known = if known.is_empty() { "none are defined".to_string() } else { known.join(", ") };
            v.error(at, format!("unknown db_service {name:?} (db_services: {known})"));
        }
        svc
    }

    fn check_connection_rules(&self, v: &mut Validator) {
        let list = YamlPath::root().key("database_connection_rules");
        v.unique_names(&list, self.database_connection_rules.iter().map(|r| r.name.as_str()));
        for (i, r) in self.database_connection_rules.iter().enumerate() {
            let item = list.index(i);
            let svc = self.service_ref(v, item.key("db_service"), &r.db_service);
            if svc.is_some_and(|s| s.tls_mode == DbTlsMode::Passthrough) {
                let startup = [
                    ("db_user", !r.db_user.is_empty()),
                    ("database", r.database.is_some()),
                    ("application_name", r.application_name.is_some()),
                ];
                for (key, set) in startup {
                    if set {
                        v.error(item.key(key), format!("cannot match {key} on a passthrough service"));
                    }
                }
            }
            if r.match_kind == MatchKind::Cancel && r.decision == Verdict::Approve {
                v.error(item.key("decision"), "approve is not valid for match_kind cancel");
            }
        }
    }

    fn check_statement_rules(&self, v: &mut Validator) {
        let list = YamlPath::root().key("database_rules");
        v.unique_names(&list, self.database_rules.iter().map(|r| r.name.as_str()));
        for (i, r) in self.database_rules.iter().enumerate() {
            let item = list.index(i);
            let svc = self.service_ref(v, item.key("db_service"), &r.db_service);
            if svc.is_some_and(|s| s.tls_mode == DbTlsMode::Passthrough) {
                v.error(
                    item.key("db_service"),
                    "statement rules cannot apply to a passthrough service (statements are not visible)",
                );
            }
            if r.operations.is_empty() {
                v.error(item.key("operations"), "must name at least one operation");
            }
            let wildcard = r.operations.iter().any(|o| o.is_wildcard());
            if wildcard && r.decision == DbDecision::Allow && r.db_service.is_none() && r.db_family.is_none()
            {
                v.error(
                    item.key("operations"),
                    "allow with operations [\"*\"] needs a db_service or db_family scope",
                );
            }
            if r.deny_mode_in_tx.is_some() && r.decision != DbDecision::Deny {
                v.error(item.key("deny_mode_in_tx"), "deny_mode_in_tx is only valid on deny rules");
            }
            match (r.decision, &r.redirect) {
                (DbDecision::Redirect, None) => {
                    v.error(item.key("decision"), "redirect requires redirect.relation")
                }
                (d, Some(_)) if d != DbDecision::Redirect => {
                    v.error(item.key("redirect"), "redirect is only used with decision redirect")
                }
                _ => {}
            }
            if let Some(t) = r.timeout
                && t.0 > MAX_APPROVAL
            {
                v.error(item.key("timeout"), "approval timeout is at most 600s");
            }
            for (j, s) in r.subtypes.iter().enumerate() {
                if s.is_empty()
                    || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    v.error(
                        item.key("subtypes").index(j),
                        format!("invalid subtype {s:?} (lower-case letters, digits, _)"),
                    );
                }
            }
            for (j, o) in r.objects.iter().enumerate() {
                if let ObjectPattern::Structured(s) = o {
                    let at = item.key("objects").index(j);
                    let (need, has) = match s.kind {
                        ObjectKind::ExternalEndpoint => ("host", s.host.is_some()),
                        ObjectKind::FilesystemPath => ("path", s.path.is_some()),
                        ObjectKind::Program => ("argv0", s.argv0.is_some()),
                    };
                    if !has {
                        v.error(at.clone(), format!("this object kind requires {need}"));
                    }
                    let extra = [
                        ("host", s.host.is_some() && need != "host"),
                        ("port", s.port.is_some() && need != "host"),
                        ("path", s.path.is_some() && need != "path"),
                        ("argv0", s.argv0.is_some() && need != "argv0"),
                    ];
                    for (key, bad) in extra {
                        if bad {
                            v.error(at.key(key), format!("{key} does not apply to this object kind"));
                        }
                    }
                }
            }
        }
    }
}

fn check_service(v: &mut Validator, at: &YamlPath, name: &str, svc: &DbService) {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        v.error(
            at.clone(),
            format!("service name {name:?} must be letters, digits, _ or - (it names a socket directory)"),
        );
    }
    if let Some(c) = &svc.credentials {
        let at = at.key("credentials");
        match (&c.password_env, &c.password_file) {
            (Some(_), Some(_)) => {
                v.error(at.key("password_file"), "password_env and password_file are mutually exclusive")
            }
            (None, None) => v.error(at.clone(), "one of password_env or password_file is required"),
            _ => {}
        }
        if let Some(env) = &c.password_env
            && !is_env_name(env)
        {
            v.error(at.key("password_env"), format!("{env:?} is not an environment variable name"));
        }
        v.non_empty(at.key("user"), &c.user);
    }
    if svc.tls_mode == DbTlsMode::TerminatePlaintextUpstream && !svc.trusted_network {
        let local = match svc.upstream.ip() {
            Some(ip) => is_private_or_loopback(ip),
            None => svc.upstream.host == "localhost",
        };
        if !local {
            v.error(
                at.key("upstream"),
                format!(
                    "plaintext upstream {} is not loopback or a private address; set trusted_network: true to allow it",
                    svc.upstream
                ),
            );
        }
    }
}
