//! `connect_redirects` with `tls.mode: rewrite_sni`. A ClientHello is part of the TLS
//! transcript, so rewriting it in flight makes every handshake fail; instead the agent's TLS is
//! terminated with the session CA (a leaf for the name the agent asked for, trusted only inside
//! this session's sandbox) and its plaintext is carried over a new TLS connection to the target,
//! which is verified against the gateway's roots under the rewritten name.
//!
//! Order: the upstream handshake first, offering the agent's own ALPN list, then the agent's
//! handshake offering only what the upstream chose, so both sides speak the same protocol. A
//! target that fails verification is never shown to the agent: its connection is reset before
//! any byte of its ClientHello is consumed.

use std::{sync::Arc, time::Duration};

use llmproxy::ca::SessionCa;
use netwire::relay::RelayStats;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};

use super::super::tls::UpstreamTls;

/// Longest either handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS over `upstream`, presenting `sni`, offering `alpn` (the agent's own list), verified
/// against the gateway's roots under `sni`. On failure the agent has seen nothing yet.
pub async fn connect_upstream(
    upstream: TcpStream,
    sni: &str,
    alpn: Vec<Vec<u8>>,
    tls: &UpstreamTls,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|_| format!("rewrite_sni: {sni:?} is not a valid server name"))?;
    let connector = TlsConnector::from(tls.client_config(alpn));
    let failed = |reason: String| format!("upstream TLS as {sni}: {reason}");
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, upstream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed("handshake timed out".into())),
    }
}

/// Terminate the agent's TLS with the session CA, offering only the protocol `upstream`
/// negotiated, and relay the plaintext both ways until both sides are done.
pub async fn relay_terminated(
    agent: TcpStream,
    upstream: TlsStream<TcpStream>,
    ca: &Arc<SessionCa>,
) -> Result<RelayStats, String> {
    let chosen = upstream.get_ref().1.alpn_protocol().map(|p| vec![p.to_vec()]).unwrap_or_default();
    let acceptor = TlsAcceptor::from(ca.server_config(chosen));
    let agent = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(agent)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("agent TLS: {e}")),
        Err(_) => return Err("agent TLS: handshake timed out".into()),
    };
    super::relay_streams(agent, upstream).await
}
