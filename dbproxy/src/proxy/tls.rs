//! Upstream TLS per libpq `sslmode`: `verify-full` checks chain and name against the system
//! roots plus the caller's extra roots; `verify-ca` checks the chain only; `require` and
//! `prefer` encrypt without checking the certificate (libpq's meaning), while still verifying
//! the handshake signatures. ALPN `postgresql` is offered, as Postgres 17+ expects.

use std::sync::Arc;

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use policies::model::db_service::SslMode;

/// Whether and how to use TLS upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Plain TCP.
    Plain,
    /// Ask with SSLRequest; fall back to plain if the server says `N`.
    Prefer,
    /// TLS or fail.
    Require,
}

/// What `mode` asks of the connection. `allow` tries plain first and a Postgres server never
/// insists on TLS, so it is plain.
pub(crate) fn plan(mode: SslMode) -> Plan {
    match mode {
        SslMode::Disable | SslMode::Allow => Plan::Plain,
        SslMode::Prefer => Plan::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Plan::Require,
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system roots plus `extra`; system roots that fail to load are skipped (there may be
/// none at all in a minimal container, where `extra` is the point).
pub(crate) fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    store.add_parsable_certificates(extra.iter().cloned());
    store
}

/// The client config for `mode` (only called when [`plan`] is not `Plain`).
pub(crate) fn client_config(
    mode: SslMode,
    extra: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let chain = match mode {
        SslMode::VerifyFull | SslMode::VerifyCa => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(extra)), provider.clone())
                .build()
                .map_err(|e| format!("no usable root certificates: {e}"))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(Verifier { chain, check_name: mode == SslMode::VerifyFull, provider });
    let mut cfg = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name sent in SNI and checked under `verify-full`.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("invalid TLS server name {host:?}: {e}"))
}

/// The certificate check of one `sslmode`. Handshake signatures are always verified.
#[derive(Debug)]
struct Verifier {
    /// The chain verifier (`verify-ca`, `verify-full`); `None` accepts any certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the name must match (`verify-full`).
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
