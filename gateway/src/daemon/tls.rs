//! TLS the gateway originates: when it terminates an agent's connection (with the session CA)
//! it dials the upstream anew and must verify it like any careful client would. Roots are the
//! host's system store plus `tls.extra_roots` from the server config, loaded once at start-up.

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider, pki_types::CertificateDer};

/// Trust for upstream TLS.
pub struct UpstreamTls {
    roots: Arc<RootCertStore>,
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl UpstreamTls {
    /// The host's roots plus every certificate in `extra` (each file must hold at least one).
    pub fn load(extra: &[impl AsRef<Path>]) -> anyhow::Result<UpstreamTls> {
        let mut roots = RootCertStore::empty();
        let mut extra_ders = Vec::new();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "skipping part of the system trust store");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system roots loaded");
        for path in extra {
            let path = path.as_ref();
            let certs = read_pem_certs(path)?;
            for cert in certs {
                extra_ders.push(cert.clone());
                roots
                    .add(cert)
                    .with_context(|| format!("tls.extra_roots: {}: unusable certificate", path.display()))?;
            }
        }
        Ok(UpstreamTls {
            roots: Arc::new(roots),
            extra: extra_ders,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The certificates of `tls.extra_roots`.
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra
    }

    /// A client configuration offering `alpn`.
    pub fn client_config(&self, alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Arc::new(config)
    }
}

fn read_pem_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).with_context(|| format!("tls.extra_roots: reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.extra_roots: {}: malformed PEM", path.display()))?;
    if certs.is_empty() {
        bail!("tls.extra_roots: {}: no CERTIFICATE in the file", path.display());
    }
    Ok(certs)
}

/// The host's CA bundle, which the sandbox sees with the session CA appended: the first of the
/// usual locations that exists.
pub fn host_bundle() -> Option<&'static Path> {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.is_file())
}
