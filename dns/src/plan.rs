//! [`handle_query`]: the pure decision for one decoded DNS message. It never touches a socket or
//! mutable state; [`crate::SessionResolver`] carries the [`Plan`] out.
//!
//! Order for a well-formed single question of class IN:
//! 1. PTR for an address of the session's synthetic pool (synthetic mode): answered from the pool;
//! 2. a name that is not a valid host name: refused (no rule can allow it);
//! 3. `dns_redirects` (first match): A for an IPv4 `resolve_to`, AAAA for IPv6, NODATA for every
//!    other type; a redirected name is never forwarded;
//! 4. [`CompiledPolicy::decide_dns`]: anything but `allow`/`audit` is REFUSED and never forwarded
//!    (`approve` fails closed until an approval channel exists);
//! 5. synthetic mode, A/AAAA: a pool address; everything else: forwarded, and in synthetic mode
//!    the answer is stripped of real addresses (see [`crate::answer`]).

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RecordType},
};
use ipnet::{IpNet, Ipv6Net};
use policies::{CompiledPolicy, Decision, Verdict, config::DnsMode, matchers::domain::Hostname};

use crate::{Family, pool::SYNTHETIC_V4, wire::hostname_of};

/// Rule name of the refusal of a name that is not a valid host name.
pub const INVALID_NAME: &str = "invalid-dns-name";
/// Rule name of answers to PTR questions for synthetic addresses.
pub const SYNTHETIC_PTR: &str = "synthetic-ptr";

/// What [`handle_query`] needs to decide: borrowed, cheap to build per query.
#[derive(Debug, Clone, Copy)]
pub struct ResolverCtx<'a> {
    /// The session's compiled policy.
    pub policy: &'a CompiledPolicy,
    /// Synthetic or passthrough.
    pub mode: DnsMode,
    /// The session's AAAA pool prefix (the A pool is always [`SYNTHETIC_V4`]).
    pub pool_v6: Ipv6Net,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Send nothing (the message is itself a response).
    Drop,
    /// Reply with this code and no records: FORMERR (malformed, not exactly one question, records
    /// in a query) or NOTIMP (other opcodes, classes, or meta types such as ANY and AXFR).
    Error(ResponseCode),
    /// REFUSED: policy denied the name; it is never forwarded.
    Refuse {
        /// The question name (raw presentation form when it is not a host name).
        name: String,
        /// The question type.
        qtype: RecordType,
        /// The deciding rule.
        decision: Decision,
    },
    /// Answer from a `dns_redirects` rule.
    Redirect {
        /// The question name.
        name: Hostname,
        /// The question type.
        qtype: RecordType,
        /// Allow, naming the redirect rule.
        decision: Decision,
        /// The address to answer, or `None` for NODATA (type and address family differ).
        answer: Option<IpAddr>,
        /// TTL from the rule.
        ttl: u32,
    },
    /// Answer A/AAAA with the name's pool address.
    Synthetic {
        /// The question name.
        name: Hostname,
        /// A or AAAA.
        family: Family,
        /// The allowing rule.
        decision: Decision,
    },
    /// Answer a PTR question for a pool address from the pool (NXDOMAIN when unbound).
    SyntheticPtr {
        /// The address asked about.
        ip: IpAddr,
        /// The question type (PTR).
        qtype: RecordType,
    },
    /// Ask the upstream and relay its (sanitised) answer.
    Forward {
        /// The question name.
        name: Hostname,
        /// The question type.
        qtype: RecordType,
        /// The allowing rule.
        decision: Decision,
        /// Remove real addresses from the answer (synthetic mode).
        strip_addresses: bool,
    },
}

impl Plan {
    /// The decision the plan carries, for events (`None` for `Drop` and `Error`).
    pub fn decision(&self) -> Option<Decision> {
        match self {
            Plan::Drop | Plan::Error(_) => None,
            Plan::Refuse { decision, .. }
            | Plan::Redirect { decision, .. }
            | Plan::Synthetic { decision, .. }
            | Plan::Forward { decision, .. } => Some(decision.clone()),
            Plan::SyntheticPtr { .. } => {
                Some(Decision { verdict: Verdict::Allow, rule: SYNTHETIC_PTR.into(), message: None })
            }
        }
    }
}

