//! The IO adapter beside `wire`: a buffer that fills from an async reader until `wire::check`
//! says a whole message is there. Reads grow the buffer only as bytes arrive, so a declared
//! length costs nothing until it is actually sent; per-message caps refuse a huge statement
//! as soon as its header is read.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    classify::MAX_SQL_BYTES,
    wire::{Direction, MAX_MESSAGE, Phase, WireError, check},
};

/// Read size when nothing says how much is coming.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes reserved ahead for one message being read.
const MAX_RESERVE: usize = 256 * 1024;

/// Where a message starts and how long it is, or why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Reading failed.
    Io(std::io::Error),
    /// The peer closed in the middle of a message.
    Truncated,
    /// The bytes are not a valid message.
    Wire(WireError),
}

/// The largest message accepted from the client with tag `tag`: statement text is bounded by
/// what the classifier reads (longer text would be refused anyway), Parse also carries up to
/// 65535 parameter types.
pub(crate) fn frontend_cap(tag: u8) -> usize {
    match tag {
        b'Q' => 5 + MAX_SQL_BYTES + 1,
        b'P' => 5 + 2 * 1024 + MAX_SQL_BYTES + 2 + 4 * 65_535,
        _ => MAX_MESSAGE,
    }
}

/// A read buffer for one direction of one connection.
pub(crate) struct Framer {
    pub(crate) buf: BytesMut,
    dir: Direction,
}

impl Framer {
    pub(crate) fn new(dir: Direction, leftover: BytesMut) -> Framer {
        Framer { buf: leftover, dir }
    }

    /// The length of the whole message at the start of the buffer, if it is all there.
    pub(crate) fn next(&self, phase: Phase) -> Result<Option<usize>, WireError> {
        let got = check(&self.buf, self.dir, phase)?;
        if self.dir == Direction::Frontend && phase == Phase::Normal && self.buf.len() >= 5 {
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            let max = frontend_cap(self.buf[0]);
            if len + 1 > max {
                return Err(WireError::TooLarge { len: len + 1, max });
            }
        }
        Ok(got)
    }

    /// Reads more bytes; `Ok(false)` on end of stream.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        phase: Phase,
    ) -> std::io::Result<bool> {
        let header = if phase == Phase::Startup { 0 } else { 1 };
        let want = match self.buf.get(header..header + 4) {
            Some(l) => (u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize + header)
                .saturating_sub(self.buf.len()),
            None => READ_CHUNK,
        };
        self.buf.reserve(want.clamp(READ_CHUNK, MAX_RESERVE));
        Ok(r.read_buf(&mut self.buf).await? > 0)
    }

    /// Waits for a whole message; `Ok(None)` on a clean end of stream between messages.
    pub(crate) async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        phase: Phase,
    ) -> Result<Option<usize>, ReadError> {
        loop {
            if let Some(n) = self.next(phase).map_err(ReadError::Wire)? {
                return Ok(Some(n));
            }
            if !self.fill(r, phase).await.map_err(ReadError::Io)? {
                return if self.buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_whole_messages_across_partial_writes_and_refuses_huge_headers() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in [&b"Q\0\0\0\x0dSELE"[..], b"CT 1\0", b"X\0\0\0\x04"] {
                a.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut f = Framer::new(Direction::Frontend, BytesMut::new());
        let n = f.read(&mut b, Phase::Normal).await.unwrap().unwrap();
        assert_eq!(&f.buf[..n], b"Q\0\0\0\x0dSELECT 1\0");
        let _ = f.buf.split_to(n);
        let n = f.read(&mut b, Phase::Normal).await.unwrap().unwrap();
        assert_eq!(&f.buf[..n], b"X\0\0\0\x04");
        writer.await.unwrap();

        let mut huge = Framer::new(Direction::Frontend, BytesMut::from(&b"Q\x10\0\0\0"[..]));
        assert!(matches!(huge.next(Phase::Normal), Err(WireError::TooLarge { .. })));
        huge.buf = BytesMut::from(&b"d\x10\0\0\0"[..]);
        assert!(matches!(huge.next(Phase::Normal), Ok(None)), "CopyData may be large");
    }
}
