//! Connected UDP sockets to the upstream resolvers, kept for reuse. Binding a fresh socket per
//! query (a new random source port each time) costs a port search, a connect and a reactor
//! registration on every query, the largest part of the forwarding overhead. Reuse is bounded
//! so that the source port stays hard to guess: a socket serves at most [`MAX_USES`] queries
//! and at most [`MAX_IDLE`] wait per upstream, each on its own kernel-chosen random port. A
//! socket is taken exclusively for one exchange and returned only after a verified answer; one
//! whose exchange timed out or failed is closed, so a late or stray answer dies with it.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Mutex,
};

use tokio::net::UdpSocket;

/// Queries one socket serves before it is closed.
pub const MAX_USES: u32 = 64;
/// Idle sockets kept per upstream.
pub const MAX_IDLE: usize = 64;

/// A socket connected to one upstream, and how many queries it has carried.
#[derive(Debug)]
pub struct Pooled {
    /// The connected socket.
    pub sock: UdpSocket,
    uses: u32,
}

impl Pooled {
    /// A new socket on a random port, connected to `server`.
    pub async fn fresh(server: SocketAddr) -> io::Result<Pooled> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local).await?;
        sock.connect(server).await?;
        Ok(Pooled { sock, uses: 0 })
    }
}

/// Idle sockets by upstream.
#[derive(Debug, Default)]
pub struct UdpPool {
    idle: Mutex<HashMap<SocketAddr, Vec<Pooled>>>,
}

impl UdpPool {
    /// An idle socket to `server`, if one is kept.
    pub fn take(&self, server: SocketAddr) -> Option<Pooled> {
        self.lock().get_mut(&server).and_then(Vec::pop)
    }

    /// Return a socket after a verified answer; it is closed instead once it has served
    /// [`MAX_USES`] queries or when [`MAX_IDLE`] already wait.
    pub fn give_back(&self, server: SocketAddr, mut socket: Pooled) {
        socket.uses += 1;
        if socket.uses >= MAX_USES {
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(server).or_default();
        if list.len() < MAX_IDLE {
            list.push(socket);
        }
    }

    /// Idle sockets kept for `server`.
    pub fn idle(&self, server: SocketAddr) -> usize {
        self.lock().get(&server).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Pooled>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_are_reused_a_bounded_number_of_times() {
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let pool = UdpPool::default();
        assert!(pool.take(server).is_none());
        let first = Pooled::fresh(server).await.unwrap();
        let port = first.sock.local_addr().unwrap().port();
        pool.give_back(server, first);
        for _ in 1..MAX_USES - 1 {
            let s = pool.take(server).expect("kept");
            assert_eq!(s.sock.local_addr().unwrap().port(), port);
            pool.give_back(server, s);
        }
        let last = pool.take(server).expect("kept");
        pool.give_back(server, last);
        assert!(pool.take(server).is_none(), "closed after {MAX_USES} uses");
    }

    #[tokio::test]
    async fn idle_sockets_are_bounded_per_upstream() {
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let pool = UdpPool::default();
        for _ in 0..MAX_IDLE + 5 {
            pool.give_back(server, Pooled::fresh(server).await.unwrap());
        }
        assert_eq!(pool.idle(server), MAX_IDLE);
        assert_eq!(pool.idle(other), 0);
        assert!(pool.take(other).is_none());
    }
}
