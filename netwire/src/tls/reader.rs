//! A bounds-checked cursor over a complete handshake body; every read is length-checked and
//! fails with a `Malformed` reason instead of panicking.

use super::TlsError;

/// Cursor over bytes that are known to be complete (truncation is malformation here).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Octets not yet read.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        if self.buf.len() < n {
            return Err(TlsError::Malformed(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-octet length prefix.
    pub(super) fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-octet length prefix.
    pub(super) fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// Fail unless every byte was read.
    pub(super) fn finish(&self, what: &'static str) -> Result<(), TlsError> {
        if self.buf.is_empty() { Ok(()) } else { Err(TlsError::Malformed(what)) }
    }
}
