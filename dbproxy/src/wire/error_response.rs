//! ErrorResponse (`E`) and NoticeResponse (`N`): typed fields, and the refusal the proxy sends
//! when policy denies a statement (SQLSTATE 42501 naming the rule).

use std::borrow::Cow;

use super::{
    WireError,
    codec::{Reader, frame, put_cstr},
};

/// SQLSTATE `insufficient_privilege`, sent on every policy deny of a statement.
pub const SQLSTATE_INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE `invalid_authorization_specification`, sent when a connection is refused.
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";

/// An ErrorResponse or NoticeResponse: `(field type, value)` pairs (`S` severity, `V`
/// non-localised severity, `C` SQLSTATE, `M` message, `D` detail, `H` hint, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// The fields in order.
    pub fields: Vec<(u8, Cow<'a, str>)>,
}

impl<'a> ErrorFields<'a> {
    pub(crate) fn decode(body: &'a [u8], message: &'static str) -> Result<Self, WireError> {
        let mut r = Reader::new(body, message);
        let mut fields = Vec::new();
        loop {
            let t = r.u8()?;
            if t == 0 {
                break;
            }
            fields.push((t, Cow::Borrowed(r.cstr()?)));
        }
        r.end()?;
        Ok(ErrorFields { fields })
    }

    /// The value of field `t`.
    pub fn field(&self, t: u8) -> Option<&str> {
        self.fields.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_ref())
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> Option<&str> {
        self.field(b'C')
    }

    /// The primary message (`M`).
    pub fn message(&self) -> Option<&str> {
        self.field(b'M')
    }

    /// An error with `severity` (`ERROR`, `FATAL`), SQLSTATE `code`, message and optional detail.
    pub fn new(severity: &'static str, code: &'static str, message: String, detail: Option<String>) -> Self {
        let mut fields = vec![
            (b'S', Cow::Borrowed(severity)),
            (b'V', Cow::Borrowed(severity)),
            (b'C', Cow::Borrowed(code)),
            (b'M', Cow::Owned(message)),
        ];
        if let Some(d) = detail {
            fields.push((b'D', Cow::Owned(d)));
        }
        ErrorFields { fields }
    }

    /// The refusal of a statement: ERROR (or FATAL when the connection is closed next),
    /// SQLSTATE 42501, the message naming `rule`, the rule's own message as detail. NUL bytes,
    /// which cannot travel in a C string, are dropped from the text.
    pub fn policy_denied(rule: &str, detail: Option<&str>, fatal: bool) -> Self {
        let clean = |s: &str| s.replace('\0', "");
        ErrorFields::new(
            if fatal { "FATAL" } else { "ERROR" },
            SQLSTATE_INSUFFICIENT_PRIVILEGE,
            format!("denied by agentsh policy: {}", clean(rule)),
            detail.map(clean),
        )
    }

    /// Writes the fields under `tag` (`E` or `N`).
    pub fn encode(&self, tag: u8, out: &mut Vec<u8>) {
        frame(out, Some(tag), |b| {
            for (t, v) in &self.fields {
                b.push(*t);
                put_cstr(b, v);
            }
            b.push(0);
        });
    }
}
