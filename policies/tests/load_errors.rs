//! The loader reports every error of a broken file, each with its exact line and column, and
//! each kind of mistake with a precise message.

use policies::{LoadErrors, load_policy};

fn errors(text: &str) -> LoadErrors {
    load_policy(text, "t.yaml").expect_err("should not load")
}

/// The single error of `text`, as `line:column: key: message`.
fn one(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got:\n{e}");
    let e = &e.0[0];
    format!("{}:{}: {}: {}", e.line, e.column, e.key, e.message)
}

#[test]
fn broken_fixture_reports_everything_at_exact_positions() {
    let text = include_str!("../testdata/broken.yaml");
    let errs = load_policy(text, "broken.yaml").unwrap_err();
    let got: Vec<String> = errs.iter().map(|e| format!("{}:{} {}", e.line, e.column, e.key)).collect();
    let want = [
        "1:1 version",
        "5:15 network_rules[0].domains[0]",
        "6:18 network_rules[0].ports[1]",
        "8:5 network_rules[0].colour",
        "9:23 network_rules[1].cidrs[0]",
        "9:37 network_rules[1].decision",
        "10:6 network_rules[2].name",
        "12:15 dns_redirects[0].match",
        "17:5 connect_redirects[0].redirect_to_unix",
        "20:5 connect_redirects[1].redirect_to",
        "21:11 connect_redirects[1].tls.mode",
        "27:48 db_services.appdb.credentials.password_file",
        "29:15 database_rules[0].db_service",
        "30:15 database_rules[1].db_service",
        "30:46 database_rules[1].operations[0]",
        "31:17 database_rules[2].operations",
        "32:1 bogus_section",
    ];
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort_by_key(|s| {
        let (pos, _) = s.split_once(' ').unwrap();
        let (l, c) = pos.split_once(':').unwrap();
        (l.parse::<usize>().unwrap(), c.parse::<usize>().unwrap())
    });
    assert_eq!(got, want, "\n{errs}");
    // Display: one `file:line:column: key: message` per line.
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), errs.len());
    assert!(shown.lines().all(|l| l.starts_with("broken.yaml:")), "{shown}");
    assert!(
        shown.contains("broken.yaml:9:37: network_rules[1].decision: unknown decision \"alow\""),
        "{shown}"
    );
}

#[test]
fn unknown_decision_lists_valid_ones() {
    assert_eq!(
        one("network_rules:\n  - {name: a, decision: alow}\n"),
        r#"2:15: network_rules[0].decision: unknown decision "alow" (expected allow, deny, approve, audit)"#
    );
}

#[test]
fn type_errors_are_precise() {
    assert_eq!(
        one("network_rules:\n  - name: a\n    decision: deny\n    ports: {x: 1}\n"),
        "4:5: network_rules[0].ports: invalid type: map, expected a sequence"
    );
    assert_eq!(one("name: [x]\n"), "1:1: name: invalid type: sequence, expected a string");
}

