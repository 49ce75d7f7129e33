//! Refusing a connection in the protocol's own terms, or with a reset.

use std::time::Duration;

use policies::Decision;
use tokio::net::TcpStream;

/// TLS alert record: fatal `access_denied` (49), which clients report as such.
const TLS_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

/// Refuse in the protocol's own terms where the first bytes told us the protocol: a TLS
/// `access_denied` alert, or an HTTP 403 with a JSON body naming the rule; otherwise a reset.
pub async fn refuse(mut agent: TcpStream, protocol: &str, d: &Decision) {
    use tokio::io::AsyncWriteExt;
    let reply = match protocol {
        "tls" => TLS_ACCESS_DENIED.to_vec(),
        "http" => {
            let body = serde_json::json!({
                "error": "blocked by agentsh policy",
                "rule": d.rule,
                "message": d.message,
            })
            .to_string();
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        _ => return reset(agent),
    };
    let write = async {
        agent.write_all(&reply).await?;
        agent.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(2), write).await.is_err() {
        return reset(agent);
    }
    // Unread request bytes would turn the close into a reset and lose the reply: drain briefly.
    let mut sink = [0u8; 4096];
    let drain = async {
        use tokio::io::AsyncReadExt;
        while matches!(agent.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

/// Abort a connection so the peer sees a reset, not a clean close.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
