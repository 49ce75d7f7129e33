//! The per-session certificate authority used to terminate TLS the gateway intercepts.
//!
//! Each session gets its own CA, generated in memory when the session starts: the private key
//! never leaves the gateway, the certificate is written into the sandbox's trust bundle only, so
//! a CA of one session is worth nothing to any other session or to the host. Leaf certificates
//! are issued on demand for the name a client asks for (its SNI), share one leaf key, and are
//! cached (bounded) so a busy session signs each name once.
//!
//! The CA is path-length constrained to leaves (`pathlen:0`) and short-lived (30 days); leaves
//! live 7 days and carry exactly one subject alternative name.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// How many issued leaves a session keeps; the oldest is dropped first.
const LEAF_CACHE: usize = 1024;
/// Back-dating of every certificate, for clients whose clock runs a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Key generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the generated key.
    #[error("certificate key not usable: {0}")]
    Key(#[from] rustls::Error),
    /// The name is not a DNS name or IP address a certificate can carry.
    #[error("cannot issue a certificate for {0:?}: not a DNS name or IP address")]
    BadName(String),
}

/// A session's certificate authority.
pub struct SessionCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    leaf_key: KeyPair,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<LeafCache>,
}

impl std::fmt::Debug for SessionCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCa").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct LeafCache {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    order: VecDeque<String>,
}

impl SessionCa {
    /// A new CA whose subject names `label` (normally the session id).
    pub fn generate(label: &str) -> Result<Self, CaError> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "agentsh-rs");
        dn.push(DnType::CommonName, format!("agentsh-rs session CA {label}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(SessionCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, ca_key),
            leaf_key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(LeafCache::default()),
        })
    }

    /// The CA certificate, PEM encoded, for the sandbox's trust bundle.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate and key to present for `name` (a DNS name or IP address; case and a
    /// trailing dot are ignored). Issued once, then served from the cache.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = normalise(name)?;
        if let Some(hit) = self.lock().by_name.get(&name) {
            return Ok(hit.clone());
        }
        let issued = Arc::new(self.issue(&name)?);
        let mut cache = self.lock();
        if cache.by_name.len() >= LEAF_CACHE
            && let Some(oldest) = cache.order.pop_front()
        {
            cache.by_name.remove(&oldest);
        }
        if cache.by_name.insert(name.clone(), issued.clone()).is_none() {
            cache.order.push_back(name);
        }
        Ok(issued)
    }

    /// A TLS server configuration that presents, for each client, a leaf for the name in its
    /// SNI (a client without SNI fails the handshake), offering `alpn` in that order.
    pub fn server_config(self: &Arc<Self>, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
        self.config_with(alpn, None)
    }

    /// As [`SessionCa::server_config`], but a client that sends no SNI (libpq to an IP
    /// address, for one) gets a leaf for `fallback`.
    pub fn server_config_with_fallback(
        self: &Arc<Self>,
        alpn: Vec<Vec<u8>>,
        fallback: &str,
    ) -> Arc<ServerConfig> {
        self.config_with(alpn, Some(fallback.to_string()))
    }

    fn config_with(self: &Arc<Self>, alpn: Vec<Vec<u8>>, fallback: Option<String>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { ca: self.clone(), fallback }));
        config.alpn_protocols = alpn;
        Arc::new(config)
    }

    fn issue(&self, name: &str) -> Result<CertifiedKey, CaError> {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into().map_err(|_| CaError::BadName(name.to_string()))?),
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + LEAF_LIFETIME).into();
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        Ok(CertifiedKey::from_der(vec![leaf.der().clone(), self.cert_der.clone()], key, &self.provider)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeafCache> {
        self.leaves.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Lower-cased, without a trailing dot; rejects what no certificate can name.
fn normalise(name: &str) -> Result<String, CaError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let lower = trimmed.to_ascii_lowercase();
    let plausible = !lower.is_empty()
        && lower.len() <= 253
        && (lower.parse::<IpAddr>().is_ok()
            || lower.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
            }));
    if plausible { Ok(lower) } else { Err(CaError::BadName(name.to_string())) }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source is available");
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

#[derive(Debug)]
struct SniResolver {
    ca: Arc<SessionCa>,
    fallback: Option<String>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().or(self.fallback.as_deref())?;
        match self.ca.certified_key(name) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%error, "no certificate for the requested name");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_cached_per_name_and_bounded() {
        let ca = SessionCa::generate("sess-test").unwrap();
        let a = ca.certified_key("API.Example.COM.").unwrap();
        let b = ca.certified_key("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "same name, same leaf");
        let c = ca.certified_key("other.example.com").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.cert.len(), 2, "leaf then CA");
        assert_eq!(&a.cert[1], ca.cert_der());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn names_no_certificate_can_carry_are_refused() {
        let ca = SessionCa::generate("sess-test").unwrap();
        for bad in ["", ".", "a..b", "bad name.example", "x/y.example", &"a".repeat(64)] {
            assert!(matches!(ca.certified_key(bad), Err(CaError::BadName(_))), "{bad:?}");
        }
        assert!(ca.certified_key("127.0.0.1").is_ok());
        assert!(ca.certified_key("::1").is_ok());
    }
}
