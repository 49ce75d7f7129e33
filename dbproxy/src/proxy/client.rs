//! The client's opening: SSLRequest and GSSENCRequest answered (TLS terminated with the
//! caller's server config, or `N`), then the first real message: a StartupMessage, a
//! CancelRequest, or, for a passthrough service, whatever it is, kept raw for the upstream.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    error::{ProxyError, Side},
    frame::{Framer, ReadError},
};
use crate::wire::{self, Direction, Frontend, Phase};
use netwire::stream::MaybeTls;

/// The client connection, plain or with TLS terminated by the proxy.
pub(crate) type ClientStream<C> = MaybeTls<C, tokio_rustls::server::TlsStream<C>>;

/// What the client opened with.
pub(crate) enum Opening {
    /// A session: protocol minor version and the startup parameters.
    Startup {
        /// Minor protocol version asked for (3.x).
        minor: u16,
        /// Parameters in order.
        params: Vec<(String, String)>,
    },
    /// A CancelRequest with the proxy-issued key.
    Cancel {
        /// Process id.
        pid: u32,
        /// Secret.
        secret: Vec<u8>,
    },
    /// A passthrough service: the first message, raw, and whether it is a CancelRequest.
    Passthrough {
        /// The bytes.
        first: Vec<u8>,
        /// Whether it is a CancelRequest.
        cancel: bool,
    },
}

fn seq(why: &str) -> ProxyError {
    ProxyError::Sequence { side: Side::Client, why: why.to_string() }
}

/// Reads the opening. The outer error means the stream is gone (a failed TLS handshake); the
/// inner one comes with the stream so the caller can answer with a FATAL error.
pub(crate) async fn open<C>(
    client: C,
    tls: Option<&Arc<ServerConfig>>,
    passthrough: bool,
) -> Result<(ClientStream<C>, Result<(BytesMut, Opening), ProxyError>), ProxyError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut s: ClientStream<C> = MaybeTls::Plain(client);
    let mut f = Framer::new(Direction::Frontend, BytesMut::new());
    let mut rounds = 0;
    loop {
        let n = match f.read(&mut s, Phase::Startup).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(ReadError::Truncated) => {
                return Ok((s, Err(seq("closed before the startup message"))));
            }
            Err(ReadError::Io(e)) => return Ok((s, Err(ProxyError::client_io("reading the startup")(e)))),
            Err(ReadError::Wire(e)) => {
                return Ok((s, Err(ProxyError::Protocol { side: Side::Client, source: e })));
            }
        };
        let msg = f.buf.split_to(n);
        let parsed = match wire::parse_frontend(&msg, Phase::Startup) {
            Ok(Some((m, _))) => m,
            Ok(None) => return Ok((s, Err(seq("incomplete startup message")))),
            Err(e) => return Ok((s, Err(ProxyError::Protocol { side: Side::Client, source: e }))),
        };
        if passthrough {
            let cancel = matches!(parsed, Frontend::CancelRequest(_));
            return Ok((s, Ok((f.buf, Opening::Passthrough { first: msg.to_vec(), cancel }))));
        }
        match parsed {
            Frontend::SslRequest | Frontend::GssEncRequest => {
                rounds += 1;
                if rounds > 2 {
                    return Ok((s, Err(seq("too many encryption requests"))));
                }
                let ssl = matches!(parsed, Frontend::SslRequest);
                let accept = match (ssl, tls, &s) {
                    (true, Some(cfg), MaybeTls::Plain(_)) => Some(cfg.clone()),
                    (true, _, MaybeTls::Tls(_)) => return Ok((s, Err(seq("SSLRequest inside TLS")))),
                    _ => None,
                };
                // Bytes sent after the request but before the handshake would be read as if
                // they had come through TLS (CVE-2021-23214): refuse them.
                if accept.is_some() && !f.buf.is_empty() {
                    return Ok((s, Err(seq("data after SSLRequest before the TLS handshake"))));
                }
                let answer = if accept.is_some() { b"S" } else { b"N" };
                if let Err(e) = s.write_all(answer).await {
                    return Ok((s, Err(ProxyError::client_io("answering SSLRequest")(e))));
                }
                if let Some(cfg) = accept {
                    s = match s {
                        MaybeTls::Plain(c) => {
                            let t = tokio_rustls::TlsAcceptor::from(cfg).accept(c).await.map_err(|e| {
                                ProxyError::Sequence {
                                    side: Side::Client,
                                    why: format!("TLS handshake: {e}"),
                                }
                            })?;
                            MaybeTls::Tls(Box::new(t))
                        }
                        tls => tls,
                    };
                }
            }
            Frontend::CancelRequest(c) => {
                let opening = Opening::Cancel { pid: c.pid, secret: c.secret.to_vec() };
                return Ok((s, Ok((f.buf, opening))));
            }
            Frontend::Startup(st) => {
                let params = st.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                return Ok((s, Ok((f.buf, Opening::Startup { minor: st.minor, params }))));
            }
            _ => return Ok((s, Err(seq("unexpected first message")))),
        }
    }
}
