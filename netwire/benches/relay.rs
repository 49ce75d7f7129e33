//! Throughput of `relay` (splice and copy paths) against a direct loopback transfer: 1 GiB in
//! total per iteration, 512 MiB each way at once.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netwire::relay::{RelayConfig, RelayMode, relay_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const EACH_WAY: u64 = 512 << 20;

async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (c.expect("connect"), s.expect("accept").0)
}

/// Send `EACH_WAY` bytes and read the peer's `EACH_WAY` bytes concurrently.
async fn endpoint(stream: TcpStream) {
    let (mut r, mut w) = stream.into_split();
    let send = async move {
        let chunk = vec![0xa5u8; 1 << 20];
        let mut left = EACH_WAY;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).await.expect("write");
            left -= n as u64;
        }
        w.shutdown().await.expect("shutdown");
    };
    let recv = async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = r.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(got, EACH_WAY);
    };
    tokio::join!(send, recv);
}

async fn once(mode: Option<RelayMode>) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let start = Instant::now();
    match mode {
        None => {
            let (c, s) = pair(&listener).await;
            tokio::join!(tokio::spawn(endpoint(c)), tokio::spawn(endpoint(s))).0.expect("join");
        }
        Some(mode) => {
            let (c, a) = pair(&listener).await;
            let (b, s) = pair(&listener).await;
            let config = RelayConfig { mode, ..RelayConfig::new(Duration::from_secs(30)) };
            let relay = tokio::spawn(relay_with(a, b, config));
            let (x, y) = tokio::join!(tokio::spawn(endpoint(c)), tokio::spawn(endpoint(s)));
            x.expect("client");
            y.expect("server");
            let stats = relay.await.expect("join").expect("relay");
            assert_eq!(stats.a_to_b, EACH_WAY);
        }
    }
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("relay_1GiB");
    g.sample_size(10).throughput(Throughput::Bytes(2 * EACH_WAY));
    for (name, mode) in [("direct", None), ("splice", Some(RelayMode::Auto)), ("copy", Some(RelayMode::Copy))]
    {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(once(mode))).sum::<Duration>())
        });
    }
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
