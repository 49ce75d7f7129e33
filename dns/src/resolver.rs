//! [`SessionResolver`]: one per session. It decodes a query, asks [`handle_query`] for a plan,
//! carries the plan out (pool, redirect, upstream), encodes the reply within the client's size
//! limit and emits one rate-limited event per question.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};
use ipnet::Ipv6Net;
use policies::{CompiledPolicy, config::DnsMode, matchers::domain::Hostname};

use crate::{
    AddressGuard, DnsError, DnsEvent, DnsEventKind, Family, NameMap, SyntheticPool, Upstream,
    answer::sanitise,
    check_resolved,
    events::EventLimiter,
    plan::{Plan, ResolverCtx, handle_query},
    pool::session_v6_prefix,
    server::ServerLimits,
    wire::{self, MAX_MESSAGE, name_of, present, response_to, udp_limit},
};

pub use crate::events::Transport;

/// Where events go: the gateway's audit sink.
pub type EventSink = Arc<dyn Fn(DnsEvent) + Send + Sync>;

/// Per-session resolver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Synthetic (default) or passthrough.
    pub mode: DnsMode,
    /// TTL of synthetic A/AAAA answers, in seconds (short: the binding is the session's).
    pub synthetic_ttl: u32,
    /// Names the synthetic pool holds at once.
    pub pool_capacity: u32,
    /// A binding idle for less than this is never recycled (must exceed `synthetic_ttl`).
    pub pool_min_idle: Duration,
    /// The session's AAAA pool (see [`session_v6_prefix`]).
    pub pool_v6: Ipv6Net,
    /// Addresses the passthrough name map holds at once.
    pub name_map_capacity: usize,
    /// Shortest life of a name map entry (a TTL of 0 must still name the next connect).
    pub name_map_min_ttl: Duration,
    /// Longest life of a name map entry.
    pub name_map_max_ttl: Duration,
    /// Events per second (token bucket refill).
    pub event_rate: u32,
    /// Event burst (token bucket size).
    pub event_burst: u32,
    /// Server bounds.
    pub limits: ServerLimits,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            mode: DnsMode::Synthetic,
            synthetic_ttl: 30,
            pool_capacity: 65_536,
            pool_min_idle: Duration::from_secs(300),
            pool_v6: session_v6_prefix(0),
            name_map_capacity: 65_536,
            name_map_min_ttl: Duration::from_secs(30),
            name_map_max_ttl: Duration::from_secs(3_600),
            event_rate: 200,
            event_burst: 1_000,
            limits: ServerLimits::default(),
        }
    }
}

/// The session resolver (see the module docs). Share it behind an `Arc`.
pub struct SessionResolver {
    policy: Arc<CompiledPolicy>,
    guard: AddressGuard,
    config: ResolverConfig,
    pool: Mutex<SyntheticPool>,
    names: Mutex<NameMap>,
    upstream: Upstream,
    events: EventSink,
    limiter: Mutex<EventLimiter>,
}

impl std::fmt::Debug for SessionResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionResolver")
            .field("config", &self.config)
            .field("upstream", &self.upstream)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded state stays consistent across a panic in another holder (no multi-step
    // invariants are left half-done on unwind paths we own), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rcode_name(rc: ResponseCode) -> String {
    format!("{rc:?}").to_ascii_uppercase()
}

/// What one executed plan produced, for the reply and the event.
struct Outcome {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    upstream: Option<std::net::SocketAddr>,
}

impl Outcome {
    fn code(rcode: ResponseCode) -> Self {
        Outcome { rcode, answers: vec![], authorities: vec![], upstream: None }
    }
}

