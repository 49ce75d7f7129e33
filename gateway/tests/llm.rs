//! The LLM proxy in the gateway, end to end as root: a fake provider over real TLS (a CA made
//! at run time, trusted through `tls.extra_roots`) records what reaches it. The agent reaches
//! the proxy through the base URL in its environment and through plain HTTPS to the provider's
//! host, which the funnel terminates with the session CA. Secrets are redacted before they
//! leave, the real key is injected and never seen inside, a request carrying the real key is
//! refused, and every request is an `llm_request` event with its usage, plus a `dlp_redaction`
//! event per detector naming the fields it matched in.

mod common;

use common::{
    Daemon, ExecResult, TempDir,
    dns::FakeDns,
    provider::{self, ANSWER, LlmWorld, Seen},
};

const REAL_KEY: &str = "sk-proj-realkey0123456789abcdefghijklmnopqrstuvwxyzABCD";

fn world() -> LlmWorld {
    provider::llm_world(|port, keys| {
        let key_file = keys.write("openai.key", &format!("{REAL_KEY}\n"));
        format!(
            "version: 1\nname: llm\nnetwork_rules:\n\
             \x20 - {{name: llm-host, domains: [api.llm.test], ports: [443], decision: allow}}\n\
             \x20 - {{name: vouch-provider, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n\
             llm:\n  providers:\n\
             \x20   - {{name: openai, base_url: 'https://api.llm.test:{port}', api_key_file: '{key}', hosts: [api.llm.test]}}\n\
             \x20 dlp: {{mode: redact}}\n",
            key = key_file.display(),
        )
    })
}

const PROMPT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail bob@example.com the key AKIAIOSFODNN7EXAMPLE"}]}"#;

fn sh(w: &LlmWorld, script: &str) -> ExecResult {
    w.session.workspace.write("prompt.json", PROMPT);
    w.daemon.exec(&w.session, &["sh", "-c", script])
}

fn assert_redacted_and_keyed(seen: &Seen) {
    assert!(seen.head.starts_with("POST "), "{}", seen.head);
    assert!(seen.head.contains("/chat/completions"), "{}", seen.head);
    assert!(
        seen.head
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {REAL_KEY}").to_ascii_lowercase()),
        "{}",
        seen.head
    );
    assert!(
        !seen.body.contains("bob@example.com") && !seen.body.contains("AKIAIOSFODNN7EXAMPLE"),
        "{}",
        seen.body
    );
    assert!(seen.body.contains("[REDACTED:email]"), "{}", seen.body);
    let json: serde_json::Value = serde_json::from_str(&seen.body).expect("still JSON");
    assert_eq!(json["model"], "gpt-4o");
}

#[test]
fn base_url_in_the_environment_reaches_the_proxy_which_redacts_and_injects() {
    if !common::privileged("base_url_in_the_environment_reaches_the_proxy_which_redacts_and_injects") {
        return;
    }
    let w = world();
    let r = sh(
        &w,
        "printf '%s\\n' \"$OPENAI_API_KEY\" > key-seen; \
         curl -sS --max-time 20 \"$OPENAI_BASE_URL/chat/completions\" -H \"Authorization: Bearer $OPENAI_API_KEY\" \
         -H 'content-type: application/json' --data @prompt.json",
    );
    r.assert_exit(0);
    assert_eq!(r.stdout, ANSWER);
    let inside = std::fs::read_to_string(w.session.workspace.path().join("key-seen")).unwrap();
    assert!(
        !inside.trim().is_empty() && !inside.contains(REAL_KEY),
        "the sandbox sees a placeholder: {inside}"
    );
    let seen = w.provider.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_redacted_and_keyed(&seen[0]);
    let e = r.one("llm_request");
    assert_eq!((e.decision(), e.str("provider")), ("allow", "openai"));
    assert_eq!(e.fields["usage"]["input_tokens"], 12);
    assert_eq!(e.fields["usage"]["output_tokens"], 3);
    let dlp = e.fields["dlp"].as_array().unwrap();
    assert!(dlp.iter().any(|f| f["type"] == "email" && f["action"] == "redact"), "{dlp:?}");
    let redactions = r.of("dlp_redaction");
    let email =
        redactions.iter().find(|e| e.str("type") == "email").expect("a dlp_redaction event for email");
    assert_eq!((email.decision(), email.rule()), ("allow", "dlp:email"));
    assert_eq!(
        (email.str("action"), email.str("direction"), email.str("provider")),
        ("redact", "request", "openai")
    );
    assert_eq!(email.fields["count"], 1);
    assert_eq!(email.fields["paths"], serde_json::json!(["messages[0].content"]));
    assert_eq!(email.command_id, e.command_id, "attributed to the command that made the request");
    let key = redactions.iter().find(|e| e.str("type") == "aws_access_key").expect("one for the AWS key");
    assert_eq!(key.fields["paths"], serde_json::json!(["messages[0].content"]));
    assert_eq!(redactions.len(), 2, "one per detector: {redactions:#?}");
    let all = format!("{:?}", r.events);
    assert!(
        !all.contains("bob@example.com") && !all.contains("AKIAIOSFODNN7EXAMPLE"),
        "events never carry the secret"
    );
}

