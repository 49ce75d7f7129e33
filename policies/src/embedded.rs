//! Policies compiled into the binary, selectable by name (`--policy default`).

/// The names of the embedded policies, in the order `agentsh` lists them.
pub const NAMES: &[&str] = &["default", "strict", "audit"];

/// The YAML source of the embedded policy `name`, if there is one. Every one ends with the
/// same `file_rules` (`embedded/credentials.yaml`): credential stores and container sockets
/// are out of reach whatever else the policy allows.
pub fn source(name: &str) -> Option<&'static str> {
    macro_rules! with_credentials {
        ($file:literal) => {
            concat!(include_str!($file), include_str!("../embedded/credentials.yaml"))
        };
    }
    match name {
        "default" => Some(with_credentials!("../embedded/default.yaml")),
        "strict" => Some(with_credentials!("../embedded/strict.yaml")),
        "audit" => Some(with_credentials!("../embedded/audit.yaml")),
        _ => None,
    }
}
