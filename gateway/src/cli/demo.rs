//! `agentsh demo`: an offline tour of the egress funnel. It starts its own daemon, a TLS
//! upstream and a DNS server on loopback (with a CA made on the spot), writes a small policy,
//! and runs curl and getent in sandboxed sessions: names resolved, refused and redirected by
//! the session resolver, flows allowed and denied by name and by address, and the strict
//! policy. Nothing leaves the machine.

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

use super::{demo_dns, exec, session};
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
    let names = vec!["localhost".to_string(), "api.demo.test".to_string()];
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

/// Serve a fixed HTTP response over TLS on 127.0.0.1 from a background thread.
fn start_upstream(config: Arc<rustls::ServerConfig>) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                        BODY.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    Ok(addr)
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
    for e in r.events.iter().filter(|e| e.kind.starts_with("net_") || e.kind.starts_with("dns_")) {
        let mut line = exec::describe(e);
        for key in ["qtype", "rcode", "answers", "sni", "host", "bytes_sent", "bytes_received"] {
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

/// Start a private daemon for the demo (its own state dir, DNS pointed at the demo's server).
fn private_daemon(ws: &Path, dns: SocketAddr) -> anyhow::Result<PathBuf> {
    let state = ws.with_extension("state");
    std::fs::create_dir_all(&state)?;
    let config = ws.join("server.yaml");
    write(
        &config,
        &format!(
            "dns:\n  upstream: [\"{dns}\"]\n  mode: synthetic\naudit:\n  sinks: [{{type: jsonl, path: {}}}]\n",
            state.join("audit.jsonl").display()
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
    let ws = workspace()?;
    let state = private_daemon(&ws, dns.addr)?;
    let ca = ws.join("demo-ca.pem");
    write(&ca, &pki.ca_pem)?;
    let policy = ws.join("demo-policy.yaml");
    write(&policy, &policy_text(port))?;
    println!("agentsh demo: a TLS upstream on {upstream}, a DNS server on {}, a CA made just now,", dns.addr);
    println!("and this policy:\n");
    print!("{}", policy_text(port));

    let result = tour(&ws, &ca, &policy, port);
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
