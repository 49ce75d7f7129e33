//! `agentsh demo`: an offline tour of the egress funnel. It starts its own daemon, a TLS
//! upstream, a DNS server and a fake LLM provider on loopback (with a CA made on the spot),
//! writes small policies, and runs curl, getent and psql in sandboxed sessions: names resolved,
//! refused and redirected by the session resolver, flows allowed and denied by name and by
//! address, the strict policy, an LLM call whose secrets are redacted and whose key is
//! injected, and (when Postgres is installed) a governed database session on a throwaway
//! cluster. Nothing leaves the machine.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{demo_dns, demo_llm, demo_pg, exec, session};
use crate::control::protocol::EventsMode;

const BODY: &str = "hello from the demo upstream\n";

/// A CA and a `localhost` server certificate signed by it, both made now.
struct DemoPki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn make_pki() -> anyhow::Result<DemoPki> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "agentsh demo CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let names = vec!["localhost".to_string(), "api.demo.test".to_string(), "llm.demo.test".to_string()];
    let leaf = CertificateParams::new(names)?.signed_by(&leaf_key, &ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    Ok(DemoPki { ca_pem: ca.pem(), server: Arc::new(server) })
}

/// Serve TLS on 127.0.0.1 from a background thread, each connection handled by `handler`.
pub(super) fn spawn_tls_server<F, Fut>(
    config: Arc<rustls::ServerConfig>,
    handler: F,
) -> anyhow::Result<SocketAddr>
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handler = Arc::new(handler);
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        handler(tls).await;
                    }
                });
            }
        });
    });
    Ok(addr)
}

/// Serve a fixed HTTP response over TLS on 127.0.0.1 from a background thread.
fn start_upstream(config: Arc<rustls::ServerConfig>) -> anyhow::Result<SocketAddr> {
    spawn_tls_server(config, |mut tls| async move {
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await;
        let reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}", BODY.len());
        let _ = tls.write_all(reply.as_bytes()).await;
        let _ = tls.shutdown().await;
    })
}

fn policy_text(port: u16) -> String {
    format!(
        "version: 1\nname: demo\nnetwork_rules:\n  \
         - {{name: no-blocked-example, domains: [blocked.example, \"**.blocked.example\"], decision: deny, message: \"blocked.example is off limits\"}}\n  \
         - {{name: demo-api, domains: [api.demo.test], ports: [{port}], decision: allow}}\n  \
         - {{name: demo-upstream, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n\
         dns_redirects:\n  \
         - {{name: pin-internal, match: '(^|\\.)internal\\.demo\\.test$', resolve_to: 127.0.0.1}}\n"
    )
}