#[test]
fn bad_values_name_the_value() {
    let m = one("dns_redirects:\n  - {name: a, match: '(x', resolve_to: 10.0.0.1}\n");
    assert_eq!(m, r#"2:15: dns_redirects[0].match: invalid regex "(x": unclosed group"#);
    let m = one("network_rules:\n  - {name: a, cidrs: [10.0.0.0/40], decision: deny}\n");
    assert!(m.starts_with("2:23: network_rules[0].cidrs[0]: invalid CIDR \"10.0.0.0/40\""), "{m}");
    let m = one("network_rules:\n  - {name: a, ports: [0], decision: deny}\n");
    assert!(m.starts_with("2:23: network_rules[0].ports[0]: invalid port \"0\""), "{m}");
    let m = one("network_rules:\n  - {name: a, domains: ['a..b'], decision: deny}\n");
    assert!(m.starts_with("2:25: network_rules[0].domains[0]: invalid domain \"a..b\""), "{m}");
    let m = one("network_rules:\n  - {name: a, domains: ['x*.b'], decision: deny}\n");
    assert!(m.contains("wildcards must be whole labels"), "{m}");
}

#[test]
fn redirect_targets_are_exclusive_and_sni_needs_a_name() {
    assert_eq!(
        one("connect_redirects:\n  - {name: a, match: x, redirect_to: 'h:1', redirect_to_unix: /s}\n"),
        "2:45: connect_redirects[0].redirect_to_unix: redirect_to and redirect_to_unix are mutually exclusive (set exactly one)"
    );
    assert_eq!(
        one("connect_redirects:\n  - {name: a, match: x}\n"),
        "2:5: connect_redirects[0]: one of redirect_to or redirect_to_unix is required"
    );
    assert_eq!(
        one(
            "connect_redirects:\n  - name: a\n    match: x\n    redirect_to: 'h:1'\n    tls:\n      mode: rewrite_sni\n"
        ),
        "6:7: connect_redirects[0].tls.mode: mode rewrite_sni requires tls.sni"
    );
    let m = one("connect_redirects:\n  - {name: a, match: x, redirect_to: 'h'}\n");
    assert!(m.starts_with("2:25: connect_redirects[0].redirect_to: invalid host:port \"h\""), "{m}");
}

#[test]
fn several_errors_in_one_item() {
    let e =
        errors("unix_socket_rules:\n  - name: a\n    zz1: 1\n    operations: [connect, nope]\n    zz2: 2\n");
    let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, "unix_socket_rules[0]"),
            (3, "unix_socket_rules[0].zz1"),
            (4, "unix_socket_rules[0].operations[1]"),
            (5, "unix_socket_rules[0].zz2"),
        ],
        "{e}"
    );
    assert!(e.0[0].message.contains(r#"missing required key "decision""#), "{e}");
    assert!(e.0[2].message.starts_with(r#"unknown operation "nope" (expected connect, bind"#), "{e}");
}

#[test]
fn indices_survive_pruned_items() {
    // Item 0 lacks its decision and is dropped; item 2's error must still say [2], line 4.
    let e = errors(
        "network_rules:\n  - {name: a}\n  - {name: b, decision: deny}\n  - {name: c, decision: nope}\n  - {name: b, decision: deny}\n",
    );
    let got: Vec<String> = e.iter().map(|e| format!("{} {}", e.line, e.key)).collect();
    assert_eq!(got, ["2 network_rules[0]", "4 network_rules[2].decision", "5 network_rules[3].name"], "{e}");
}

#[test]
fn database_cross_checks() {
    let base = "db_services:\n  appdb: {family: postgres, upstream: '8.8.8.8:5432', tls_mode: terminate_plaintext_upstream}\n";
    let m = one(base);
    assert!(m.starts_with("2:29: db_services.appdb.upstream: plaintext upstream 8.8.8.8:5432"), "{m}");
    let m = one("db_services:\n  a: {family: mysql, upstream: 'h:1', tls_mode: passthrough}\n");
    assert_eq!(m, r#"2:7: db_services.a.family: unknown family "mysql" (expected postgres)"#);
    let m = one("db_services:\n  a: {family: postgres, upstream: 'h:1'}\n");
    assert_eq!(m, r#"2:3: db_services.a: missing required key "tls_mode""#);
    let m = one("database_connection_rules:\n  - {name: c, db_service: x, decision: redirect}\n");
    assert!(m.contains(r#"unknown decision "redirect" (expected allow, deny, approve, audit)"#), "{m}");
    let e = errors(
        "database_rules:\n  - {name: c, operations: [read], decision: deny, deny_mode_in_tx: terminate, timeout: 20m}\n",
    );
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(e.0[0].key, "database_rules[0].timeout");
    assert_eq!(e.0[0].message, "approval timeout is at most 600s");
    let m = one(
        "database_rules:\n  - {name: c, operations: [read], decision: allow, deny_mode_in_tx: terminate}\n",
    );
    assert!(m.ends_with("deny_mode_in_tx is only valid on deny rules"), "{m}");
}

#[test]
fn version_syntax_and_duplicates() {
    assert_eq!(one("version: 3\n"), "1:1: version: unsupported version 3 (expected 1)");
    assert!(load_policy("version: 1\n", "t").is_ok());
    assert!(load_policy("", "t").is_ok());
    let m = one("network_rules: [\n  - a\n");
    assert!(m.starts_with("2:3: (document): "), "{m}");
    assert_eq!(one("name: a\nname: b\n"), "2:1: name: duplicate key");
    assert_eq!(one("- a\n"), "1:1: (document): invalid type: sequence, expected struct Policy");
}
