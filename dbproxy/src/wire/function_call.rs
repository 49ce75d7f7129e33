//! FunctionCall (`F`): the legacy fast-path call of a function by OID. Refused unless the
//! service allows it, so it is parsed only to be named and audited.

use super::{
    WireError,
    codec::{Reader, frame, put_count16, put_i16, put_i32, put_nullable},
};

/// A FunctionCall message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    /// The function's OID.
    pub oid: u32,
    /// Argument format codes.
    pub arg_formats: Vec<i16>,
    /// Arguments; `None` is NULL.
    pub args: Vec<Option<&'a [u8]>>,
    /// Result format code.
    pub result_format: i16,
}

impl<'a> FunctionCall<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "FunctionCall");
        let oid = r.u32()?;
        let n = r.count16()?;
        let arg_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
        let n = r.count16()?;
        let args = (0..n).map(|_| r.nullable()).collect::<Result<_, _>>()?;
        let result_format = r.i16()?;
        r.end()?;
        Ok(FunctionCall { oid, arg_formats, args, result_format })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'F'), |b| {
            put_i32(b, self.oid as i32);
            put_count16(b, self.arg_formats.len());
            self.arg_formats.iter().for_each(|f| put_i16(b, *f));
            put_count16(b, self.args.len());
            self.args.iter().for_each(|a| put_nullable(b, *a));
            put_i16(b, self.result_format);
        });
    }
}
