//! Reading and writing the primitive wire types: big-endian integers, NUL-terminated UTF-8
//! strings, length-prefixed byte strings. Every read is bounds-checked.

use super::WireError;

/// A cursor over one message body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn bad(&self, why: &'static str) -> WireError {
        WireError::Malformed { message: self.what, why }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.bad("truncated"));
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(self.i32()? as u32)
    }

    /// A count (Int16) that must not be negative.
    pub(crate) fn count16(&mut self) -> Result<usize, WireError> {
        usize::try_from(self.i16()?).map_err(|_| self.bad("negative count"))
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, WireError> {
        let nul = self.buf.iter().position(|&b| b == 0).ok_or_else(|| self.bad("missing NUL terminator"))?;
        let s = std::str::from_utf8(&self.buf[..nul]).map_err(|_| self.bad("string is not UTF-8"))?;
        self.buf = &self.buf[nul + 1..];
        Ok(s)
    }

    /// An Int32 length then that many bytes; -1 is NULL.
    pub(crate) fn nullable(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(self.bad("negative length")),
            n => Ok(Some(self.bytes(n as usize)?)),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The body must be fully consumed.
    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.bad("trailing bytes")) }
    }
}

/// Writes a typed message: tag, then the body written by `body`, with the length filled in.
pub(crate) fn frame(out: &mut Vec<u8>, tag: Option<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    if let Some(t) = tag {
        out.push(t);
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = u32::try_from(out.len() - at).expect("message under 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

pub(crate) fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_i32(out, -1),
        Some(b) => {
            put_i32(out, i32::try_from(b.len()).expect("value under 2 GiB"));
            out.extend_from_slice(b);
        }
    }
}

/// A count as Int16 (callers built it from a parsed message, so it fits).
pub(crate) fn put_count16(out: &mut Vec<u8>, n: usize) {
    put_i16(out, i16::try_from(n).expect("count fits Int16"));
}