#[test]
fn https_to_the_provider_host_is_intercepted_with_the_session_ca() {
    if !common::privileged("https_to_the_provider_host_is_intercepted_with_the_session_ca") {
        return;
    }
    let w = world();
    let r = sh(
        &w,
        "curl -sS --max-time 20 https://api.llm.test/v1/chat/completions -H 'Authorization: Bearer sk-whatever' \
         -H 'content-type: application/json' --data @prompt.json",
    );
    r.assert_exit(0);
    assert_eq!(r.stdout, ANSWER);
    let seen = w.provider.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_redacted_and_keyed(&seen[0]);
    assert!(!seen[0].head.contains("sk-whatever"), "the agent's own key is replaced: {}", seen[0].head);
    let c = r.one("net_connect");
    assert_eq!((c.str("intercepted"), c.domain.as_deref()), ("llm", Some("api.llm.test")));
    let e = r.one("llm_request");
    assert_eq!(e.str("sni"), "api.llm.test");
}

#[test]
fn a_request_carrying_the_real_key_is_refused_before_the_provider() {
    if !common::privileged("a_request_carrying_the_real_key_is_refused_before_the_provider") {
        return;
    }
    let w = world();
    let r = sh(
        &w,
        &format!(
            "curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' \"$OPENAI_BASE_URL/chat/completions\" \
         -H 'Authorization: Bearer {REAL_KEY}' -H 'content-type: application/json' --data @prompt.json"
        ),
    );
    r.assert_exit(0);
    let code: u16 = r.stdout.trim().parse().unwrap();
    assert!((400..500).contains(&code), "refused: {code}");
    assert!(w.provider.seen().is_empty(), "nothing reached the provider");
    let e = r.one("llm_request_blocked");
    assert_eq!(e.decision(), "deny");
}

#[test]
fn a_provider_key_that_cannot_be_read_refuses_the_session_and_leaves_nothing() {
    if !common::privileged("a_provider_key_that_cannot_be_read_refuses_the_session_and_leaves_nothing") {
        return;
    }
    let dns = FakeDns::start();
    let daemon = Daemon::start_with_config(&dns.server_config("synthetic"));
    let keys = TempDir::new("keys");
    let missing = keys.path().join("missing.key");
    let stderr = daemon.refused_session(&format!(
        "version: 1\nname: llm\nllm:\n  providers:\n    - {{name: openai, base_url: 'https://api.llm.test', api_key_file: '{}'}}\n",
        missing.display()
    ));
    assert!(stderr.contains(&missing.display().to_string()), "the error names the file: {stderr}");
    let sessions = daemon.state.path().join("sessions");
    let left: Vec<_> =
        std::fs::read_dir(&sessions).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "a refused session leaves no state: {left:?}");
}
