//! `agentsh demo`: an offline tour of the egress funnel. It starts its own TLS upstream on
//! loopback (with a CA made on the spot), writes a small policy, and runs curl in a sandboxed
//! session: one allowed flow, one denied by name, one denied by default, and the strict policy.

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

use super::{exec, session};
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
    let leaf = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&leaf_key, &ca)?;
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
         - {{name: no-blocked-example, domains: [blocked.example], decision: deny, message: \"blocked.example is off limits\"}}\n  \
         - {{name: demo-upstream, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n"
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
    for e in r.events.iter().filter(|e| e.kind.starts_with("net_")) {
        let mut line = exec::describe(e);
        for key in ["sni", "host", "bytes_sent", "bytes_received"] {
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

/// Run the demo.
pub fn run() -> anyhow::Result<ExitCode> {
    let pki = make_pki()?;
    let upstream = start_upstream(pki.server.clone())?;
    let port = upstream.port();
    let ws = workspace()?;
    let ca = ws.join("demo-ca.pem");
    write(&ca, &pki.ca_pem)?;
    let policy = ws.join("demo-policy.yaml");
    write(&policy, &policy_text(port))?;
    println!("agentsh demo: a TLS upstream on {upstream}, a CA made just now, and this policy:\n");
    print!("{}", policy_text(port));

    let s = session::create_session(&ws, &policy.display().to_string())?;
    let curl = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["curl".to_string(), "-sS".into(), "-m".into(), "5".into(), "--cacert".into()];
        v.push(ca.display().to_string());
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let url = format!("https://localhost:{port}/");
    let blocked = format!("https://blocked.example:{port}/");
    let resolve = format!("blocked.example:{port}:127.0.0.1");
    let result = (|| {
        show("allowed: the policy exports the local upstream", &s.id, &curl(&[&url]))?;
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

    let strict = session::create_session(&ws, "strict")?;
    let r = show(
        "the embedded strict policy: refused at connect()",
        &strict.id,
        &curl(&["https://203.0.113.10/"]),
    );
    session::destroy_session(&strict.id)?;
    r?;
    let _ = std::fs::remove_dir_all(&ws);
    println!(
        "\nEvery decision above is also in the audit log: {}",
        super::client::state_dir().join("audit.jsonl").display()
    );
    Ok(ExitCode::SUCCESS)
}
