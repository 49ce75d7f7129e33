//! The untyped first messages of a connection: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest, told apart by their 32-bit code.

use super::{
    WireError,
    codec::{Reader, frame, put_cstr, put_i32},
};

/// `SSLRequest` code (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `GSSENCRequest` code (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `CancelRequest` code (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A StartupMessage: protocol version and parameters (`user`, `database`, `options`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup<'a> {
    /// Major protocol version (3).
    pub major: u16,
    /// Minor protocol version (0, or 2 for protocol 3.2).
    pub minor: u16,
    /// Parameters in the order sent. Duplicates are refused at parse.
    pub params: Vec<(&'a str, &'a str)>,
}

impl<'a> Startup<'a> {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    pub(crate) fn decode(major: u16, minor: u16, body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "StartupMessage");
        let mut params: Vec<(&str, &str)> = Vec::new();
        loop {
            let k = r.cstr()?;
            if k.is_empty() {
                break;
            }
            let v = r.cstr()?;
            if params.iter().any(|(x, _)| *x == k) {
                return Err(WireError::Malformed { message: "StartupMessage", why: "duplicate parameter" });
            }
            params.push((k, v));
        }
        r.end()?;
        Ok(Startup { major, minor, params })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, None, |b| {
            b.extend_from_slice(&self.major.to_be_bytes());
            b.extend_from_slice(&self.minor.to_be_bytes());
            for (k, v) in &self.params {
                put_cstr(b, k);
                put_cstr(b, v);
            }
            b.push(0);
        });
    }
}

/// A CancelRequest: the backend key the server handed out (4 bytes of secret in 3.0, up to
/// 256 in 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest<'a> {
    /// Backend process id.
    pub pid: u32,
    /// Secret key.
    pub secret: &'a [u8],
}

impl<'a> CancelRequest<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "CancelRequest");
        let pid = r.u32()?;
        let secret = r.rest();
        if !(4..=256).contains(&secret.len()) {
            return Err(WireError::Malformed {
                message: "CancelRequest",
                why: "secret key must be 4-256 bytes",
            });
        }
        Ok(CancelRequest { pid, secret })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, None, |b| {
            put_i32(b, CANCEL_REQUEST_CODE as i32);
            put_i32(b, self.pid as i32);
            b.extend_from_slice(self.secret);
        });
    }
}

/// Writes an 8-byte request (`SSLRequest`, `GSSENCRequest`).
pub(crate) fn encode_code(out: &mut Vec<u8>, code: u32) {
    frame(out, None, |b| put_i32(b, code as i32));
}
