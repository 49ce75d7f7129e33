//! The zero-copy data path: socket → pipe → socket with `splice(2)`, driven by tokio readiness.
//!
//! The pipe is filled only when empty and then drained completely, so an `EAGAIN` on the fill
//! always means "the source socket has nothing" and on the drain "the destination socket is
//! full"; that lets `try_io` clear exactly the readiness that was used up.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use tokio::io::Interest;

use super::pump::{Direction, PumpError, Shared};

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// How the splice path ended.
pub(super) enum Outcome {
    /// End of stream reached and propagated.
    Done,
    /// The kernel refused splice before any byte moved: use the copy path instead.
    Unsupported,
}

/// Whether `e` from the very first splice means "this kind of fd cannot be spliced".
fn is_unsupported(e: Errno) -> bool {
    matches!(e, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// Run one direction over a fresh pipe of (about) `pipe_size` bytes.
pub(super) async fn pump(
    dir: &Direction<'_>,
    shared: &Shared,
    pipe_size: usize,
) -> Result<Outcome, PumpError> {
    let Ok((pipe_r, pipe_w)) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) else {
        return Ok(Outcome::Unsupported);
    };
    let chunk = size_pipe(&pipe_w, pipe_size);
    let mut in_pipe = 0usize;
    let mut started = false;
    loop {
        if in_pipe == 0 {
            let filled = loop {
                dir.src.readable().await.map_err(|e| PumpError::on(dir.src_side, e))?;
                let r = dir.src.try_io(Interest::READABLE, || {
                    splice(dir.src.as_fd(), None, pipe_w.as_fd(), None, chunk, FLAGS).map_err(io::Error::from)
                });
                match r {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        let errno = e.raw_os_error().map(Errno::from_raw);
                        if !started && errno.is_some_and(is_unsupported) {
                            return Ok(Outcome::Unsupported);
                        }
                        return Err(PumpError::on(dir.src_side, e));
                    }
                }
            };
            started = true;
            if filled == 0 {
                dir.half_close();
                return Ok(Outcome::Done);
            }
            in_pipe = filled;
        }
        drain(dir, shared, &pipe_r, &mut in_pipe).await?;
    }
}

/// Write everything in the pipe to the destination socket.
async fn drain(
    dir: &Direction<'_>,
    shared: &Shared,
    pipe_r: &OwnedFd,
    in_pipe: &mut usize,
) -> Result<(), PumpError> {
    while *in_pipe > 0 {
        dir.dst.writable().await.map_err(|e| PumpError::on(dir.dst_side(), e))?;
        let r = dir.dst.try_io(Interest::WRITABLE, || {
            splice(pipe_r.as_fd(), None, dir.dst.as_fd(), None, *in_pipe, FLAGS).map_err(io::Error::from)
        });
        match r {
            Ok(n) => {
                *in_pipe -= n;
                dir.delivered(n, shared);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(PumpError::on(dir.dst_side(), e)),
        }
    }
    Ok(())
}

/// Ask for a pipe of `want` bytes; return the capacity actually in force.
fn size_pipe(pipe_w: &OwnedFd, want: usize) -> usize {
    let want = i32::try_from(want).unwrap_or(i32::MAX);
    // A refusal (EPERM over the per-user limit) leaves the default 64 KiB pipe, which works.
    let _ = fcntl(pipe_w, FcntlArg::F_SETPIPE_SZ(want));
    fcntl(pipe_w, FcntlArg::F_GETPIPE_SZ).ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(64 * 1024)
}
