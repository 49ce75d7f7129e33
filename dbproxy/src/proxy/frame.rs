//! The IO adapter beside `wire`: a buffer that fills from an async reader until `wire::check`
//! says a whole message is there. Reads grow the buffer only as bytes arrive, so a declared
//! length costs nothing until it is actually sent; per-message caps refuse a huge statement
//! as soon as its header is read.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    classify::MAX_SQL_BYTES,
    wire::{Direction, MAX_MESSAGE, Phase, WireError, check},
};

/// Read size when nothing says how much is coming.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes reserved ahead for one message being read.
const MAX_RESERVE: usize = 256 * 1024;

/// Messages at least this long whose content the proxy never reads (DataRow from the server,
/// CopyData either way) are passed on piecewise as they arrive instead of buffered whole: a
/// 1 GiB row or COPY chunk costs a session a read buffer (about [`MAX_RESERVE`]), not 1 GiB.
pub(crate) const STREAM_AT: usize = 1 << 20;

/// Why a streamed message stopped.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Reading its rest failed.
    Read(std::io::Error),
    /// Passing it on failed.
    Write(std::io::Error),
}

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
        self.next_at(0, phase)
    }

    /// [`Framer::next`] for the message at `off`.
    pub(crate) fn next_at(&self, off: usize, phase: Phase) -> Result<Option<usize>, WireError> {
        let buf = &self.buf[off..];
        let got = check(buf, self.dir, phase)?;
        if self.dir == Direction::Frontend && phase == Phase::Normal && buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            let max = frontend_cap(buf[0]);
            if len + 1 > max {
                return Err(WireError::TooLarge { len: len + 1, max });
            }
        }
        Ok(got)
    }

    /// The whole length of the message at the start of the buffer when it is one to stream
    /// (see [`STREAM_AT`]) and not all there.
    pub(crate) fn streamed(&self) -> Option<usize> {
        let tag = *self.buf.first()?;
        let streams = tag == b'd' || (tag == b'D' && self.dir == Direction::Backend);
        let len = self.buf.get(1..5)?;
        let total = 1 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        (streams && total >= STREAM_AT && total > self.buf.len() && total <= 1 + MAX_MESSAGE).then_some(total)
    }

    /// Passes the `total` bytes of the message at the start of the buffer from the buffer and
    /// then from `r` to `w`, never holding more than a read's worth. `Ok(false)`: `r` ended
    /// before the message did.
    pub(crate) async fn stream<R, W>(
        &mut self,
        total: usize,
        r: &mut R,
        w: &mut W,
    ) -> Result<bool, StreamError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut left = total;
        while left > 0 {
            if self.buf.is_empty() {
                self.buf.reserve(left.min(MAX_RESERVE));
                if r.read_buf(&mut self.buf).await.map_err(StreamError::Read)? == 0 {
                    return Ok(false);
                }
            }
            let k = left.min(self.buf.len());
            w.write_all(&self.buf[..k]).await.map_err(StreamError::Write)?;
            self.buf.advance(k);
            left -= k;
        }
        Ok(true)
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

    #[tokio::test]
    async fn a_long_copydata_is_passed_on_in_pieces_and_the_buffer_stays_small() {
        // A 3 MiB CopyData from the client, then a Sync, written in uneven pieces.
        let body = vec![b'z'; 3 << 20];
        let mut msg = vec![b'd'];
        msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        msg.extend_from_slice(&body);
        msg.extend_from_slice(b"S\0\0\0\x04");
        let (mut client, mut from_client) = tokio::io::duplex(64 * 1024);
        let sent = msg.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in sent.chunks(70_001) {
                client.write_all(chunk).await.unwrap();
            }
        });
        let (mut to_server, mut server) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut f = Framer::new(Direction::Frontend, BytesMut::new());
        while f.buf.len() < 5 {
            assert!(f.fill(&mut from_client, Phase::Normal).await.unwrap());
        }
        let total = f.streamed().expect("a long CopyData is streamed");
        assert_eq!(total, 1 + 4 + body.len());
        let mut peak = 0;
        let mut left = total;
        // Stream it in steps, watching the buffer between them.
        while left > 0 {
            let step = left.min(100_000);
            if f.buf.is_empty() {
                f.fill(&mut from_client, Phase::Normal).await.unwrap();
            }
            let k = step.min(f.buf.len());
            assert!(f.stream(k, &mut from_client, &mut to_server).await.unwrap());
            peak = peak.max(f.buf.capacity());
            left -= k;
        }
        assert!(peak <= 2 * MAX_RESERVE, "buffer grew to {peak}");
        // What follows the streamed message is read as usual.
        let n = f.read(&mut from_client, Phase::Normal).await.unwrap().unwrap();
        assert_eq!(&f.buf[..n], b"S\0\0\0\x04");
        to_server.write_all(&f.buf[..n]).await.unwrap();
        drop(to_server);
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), msg);

        // Short ones, a client's DataRow and a message whose end is buffered are not streamed.
        for head in [&b"d\0\0\x10\0"[..], b"D\0\x20\0\0"] {
            let f = Framer::new(Direction::Frontend, BytesMut::from(head));
            assert_eq!(f.streamed(), None, "{head:?}");
        }
        let f = Framer::new(Direction::Backend, BytesMut::from(&b"D\0\x20\0\0"[..]));
        assert_eq!(f.streamed(), Some(1 + (0x20 << 16)));
    }
}
