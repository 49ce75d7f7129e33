//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres uses it, pure: the proxy
//! logs in upstream with the service's credentials. ring provides PBKDF2, HMAC and SHA-256.
//! No channel binding (`n,,`): the proxy never offers `SCRAM-SHA-256-PLUS`. The password is
//! SASLprep'd (RFC 4013) first, as Postgres does when it stores a verifier and libpq when it
//! logs in: a password that is not UTF-8, or that SASLprep refuses, is used as it is.

use std::{borrow::Cow, num::NonZeroU32};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ring::{digest, hmac, pbkdf2};

/// The SASL mechanism name.
pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";
/// Iteration counts above this are refused: a hostile server could otherwise make the proxy
/// burn seconds of CPU per login (Postgres' default is 4096).
const MAX_ITERATIONS: u32 = 1_000_000;

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The server's message does not follow RFC 5802.
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("SCRAM server nonce does not extend the client nonce")]
    NonceMismatch,
    /// The iteration count is zero or over the limit.
    #[error("SCRAM iteration count {0} is out of range")]
    Iterations(u64),
    /// The server reported an error (`e=`).
    #[error("SCRAM server error: {0}")]
    Server(String),
    /// The server's signature is wrong: it does not know the password.
    #[error("SCRAM server signature does not verify")]
    BadServerSignature,
}

/// One SCRAM-SHA-256 login in progress.
pub(crate) struct ScramClient {
    password: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    /// Set by [`ScramClient::server_first`]: the server key and the auth message.
    pending: Option<(hmac::Key, String)>,
}

fn attr(part: &str, name: char) -> Option<&str> {
    part.strip_prefix(name).and_then(|p| p.strip_prefix('='))
}

/// `password` as SCRAM hashes it: SASLprep'd when it is UTF-8 and SASLprep accepts it (ASCII
/// is left alone, as Postgres leaves it), else the bytes as they are.
pub(crate) fn prepared_password(password: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(password) {
        Ok(s) if !s.is_ascii() => match stringprep::saslprep(s) {
            Ok(Cow::Owned(p)) => Cow::Owned(p.into_bytes()),
            Ok(Cow::Borrowed(_)) | Err(_) => Cow::Borrowed(password),
        },
        _ => Cow::Borrowed(password),
    }
}

impl ScramClient {
    /// Starts a login; `nonce` must be fresh random printable text without `,`.
    pub(crate) fn new(user: &str, password: &[u8], nonce: String) -> ScramClient {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        let password = prepared_password(password).into_owned();
        ScramClient { password, nonce, client_first_bare, pending: None }
    }

    /// The client-first message (for SASLInitialResponse).
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first message and returns the client-final message.
    pub(crate) fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attr(msg, 'e') {
            return Err(ScramError::Server(e.to_string()));
        }
        let mut parts = msg.split(',');
        let nonce = parts.next().and_then(|p| attr(p, 'r')).ok_or(ScramError::Malformed("missing r="))?;
        let salt = parts.next().and_then(|p| attr(p, 's')).ok_or(ScramError::Malformed("missing s="))?;
        let iter = parts.next().and_then(|p| attr(p, 'i')).ok_or(ScramError::Malformed("missing i="))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64.decode(salt).map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iter: u64 = iter.parse().map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        let iterations = u32::try_from(iter)
            .ok()
            .filter(|i| *i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or(ScramError::Iterations(iter))?;

        let mut salted = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, &self.password, &mut salted);
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let signature =
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(signature.as_ref()).map(|(k, s)| k ^ s).collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.pending = Some((hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()), auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the password too.
    pub(crate) fn server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attr(msg, 'e') {
            return Err(ScramError::Server(e.to_string()));
        }
        let v =
            msg.split(',').next().and_then(|p| attr(p, 'v')).ok_or(ScramError::Malformed("missing v="))?;
        let sig = B64.decode(v).map_err(|_| ScramError::Malformed("signature is not base64"))?;
        let (key, auth_message) = self.pending.as_ref().ok_or(ScramError::Malformed("final before first"))?;
        hmac::verify(key, auth_message.as_bytes(), &sig).map_err(|_| ScramError::BadServerSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange of RFC 7677 §3.
    #[test]
    fn rfc7677_example() {
        let mut c = ScramClient::new("user", b"pencil", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = c.server_first(server_first).unwrap();
        assert_eq!(
            std::str::from_utf8(&fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert_eq!(
            c.server_final(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn passwords_are_saslprepped_like_postgres_does() {
        let prep = |p: &str| String::from_utf8(prepared_password(p.as_bytes()).into_owned()).unwrap();
        // RFC 4013 §3 examples: soft hyphen mapped to nothing, NFKC, and a refused control.
        assert_eq!(prep("I\u{00AD}X"), "IX");
        assert_eq!(prep("\u{00AA}"), "a");
        assert_eq!(prep("\u{2168}"), "IX");
        assert_eq!(prep("p\u{00E4}ss\u{00A0}w\u{2163}rd"), "p\u{00E4}ss wIVrd");
        // Refused by SASLprep (a control character, mixed directions): used as given.
        assert_eq!(prep("\u{00E4}\u{0007}"), "\u{00E4}\u{0007}");
        assert_eq!(prep("\u{0627}a\u{0627}"), "\u{0627}a\u{0627}");
        // ASCII is not touched, controls included; bytes that are not UTF-8 neither.
        assert_eq!(prep("pen\u{0007}cil "), "pen\u{0007}cil ");
        assert_eq!(prepared_password(b"\xff\xfe").as_ref(), b"\xff\xfe");
    }

    #[test]
    fn hostile_server_messages_are_refused() {
        let mut c = ScramClient::new("", b"pw", "abc".into());
        assert_eq!(c.server_first(b"r=xyz,s=AAAA,i=4096"), Err(ScramError::NonceMismatch));
        assert_eq!(c.server_first(b"r=abc,s=AAAA,i=4096"), Err(ScramError::NonceMismatch));
        assert_eq!(c.server_first(b"r=abcd,s=AAAA,i=0"), Err(ScramError::Iterations(0)));
        assert_eq!(
            c.server_first(b"r=abcd,s=AAAA,i=99999999999"),
            Err(ScramError::Iterations(99_999_999_999))
        );
        assert!(matches!(c.server_first(b"r=abcd,s=!!,i=1"), Err(ScramError::Malformed(_))));
        assert!(matches!(c.server_first(b"\xff"), Err(ScramError::Malformed(_))));
        assert_eq!(c.server_first(b"e=other-error"), Err(ScramError::Server("other-error".into())));
        assert!(matches!(c.server_final(b"v=AAAA"), Err(ScramError::Malformed(_))));
    }
}
