//! One direction of a relay: choose splice or copy, count bytes, keep the shared idle clock,
//! and turn socket errors into "reset by side X" or "unexpected error on side X".

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{Shutdown, shutdown};
use tokio::net::TcpStream;

use super::{RelayConfig, RelayMode, Side, copy, millis_since, splice};

/// The sockets and counter of one direction.
pub(super) struct Direction<'a> {
    /// Where bytes are read.
    pub(super) src: &'a TcpStream,
    /// Where bytes are written.
    pub(super) dst: &'a TcpStream,
    /// Which side `src` is (`dst` is the other).
    pub(super) src_side: Side,
    /// Bytes delivered to `dst` so far.
    pub(super) moved: &'a AtomicU64,
}

impl Direction<'_> {
    pub(super) fn dst_side(&self) -> Side {
        match self.src_side {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Record `n` bytes delivered.
    pub(super) fn delivered(&self, n: usize, shared: &Shared) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        shared.touch();
    }

    /// Propagate end of stream: no more bytes will go to `dst`.
    pub(super) fn half_close(&self) {
        // ENOTCONN here means the peer is already gone, which the other direction reports.
        let _ = shutdown(self.dst.as_raw_fd(), Shutdown::Write);
    }
}

/// State shared by both directions.
pub(super) struct Shared {
    start: Instant,
    /// Milliseconds since `start` of the last byte moved in either direction.
    last_activity: AtomicU64,
    /// Cleared when a direction falls back to copying.
    spliced: AtomicBool,
}

impl Shared {
    pub(super) fn new(start: Instant) -> Self {
        Shared { start, last_activity: AtomicU64::new(0), spliced: AtomicBool::new(true) }
    }

    pub(super) fn touch(&self) {
        self.last_activity.store(millis_since(self.start), Ordering::Relaxed);
    }

    pub(super) fn all_spliced(&self) -> bool {
        self.spliced.load(Ordering::Relaxed)
    }

    /// Resolve once nothing has moved for `idle`.
    pub(super) async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// How one direction failed.
#[derive(Debug)]
pub(super) enum PumpError {
    /// The peer on this side reset or vanished.
    Reset(Side),
    /// Anything else, on this side.
    Io(Side, io::Error),
}

impl PumpError {
    /// Classify an error seen on `side`'s socket.
    pub(super) fn on(side: Side, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                PumpError::Reset(side)
            }
            _ => PumpError::Io(side, e),
        }
    }
}

/// Move bytes from `dir.src` to `dir.dst` until end of stream (then half-close) or an error.
pub(super) async fn run(dir: Direction<'_>, shared: &Shared, config: RelayConfig) -> Result<(), PumpError> {
    if config.mode == RelayMode::Auto {
        match splice::pump(&dir, shared, config.pipe_size).await? {
            splice::Outcome::Done => return Ok(()),
            splice::Outcome::Unsupported => {}
        }
    }
    shared.spliced.store(false, Ordering::Relaxed);
    copy::pump(&dir, shared, config.pipe_size).await
}
