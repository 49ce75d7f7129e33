//! The upstream leg: dial (TCP, then SSLRequest and TLS per `sslmode`), and log in with the
//! service's credentials (SCRAM-SHA-256, md5 or cleartext, whichever the server asks for).
//! The client messages of the login are built with pgwire's codec; the server's answers are
//! read with our own `wire` parser, which verifies every length.

use std::{net::SocketAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use bytes::{Bytes, BytesMut};
use pgwire::messages::{
    Message,
    startup::{Password, PasswordMessageFamily, SASLInitialResponse, SASLResponse, Startup as PgStartup},
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::ClientConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use policies::model::values::HostPort;

use super::{
    error::ProxyError,
    frame::{Framer, ReadError},
    md5,
    scram::{MECHANISM, ScramClient},
    tls::{self, Plan},
};
use crate::wire::{self, Authentication, Backend, Direction, Phase, SSL_REQUEST_CODE, TxStatus};
use netwire::stream::MaybeTls;

/// A connection to the upstream server, plain or TLS.
pub(crate) type UpstreamStream = MaybeTls<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Where to connect and how.
pub(crate) struct Target<'a> {
    /// `host:port` from the service.
    pub(crate) upstream: &'a HostPort,
    /// TLS plan and config (`None`: plain).
    pub(crate) tls: Option<(Plan, Arc<ClientConfig>)>,
}

/// Who logs in.
pub(crate) struct Login<'a> {
    pub(crate) user: &'a str,
    pub(crate) database: &'a str,
    /// Extra startup parameters (already filtered).
    pub(crate) params: Vec<(String, String)>,
    /// The password, if the service has credentials.
    pub(crate) password: Option<Vec<u8>>,
}

/// A logged-in upstream session, ready for queries.
pub(crate) struct Upstream {
    pub(crate) stream: UpstreamStream,
    pub(crate) addr: SocketAddr,
    /// ParameterStatus and NoticeResponse messages to relay to the client, raw.
    pub(crate) relay: Vec<u8>,
    /// The server's BackendKeyData.
    pub(crate) key: Option<(u32, Vec<u8>)>,
    /// Transaction status from the first ReadyForQuery.
    pub(crate) status: TxStatus,
    /// Bytes read past the first ReadyForQuery.
    pub(crate) leftover: BytesMut,
}

fn up(target: &Target<'_>, why: impl Into<String>) -> ProxyError {
    ProxyError::Upstream { upstream: target.upstream.to_string(), why: why.into() }
}

/// TCP to the first address of `target` that answers, then TLS per its plan.
pub(crate) async fn dial(target: &Target<'_>) -> Result<(UpstreamStream, SocketAddr), ProxyError> {
    let host = target.upstream.host.as_str();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, target.upstream.port))
        .await
        .map_err(|e| up(target, format!("cannot resolve: {e}")))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match dial_to(target, addr).await {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| up(target, "the name has no address")))
}

/// TCP to `addr` (one address of `target`), then TLS per the plan.
pub(crate) async fn dial_to(target: &Target<'_>, addr: SocketAddr) -> Result<UpstreamStream, ProxyError> {
    let s =
        TcpStream::connect(addr).await.map_err(|e| up(target, format!("cannot connect to {addr}: {e}")))?;
    let _ = s.set_nodelay(true);
    negotiate_tls(target, s).await
}

