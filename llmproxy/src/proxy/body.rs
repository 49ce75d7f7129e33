//! Bodies: bounded collection, content decoding (gzip, deflate, br) whole or chunk by chunk
//! with the same bound on the decoded size, and the body type the proxy answers with.

use std::{
    io::{self, Write},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A content coding the proxy can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    /// The coding named by `content-encoding`; `Err` with the name for one we cannot decode
    /// (stacked codings included).
    pub(crate) fn of(headers: &HeaderMap) -> Result<Coding, String> {
        let Some(v) = headers.get(http::header::CONTENT_ENCODING) else { return Ok(Coding::Identity) };
        let v = v.to_str().map_err(|_| "non-ASCII content-encoding".to_string())?.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            _ => Err(v),
        }
    }
}

/// Why a body could not be taken in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// More than the bound, raw or decoded.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Corrupt compressed data.
    #[error("cannot decode body: {0}")]
    Decode(io::Error),
    /// The peer broke off.
    #[error("reading body: {0}")]
    Read(String),
}

/// A `Write` sink that refuses to grow past a bound, so a decompression bomb stops early.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "decoded body over the bound"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Identity(Bounded),
    Gzip(Box<flate2::write::MultiGzDecoder<Bounded>>),
    Deflate(Box<flate2::write::ZlibDecoder<Bounded>>),
    Brotli(Box<brotli::DecompressorWriter<Bounded>>),
}

/// Decodes a body chunk by chunk; the output taken so far plus what is buffered never exceeds
/// the bound.
pub(crate) struct Decoder {
    inner: Inner,
    max: usize,
    taken: usize,
}

impl Decoder {
    pub(crate) fn new(coding: Coding, max: usize) -> Decoder {
        let sink = Bounded { buf: Vec::new(), max };
        let inner = match coding {
            Coding::Identity => Inner::Identity(sink),
            Coding::Gzip => Inner::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
            Coding::Deflate => Inner::Deflate(Box::new(flate2::write::ZlibDecoder::new(sink))),
            Coding::Brotli => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(sink, 8192))),
        };
        Decoder { inner, max, taken: 0 }
    }

    fn sink(&mut self) -> &mut Bounded {
        match &mut self.inner {
            Inner::Identity(s) => s,
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
        }
    }

    fn map(&self, e: io::Error) -> BodyError {
        if e.kind() == io::ErrorKind::FileTooLarge {
            BodyError::TooLarge(self.max)
        } else {
            BodyError::Decode(e)
        }
    }

    /// Feeds compressed bytes; returns the decoded bytes available now.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, BodyError> {
        let r = match &mut self.inner {
            Inner::Identity(s) => s.write_all(data),
            Inner::Gzip(d) => d.write_all(data),
            Inner::Deflate(d) => d.write_all(data),
            Inner::Brotli(d) => d.write_all(data),
        };
        r.map_err(|e| self.map(e))?;
        Ok(self.take())
    }

    /// Ends the input; returns the rest. A truncated compressed stream is an error.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, BodyError> {
        let r = match &mut self.inner {
            Inner::Identity(_) => Ok(()),
            Inner::Gzip(d) => d.try_finish(),
            Inner::Deflate(d) => d.try_finish(),
            Inner::Brotli(d) => d.close(),
        };
        r.map_err(|e| self.map(e))?;
        Ok(self.take())
    }

    fn take(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.sink().buf);
        // The bound covers the whole decoded body, not just what sits in the buffer.
        self.taken += out.len();
        let left = self.max.saturating_sub(self.taken);
        self.sink().max = left;
        out
    }
}

/// Reads a whole body, at most `max` bytes raw and `max` decoded.
pub(crate) async fn collect<B>(mut body: B, coding: Coding, max: usize) -> Result<Vec<u8>, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut dec = Decoder::new(coding, max);
    let (mut raw, mut out) = (0usize, Vec::new());
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            raw += data.len();
            if raw > max {
                return Err(BodyError::TooLarge(max));
            }
            out.extend_from_slice(&dec.push(&data)?);
        }
    }
    out.extend_from_slice(&dec.finish()?);
    Ok(out)
}

/// The body of every answer the proxy gives: whole, or streamed from a task.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body (taken on first poll).
    Full(Option<Bytes>),
    /// Chunks from the streaming task; an `Err` aborts the answer.
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

impl ProxyBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ProxyBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn chunked_decoding_matches_whole() {
        let text = b"data: hello\n\n".repeat(500);
        let z = gzip(&text);
        let mut d = Decoder::new(Coding::Gzip, 1 << 20);
        let mut out = Vec::new();
        for c in z.chunks(7) {
            out.extend(d.push(c).unwrap());
        }
        out.extend(d.finish().unwrap());
        assert_eq!(out, text);
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &text[..], &mut br, &Default::default()).unwrap();
        let mut d = Decoder::new(Coding::Brotli, 1 << 20);
        let mut out = d.push(&br).unwrap();
        out.extend(d.finish().unwrap());
        assert_eq!(out, text);
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let z = gzip(&vec![0u8; 1 << 20]);
        let mut d = Decoder::new(Coding::Gzip, 4096);
        let r = z.chunks(64).try_for_each(|c| d.push(c).map(drop)).and_then(|_| d.finish().map(drop));
        assert!(matches!(r, Err(BodyError::TooLarge(4096))));
        let mut d = Decoder::new(Coding::Gzip, 4096);
        assert!(matches!(d.push(b"not gzip at all").and_then(|_| d.finish()), Err(BodyError::Decode(_))));
        let mut d = Decoder::new(Coding::Gzip, 4096);
        let short = &gzip(b"hello world")[..10];
        assert!(d.push(short).and_then(|_| d.finish()).is_err());
    }
}
