//! The session resolver end to end on loopback: policy refusals never reach the upstream, both
//! modes, redirects, TCP (pipelined), truncation fallback, malformed input, event rate limiting.

mod common;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use common::{Harness, addresses, framed, query, tcp_connect, tcp_read, udp_exchange};
use dns::{DnsEventKind, Family, ResolverConfig, Transport, check_resolved, pool::SYNTHETIC_V4};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, RecordType, rdata::svcb::SvcParamKey},
};
use policies::{Verdict, config::DnsMode, matchers::domain::Hostname};
use tokio::io::AsyncWriteExt;

fn h(s: &str) -> Hostname {
    Hostname::parse(s).expect("test name")
}

#[tokio::test]
async fn denied_names_are_refused_and_never_reach_the_upstream() {
    for mode in [DnsMode::Synthetic, DnsMode::Passthrough] {
        let t = Harness::start(mode).await;
        for (name, qtype) in [
            ("evil.example", RecordType::A),
            ("EXFIL-c2VjcmV0.Evil.Example.", RecordType::TXT),
            ("deep.sub.evil.example", RecordType::AAAA),
            ("unlisted.test", RecordType::A),
            ("unlisted.test", RecordType::MX),
        ] {
            let m = t.ask(name, qtype).await;
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name} {qtype}");
            assert!(m.answers.is_empty());
        }
        // An allowed name does reach it (passthrough) — so the log is live, not just empty.
        t.ask("www.example.com", RecordType::TXT).await;
        let seen = t.upstream.questions();
        assert!(seen.iter().all(|l| !l.name.contains("evil") && !l.name.contains("unlisted")), "{seen:?}");
        assert!(t.upstream.saw("www.example.com"));
        let events = t.events();
        let refused: Vec<_> = events.iter().filter(|e| e.rcode == "REFUSED").collect();
        assert_eq!(refused.len(), 5);
        assert!(refused.iter().all(|e| e.decision.verdict == Verdict::Deny));
        assert_eq!(refused[1].name, "exfil-c2vjcmv0.evil.example", "names are normalised in events");
        assert_eq!(refused[1].decision.rule, "deny-evil");
        assert_eq!(refused[3].decision.rule, policies::engine::DEFAULT_DENY_DNS);
    }
}

#[tokio::test]
async fn passthrough_relays_the_upstream_answer_and_names_later_connects() {
    let t = Harness::start(DnsMode::Passthrough).await;
    let m = t.ask("WWW.Example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&m), vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))]);
    assert_eq!(m.answers[0].ttl, 120);
    assert_eq!(t.resolver.name_for("203.0.113.7".parse().expect("ip")), Some(h("www.example.com")));
    assert_eq!(t.resolver.name_for("203.0.113.99".parse().expect("ip")), None);

    let m = t.ask("www.example.com", RecordType::AAAA).await;
    assert_eq!(addresses(&m), vec!["2001:db8::7".parse::<IpAddr>().expect("ip")]);
    assert_eq!(t.resolver.name_for("2001:db8::7".parse().expect("ip")), Some(h("www.example.com")));

    // Rebinding: the loopback address is withheld, the public one kept.
    let m = t.ask("rebind.example.com", RecordType::A).await;
    assert_eq!(addresses(&m), vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 8))]);
    assert_eq!(t.resolver.name_for("127.0.0.1".parse().expect("ip")), None);

    // CNAME chain kept, records off the chain dropped; the address names the asked name.
    let m = t.ask("cname.example.com", RecordType::A).await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(addresses(&m), vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))]);
    assert_eq!(t.resolver.name_for("203.0.113.9".parse().expect("ip")), Some(h("cname.example.com")));
    assert_eq!(t.resolver.name_for("6.6.6.6".parse().expect("ip")), None);

    let m = t.ask("nx.example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))));

    // Other types are forwarded for allowed names; additional records are not relayed.
    let m = t.ask("www.example.com", RecordType::MX).await;
    assert!(matches!(m.answers[0].data, RData::MX(_)));
    assert!(m.additionals.is_empty());
    let e = t.events().into_iter().find(|e| e.qtype == "A" && e.name == "www.example.com").expect("event");
    assert_eq!((e.kind, e.decision.rule.as_str()), (DnsEventKind::Query, "web"));
    assert_eq!(e.answers, vec!["203.0.113.7".to_string()]);
    assert_eq!(e.upstream, Some(t.upstream.addr));
}

