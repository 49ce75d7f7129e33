//! Audit events (DESIGN.md §6): one JSON shape for `exec --events`, the JSONL audit file and
//! `agentsh events`. Every decision the gateway makes becomes one event.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use policies::Decision;
use serde::{Deserialize, Serialize};

/// The policy part of an event: the verdict and the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPolicy {
    /// `allow`, `deny`, `approve` or `audit`.
    pub decision: String,
    /// The deciding rule (a built-in name such as `default-deny-network` when none matched).
    pub rule: String,
    /// The rule's message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&Decision> for EventPolicy {
    fn from(d: &Decision) -> Self {
        EventPolicy {
            decision: d.verdict.as_str().to_string(),
            rule: d.rule.clone(),
            message: d.message.clone(),
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (`evt-<uuid>`).
    pub id: String,
    /// RFC 3339 time with milliseconds, UTC.
    pub timestamp: String,
    /// Event type: `net_connect`, `net_connect_blocked`, `dns_query`, `listener_auth_fail`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The session the event belongs to.
    pub session_id: String,
    /// The command that caused it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The process that caused it, when known (a pid in the host's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The destination name (SNI, Host or DNS name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The destination as `ip:port` (or `name:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The decision, for events that record one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<EventPolicy>,
    /// Type-specific details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// A random (version 4) UUID for an event id. Ids need to be unique, not unguessable: they come
/// from a generator per thread seeded once from the system's random source, so a busy source
/// of events (a statement per database round trip) makes no `getrandom` call per event.
fn event_uuid() -> uuid::Uuid {
    thread_local! {
        static STATE: std::cell::Cell<u64> =
            std::cell::Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    // splitmix64: a full-period sequence of 64-bit words, each well mixed.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    let bytes = (u128::from(next()) << 64 | u128::from(next())).to_be_bytes();
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

impl Event {
    /// A new event of `kind` for `session_id`, stamped now.
    pub fn new(kind: &str, session_id: &str) -> Self {
        Event {
            id: format!("evt-{}", event_uuid()),
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind: kind.to_string(),
            session_id: session_id.to_string(),
            command_id: None,
            pid: None,
            domain: None,
            remote: None,
            policy: None,
            fields: BTreeMap::new(),
        }
    }

    /// Set a field in `fields`.
    pub fn field(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// Whether the event records something that was refused.
    pub fn is_blocked(&self) -> bool {
        is_blocked(&self.kind, self.policy.as_ref())
    }
}

/// Whether an event of `kind` with `policy` records something that was refused.
pub fn is_blocked(kind: &str, policy: Option<&EventPolicy>) -> bool {
    kind.ends_with("_blocked")
        || kind == "listener_auth_fail"
        || policy.is_some_and(|p| p.decision == "deny" || p.decision == "approve")
}

/// Milliseconds in a duration, saturating, for `duration_ms` fields.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event ids are version 4 UUIDs, distinct across threads and many events.
    #[test]
    fn event_ids_are_distinct_random_uuids() {
        // All four threads run at once: spawned before any is joined.
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..20_000).map(|_| Event::new("t", "s").id).collect::<Vec<_>>()))
            .collect();
        let ids: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in ids.iter().take(100) {
            let u = uuid::Uuid::parse_str(id.strip_prefix("evt-").expect("evt- prefix")).expect("a UUID");
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    fn serialises_in_the_documented_shape() {
        let mut e = Event::new("net_connect_blocked", "session-1");
        e.command_id = Some("cmd-1".into());
        e.remote = Some("203.0.113.5:443".into());
        e.policy =
            Some(EventPolicy { decision: "deny".into(), rule: "default-deny-network".into(), message: None });
        let e = e.field("sni", "example.com");
        let v = serde_json::to_value(&e).unwrap();
        for key in ["id", "timestamp", "type", "session_id", "command_id", "remote", "policy", "fields"] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["type"], "net_connect_blocked");
        assert_eq!(v["policy"]["rule"], "default-deny-network");
        assert_eq!(v["fields"]["sni"], "example.com");
        assert!(e.is_blocked());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