impl SessionResolver {
    /// A resolver for one session. `guard` must come from the same policy as `policy`.
    pub fn new(
        policy: Arc<CompiledPolicy>,
        guard: AddressGuard,
        upstream: Upstream,
        config: ResolverConfig,
        events: EventSink,
    ) -> Self {
        let now = Instant::now();
        SessionResolver {
            pool: Mutex::new(SyntheticPool::new(config.pool_capacity, config.pool_v6, config.pool_min_idle)),
            names: Mutex::new(NameMap::new(
                config.name_map_capacity,
                config.name_map_min_ttl,
                config.name_map_max_ttl,
            )),
            limiter: Mutex::new(EventLimiter::new(config.event_rate, config.event_burst, now)),
            policy,
            guard,
            config,
            upstream,
            events,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The upstream client (also used by the gateway for connect-time resolution).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The rebinding guard built from the session's policy.
    pub fn guard(&self) -> &AddressGuard {
        &self.guard
    }

    /// The borrowed context [`handle_query`] decides with.
    pub fn ctx(&self) -> ResolverCtx<'_> {
        ResolverCtx { policy: &self.policy, mode: self.config.mode, pool_v6: self.config.pool_v6 }
    }

    /// The name a connect to `ip` is bound to: its synthetic binding (synthetic mode) or the
    /// last unexpired answer that carried it (passthrough mode).
    pub fn name_for(&self, ip: IpAddr) -> Option<Hostname> {
        let now = Instant::now();
        match self.config.mode {
            DnsMode::Synthetic => lock(&self.pool).name_of(ip, now),
            DnsMode::Passthrough => lock(&self.names).lookup(ip, now),
        }
    }

    /// Connect-time real resolution through the upstream; apply [`check_resolved`] to the
    /// result (with [`Self::guard`]) before dialing.
    pub async fn resolve_real(&self, name: &Hostname, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        self.upstream.resolve_real(name, family).await
    }

    /// Answer one query (raw bytes, as received). `None` means send nothing.
    pub async fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let msg = match wire::decode(query) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed DNS query");
                return wire::header_reply(query, ResponseCode::FormErr);
            }
        };
        let plan = handle_query(&self.ctx(), &msg);
        let outcome = match &plan {
            Plan::Drop => return None,
            Plan::Error(rc) => Outcome::code(*rc),
            Plan::Refuse { name, decision, .. } => {
                tracing::info!(rule = %decision.rule, name = %name, "dns query refused");
                Outcome::code(ResponseCode::Refused)
            }
            Plan::Redirect { answer, ttl, .. } => {
                let mut o = Outcome::code(ResponseCode::NoError);
                o.answers.extend(answer.map(|ip| address_record(&msg, ip, *ttl)));
                o
            }
            Plan::Synthetic { name, family, .. } => {
                let bound = lock(&self.pool).bind(name, Instant::now());
                match bound {
                    Ok(b) => {
                        let mut o = Outcome::code(ResponseCode::NoError);
                        o.answers.push(address_record(&msg, b.addr(*family), self.config.synthetic_ttl));
                        o
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, name = %name, "synthetic pool exhausted");
                        Outcome::code(ResponseCode::ServFail)
                    }
                }
            }
            Plan::SyntheticPtr { ip, .. } => {
                let bound = lock(&self.pool).name_of(*ip, Instant::now());
                match bound.as_ref().and_then(name_of) {
                    Some(target) => {
                        let mut o = Outcome::code(ResponseCode::NoError);
                        let owner = msg.queries[0].name.clone();
                        o.answers.push(Record::from_rdata(
                            owner,
                            self.config.synthetic_ttl,
                            RData::PTR(PTR(target)),
                        ));
                        o
                    }
                    None => Outcome::code(ResponseCode::NXDomain),
                }
            }
            Plan::Forward { name, qtype, strip_addresses, .. } => {
                let mut o = self.forward(name, *qtype, *strip_addresses).await;
                // Echo the question's spelling (0x20 case randomisation) on records owned by it.
                let asked = &msg.queries[0].name;
                for r in &mut o.answers {
                    if r.name.eq_ignore_root(asked) {
                        r.name = asked.clone();
                    }
                }
                o
            }
        };
        self.emit(&msg, &plan, &outcome, transport);
        let mut resp = response_to(&msg);
        resp.metadata.response_code = outcome.rcode;
        resp.answers = outcome.answers;
        resp.authorities = outcome.authorities;
        let limit = match transport {
            Transport::Udp => udp_limit(&msg),
            Transport::Tcp => MAX_MESSAGE,
        };
        match wire::encode(&resp, limit) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DNS answer");
                wire::header_reply(query, ResponseCode::ServFail)
            }
        }
    }

    async fn forward(&self, name: &Hostname, qtype: RecordType, strip: bool) -> Outcome {
        let (answer, server) = match self.upstream.query(name, qtype).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, name = %name, "upstream DNS failed");
                return Outcome::code(ResponseCode::ServFail);
            }
        };
        let mut clean = sanitise(name, qtype, &answer, strip);
        if !strip {
            clean.answers.retain(|r| match address_of(r) {
                Some(ip) => {
                    let d = check_resolved(&self.guard, name, &[ip]);
                    if !d.verdict.permits() {
                        tracing::info!(rule = %d.rule, name = %name, %ip, "upstream address withheld");
                    }
                    d.verdict.permits()
                }
                None => true,
            });
            let now = Instant::now();
            let mut names = lock(&self.names);
            for r in &clean.answers {
                if let Some(ip) = address_of(r) {
                    names.record(ip, name, r.ttl, now);
                }
            }
        }
        Outcome {
            rcode: clean.rcode,
            answers: clean.answers,
            authorities: clean.authorities,
            upstream: Some(server),
        }
    }

    fn emit(&self, msg: &Message, plan: &Plan, outcome: &Outcome, transport: Transport) {
        if matches!(plan, Plan::Drop | Plan::Error(_)) {
            return;
        }
        // The limiter first: under load most events are suppressed, and then nothing is built.
        let Some(suppressed) = lock(&self.limiter).admit(Instant::now()) else { return };
        let Some(decision) = plan.decision() else { return };
        let q = &msg.queries[0];
        let (kind, name) = match plan {
            Plan::Redirect { name, .. } => (DnsEventKind::Redirect, name.as_str().to_string()),
            Plan::Refuse { name, .. } => (DnsEventKind::Query, name.clone()),
            Plan::Synthetic { name, .. } | Plan::Forward { name, .. } => {
                (DnsEventKind::Query, name.as_str().to_string())
            }
            _ => (DnsEventKind::Query, q.name.to_ascii()),
        };
        (self.events)(DnsEvent {
            kind,
            name,
            qtype: q.query_type.to_string(),
            decision,
            answers: outcome.answers.iter().map(present).collect(),
            rcode: rcode_name(outcome.rcode),
            transport,
            upstream: outcome.upstream,
            suppressed,
        });
    }
}

fn address_of(r: &Record) -> Option<IpAddr> {
    match r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// An A or AAAA record for the question's name (echoed as asked, case included).
fn address_record(msg: &Message, ip: IpAddr, ttl: u32) -> Record {
    let owner: Name = msg.queries[0].name.clone();
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner, ttl, data)
}