#[tokio::test]
async fn synthetic_binding_is_stable_across_ten_thousand_names() {
    let t = Harness::start(DnsMode::Synthetic).await;
    let mut seen_v4 = HashSet::new();
    let mut first = Vec::new();
    for i in 0..10_000u32 {
        let name = format!("host{i}.example.com");
        let reply =
            t.resolver.answer(&query(i as u16, &name, RecordType::A), Transport::Udp).await.expect("reply");
        let m = Message::from_vec(&reply).expect("decodes");
        let [IpAddr::V4(ip)] = addresses(&m)[..] else { panic!("one A for {name}: {m:?}") };
        assert!(SYNTHETIC_V4.contains(&ip));
        assert_eq!(m.answers[0].ttl, 30);
        assert!(seen_v4.insert(ip), "address {ip} handed out twice");
        first.push(ip);
    }
    for i in (0..10_000u32).step_by(97) {
        let name = format!("HOST{i}.example.com.");
        let m = t.ask(&name, RecordType::A).await;
        assert_eq!(addresses(&m), vec![IpAddr::V4(first[i as usize])], "stable binding for {name}");
        assert_eq!(
            t.resolver.name_for(IpAddr::V4(first[i as usize])),
            Some(h(&format!("host{i}.example.com")))
        );
        let aaaa = t.ask(&name, RecordType::AAAA).await;
        let [IpAddr::V6(v6)] = addresses(&aaaa)[..] else { panic!("one AAAA") };
        assert_eq!(v6.segments()[..3], [0xfd00, 0, 0x5e55]);
        assert_eq!(t.resolver.name_for(IpAddr::V6(v6)), Some(h(&format!("host{i}.example.com"))));
    }
    // Reverse lookups over DNS: PTR for a bound address, NXDOMAIN for an unbound one.
    let [a, b, c, d] = first[42].octets();
    let m = t.ask(&format!("{d}.{c}.{b}.{a}.in-addr.arpa."), RecordType::PTR).await;
    match &m.answers[..] {
        [r] => match &r.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "host42.example.com."),
            other => panic!("PTR expected, got {other:?}"),
        },
        other => panic!("one PTR expected, got {other:?}"),
    }
    let m = t.ask("254.255.19.198.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(t.upstream.questions().is_empty(), "synthetic A/AAAA/PTR never go upstream");
}

#[tokio::test]
async fn synthetic_mode_strips_real_addresses_from_forwarded_types() {
    let t = Harness::start(DnsMode::Synthetic).await;
    let m = t.ask("svc.example.com", RecordType::HTTPS).await;
    let RData::HTTPS(https) = &m.answers[0].data else { panic!("HTTPS expected: {m:?}") };
    let keys: Vec<SvcParamKey> = https.0.svc_params.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec![SvcParamKey::Mandatory, SvcParamKey::Alpn]);
    let Some((_, hickory_proto::rr::rdata::svcb::SvcParamValue::Mandatory(mandatory))) =
        https.0.svc_params.first()
    else {
        panic!("mandatory first")
    };
    assert_eq!(mandatory.0, vec![SvcParamKey::Alpn], "ipv4hint no longer mandatory");
    assert!(m.additionals.is_empty());
    let m = t.ask("www.example.com", RecordType::MX).await;
    assert!(matches!(m.answers[..], [ref r] if matches!(r.data, RData::MX(_))));
    assert!(m.additionals.is_empty(), "no glue addresses");
    assert!(t.upstream.saw("svc.example.com"));
}

#[tokio::test]
async fn redirects_answer_a_and_aaaa_by_family_and_nodata_otherwise() {
    let t = Harness::start(DnsMode::Synthetic).await;
    let m = t.ask("Build.Corp.Example.", RecordType::A).await;
    assert_eq!(addresses(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
    assert_eq!(m.answers[0].ttl, 42);
    for qtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let m = t.ask("corp.example", qtype).await;
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 0),
            "NODATA for {qtype}"
        );
    }
    let m = t.ask("corp6.example", RecordType::AAAA).await;
    assert_eq!(addresses(&m), vec!["fd00::42".parse::<IpAddr>().expect("ip")]);
    assert_eq!(m.answers[0].ttl, 60);
    let m = t.ask("corp6.example", RecordType::A).await;
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
    assert!(t.upstream.questions().is_empty(), "redirected names are never forwarded");
    let e = &t.events()[0];
    assert_eq!(
        (e.kind, e.decision.rule.as_str(), e.name.as_str()),
        (DnsEventKind::Redirect, "internal", "build.corp.example")
    );
    assert_eq!(e.answers, vec!["10.1.2.3".to_string()]);
}

#[tokio::test]
async fn tcp_answers_pipelined_queries() {
    let t = Harness::start(DnsMode::Passthrough).await;
    let mut s = tcp_connect(t.tcp).await;
    let mut both = framed(&query(1, "a.example.com", RecordType::A));
    both.extend(framed(&query(2, "evil.example", RecordType::A)));
    s.write_all(&both).await.expect("write");
    let (x, y) = (tcp_read(&mut s).await, tcp_read(&mut s).await);
    let mut got = [(x.metadata.id, x.metadata.response_code), (y.metadata.id, y.metadata.response_code)];
    got.sort_by_key(|g| g.0);
    assert_eq!(got, [(1, ResponseCode::NoError), (2, ResponseCode::Refused)]);
    // The connection stays open for more.
    s.write_all(&framed(&query(3, "b.example.com", RecordType::AAAA))).await.expect("write");
    assert_eq!(tcp_read(&mut s).await.metadata.id, 3);
    assert!(!t.upstream.saw("evil.example"));
}

