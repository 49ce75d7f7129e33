//! `relay` over real loopback sockets: bulk transfer both ways with checksums (splice and copy
//! paths), half-close, reset propagation from either side, and the idle timeout.

mod support;

use std::time::{Duration, Instant};

use netwire::relay::{RelayConfig, RelayEnd, RelayError, RelayMode, RelayStats, Side, relay_with};
use support::net::pair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

/// client ⇄ (a) relay (b) ⇄ server, all on 127.0.0.1.
async fn topology(config: RelayConfig) -> (TcpStream, TcpStream, JoinHandle<Result<RelayStats, RelayError>>) {
    let (client, a) = pair().await;
    let (b, server) = pair().await;
    (client, server, tokio::spawn(relay_with(a, b, config)))
}

fn config(mode: RelayMode, idle: Duration) -> RelayConfig {
    RelayConfig { mode, ..RelayConfig::new(idle) }
}

/// Deterministic pseudo-random megabyte number `i` of stream `seed`.
fn chunk(seed: u64, i: usize) -> Vec<u8> {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(MIB);
    while out.len() < MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn fold(mut h: u64, bytes: &[u8]) -> u64 {
    for w in bytes.chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Write `mib` megabytes of stream `seed`, then half-close; return the checksum sent.
async fn send(mut w: tokio::net::tcp::OwnedWriteHalf, seed: u64, mib: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for i in 0..mib {
        let c = chunk(seed, i);
        h = fold(h, &c);
        w.write_all(&c).await.expect("write");
    }
    w.shutdown().await.expect("shutdown");
    h
}

/// Read exactly `mib` megabytes then expect end of stream; return the checksum received.
async fn recv(mut r: tokio::net::tcp::OwnedReadHalf, mib: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; MIB];
    for _ in 0..mib {
        r.read_exact(&mut buf).await.expect("read");
        h = fold(h, &buf);
    }
    assert_eq!(r.read(&mut buf).await.expect("eof"), 0, "bytes past the end");
    h
}

async fn bulk(mode: RelayMode, mib: usize) -> RelayStats {
    bulk_with(config(mode, Duration::from_secs(30)), mib).await
}

async fn bulk_with(config: RelayConfig, mib: usize) -> RelayStats {
    let (client, server, relay) = topology(config).await;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let run = async {
        let (sent_up, sent_down, got_up, got_down) =
            tokio::join!(send(cw, 1, mib), send(sw, 2, mib), recv(sr, mib), recv(cr, mib));
        assert_eq!(sent_up, got_up, "client → server checksum");
        assert_eq!(sent_down, got_down, "server → client checksum");
        relay.await.expect("join").expect("relay")
    };
    let stats = tokio::time::timeout(LIMIT, run).await.expect("in time");
    assert_eq!((stats.a_to_b, stats.b_to_a), ((mib * MIB) as u64, (mib * MIB) as u64));
    assert_eq!(stats.end, RelayEnd::Closed);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_64mib_each_way_spliced() {
    let stats = bulk(RelayMode::Auto, 64).await;
    assert!(stats.spliced, "loopback TCP should splice on Linux");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_16mib_each_way_copy_fallback() {
    let stats = bulk(RelayMode::Copy, 16).await;
    assert!(!stats.spliced);
}

/// The copy path with the gateway's 1 MiB buffers: each direction starts small and grows while
/// reads fill it, and the bytes come through whole and in order across every growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_copy_through_a_growing_buffer() {
    let big = RelayConfig { pipe_size: MIB, ..config(RelayMode::Copy, Duration::from_secs(30)) };
    let stats = bulk_with(big, 24).await;
    assert!(!stats.spliced);
}

#[tokio::test]
async fn half_close_propagates_both_ways() {
    for mode in [RelayMode::Auto, RelayMode::Copy] {
        let (mut client, mut server, relay) = topology(config(mode, Duration::from_secs(10))).await;
        client.write_all(b"question").await.expect("write");
        client.shutdown().await.expect("client shuts write");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("server reads to EOF");
        assert_eq!(got, b"question");
        // The client's write side is closed, yet the reply still reaches it.
        server.write_all(b"answer").await.expect("reply");
        server.shutdown().await.expect("server shuts write");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.expect("client reads to EOF");
        assert_eq!(reply, b"answer");
        let stats = relay.await.expect("join").expect("relay");
        assert_eq!((stats.a_to_b, stats.b_to_a, stats.end), (8, 6, RelayEnd::Closed));
    }
}

async fn reset_from(side: Side, mode: RelayMode) {
    let (client, server, relay) = topology(config(mode, Duration::from_secs(10))).await;
    let (resetter, mut survivor) = match side {
        Side::A => (client, server),
        Side::B => (server, client),
    };
    resetter.set_zero_linger().expect("linger 0");
    drop(resetter);
    let stats = tokio::time::timeout(LIMIT, relay).await.expect("in time").expect("join").expect("relay");
    assert_eq!(stats.end, RelayEnd::Reset { by: side });
    let mut buf = [0u8; 16];
    let err = survivor.read(&mut buf).await.expect_err("survivor must see a reset, not a clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn reset_propagates_from_client() {
    reset_from(Side::A, RelayMode::Auto).await;
    reset_from(Side::A, RelayMode::Copy).await;
}

#[tokio::test]
async fn reset_propagates_from_server() {
    reset_from(Side::B, RelayMode::Auto).await;
    reset_from(Side::B, RelayMode::Copy).await;
}

#[tokio::test]
async fn idle_timeout_closes_both() {
    let (mut client, mut server, relay) = topology(config(RelayMode::Auto, Duration::from_millis(200))).await;
    let t = Instant::now();
    let stats = tokio::time::timeout(LIMIT, relay).await.expect("in time").expect("join").expect("relay");
    assert_eq!(stats.end, RelayEnd::IdleTimeout);
    assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    let mut buf = [0u8; 4];
    assert_eq!(client.read(&mut buf).await.expect("client EOF"), 0);
    assert_eq!(server.read(&mut buf).await.expect("server EOF"), 0);
}

#[tokio::test]
async fn traffic_defers_the_idle_timeout() {
    let (mut client, mut server, relay) = topology(config(RelayMode::Auto, Duration::from_millis(300))).await;
    let t = Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"k").await.expect("keepalive");
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.expect("delivered");
    }
    let stats = tokio::time::timeout(LIMIT, relay).await.expect("in time").expect("join").expect("relay");
    assert_eq!((stats.end, stats.a_to_b), (RelayEnd::IdleTimeout, 6));
    assert!(t.elapsed() >= Duration::from_millis(850), "{:?}", t.elapsed());
}
