//! The fallback data path: a user-space buffer between `try_read` and `try_write`, for
//! kernels or sockets where `splice(2)` is refused, and as the baseline in benchmarks.

use std::io;

use super::pump::{Direction, PumpError, Shared};

/// The buffer a direction starts with: enough for a request or an answer. A connection that
/// says a few bytes each way (most of them) must not pay for zeroing and faulting in the
/// bulk-sized buffer, which costs more than the whole exchange.
const START: usize = 16 * 1024;

/// Copy until end of stream (then half-close) or an error, through a buffer that starts at
/// [`START`] and doubles, up to `buf_size`, each time a read fills it.
pub(super) async fn pump(dir: &Direction<'_>, shared: &Shared, buf_size: usize) -> Result<(), PumpError> {
    let max = buf_size.max(4096);
    let mut buf = vec![0u8; START.min(max)];
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
        let full = n == buf.len();
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
        if full && buf.len() < max {
            // More was waiting: a bulk transfer, which moves faster in larger reads and writes.
            let grown = (buf.len() * 2).min(max);
            buf.resize(grown, 0);
        }
    }
}
