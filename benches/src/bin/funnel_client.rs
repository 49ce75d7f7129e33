//! The measuring client of the `funnel` macro benchmark.
//!
//! criterion cannot time a process that runs in another network namespace, so this program does
//! the timing itself. The bench starts it twice with the same code: once on the host (direct)
//! and once inside `agentsh exec` (through the funnel). It reads one command per line on stdin
//! and answers one line on stdout, so one sandboxed process serves every measurement and no
//! sandbox start-up is ever timed. All figures are nanoseconds.
//!
//! ```text
//! lat ADDR N [BYTE]   N × (connect, send BYTE (hex, default 78 = 'x'), receive 1 byte, close)
//!                     → "ok C1 T1 C2 T2 …": connect() time and whole-iteration time
//! ssf ADDR N          N × (connect, receive 1 byte, close): the server speaks first
//!                     → "ok C1 T1 …"
//! bulk ADDR BYTES     connect, send BYTES, half-close, receive the server's 8-byte count
//!                     → "ok NANOS" (from before connect to the count)
//! quit
//! ```
//!
//! A failure answers `err MESSAGE`. The line `ready` is printed once at start.
#![forbid(unsafe_code)]

use std::{
    io::{self, BufRead, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Instant,
};

/// Bulk writes go out in slices of this size.
const CHUNK: usize = 1 << 20;

fn nanos(since: Instant) -> u128 {
    since.elapsed().as_nanos()
}

/// One connect, an optional byte out, one byte in, close; returns (connect, total) nanoseconds.
fn round_trip(addr: SocketAddr, send: Option<u8>) -> io::Result<(u128, u128)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let connected = nanos(start);
    s.set_nodelay(true)?;
    if let Some(b) = send {
        s.write_all(&[b])?;
    }
    let mut got = [0u8; 1];
    s.read_exact(&mut got)?;
    drop(s);
    Ok((connected, nanos(start)))
}

fn repeat(addr: SocketAddr, n: usize, send: Option<u8>) -> io::Result<String> {
    let mut out = String::with_capacity(n * 16 + 2);
    out.push_str("ok");
    for _ in 0..n {
        let (c, t) = round_trip(addr, send)?;
        out.push_str(&format!(" {c} {t}"));
    }
    Ok(out)
}

fn bulk(addr: SocketAddr, bytes: u64) -> io::Result<String> {
    // Zero bytes: not a TLS record type and not an HTTP method, so the funnel's peek classifies
    // the stream as raw on the first segment.
    let buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let elapsed = nanos(start);
    let got = u64::from_le_bytes(count);
    if got != bytes {
        return Err(io::Error::other(format!("the sink counted {got} bytes, {bytes} were sent")));
    }
    Ok(format!("ok {elapsed}"))
}

fn parse<T: std::str::FromStr>(word: Option<&str>, what: &str) -> io::Result<T> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad or missing {what}")))
}

fn run(line: &str) -> io::Result<String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let addr: SocketAddr = parse(words.next(), "address")?;
    match cmd {
        "lat" => {
            let n = parse(words.next(), "count")?;
            let byte = match words.next() {
                Some(h) => {
                    u8::from_str_radix(h, 16).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
                }
                None => b'x',
            };
            repeat(addr, n, Some(byte))
        }
        "ssf" => repeat(addr, parse(words.next(), "count")?, None),
        "bulk" => bulk(addr, parse(words.next(), "byte count")?),
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown command {other:?}"))),
    }
}

fn main() -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.trim() == "quit" {
            break;
        }
        match run(&line) {
            Ok(answer) => writeln!(out, "{answer}")?,
            Err(e) => writeln!(out, "err {e}")?,
        }
        out.flush()?;
    }
    Ok(())
}
