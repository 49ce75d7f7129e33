//! Sanitising an upstream answer before it reaches the agent. Values off the wire are verified:
//! only records of class IN on the question name or on its CNAME chain (followed from the
//! question, at most [`MAX_CHAIN`] links) are kept, and only of the question's type or CNAME;
//! additional records are never relayed, authority records only as the SOA of a negative answer;
//! TTLs are capped; response codes other than NOERROR and NXDOMAIN become SERVFAIL.
//!
//! In synthetic mode the agent must never learn a real address, so A/AAAA records are removed
//! and HTTPS/SVCB records keep their priority, target, ALPN, port and ECH but lose their
//! `ipv4hint`/`ipv6hint` SvcParams (also from `mandatory`): the client then resolves the target
//! name, which gets a synthetic address. Stripping, rather than answering NODATA, keeps HTTP/3
//! and ECH discovery working.

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        DNSClass, RData, Record, RecordType,
        rdata::svcb::{SVCB, SvcParamKey, SvcParamValue},
    },
};
use policies::matchers::domain::Hostname;

use crate::wire::hostname_of;

/// Longest CNAME chain followed.
pub const MAX_CHAIN: usize = 8;
/// TTL cap for relayed records, in seconds.
pub const MAX_TTL: u32 = 86_400;
/// TTL cap for the SOA of negative answers.
pub const MAX_NEGATIVE_TTL: u32 = 3_600;

/// The parts of an upstream answer that are relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sanitised {
    /// NOERROR, NXDOMAIN or SERVFAIL.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (an SOA for negative answers, nothing else).
    pub authorities: Vec<Record>,
}

fn owner(record: &Record) -> Option<Hostname> {
    hostname_of(&record.name)
}

/// The question name followed by its CNAME targets, as the upstream answered them.
fn chain(qname: &Hostname, answers: &[Record]) -> Vec<Hostname> {
    let mut names = vec![qname.clone()];
    while names.len() <= MAX_CHAIN {
        let last = &names[names.len() - 1];
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.dns_class == DNSClass::IN && owner(r).as_ref() == Some(last) => {
                hostname_of(&target.0)
            }
            _ => None,
        });
        match next {
            Some(n) if !names.contains(&n) => names.push(n),
            _ => break,
        }
    }
    names
}

fn strip_hints(svcb: &SVCB) -> SVCB {
    let is_hint = |k: &SvcParamKey| matches!(k, SvcParamKey::Ipv4Hint | SvcParamKey::Ipv6Hint);
    let params = svcb
        .svc_params
        .iter()
        .filter(|(k, _)| !is_hint(k))
        .map(|(k, v)| match v {
            SvcParamValue::Mandatory(m) => {
                let mut m = m.clone();
                m.0.retain(|k| !is_hint(k));
                (*k, SvcParamValue::Mandatory(m))
            }
            other => (*k, other.clone()),
        })
        .collect();
    SVCB::new(svcb.svc_priority, svcb.target_name.clone(), params)
}

/// Sanitise `upstream`'s answer to `qname`/`qtype` (see the module docs).
pub fn sanitise(qname: &Hostname, qtype: RecordType, upstream: &Message, strip_addresses: bool) -> Sanitised {
    let rcode = match upstream.metadata.response_code {
        ResponseCode::NoError => ResponseCode::NoError,
        ResponseCode::NXDomain => ResponseCode::NXDomain,
        _ => return Sanitised { rcode: ResponseCode::ServFail, answers: vec![], authorities: vec![] },
    };
    let names = chain(qname, &upstream.answers);
    let mut answers = Vec::new();
    for r in &upstream.answers {
        let rtype = r.record_type();
        if r.dns_class != DNSClass::IN || !(rtype == qtype || rtype == RecordType::CNAME) {
            continue;
        }
        if !owner(r).is_some_and(|o| names.contains(&o)) {
            continue;
        }
        let data = match &r.data {
            RData::A(_) | RData::AAAA(_) if strip_addresses => continue,
            RData::HTTPS(h) if strip_addresses => {
                RData::HTTPS(hickory_proto::rr::rdata::HTTPS(strip_hints(&h.0)))
            }
            RData::SVCB(s) if strip_addresses => RData::SVCB(strip_hints(s)),
            other => other.clone(),
        };
        answers.push(Record::from_rdata(r.name.clone(), r.ttl.min(MAX_TTL), data));
    }
    let mut authorities = Vec::new();
    if answers.iter().all(|r| r.record_type() != qtype) {
        let covers = |o: &Hostname| {
            let (q, o) = (qname.as_str(), o.as_str());
            q == o || (q.len() > o.len() && q.ends_with(o) && q.as_bytes()[q.len() - o.len() - 1] == b'.')
        };
        authorities.extend(
            upstream
                .authorities
                .iter()
                .filter(|r| r.dns_class == DNSClass::IN && matches!(r.data, RData::SOA(_)))
                .filter(|r| owner(r).is_some_and(|o| covers(&o)))
                .take(1)
                .map(|r| Record::from_rdata(r.name.clone(), r.ttl.min(MAX_NEGATIVE_TTL), r.data.clone())),
        );
    }
    Sanitised { rcode, answers, authorities }
}
