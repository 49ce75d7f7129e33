//! The fallback data path: a user-space buffer between `try_read` and `try_write`, for
//! kernels or sockets where `splice(2)` is refused, and as the baseline in benchmarks.

use std::io;

use super::pump::{Direction, PumpError, Shared};

/// Copy until end of stream (then half-close) or an error, through a `buf_size` buffer.
pub(super) async fn pump(dir: &Direction<'_>, shared: &Shared, buf_size: usize) -> Result<(), PumpError> {
    let mut buf = vec![0u8; buf_size.max(4096)];
    loop {
        dir.src.readable().await.map_err(|e| PumpError::on(dir.src_side, e))?;
        let n = match dir.src.try_read(&mut buf) {
            Ok(0) => {
                dir.half_close();
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(PumpError::on(dir.src_side, e)),
        };
        let mut off = 0;
        while off < n {
            dir.dst.writable().await.map_err(|e| PumpError::on(dir.dst_side(), e))?;
            match dir.dst.try_write(&buf[off..n]) {
                Ok(m) => {
                    off += m;
                    dir.delivered(m, shared);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(PumpError::on(dir.dst_side(), e)),
            }
        }
    }
}
