//! Extended query protocol: Parse, Bind, Describe, Execute, Close (Sync and Flush carry no
//! body). The proxy classifies at Parse and checks again at Execute.

use super::{
    WireError,
    codec::{Reader, frame, put_count16, put_cstr, put_i16, put_i32, put_nullable},
};

/// Parse (`P`): a named or unnamed prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name (empty: the unnamed statement).
    pub name: &'a str,
    /// The SQL text (one statement).
    pub sql: &'a str,
    /// Parameter type OIDs (0: unspecified).
    pub param_types: Vec<u32>,
}

impl<'a> Parse<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Parse");
        let name = r.cstr()?;
        let sql = r.cstr()?;
        let n = r.count16()?;
        let param_types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        r.end()?;
        Ok(Parse { name, sql, param_types })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'P'), |b| {
            put_cstr(b, self.name);
            put_cstr(b, self.sql);
            put_count16(b, self.param_types.len());
            for t in &self.param_types {
                put_i32(b, *t as i32);
            }
        });
    }
}

/// Bind (`B`): a portal from a prepared statement and parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal (empty: unnamed).
    pub portal: &'a str,
    /// Source statement (empty: unnamed).
    pub statement: &'a str,
    /// Parameter format codes (0 text, 1 binary).
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result column format codes.
    pub result_formats: Vec<i16>,
}

impl<'a> Bind<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Bind");
        let portal = r.cstr()?;
        let statement = r.cstr()?;
        let n = r.count16()?;
        let param_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
        let n = r.count16()?;
        let params = (0..n).map(|_| r.nullable()).collect::<Result<_, _>>()?;
        let n = r.count16()?;
        let result_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
        r.end()?;
        Ok(Bind { portal, statement, param_formats, params, result_formats })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'B'), |b| {
            put_cstr(b, self.portal);
            put_cstr(b, self.statement);
            put_count16(b, self.param_formats.len());
            self.param_formats.iter().for_each(|f| put_i16(b, *f));
            put_count16(b, self.params.len());
            self.params.iter().for_each(|p| put_nullable(b, *p));
            put_count16(b, self.result_formats.len());
            self.result_formats.iter().for_each(|f| put_i16(b, *f));
        });
    }
}

/// What Describe and Close name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

impl Target {
    fn decode(r: &mut Reader<'_>, message: &'static str) -> Result<Target, WireError> {
        match r.u8()? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(WireError::Malformed { message, why: "target must be S or P" }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// Describe (`D`) or Close (`C`): a statement or portal by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named<'a> {
    /// Statement or portal.
    pub target: Target,
    /// Its name (empty: unnamed).
    pub name: &'a str,
}

impl<'a> Named<'a> {
    pub(crate) fn decode(body: &'a [u8], message: &'static str) -> Result<Self, WireError> {
        let mut r = Reader::new(body, message);
        let target = Target::decode(&mut r, message)?;
        let name = r.cstr()?;
        r.end()?;
        Ok(Named { target, name })
    }

    pub(crate) fn encode(&self, tag: u8, out: &mut Vec<u8>) {
        frame(out, Some(tag), |b| {
            b.push(self.target.byte());
            put_cstr(b, self.name);
        });
    }
}

/// Execute (`E`): run a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// Portal name (empty: unnamed).
    pub portal: &'a str,
    /// Row limit (0: none).
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Execute");
        let portal = r.cstr()?;
        let max_rows = r.i32()?;
        r.end()?;
        Ok(Execute { portal, max_rows })
    }

    /// Writes the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, Some(b'E'), |b| {
            put_cstr(b, self.portal);
            put_i32(b, self.max_rows);
        });
    }
}
