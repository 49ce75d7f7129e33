//! A session under the eBPF backend end to end, as root on the real kernel: the command shares
//! the host's network namespace, yet its DNS lands on the session resolver (a denied name never
//! reaches the upstream), an allowed name connects through the funnel by its synthetic address,
//! and a connect the policy denies by address is refused in the kernel. The escape attempts of
//! `escapes.rs` run under this backend too.
mod common;

use common::{
    Daemon,
    dns::FakeDns,
    upstream::{TLS_BODY, TestCa},
};

#[test]
fn dns_and_connects_go_through_the_session_gateway() {
    if !common::privileged("dns_and_connects_go_through_the_session_gateway") {
        return;
    }
    let dns = FakeDns::start();
    let ca = TestCa::with_names(&["allowed.test"]);
    let tls = ca.serve();
    let d =
        Daemon::start_with_config(&format!("security: {{mode: ebpf}}\n{}", dns.server_config("synthetic")));
    let p = tls.port();
    let s = d.session(&format!(
        "version: 1\nname: ebpf-test\nnetwork_rules:\n\
         \x20 - {{name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}}\n\
         \x20 - {{name: deny-denied, domains: [denied.test], decision: deny}}\n\
         \x20 - {{name: allow-test-names, domains: [allowed.test], ports: [{p}], decision: allow}}\n\
         \x20 - {{name: vouch-upstream, cidrs: [127.0.0.1/32], ports: [{p}], decision: allow}}\n"
    ));
    s.workspace.write("ca.pem", &ca.ca_pem);
    let show = d.cli(&["session", "show", &s.id, "--json"]);
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).expect("session show json");
    assert_eq!(show["backend"], "ebpf");
    let created = d.audit().into_iter().find(|e| e.kind == "session_created").expect("session_created event");
    assert_eq!(created.str("backend"), "ebpf", "{created:?}");

    let script = format!(
        "readlink /proc/self/ns/net; getent ahosts denied.test; echo \"getent=$?\"; \
         curl -sS --max-time 5 http://203.0.113.7/ 2>&1; echo \"curl=$?\"; \
         curl -sS --max-time 10 --cacert ca.pem https://allowed.test:{p}/"
    );
    let r = d.exec(&s, &["sh", "-c", &script]);
    r.assert_exit(0);
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), host_ns.to_str(), "the command shares the host's network namespace: {r:#?}");
    assert_eq!(lines.next(), Some("getent=2"), "{r:#?}");
    assert!(r.stdout.contains("curl=7"), "the denied address fails at connect: {r:#?}");
    assert!(r.stdout.ends_with(TLS_BODY), "{r:#?}");

    assert!(!dns.asked("denied.test"), "{:?}", dns.questions());
    let refused = r.of("dns_query").into_iter().find(|e| e.domain.as_deref() == Some("denied.test"));
    assert_eq!(refused.expect("denied query event").rule(), "deny-denied");
    let kernel = r
        .of("net_connect_blocked")
        .into_iter()
        .find(|e| e.remote.as_deref() == Some("203.0.113.7:80"))
        .unwrap_or_else(|| panic!("no kernel refusal event: {r:#?}"));
    assert_eq!((kernel.rule(), kernel.str("stage")), ("no-testnet", "kernel"));
    let done = r
        .of("net_connect")
        .into_iter()
        .find(|e| e.num("bytes_received") > 0)
        .unwrap_or_else(|| panic!("no funnelled connection: {r:#?}"));
    assert_eq!((done.domain.as_deref(), done.rule()), (Some("allowed.test"), "allow-test-names"));
    assert_eq!(done.str("upstream"), format!("127.0.0.1:{p}"));
    assert!(tls.accepted() >= 1);
}
