//! Relaying bytes between two connected TCP sockets until both directions end.
//!
//! Each direction moves data with `splice(2)` through its own pipe, so payload bytes never
//! enter user space; where the kernel refuses `splice` the direction falls back to a plain
//! buffered copy. Endings propagate the way a TCP middlebox should:
//! - end of stream from one peer → `shutdown(SHUT_WR)` towards the other (half-close), and the
//!   other direction keeps flowing;
//! - a reset (or broken pipe) on one side → both sockets are closed with `SO_LINGER` 0, so the
//!   other peer sees a reset too rather than a clean end it could mistake for success;
//! - no byte in either direction for the idle timeout → both sockets are closed.

mod copy;
mod pump;
mod splice;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use pump::{Direction, PumpError, Shared};

/// One of the two sockets given to [`relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first socket (in the gateway: the agent's connection).
    A,
    /// The second socket (in the gateway: the upstream connection).
    B,
}

/// How payload bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// `splice(2)` through a pipe, falling back to a user-space copy where unsupported.
    #[default]
    Auto,
    /// Always the user-space copy (for comparison and for tests of the fallback).
    Copy,
}

/// Relay tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Close both sockets after this long without a byte in either direction.
    pub idle_timeout: Duration,
    /// Data path.
    pub mode: RelayMode,
    /// Requested pipe capacity per direction (`F_SETPIPE_SZ`; the kernel may round or refuse,
    /// and then the default capacity is used). Also the copy buffer size.
    pub pipe_size: usize,
}

impl RelayConfig {
    /// Splice mode, 256 KiB pipes, the given idle timeout.
    pub fn new(idle_timeout: Duration) -> Self {
        RelayConfig { idle_timeout, mode: RelayMode::Auto, pipe_size: 256 * 1024 }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both peers ended their direction cleanly.
    Closed,
    /// Nothing moved for the idle timeout; both sockets were closed.
    IdleTimeout,
    /// This side reset the connection (or vanished); the other side was reset in turn.
    Reset {
        /// The side that failed first.
        by: Side,
    },
}

/// What a relay moved and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes delivered from A to B.
    pub a_to_b: u64,
    /// Bytes delivered from B to A.
    pub b_to_a: u64,
    /// Wall time from start to end.
    pub duration: Duration,
    /// Why it stopped.
    pub end: RelayEnd,
    /// Both directions used `splice(2)` (false when either fell back to copying).
    pub spliced: bool,
}

/// A failure other than a peer's reset; both sockets were closed abortively.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An unexpected socket or pipe error.
    #[error("relay I/O error on side {side:?}: {source}")]
    Io {
        /// The side whose socket (or whose direction's pipe) failed.
        side: Side,
        /// The underlying error.
        source: io::Error,
        /// What had been moved until then.
        stats: RelayStats,
    },
}

/// Relay between `a` and `b` with splice and the given idle timeout; see [`relay_with`].
pub async fn relay(a: TcpStream, b: TcpStream, idle_timeout: Duration) -> Result<RelayStats, RelayError> {
    relay_with(a, b, RelayConfig::new(idle_timeout)).await
}

/// Relay between `a` and `b` until both directions end, one side resets, an unexpected error
/// occurs, or the idle timeout passes. Both sockets are closed on return.
pub async fn relay_with(a: TcpStream, b: TcpStream, config: RelayConfig) -> Result<RelayStats, RelayError> {
    let start = Instant::now();
    let shared = Shared::new(start);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let outcome = {
        let ab =
            pump::run(Direction { src: &a, dst: &b, src_side: Side::A, moved: &a_to_b }, &shared, config);
        let ba =
            pump::run(Direction { src: &b, dst: &a, src_side: Side::B, moved: &b_to_a }, &shared, config);
        let idle = shared.idle(config.idle_timeout);
        tokio::pin!(ab, ba, idle);
        let (mut ab_done, mut ba_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut ab, if !ab_done => match r {
                    Ok(()) => ab_done = true,
                    Err(e) => break Err(e),
                },
                r = &mut ba, if !ba_done => match r {
                    Ok(()) => ba_done = true,
                    Err(e) => break Err(e),
                },
                () = &mut idle => break Ok(RelayEnd::IdleTimeout),
            }
            if ab_done && ba_done {
                break Ok(RelayEnd::Closed);
            }
        }
    };
    let outcome = outcome.or_else(|e| match e {
        PumpError::Reset(by) => Ok(RelayEnd::Reset { by }),
        PumpError::Io(side, source) => Err((side, source)),
    });
    let mut stats = RelayStats {
        a_to_b: a_to_b.load(Ordering::Relaxed),
        b_to_a: b_to_a.load(Ordering::Relaxed),
        duration: start.elapsed(),
        end: RelayEnd::Closed,
        spliced: shared.all_spliced(),
    };
    match outcome {
        Ok(end) => {
            if let RelayEnd::Reset { .. } = end {
                abort(&a, &b);
            }
            stats.end = end;
            Ok(stats)
        }
        Err((side, source)) => {
            abort(&a, &b);
            Err(RelayError::Io { side, source, stats })
        }
    }
}

/// Make the coming close send RST on both sockets.
fn abort(a: &TcpStream, b: &TcpStream) {
    // Best effort: a socket that is already dead may refuse the option, which is fine.
    let _ = a.set_zero_linger();
    let _ = b.set_zero_linger();
}

/// Milliseconds since `start`, saturating; the unit of the shared activity clock.
fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
