//! The session resolver's listeners. Both take their socket and a shutdown future (IO is passed
//! in) and bound their work: UDP answers at most `udp_in_flight` queries at once (further packets
//! are dropped; clients retry), TCP serves at most `tcp_connections` connections, each with up to
//! `tcp_in_flight` pipelined queries (reading pauses beyond that), answers written as they
//! complete (out of order, matched by ID as RFC 7766 allows), and closes after `tcp_idle` without
//! a new query.

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{Semaphore, mpsc},
    task::JoinSet,
    time::timeout,
};

use crate::{SessionResolver, events::Transport, wire::MAX_UDP};

/// Bounds of the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// UDP queries being answered at once.
    pub udp_in_flight: usize,
    /// TCP connections served at once.
    pub tcp_connections: usize,
    /// Pipelined queries in flight per TCP connection.
    pub tcp_in_flight: usize,
    /// A TCP connection with no new query for this long is closed.
    pub tcp_idle: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            udp_in_flight: 256,
            tcp_connections: 64,
            tcp_in_flight: 16,
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// Serve DNS over UDP on `sock` until `shutdown` completes (in-flight queries are abandoned).
pub async fn serve_udp(
    sock: UdpSocket,
    resolver: Arc<SessionResolver>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = resolver.config().limits;
    let sock = Arc::new(sock);
    let slots = Arc::new(Semaphore::new(limits.udp_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    // One byte more than we accept, so an oversized datagram is seen as such, not cut to size.
    let mut buf = vec![0u8; MAX_UDP + 1];
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (len, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here on Linux; they are not fatal.
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
                ) => continue,
                Err(e) => return Err(e),
            },
        };
        if len > MAX_UDP {
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dns udp overloaded, dropping query");
            continue;
        };
        let packet = buf[..len].to_vec();
        let (sock, resolver) = (sock.clone(), resolver.clone());
        tasks.spawn(async move {
            if let Some(reply) = resolver.answer(&packet, Transport::Udp).await {
                let _ = sock.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

/// Serve DNS over TCP (RFC 7766 framing) on `listener` until `shutdown` completes (open
/// connections are closed).
pub async fn serve_tcp(
    listener: TcpListener,
    resolver: Arc<SessionResolver>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = resolver.config().limits;
    let slots = Arc::new(Semaphore::new(limits.tcp_connections.max(1)));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns tcp accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "dns tcp connection limit reached");
            continue;
        };
        let resolver = resolver.clone();
        conns.spawn(async move {
            if let Err(e) = serve_connection(stream, resolver, limits).await {
                tracing::debug!(%peer, error = %e, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Serve DNS over TCP on one connection another listener accepted (a connect to port 53 that
/// a redirect backend handed to the gateway), until the client closes it.
pub async fn serve_tcp_stream(stream: TcpStream, resolver: Arc<SessionResolver>) -> io::Result<()> {
    let limits = resolver.config().limits;
    serve_connection(stream, resolver, limits).await
}

async fn serve_connection(
    stream: TcpStream,
    resolver: Arc<SessionResolver>,
    limits: ServerLimits,
) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(limits.tcp_in_flight.max(1));
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let Ok(len) = u16::try_from(reply.len()) else { continue };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply);
            wr.write_all(&framed).await?;
        }
        wr.shutdown().await
    });
    let in_flight = Arc::new(Semaphore::new(limits.tcp_in_flight.max(1)));
    let mut queries = JoinSet::new();
    loop {
        while queries.try_join_next().is_some() {}
        let len = match timeout(limits.tcp_idle, rd.read_u16()).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => usize::from(n),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e),
        };
        let mut query = vec![0u8; len];
        match timeout(limits.tcp_idle, rd.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (tx, resolver) = (tx.clone(), resolver.clone());
        queries.spawn(async move {
            if let Some(reply) = resolver.answer(&query, Transport::Tcp).await {
                let _ = tx.send(reply).await;
            }
            drop(permit);
        });
    }
    // Let pipelined queries already read finish, then close the write side.
    while queries.join_next().await.is_some() {}
    drop(tx);
    writer.await.map_err(io::Error::other)?
}