#[tokio::test]
async fn truncated_upstream_answer_falls_back_to_tcp() {
    let t = Harness::start(DnsMode::Passthrough).await;
    // Over UDP the 60 addresses do not fit 512 bytes: the client is told to retry over TCP.
    let m = t.ask("big.example.com", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let log: Vec<bool> =
        t.upstream.questions().iter().filter(|l| l.name == "big.example.com").map(|l| l.tcp).collect();
    assert_eq!(log, vec![false, true], "UDP first, then TCP after TC");
    let mut s = tcp_connect(t.tcp).await;
    s.write_all(&framed(&query(9, "big.example.com", RecordType::A))).await.expect("write");
    let m = tcp_read(&mut s).await;
    assert_eq!(addresses(&m).len(), 60);
}

#[tokio::test]
async fn malformed_input_gets_formerr_or_nothing_and_the_server_survives() {
    let t = Harness::start(DnsMode::Synthetic).await;
    // Garbage after a query header: FORMERR with the same ID.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 20]);
    let r = udp_exchange(t.udp, &junk).await.expect("FORMERR");
    assert_eq!(r[..4], [0x12, 0x34, 0x81, 0x81]);
    // Two questions: FORMERR (decided from the header; nothing is decoded or forwarded).
    let mut two = query(5, "a.example.com", RecordType::A);
    two[5] = 2;
    let r = udp_exchange(t.udp, &two).await.expect("FORMERR");
    assert_eq!(r[3] & 0x0f, 1);
    // Counts that cannot fit: FORMERR without allocating for them.
    let r =
        udp_exchange(t.udp, &[0, 9, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).await.expect("FORMERR");
    assert_eq!(r[3] & 0x0f, 1);
    // Too short, or a response: no reply at all.
    assert_eq!(udp_exchange(t.udp, &[1, 2, 3]).await, None);
    let mut resp = query(6, "a.example.com", RecordType::A);
    resp[2] |= 0x80;
    assert_eq!(udp_exchange(t.udp, &resp).await, None);
    // Meta types and other opcodes: NOTIMP.
    let m = t.ask("a.example.com", RecordType::ANY).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    let mut status = query(8, "a.example.com", RecordType::A);
    status[2] = (status[2] & 0x87) | (2 << 3);
    let r = udp_exchange(t.udp, &status).await.expect("NOTIMP");
    assert_eq!(r[3] & 0x0f, 4);
    // A deterministic spray of mutated queries: never a panic, the server keeps answering.
    let base = query(10, "www.example.com", RecordType::A);
    let mut seed = 0x9e37_79b9_u32;
    for _ in 0..300 {
        let mut p = base.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let at = seed as usize % p.len();
            p[at] = (seed >> 8) as u8;
        }
        let _ = t.resolver.answer(&p, Transport::Udp).await;
    }
    let m = t.ask("www.example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn events_are_rate_limited_and_report_what_was_suppressed() {
    let t =
        Harness::with_config(ResolverConfig { event_rate: 1, event_burst: 5, ..ResolverConfig::default() })
            .await;
    for i in 0..20u16 {
        t.resolver.answer(&query(i, &format!("n{i}.example.com"), RecordType::A), Transport::Udp).await;
    }
    assert_eq!(t.events().len(), 5);
    assert!(t.events().iter().all(|e| e.suppressed == 0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.resolver.answer(&query(99, "late.example.com", RecordType::A), Transport::Udp).await;
    let events = t.events();
    assert_eq!(events.len(), 6);
    assert_eq!((events[5].name.as_str(), events[5].suppressed), ("late.example.com", 15));
}

#[tokio::test]
async fn connect_time_resolution_and_rebinding_check() {
    let t = Harness::start(DnsMode::Synthetic).await;
    let ips = t.resolver.resolve_real(&h("www.example.com"), Family::V4).await.expect("resolves");
    assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))]);
    assert_eq!(check_resolved(t.resolver.guard(), &h("www.example.com"), &ips).verdict, Verdict::Allow);
    let name = h("rebind.example.com");
    let ips = t.resolver.resolve_real(&name, Family::V4).await.expect("resolves");
    let d = check_resolved(t.resolver.guard(), &name, &ips);
    assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Deny, dns::guard::RESOLVED_SENSITIVE));
    // A CIDR rule scoped to the name vouches for its private address.
    let lab = h("lab.allowed.test");
    let ips = t.resolver.resolve_real(&lab, Family::V4).await.expect("resolves");
    assert_eq!(check_resolved(t.resolver.guard(), &lab, &ips).rule, "lab");
    assert!(t.resolver.resolve_real(&h("nx.example.com"), Family::V4).await.expect("nxdomain").is_empty());
}