fn show(title: &str, sid: &str, argv: &[String]) -> anyhow::Result<()> {
    println!("\n== {title}");
    println!("$ {}", argv.join(" "));
    let r = exec::exec_captured(sid, argv, EventsMode::All)?;
    print!("{}", r.stdout);
    for line in r.stderr.lines() {
        println!("  (stderr) {line}");
    }
    println!("  exit code {}", r.exit_code);
    let shown = |k: &str| ["net_", "dns_", "llm_", "db_statement"].iter().any(|p| k.starts_with(p));
    for e in r.events.iter().filter(|e| shown(&e.kind)) {
        let mut line = exec::describe(e);
        for key in [
            "qtype",
            "rcode",
            "answers",
            "sni",
            "host",
            "bytes_sent",
            "bytes_received",
            "intercepted",
            "dlp",
            "usage",
            "statement",
        ] {
            if let Some(v) = e.fields.get(key) {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        println!("  {}", line.trim_start_matches("agentsh: "));
    }
    Ok(())
}

fn workspace() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agentsh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::File::create(path)?
        .write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Start a private daemon for the demo (its own state dir, DNS pointed at the demo's server,
/// the demo CA trusted for the TLS the gateway originates).
fn private_daemon(ws: &Path, dns: SocketAddr, ca: &Path) -> anyhow::Result<PathBuf> {
    let state = ws.with_extension("state");
    std::fs::create_dir_all(&state)?;
    let config = ws.join("server.yaml");
    write(
        &config,
        &format!(
            "dns:\n  upstream: [\"{dns}\"]\n  mode: synthetic\naudit:\n  sinks: [{{type: jsonl, path: {}}}]\n\
             tls:\n  extra_roots: ['{}']\n",
            state.join("audit.jsonl").display(),
            ca.display()
        ),
    )?;
    super::client::use_state_dir(state.clone());
    super::client::set_daemon_config(config.display().to_string());
    Ok(state)
}

/// Run the demo.
pub fn run() -> anyhow::Result<ExitCode> {
    let pki = make_pki()?;
    let upstream = start_upstream(pki.server.clone())?;
    let port = upstream.port();
    let dns = demo_dns::start()?;
    let provider = demo_llm::start(pki.server.clone())?;
    let ws = workspace()?;
    let ca = ws.join("demo-ca.pem");
    write(&ca, &pki.ca_pem)?;
    let state = private_daemon(&ws, dns.addr, &ca)?;
    let policy = ws.join("demo-policy.yaml");
    write(&policy, &policy_text(port))?;
    println!("agentsh demo: a TLS upstream on {upstream}, a DNS server on {}, a CA made just now,", dns.addr);
    println!("and this policy:\n");
    print!("{}", policy_text(port));

    let result =
        tour(&ws, &ca, &policy, port).and_then(|()| llm_tour(&ws, &provider)).and_then(|()| db_tour(&ws));
    let _ = super::client::call(&crate::control::protocol::Request::Shutdown);
    result?;
    println!("\nThe DNS server outside saw only these questions (no blocked name ever left):");
    for q in dns.questions() {
        println!("  {q}");
    }
    println!("\nEvery decision above is also in the audit log: {}", state.join("audit.jsonl").display());
    let _ = std::fs::remove_dir_all(&ws);
    println!("(the demo's state dir is kept for reading: {})", state.display());
    Ok(ExitCode::SUCCESS)
}

fn tour(ws: &Path, ca: &Path, policy: &Path, port: u16) -> anyhow::Result<()> {
    let s = session::create_session(ws, &policy.display().to_string())?;
    let curl = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["curl".to_string(), "-sS".into(), "-m".into(), "5".into(), "--cacert".into()];
        v.push(ca.display().to_string());
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let getent = |name: &str| vec!["getent".to_string(), "hosts".into(), name.to_string()];
    let api = format!("https://api.demo.test:{port}/");
    let blocked = format!("https://blocked.example:{port}/");
    let resolve = format!("blocked.example:{port}:127.0.0.1");
    let result = (|| {
        show(
            "allowed by name: the session resolver answers a synthetic address bound to api.demo.test",
            &s.id,
            &curl(&[&api]),
        )?;
        show(
            "DNS is policy: a denied name is refused and never forwarded",
            &s.id,
            &getent("exfil.blocked.example"),
        )?;
        show("DNS redirect: internal.demo.test is pinned by rule", &s.id, &getent("db.internal.demo.test"))?;
        show(
            "denied by name: the TLS SNI names blocked.example",
            &s.id,
            &curl(&["--resolve", &resolve, &blocked]),
        )?;
        show("denied by default: no rule allows 203.0.113.10", &s.id, &curl(&["https://203.0.113.10/"]))?;
        anyhow::Ok(())
    })();
    session::destroy_session(&s.id)?;
    result?;
    let strict = session::create_session(ws, "strict")?;
    let r = show(
        "the embedded strict policy: refused at connect()",
        &strict.id,
        &curl(&["https://203.0.113.10/"]),
    );
    session::destroy_session(&strict.id)?;
    r
}

/// A real key the gateway holds; the sandbox only ever sees a placeholder.
const DEMO_KEY: &str = "sk-proj-demo0REAL0key0held0by0the0gateway0000000000";
const PROMPT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise: contact ada@example.com, card 4111 1111 1111 1111, AWS key AKIAIOSFODNN7EXAMPLE"}]}"#;

fn llm_tour(ws: &Path, provider: &demo_llm::DemoProvider) -> anyhow::Result<()> {
    let port = provider.addr.port();
    let key = ws.join("openai.key");
    write(&key, DEMO_KEY)?;
    write(&ws.join("prompt.json"), PROMPT)?;
    let policy = ws.join("llm-policy.yaml");
    let text = format!(
        "version: 1\nname: demo-llm\nnetwork_rules:\n  \
         - {{name: llm-host, domains: [llm.demo.test], ports: [443], decision: allow}}\n  \
         - {{name: provider, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n\
         llm:\n  providers:\n    \
         - {{name: openai, base_url: 'https://llm.demo.test:{port}', api_key_file: '{}', hosts: [llm.demo.test]}}\n  \
         dlp: {{mode: redact}}\n",
        key.display()
    );
    write(&policy, &text)?;
    println!("\n== The LLM proxy, with this policy (the provider is a fake on {}):\n", provider.addr);
    print!("{text}");
    let s = session::create_session(ws, &policy.display().to_string())?;
    let sh = |script: &str| vec!["sh".to_string(), "-c".into(), script.to_string()];
    let result = (|| {
        show(
            "the sandbox sees a base URL and a placeholder key, never the real one",
            &s.id,
            &sh("echo OPENAI_BASE_URL=$OPENAI_BASE_URL; echo OPENAI_API_KEY=$OPENAI_API_KEY"),
        )?;
        show(
            "an SDK-style call: the e-mail, card and AWS key are redacted before they leave",
            &s.id,
            &sh(
                "curl -sS -m 10 \"$OPENAI_BASE_URL/chat/completions\" -H \"authorization: Bearer $OPENAI_API_KEY\" \
                 -H 'content-type: application/json' --data @prompt.json; echo",
            ),
        )?;
        show(
            "a client that ignores base URLs: TLS to the provider's host is terminated with the session CA",
            &s.id,
            &sh(
                "curl -sS -m 10 https://llm.demo.test/v1/chat/completions -H 'authorization: Bearer sk-anything' \
                 -H 'content-type: application/json' --data @prompt.json; echo",
            ),
        )?;
        anyhow::Ok(())
    })();
    session::destroy_session(&s.id)?;
    result?;
    let seen = provider.authorizations();
    let real = seen.iter().filter(|a| a.contains(DEMO_KEY)).count();
    println!(
        "\nThe provider was sent the real key {real} of {} times; the sandbox never had it.",
        seen.len()
    );
    Ok(())
}

fn db_tour(ws: &Path) -> anyhow::Result<()> {
    let Some(pg) = demo_pg::DemoPg::start(ws)? else {
        println!("\n== (no Postgres server binaries installed: the governed database part is skipped)");
        return Ok(());
    };
    let password = ws.join("db.password");
    write(&password, demo_pg::APP_PASSWORD)?;
    let policy = ws.join("db-policy.yaml");
    let text = format!(
        "version: 1\nname: demo-db\n\
         db_services:\n  appdb: {{family: postgres, upstream: '127.0.0.1:{}', tls_mode: terminate_plaintext_upstream, \
         credentials: {{user: app, password_file: '{}'}}}}\n\
         database_connection_rules:\n  - {{name: agent-connect, db_service: appdb, database: appdb, decision: allow}}\n\
         database_rules:\n  - {{name: reads, db_service: appdb, operations: [READ], decision: allow}}\n",
        pg.port,
        password.display()
    );
    write(&policy, &text)?;
    println!(
        "\n== A governed Postgres session on a throwaway cluster (127.0.0.1:{}), with this policy:\n",
        pg.port
    );
    print!("{text}");
    let s = session::create_session(ws, &policy.display().to_string())?;
    let psql = |sql: &str| {
        let conn = format!("host=127.0.0.1 port={} user=agent dbname=appdb", pg.port);
        ["psql", "-X", "-A", "-t", &conn, "-c", sql].iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let result = (|| {
        show(
            "no password, and reads work: the proxy logs in with the policy's credentials",
            &s.id,
            &psql("SELECT name FROM customers ORDER BY id"),
        )?;
        show(
            "a write is refused with SQLSTATE 42501 naming the rule",
            &s.id,
            &psql("DELETE FROM customers"),
        )?;
        show(
            "so is a side effect hidden in a read",
            &s.id,
            &psql("WITH gone AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM gone"),
        )?;
        anyhow::Ok(())
    })();
    session::destroy_session(&s.id)?;
    result?;
    let rows = pg.psql("SELECT count(*) FROM customers", "appdb")?;
    println!("\nRows left in customers, counted by the superuser: {}", rows.trim());
    Ok(())
}
