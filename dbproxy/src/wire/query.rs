//! Simple query (`Q`): one string holding one or more statements.

use super::{
    WireError,
    codec::{Reader, frame, put_cstr},
};

/// A simple Query message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The SQL text.
    pub sql: &'a str,
}

impl<'a> Query<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Query");
        let sql = r.cstr()?;
        r.end()?;
        Ok(Query { sql })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'Q'), |b| put_cstr(b, self.sql));
    }
}
