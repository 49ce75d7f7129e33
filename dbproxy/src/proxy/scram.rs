//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres uses it, pure: the proxy
//! logs in upstream with the service's credentials. ring provides PBKDF2, HMAC and SHA-256.
//! No channel binding (`n,,`): the proxy never offers `SCRAM-SHA-256-PLUS`.

use std::num::NonZeroU32;

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

impl ScramClient {
    /// Starts a login; `nonce` must be fresh random printable text without `,`.
    pub(crate) fn new(user: &str, password: &[u8], nonce: String) -> ScramClient {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        ScramClient { password: password.to_vec(), nonce, client_first_bare, pending: None }
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
