//! The statement taxonomy of `database_rules.operations`: 18 operation groups in four risk
//! tiers, and the upper-case aliases that name sets of groups (dbproxy.md §1).

use std::{fmt, str::FromStr};

/// The risk tier of an operation group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskTier {
    /// read, transaction, session, notify.
    Low,
    /// write, modify, maintenance, lock.
    Medium,
    /// delete, bulk_load, schema_create, schema_alter, procedural.
    High,
    /// bulk_export, schema_destroy, privilege, unsafe_io, unknown.
    Critical,
}

macro_rules! groups {
    ($($v:ident = $s:literal, $tier:ident;)*) => {
        /// One of the 18 statement operation groups.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OperationGroup {
            $(#[doc = concat!("`", $s, "`")] $v,)*
        }

        impl OperationGroup {
            /// Every group, in tier order.
            pub const ALL: &'static [OperationGroup] = &[$(OperationGroup::$v,)*];

            /// The lower-case name used in policy files and events.
            pub fn as_str(self) -> &'static str {
                match self { $(OperationGroup::$v => $s,)* }
            }

            /// The group's risk tier.
            pub fn tier(self) -> RiskTier {
                match self { $(OperationGroup::$v => RiskTier::$tier,)* }
            }
        }
    };
}

groups! {
    Read = "read", Low;
    Transaction = "transaction", Low;
    Session = "session", Low;
    Notify = "notify", Low;
    Write = "write", Medium;
    Modify = "modify", Medium;
    Maintenance = "maintenance", Medium;
    Lock = "lock", Medium;
    Delete = "delete", High;
    BulkLoad = "bulk_load", High;
    SchemaCreate = "schema_create", High;
    SchemaAlter = "schema_alter", High;
    Procedural = "procedural", High;
    BulkExport = "bulk_export", Critical;
    SchemaDestroy = "schema_destroy", Critical;
    Privilege = "privilege", Critical;
    UnsafeIo = "unsafe_io", Critical;
    Unknown = "unknown", Critical;
}

use OperationGroup as G;

/// The aliases, with the groups each one names. Aliases are narrow on purpose: `CREATE` does
/// not include `INSERT`. `*` names every group except `unknown`, which only a rule naming
/// `unknown` itself can allow. (`DANGEROUS` and `MUTATE` are our reading of agentsh's sets.)
const ALIASES: &[(&str, &[OperationGroup])] = &[
    ("READ", &[G::Read]),
    ("INSERT", &[G::Write]),
    ("UPDATE", &[G::Modify]),
    ("DELETE", &[G::Delete]),
    ("REMOVE", &[G::Delete]),
    ("CREATE", &[G::SchemaCreate]),
    ("DROP", &[G::SchemaDestroy]),
    ("ALTER", &[G::SchemaAlter]),
    ("TRUNCATE", &[G::Delete]),
    ("EXPORT", &[G::BulkExport]),
    ("LOAD", &[G::BulkLoad]),
    ("MUTATE", &[G::Write, G::Modify, G::Delete]),
    ("SCHEMA", &[G::SchemaCreate, G::SchemaAlter, G::SchemaDestroy]),
    ("MAINTENANCE", &[G::Maintenance]),
    ("LOCK_TABLES", &[G::Lock]),
    ("LISTEN_NOTIFY", &[G::Notify]),
    ("DANGEROUS", &[G::BulkExport, G::SchemaDestroy, G::Privilege, G::UnsafeIo, G::Procedural]),
];

/// One entry of `operations`: a group (`read`) or an alias (`READ`, `*`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DbOperation {
    text: String,
    groups: Vec<OperationGroup>,
}

impl DbOperation {
    /// The entry as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The groups it names.
    pub fn groups(&self) -> &[OperationGroup] {
        &self.groups
    }

    /// Whether this is the `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.text == "*"
    }
}

impl FromStr for DbOperation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let groups = if s == "*" {
            G::ALL.iter().copied().filter(|g| *g != G::Unknown).collect()
        } else if let Some(g) = G::ALL.iter().find(|g| g.as_str() == s) {
            vec![*g]
        } else if let Some((_, gs)) = ALIASES.iter().find(|(a, _)| *a == s) {
            gs.to_vec()
        } else {
            let groups: Vec<&str> = G::ALL.iter().map(|g| g.as_str()).collect();
            let aliases: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).collect();
            return Err(format!(
                "unknown operation {s:?} (expected a group: {}; or an alias: {}, *)",
                groups.join(", "),
                aliases.join(", ")
            ));
        };
        Ok(DbOperation { text: s.to_string(), groups })
    }
}

impl fmt::Display for DbOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_aliases() {
        assert_eq!(G::ALL.len(), 18);
        assert_eq!("read".parse::<DbOperation>().unwrap().groups(), &[G::Read]);
        assert_eq!("CREATE".parse::<DbOperation>().unwrap().groups(), &[G::SchemaCreate]);
        let all = "*".parse::<DbOperation>().unwrap();
        assert_eq!(all.groups().len(), 17);
        assert!(!all.groups().contains(&G::Unknown));
        let err = "reed".parse::<DbOperation>().unwrap_err();
        assert!(err.starts_with("unknown operation \"reed\" (expected a group: read, "), "{err}");
    }
}
