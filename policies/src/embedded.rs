//! Policies compiled into the binary, selectable by name (`--policy default`).

/// The names of the embedded policies, in the order `agentsh` lists them.
pub const NAMES: &[&str] = &["default", "strict", "audit"];

/// The YAML source of the embedded policy `name`, if there is one.
pub fn source(name: &str) -> Option<&'static str> {
    match name {
        "default" => Some(include_str!("../embedded/default.yaml")),
        "strict" => Some(include_str!("../embedded/strict.yaml")),
        "audit" => Some(include_str!("../embedded/audit.yaml")),
        _ => None,
    }
}
