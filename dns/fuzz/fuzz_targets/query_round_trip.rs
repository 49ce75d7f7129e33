//! Fuzz the resolver's pure path: decode → handle_query → answer → encode → decode. No panic;
//! a message that decodes re-encodes and decodes to the same message; the reply we build for
//! the plan decodes to the ID, code and answers we put in; a refused plan never names an
//! allowed rule; bytes that do not decode get a header-only reply or none.
#![no_main]

use std::{
    net::IpAddr,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use dns::{
    Plan, ResolverCtx, SyntheticPool, handle_query,
    pool::session_v6_prefix,
    wire::{self, MAX_UDP},
};
use hickory_proto::{
    op::ResponseCode,
    rr::{
        RData, Record,
        rdata::{A, AAAA},
    },
};
use libfuzzer_sys::fuzz_target;
use policies::{CompiledPolicy, config::DnsMode};

const POLICY: &str = r#"
version: 1
name: fuzz
network_rules:
  - {name: deny-evil, domains: ["**.evil.example"], decision: deny}
  - {name: web, domains: ["**.example.com", "**.test"], ports: [443], decision: allow}
dns_redirects:
  - {name: internal, match: '(^|\.)corp\.example$', resolve_to: 10.1.2.3, ttl: 42}
  - {name: internal6, match: '(^|\.)corp6\.example$', resolve_to: 'fd00::42'}
"#;

fn policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| CompiledPolicy::new(&policies::load_policy(POLICY, "fuzz.yaml").expect("policy")))
}

fn pool() -> &'static Mutex<SyntheticPool> {
    static P: OnceLock<Mutex<SyntheticPool>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(SyntheticPool::new(1024, session_v6_prefix(1), Duration::ZERO)))
}

fn record(msg: &hickory_proto::op::Message, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(msg.queries[0].name.clone(), ttl, data)
}

fuzz_target!(|data: &[u8]| {
    let msg = match wire::decode(data) {
        Ok(m) => m,
        Err(_) => {
            if let Some(reply) = wire::header_reply(data, ResponseCode::FormErr) {
                assert_eq!(reply.len(), wire::HEADER_LEN);
                assert_eq!(reply[..2], data[..2]);
            }
            return;
        }
    };
    // Codec round trip of the input itself.
    if let Ok(bytes) = msg.to_vec() {
        let again = wire::decode(&bytes).expect("our own encoding decodes");
        assert_eq!(again.to_vec().expect("re-encodes"), bytes);
    }
    for mode in [DnsMode::Synthetic, DnsMode::Passthrough] {
        let ctx = ResolverCtx { policy: policy(), mode, pool_v6: session_v6_prefix(1) };
        let plan = handle_query(&ctx, &msg);
        let mut resp = wire::response_to(&msg);
        match &plan {
            Plan::Drop | Plan::Forward { .. } | Plan::SyntheticPtr { .. } => continue,
            Plan::Error(rc) => resp.metadata.response_code = *rc,
            Plan::Refuse { decision, .. } => {
                assert_ne!(decision.rule, "web");
                resp.metadata.response_code = ResponseCode::Refused;
            }
            Plan::Redirect { answer, ttl, .. } => resp.answers.extend(answer.map(|ip| record(&msg, ip, *ttl))),
            Plan::Synthetic { name, family, .. } => {
                let b = pool().lock().expect("pool").bind(name, Instant::now()).expect("zero min idle recycles");
                resp.answers.push(record(&msg, b.addr(*family), 30));
            }
        }
        let Ok(bytes) = wire::encode(&resp, MAX_UDP) else { continue };
        let back = wire::decode(&bytes).expect("our reply decodes");
        assert_eq!(back.metadata.id, msg.metadata.id);
        assert_eq!(back.metadata.response_code, resp.metadata.response_code);
        if !back.metadata.truncation {
            assert_eq!(back.answers, resp.answers);
        }
    }
});
