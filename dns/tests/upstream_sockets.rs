//! The forwarding client's UDP sockets against a raw responder on 127.0.0.1 that records the
//! source port of every question: sockets are reused, but each for a bounded number of queries;
//! a query that timed out never shares its socket with a later one; a stray answer with the
//! wrong ID is ignored.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use dns::{Upstream, UpstreamConfig, sockets::MAX_USES};
use hickory_proto::{
    op::{Message, MessageType},
    rr::{RData, Record, rdata::A},
};
use policies::matchers::domain::Hostname;
use tokio::net::UdpSocket;

/// What the responder does with a question for this name.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    Drop,
    /// Send an answer with the wrong ID first, then the right one.
    StrayFirst,
}

struct Responder {
    addr: SocketAddr,
    ports: Arc<Mutex<Vec<(String, u16)>>>,
}

async fn responder(behaviour: fn(&str) -> Behaviour) -> Responder {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let log = ports.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let Some(question) = q.queries.first().cloned() else { continue };
            let name = question.name.to_ascii().trim_end_matches('.').to_string();
            log.lock().unwrap().push((name.clone(), peer.port()));
            let mut r = q.clone();
            r.metadata.message_type = MessageType::Response;
            r.add_answer(Record::from_rdata(question.name.clone(), 60, RData::A(A::new(192, 0, 2, 7))));
            match behaviour(&name) {
                Behaviour::Drop => continue,
                Behaviour::StrayFirst => {
                    let mut stray = r.clone();
                    stray.metadata.id = r.metadata.id.wrapping_add(1);
                    stray.answers.clear();
                    stray.add_answer(Record::from_rdata(
                        question.name,
                        60,
                        RData::A(A::new(203, 0, 113, 66)),
                    ));
                    let _ = sock.send_to(&stray.to_vec().unwrap(), peer).await;
                }
                Behaviour::Answer => {}
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    Responder { addr, ports }
}

fn client(server: SocketAddr) -> Upstream {
    Upstream::new(UpstreamConfig { servers: vec![server], timeout: Duration::from_millis(300), attempts: 1 })
}

fn h(s: &str) -> Hostname {
    Hostname::parse(s).unwrap()
}

#[tokio::test]
async fn sockets_are_reused_for_a_bounded_number_of_queries() {
    let r = responder(|_| Behaviour::Answer).await;
    let up = client(r.addr);
    let n: usize = 300;
    for i in 0..n {
        let ips = up.resolve_real(&h(&format!("n{i}.example.com")), dns::Family::V4).await.unwrap();
        assert_eq!(ips, ["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]);
    }
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for (_, port) in r.ports.lock().unwrap().iter() {
        *per_port.entry(*port).or_default() += 1;
    }
    assert!(per_port.values().all(|&uses| uses <= MAX_USES as usize), "{per_port:?}");
    let min_ports = n.div_ceil(MAX_USES as usize);
    assert!(per_port.len() >= min_ports, "{} ports for {n} queries", per_port.len());
    assert!(per_port.len() < n / 4, "sockets are reused: {} ports for {n} queries", per_port.len());
}

#[tokio::test]
async fn a_socket_whose_query_timed_out_is_never_reused() {
    let r =
        responder(|name| if name.starts_with("lost") { Behaviour::Drop } else { Behaviour::Answer }).await;
    let up = client(r.addr);
    up.resolve_real(&h("warm.example.com"), dns::Family::V4).await.unwrap();
    assert!(up.resolve_real(&h("lost.example.com"), dns::Family::V4).await.is_err());
    for i in 0..10 {
        up.resolve_real(&h(&format!("after{i}.example.com")), dns::Family::V4).await.unwrap();
    }
    let log = r.ports.lock().unwrap().clone();
    let lost_port = log.iter().find(|(n, _)| n == "lost.example.com").unwrap().1;
    let reused: Vec<_> = log.iter().filter(|(n, p)| n.starts_with("after") && *p == lost_port).collect();
    assert!(reused.is_empty(), "the timed-out socket carried later queries: {reused:?}");
}

#[tokio::test]
async fn a_stray_answer_with_another_id_is_ignored_on_a_reused_socket() {
    let r =
        responder(|name| if name.starts_with("stray") { Behaviour::StrayFirst } else { Behaviour::Answer })
            .await;
    let up = client(r.addr);
    for i in 0..5 {
        let ips = up.resolve_real(&h(&format!("stray{i}.example.com")), dns::Family::V4).await.unwrap();
        assert_eq!(ips, ["192.0.2.7".parse::<std::net::IpAddr>().unwrap()], "query {i}");
    }
    let ports: std::collections::HashSet<u16> = r.ports.lock().unwrap().iter().map(|(_, p)| *p).collect();
    assert_eq!(ports.len(), 1, "one socket carried all five");
}
