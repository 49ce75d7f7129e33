//! The host-side loopback upstreams both clients talk to: an echo (one byte back), a server that
//! speaks first (one byte, no read), and a sink that counts a stream and answers the count.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
};

/// The three upstreams' addresses (on 127.0.0.1, ephemeral ports).
pub struct Upstreams {
    /// Reads one byte, writes it back, closes.
    pub echo: SocketAddr,
    /// Writes one byte at once, closes.
    pub speak_first: SocketAddr,
    /// Reads to end of stream, answers the byte count (u64 little-endian), closes.
    pub sink: SocketAddr,
}

fn listen() -> std::io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
}

/// Serve `listener` on its own thread; `handle` runs inline (the clients are sequential) unless
/// it spawns.
fn serve(listener: TcpListener, handle: fn(TcpStream)) {
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            handle(s);
        }
    });
}

fn echo(mut s: TcpStream) {
    let mut b = [0u8; 1];
    if s.read_exact(&mut b).is_ok() {
        let _ = s.write_all(&b);
    }
}

fn speak_first(mut s: TcpStream) {
    let _ = s.write_all(b"x");
}

fn sink(mut s: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        let _ = s.write_all(&total.to_le_bytes());
    });
}

/// Start the three upstreams; their threads live as long as the bench process.
pub fn start() -> std::io::Result<Upstreams> {
    let (e, f, k) = (listen()?, listen()?, listen()?);
    let ups = Upstreams { echo: e.local_addr()?, speak_first: f.local_addr()?, sink: k.local_addr()? };
    serve(e, echo);
    serve(f, speak_first);
    serve(k, sink);
    Ok(ups)
}