/// Question types that are not a lookup of one record set.
fn is_meta(qtype: RecordType) -> bool {
    matches!(
        qtype,
        RecordType::ANY
            | RecordType::AXFR
            | RecordType::IXFR
            | RecordType::OPT
            | RecordType::TSIG
            | RecordType::ZERO
    ) || matches!(u16::from(qtype), 128..=255)
}

/// Decide what to do with `msg` (see the module docs for the order of checks).
pub fn handle_query(ctx: &ResolverCtx<'_>, msg: &Message) -> Plan {
    if msg.metadata.message_type != MessageType::Query {
        return Plan::Drop;
    }
    if msg.metadata.op_code != OpCode::Query {
        return Plan::Error(ResponseCode::NotImp);
    }
    let [q] = msg.queries.as_slice() else { return Plan::Error(ResponseCode::FormErr) };
    if !msg.answers.is_empty() || !msg.authorities.is_empty() {
        return Plan::Error(ResponseCode::FormErr);
    }
    let qtype = q.query_type;
    if q.query_class != DNSClass::IN || is_meta(qtype) {
        return Plan::Error(ResponseCode::NotImp);
    }
    if qtype == RecordType::PTR
        && ctx.mode == DnsMode::Synthetic
        && let Some(ip) = synthetic_arpa(ctx, &q.name)
    {
        return Plan::SyntheticPtr { ip, qtype };
    }
    let Some(name) = hostname_of(&q.name) else {
        return Plan::Refuse {
            name: q.name.to_ascii(),
            qtype,
            decision: Decision {
                verdict: Verdict::Deny,
                rule: INVALID_NAME.into(),
                message: Some("not a valid host name".into()),
            },
        };
    };
    if let Some(rule) = ctx.policy.match_dns_redirect(&name) {
        let answer = match (qtype, rule.resolve_to) {
            (RecordType::A, ip @ IpAddr::V4(_)) | (RecordType::AAAA, ip @ IpAddr::V6(_)) => Some(ip),
            _ => None,
        };
        let decision = Decision { verdict: Verdict::Allow, rule: rule.name.clone(), message: None };
        return Plan::Redirect { name, qtype, decision, answer, ttl: rule.ttl };
    }
    let decision = ctx.policy.decide_dns(&name);
    if !decision.verdict.permits() {
        return Plan::Refuse { name: name.as_str().to_string(), qtype, decision };
    }
    match (ctx.mode, qtype) {
        (DnsMode::Synthetic, RecordType::A) => Plan::Synthetic { name, family: Family::V4, decision },
        (DnsMode::Synthetic, RecordType::AAAA) => Plan::Synthetic { name, family: Family::V6, decision },
        (mode, _) => Plan::Forward { name, qtype, decision, strip_addresses: mode == DnsMode::Synthetic },
    }
}

/// The address of a PTR name (`d.c.b.a.in-addr.arpa.` or 32 nibbles under `ip6.arpa.`) when it
/// is a single address inside the session's pool.
fn synthetic_arpa(ctx: &ResolverCtx<'_>, name: &hickory_proto::rr::Name) -> Option<IpAddr> {
    let mut fqdn = name.clone();
    fqdn.set_fqdn(true);
    match fqdn.parse_arpa_name().ok()? {
        IpNet::V4(n) if n.prefix_len() == 32 && SYNTHETIC_V4.contains(&n.addr()) => {
            Some(IpAddr::V4(n.addr()))
        }
        IpNet::V6(n) if n.prefix_len() == 128 && ctx.pool_v6.contains(&n.addr()) => {
            Some(IpAddr::V6(n.addr()))
        }
        _ => None,
    }
}