async fn negotiate_tls(target: &Target<'_>, mut s: TcpStream) -> Result<UpstreamStream, ProxyError> {
    let Some((plan, cfg)) = &target.tls else { return Ok(MaybeTls::Plain(s)) };
    if *plan == Plan::Plain {
        return Ok(MaybeTls::Plain(s));
    }
    let mut req = Vec::with_capacity(8);
    wire::Frontend::SslRequest.encode(&mut req);
    debug_assert_eq!(req[4..], SSL_REQUEST_CODE.to_be_bytes());
    s.write_all(&req).await.map_err(ProxyError::upstream_io("sending SSLRequest"))?;
    // Exactly one byte: anything the server sent after it must come inside TLS.
    let answer = s.read_u8().await.map_err(ProxyError::upstream_io("reading the SSLRequest answer"))?;
    match (answer, plan) {
        (b'S', _) => {
            let name = tls::server_name(&target.upstream.host).map_err(ProxyError::Tls)?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, s)
                .await
                .map_err(|e| ProxyError::Tls(format!("handshake with {}: {e}", target.upstream)))?;
            Ok(MaybeTls::Tls(Box::new(tls)))
        }
        (b'N', Plan::Prefer) => Ok(MaybeTls::Plain(s)),
        (b'N', _) => {
            Err(ProxyError::Tls(format!("{} does not support TLS, and sslmode requires it", target.upstream)))
        }
        (other, _) => Err(up(target, format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
}

fn encode(msg: &impl Message) -> Vec<u8> {
    let mut b = BytesMut::new();
    // Encoding only fails for messages over pgwire's size limits; ours are tiny.
    msg.encode(&mut b).expect("login message encodes");
    b.to_vec()
}

fn nonce() -> Result<String, ProxyError> {
    let mut raw = [0u8; 18];
    SystemRandom::new().fill(&mut raw).map_err(|_| ProxyError::Tls("system random source failed".into()))?;
    Ok(B64.encode(raw))
}

/// Dials and logs in, reading until the first ReadyForQuery.
pub(crate) async fn connect(target: &Target<'_>, login: &Login<'_>) -> Result<Upstream, ProxyError> {
    let (mut stream, addr) = dial(target).await?;
    let mut startup = PgStartup::new();
    startup.parameters.insert("user".into(), login.user.into());
    startup.parameters.insert("database".into(), login.database.into());
    for (k, v) in &login.params {
        startup.parameters.insert(k.clone(), v.clone());
    }
    stream.write_all(&encode(&startup)).await.map_err(ProxyError::upstream_io("sending StartupMessage"))?;

    let mut framer = Framer::new(Direction::Backend, BytesMut::new());
    let mut scram: Option<ScramClient> = None;
    let mut relay = Vec::new();
    let mut key = None;
    let mut verified = false;
    let mut authenticated = false;
    let need_password = || {
        login
            .password
            .as_deref()
            .ok_or_else(|| up(target, "the server asks for a password and the service has no credentials"))
    };
    loop {
        let n = match framer.read(&mut stream, Phase::Normal).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(ReadError::Truncated) => {
                return Err(up(target, "closed the connection during login"));
            }
            Err(ReadError::Io(e)) => return Err(ProxyError::upstream_io("logging in")(e)),
            Err(ReadError::Wire(e)) => {
                return Err(ProxyError::Protocol { side: super::error::Side::Upstream, source: e });
            }
        };
        let msg = framer.buf.split_to(n);
        let Some((parsed, _)) = wire::parse_backend(&msg, Phase::Normal)
            .map_err(|e| ProxyError::Protocol { side: super::error::Side::Upstream, source: e })?
        else {
            return Err(up(target, "incomplete message"));
        };
        let reply = match parsed {
            Backend::Authentication(a) => match a {
                // A server that skips SASL final never proved it knows the password.
                Authentication::Ok if scram.is_some() && !verified => {
                    return Err(up(target, "login completed without the SCRAM server signature"));
                }
                Authentication::Ok => {
                    authenticated = true;
                    None
                }
                Authentication::CleartextPassword => {
                    let pw = String::from_utf8_lossy(need_password()?).into_owned();
                    Some(encode(&PasswordMessageFamily::Password(Password::new(pw))))
                }
                Authentication::Md5Password(salt) => {
                    let pw = md5::password_response(login.user, need_password()?, salt);
                    Some(encode(&PasswordMessageFamily::Password(Password::new(pw))))
                }
                Authentication::Sasl(mechs) => {
                    if !mechs.contains(&MECHANISM) {
                        return Err(up(
                            target,
                            format!("no supported SASL mechanism (server offers {mechs:?})"),
                        ));
                    }
                    let c = ScramClient::new("", need_password()?, nonce()?);
                    let first = Bytes::from(c.client_first());
                    scram = Some(c);
                    let init = SASLInitialResponse::new(MECHANISM.to_string(), Some(first));
                    Some(encode(&PasswordMessageFamily::SASLInitialResponse(init)))
                }
                Authentication::SaslContinue(data) => {
                    let c = scram.as_mut().ok_or_else(|| up(target, "SASL continue before SASL start"))?;
                    let fin = c.server_first(data)?;
                    Some(encode(&PasswordMessageFamily::SASLResponse(SASLResponse::new(Bytes::from(fin)))))
                }
                Authentication::SaslFinal(data) => {
                    scram
                        .as_ref()
                        .ok_or_else(|| up(target, "SASL final before SASL start"))?
                        .server_final(data)?;
                    verified = true;
                    None
                }
                Authentication::Other { code, .. } => {
                    return Err(up(target, format!("unsupported authentication method (code {code})")));
                }
            },
            Backend::ErrorResponse(e) => {
                return Err(ProxyError::UpstreamRefused {
                    upstream: target.upstream.to_string(),
                    code: e.code().unwrap_or("?????").to_string(),
                    message: e.message().unwrap_or("no message").to_string(),
                });
            }
            Backend::ParameterStatus(_) | Backend::NoticeResponse(_) => {
                relay.extend_from_slice(&msg);
                None
            }
            Backend::BackendKeyData(k) => {
                key = Some((k.pid, k.secret.to_vec()));
                None
            }
            Backend::ReadyForQuery(_) if !authenticated => {
                return Err(up(target, "ready for queries before authentication completed"));
            }
            Backend::ReadyForQuery(status) => {
                return Ok(Upstream { stream, addr, relay, key, status, leftover: framer.buf });
            }
            // NegotiateProtocolVersion cannot come (we ask for 3.0 without options); anything
            // else before ReadyForQuery is a server this proxy does not understand.
            Backend::Other { tag, .. } => {
                return Err(up(target, format!("unexpected message {:?} during login", tag as char)));
            }
            Backend::EncryptionAnswer(_) => return Err(up(target, "unexpected encryption answer")),
        };
        if let Some(r) = reply {
            stream.write_all(&r).await.map_err(ProxyError::upstream_io("answering authentication"))?;
        }
    }
}
