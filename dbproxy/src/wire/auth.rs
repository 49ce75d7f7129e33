//! Authentication (`R`) requests from the server. The client's answers (`p`: password, SASL
//! initial response, SASL response) share one tag and are told apart only by this state, so
//! they are kept raw ([`super::Frontend::Password`]).

use super::{
    WireError,
    codec::{Reader, frame, put_cstr, put_i32},
};

/// An authentication request or outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// AuthenticationOk (0).
    Ok,
    /// Cleartext password (3).
    CleartextPassword,
    /// MD5 password with this salt (5).
    Md5Password([u8; 4]),
    /// SASL with these mechanisms, e.g. `SCRAM-SHA-256` (10).
    Sasl(Vec<&'a str>),
    /// SASL challenge (11).
    SaslContinue(&'a [u8]),
    /// SASL outcome (12).
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI and anything newer: not supported by the proxy.
    Other {
        /// The request code.
        code: i32,
        /// Its data.
        data: &'a [u8],
    },
}

impl<'a> Authentication<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Authentication");
        let a = match r.i32()? {
            0 => Authentication::Ok,
            3 => Authentication::CleartextPassword,
            5 => {
                let s = r.bytes(4)?;
                Authentication::Md5Password([s[0], s[1], s[2], s[3]])
            }
            10 => {
                let mut mechs = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(m);
                }
                Authentication::Sasl(mechs)
            }
            11 => Authentication::SaslContinue(r.rest()),
            12 => Authentication::SaslFinal(r.rest()),
            code => Authentication::Other { code, data: r.rest() },
        };
        r.end()?;
        Ok(a)
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'R'), |b| match self {
            Authentication::Ok => put_i32(b, 0),
            Authentication::CleartextPassword => put_i32(b, 3),
            Authentication::Md5Password(salt) => {
                put_i32(b, 5);
                b.extend_from_slice(salt);
            }
            Authentication::Sasl(mechs) => {
                put_i32(b, 10);
                mechs.iter().for_each(|m| put_cstr(b, m));
                b.push(0);
            }
            Authentication::SaslContinue(d) => {
                put_i32(b, 11);
                b.extend_from_slice(d);
            }
            Authentication::SaslFinal(d) => {
                put_i32(b, 12);
                b.extend_from_slice(d);
            }
            Authentication::Other { code, data } => {
                put_i32(b, *code);
                b.extend_from_slice(data);
            }
        });
    }
}
