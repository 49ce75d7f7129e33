//! Session resolver: answers every DNS question of a sandbox, decides each one by policy
//! ([`policies::CompiledPolicy::decide_dns`]), never forwards a denied name, hands out synthetic
//! addresses bound 1:1 to names, applies `dns_redirects`, and keeps the TTL-aware address→name
//! map used to name later connects.
//!
//! Layout, from pure to IO:
//! - [`wire`]: bounded decode/encode and raw error replies (no IO, no policy);
//! - [`plan`]: [`plan::handle_query`], the pure per-question decision ([`plan::Plan`]);
//! - [`pool`], [`namemap`], [`guard`], [`answer`], [`events`], [`doh`]: the session state and
//!   pure helpers the resolver uses;
//! - [`upstream`]: the forwarding client (UDP, TCP fallback on truncation), over
//!   [`sockets`], its bounded reuse of connected UDP sockets;
//! - [`resolver`]: [`SessionResolver`], which executes a plan;
//! - [`server`]: [`serve_udp`] and [`serve_tcp`], which take their socket and a shutdown future,
//!   and [`serve_tcp_stream`] for one connection accepted elsewhere.
//!
//! DoT (port 853) is not answered here: the gateway denies port 853 unless a network rule allows
//! it. DoH cannot be told apart from HTTPS by port, so [`doh::KNOWN_DOH_HOSTS`] lists the public
//! endpoints for a policy (or the gateway's built-in guard) to deny by name.
#![forbid(unsafe_code)]

pub mod answer;
pub mod doh;
pub mod error;
pub mod events;
pub mod guard;
pub mod namemap;
pub mod plan;
pub mod pool;
pub mod resolver;
pub mod server;
pub mod sockets;
pub mod upstream;
pub mod wire;

pub use error::DnsError;
pub use events::{DnsEvent, DnsEventKind};
pub use guard::{AddressGuard, check_resolved};
pub use namemap::NameMap;
pub use plan::{Plan, ResolverCtx, handle_query};
pub use pool::{Family, SyntheticPool};
pub use resolver::{ResolverConfig, SessionResolver, Transport};
pub use server::{ServerLimits, serve_tcp, serve_tcp_stream, serve_udp};
pub use upstream::{Upstream, UpstreamConfig};
