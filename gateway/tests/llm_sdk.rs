//! The official OpenAI and Anthropic Python SDKs inside the sandbox, unchanged, against a fake
//! provider through the gateway's LLM proxy: they find the proxy through the base URLs in
//! their environment, hold only placeholder keys, their prompts arrive redacted, a streamed
//! answer still streams and has the address split across two events redacted, and
//! `exec --events` shows usage and redactions.

mod common;

use common::provider::{self, LlmWorld};

const OPENAI_KEY: &str = "sk-proj-openai0real0key0123456789abcdefghijklmnopqrstuv";
const ANTHROPIC_KEY: &str = "sk-ant-api03-real0key0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";

const SCRIPT: &str = r#"
import os, sys
from openai import OpenAI
from anthropic import Anthropic

secret = "my card is 4111 1111 1111 1111 and my mail bob@example.com"
print("keys:", os.environ["OPENAI_API_KEY"], os.environ["ANTHROPIC_API_KEY"])
oa = OpenAI()
r = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": secret}])
print("openai:", r.choices[0].message.content, r.usage.total_tokens)
stream = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": secret}], stream=True)
parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
print("stream events:", len(parts))
print("stream:", "".join(parts))
an = Anthropic()
m = an.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": secret}])
print("anthropic:", m.content[0].text, m.usage.input_tokens)
"#;

fn world() -> LlmWorld {
    provider::llm_world(|port, keys| {
        let openai = keys.write("openai.key", OPENAI_KEY);
        let anthropic = keys.write("anthropic.key", ANTHROPIC_KEY);
        format!(
            "version: 1\nname: sdk\nnetwork_rules:\n\
             \x20 - {{name: vouch-provider, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n\
             llm:\n  providers:\n\
             \x20   - {{name: openai, base_url: 'https://api.llm.test:{port}', api_key_file: '{o}'}}\n\
             \x20   - {{name: anthropic, base_url: 'https://api.llm.test:{port}', api_key_file: '{a}'}}\n\
             \x20 dlp: {{mode: redact}}\n",
            o = openai.display(),
            a = anthropic.display(),
        )
    })
}

#[test]
fn the_official_sdks_work_unchanged_through_the_proxy() {
    if !common::privileged("the_official_sdks_work_unchanged_through_the_proxy") {
        return;
    }
    let w = world();
    let r = w.daemon.python(&w.session, "agent.py", SCRIPT, &[]);
    r.assert_exit(0);
    let out = &r.stdout;
    assert!(
        !out.contains(OPENAI_KEY) && !out.contains(ANTHROPIC_KEY),
        "the sandbox never holds a real key: {out}"
    );
    assert!(out.contains("openai: hello 15"), "{out}");
    assert!(out.contains("anthropic: hi from claude 10"), "{out}");
    // The stream arrives as a stream (several events), with the split address redacted.
    let events: usize = out.lines().find_map(|l| l.strip_prefix("stream events: ")).unwrap().parse().unwrap();
    assert!(events >= 2, "{out}");
    let streamed = out.lines().find_map(|l| l.strip_prefix("stream: ")).unwrap();
    assert!(!streamed.contains("carol@example.com"), "{out}");
    assert!(streamed.contains("[REDACTED:email]") && streamed.contains("reach me at"), "{out}");

    let seen = w.provider.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for s in &seen {
        assert!(!s.body.contains("4111 1111") && !s.body.contains("bob@example.com"), "{}", s.body);
        assert!(
            s.body.contains("[REDACTED:credit_card]") && s.body.contains("[REDACTED:email]"),
            "{}",
            s.body
        );
    }
    let head = |i: usize| seen[i].head.to_ascii_lowercase();
    assert!(
        head(0).contains(&format!("authorization: bearer {}", OPENAI_KEY.to_ascii_lowercase())),
        "{}",
        seen[0].head
    );
    assert!(
        seen[1].body.contains("\"include_usage\":true"),
        "the proxy asks the stream for usage: {}",
        seen[1].body
    );
    assert!(
        head(2).contains(&format!("x-api-key: {}", ANTHROPIC_KEY.to_ascii_lowercase())),
        "{}",
        seen[2].head
    );

    let llm = r.of("llm_request");
    assert_eq!(llm.len(), 3, "{llm:#?}");
    let providers: Vec<&str> = llm.iter().map(|e| e.str("provider")).collect();
    assert_eq!(providers, ["openai", "openai", "anthropic"]);
    assert!(llm.iter().all(|e| e.fields["dlp"].as_array().is_some_and(|d| !d.is_empty())), "{llm:#?}");
    assert_eq!(llm[1].fields["streamed"], true);
    assert_eq!(llm[1].fields["usage"]["output_tokens"], 4, "usage from the stream: {:#?}", llm[1]);
    assert_eq!(llm[2].fields["usage"]["input_tokens"], 10);
}
