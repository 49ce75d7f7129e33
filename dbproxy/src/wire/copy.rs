//! COPY sub-protocol from the client: CopyData (`d`), CopyDone (`c`), CopyFail (`f`). The
//! data itself is opaque and only counted.

use super::{
    WireError,
    codec::{Reader, frame, put_cstr},
};

/// CopyFail: the client aborts a COPY FROM STDIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFail<'a> {
    /// Why.
    pub message: &'a str,
}

impl<'a> CopyFail<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "CopyFail");
        let message = r.cstr()?;
        r.end()?;
        Ok(CopyFail { message })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'f'), |b| put_cstr(b, self.message));
    }
}

/// Writes a CopyData message.
pub fn encode_copy_data(data: &[u8], out: &mut Vec<u8>) {
    frame(out, Some(b'd'), |b| b.extend_from_slice(data));
}
