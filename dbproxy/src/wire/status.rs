//! Session status from the server: ParameterStatus (`S`), BackendKeyData (`K`) and
//! ReadyForQuery (`Z`).

use super::{
    WireError,
    codec::{Reader, frame, put_cstr, put_i32},
};

/// ParameterStatus: a run-time setting the client should know (`client_encoding`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    /// Setting name.
    pub name: &'a str,
    /// Its value.
    pub value: &'a str,
}

impl<'a> ParameterStatus<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ParameterStatus");
        let name = r.cstr()?;
        let value = r.cstr()?;
        r.end()?;
        Ok(ParameterStatus { name, value })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'S'), |b| {
            put_cstr(b, self.name);
            put_cstr(b, self.value);
        });
    }
}

/// BackendKeyData: the key a CancelRequest must present (4 bytes in 3.0, up to 256 in 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData<'a> {
    /// Backend process id.
    pub pid: u32,
    /// Secret key.
    pub secret: &'a [u8],
}

impl<'a> BackendKeyData<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "BackendKeyData");
        let pid = r.u32()?;
        let secret = r.rest();
        if !(4..=256).contains(&secret.len()) {
            return Err(WireError::Malformed {
                message: "BackendKeyData",
                why: "secret key must be 4-256 bytes",
            });
        }
        Ok(BackendKeyData { pid, secret })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'K'), |b| {
            put_i32(b, self.pid as i32);
            b.extend_from_slice(self.secret);
        });
    }
}

/// The transaction status in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Idle, not in a transaction (`I`).
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// In a failed transaction block (`E`).
    Failed,
}

impl TxStatus {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ReadyForQuery");
        let s = match r.u8()? {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => {
                return Err(WireError::Malformed {
                    message: "ReadyForQuery",
                    why: "status must be I, T or E",
                });
            }
        };
        r.end()?;
        Ok(s)
    }

    /// Writes a ReadyForQuery with this status.
    pub fn encode(self, out: &mut Vec<u8>) {
        let b = match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        };
        frame(out, Some(b'Z'), |o| o.push(b));
    }
}
