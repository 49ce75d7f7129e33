//! Policy signing: Ed25519 keys, detached signatures and a trust store, in agentsh's formats.
//! - Key pair: `<dir>/<key_id>.key` (PKCS#8, 0600) and the trust-store entry
//!   `<dir>/<key_id>.json` = `{key_id, algorithm: "ed25519", public_key: base64, label,
//!   trusted_since, expires_at}`; `key_id` = hex SHA-256 of the public key.
//! - Signature `<policy>.sig` = `{version: 1, algorithm: "ed25519", key_id, signer, signed_at,
//!   signature: base64, cert_chain: []}` over the policy file's exact bytes.
//! - Verification: the signature's key must be in the trust store, not expired, and the
//!   signature must match the bytes; a trust store others can write to is refused.

use std::{
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use serde::{Deserialize, Serialize};

/// A trust-store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Hex SHA-256 of the public key.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The raw 32-byte public key, base64.
    pub public_key: String,
    /// Who the key belongs to.
    pub label: String,
    /// RFC 3339.
    pub trusted_since: String,
    /// RFC 3339; after it the key signs nothing valid.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Format version (1).
    pub version: u32,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signing key's id.
    pub key_id: String,
    /// Who signed.
    pub signer: String,
    /// RFC 3339.
    pub signed_at: String,
    /// The signature, base64.
    pub signature: String,
    /// Unused (agentsh's field).
    #[serde(default)]
    pub cert_chain: Vec<String>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn key_id(public: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, public).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

/// Make a key pair in `dir`: returns the private key's path and the trust-store entry's.
pub fn keygen(dir: &Path, label: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let public = pair.public_key().as_ref();
    let id = key_id(public);
    let private = dir.join(format!("{id}.key"));
    write_private(&private, pkcs8.as_ref())?;
    let entry = TrustedKey {
        key_id: id.clone(),
        algorithm: "ed25519".into(),
        public_key: B64.encode(public),
        label: label.to_string(),
        trusted_since: now(),
        expires_at: None,
    };
    let public_path = dir.join(format!("{id}.json"));
    std::fs::write(&public_path, serde_json::to_string_pretty(&entry)? + "\n")
        .with_context(|| format!("writing {}", public_path.display()))?;
    Ok((private, public_path))
}

/// The signature of `bytes` with the private key at `key`.
pub fn sign(bytes: &[u8], key: &Path, signer: &str) -> anyhow::Result<Signature> {
    let pkcs8 = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key", key.display()))?;
    Ok(Signature {
        version: 1,
        algorithm: "ed25519".into(),
        key_id: key_id(pair.public_key().as_ref()),
        signer: signer.to_string(),
        signed_at: now(),
        signature: B64.encode(pair.sign(bytes).as_ref()),
        cert_chain: Vec::new(),
    })
}

/// The trust store in `dir`: every `*.json` entry. In `strict` mode a directory or entry that
/// others than its owner can write to is refused.
pub fn trust_store(dir: &Path, strict: bool) -> anyhow::Result<Vec<TrustedKey>> {
    let meta = std::fs::metadata(dir).with_context(|| format!("trust store {}", dir.display()))?;
    if strict && meta.mode() & 0o022 != 0 {
        bail!(
            "trust store {} is writable by group or others (mode {:o})",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if strict && std::fs::metadata(&path)?.mode() & 0o022 != 0 {
            bail!("trust store entry {} is writable by group or others", path.display());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let key: TrustedKey = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a trust-store entry", path.display()))?;
        keys.push(key);
    }
    Ok(keys)
}

/// Check `sig` over `bytes` against `keys`; the trusted key on success.
pub fn verify<'k>(bytes: &[u8], sig: &Signature, keys: &'k [TrustedKey]) -> anyhow::Result<&'k TrustedKey> {
    if sig.version != 1 || sig.algorithm != "ed25519" {
        bail!("unsupported signature (version {}, algorithm {})", sig.version, sig.algorithm);
    }
    let Some(key) = keys.iter().find(|k| k.key_id == sig.key_id) else {
        bail!("signed by key {}, which is not in the trust store", sig.key_id);
    };
    if let Some(expiry) = &key.expires_at {
        let at = humantime::parse_rfc3339_weak(expiry)
            .with_context(|| format!("key {}: bad expires_at", key.key_id))?;
        if at <= SystemTime::now() {
            bail!("key {} ({}) expired at {expiry}", key.key_id, key.label);
        }
    }
    let public =
        B64.decode(&key.public_key).with_context(|| format!("key {}: bad public_key", key.key_id))?;
    if key_id(&public) != key.key_id {
        bail!("trust-store entry {} does not match its public key", key.key_id);
    }
    let signature = B64.decode(&sig.signature).context("signature is not base64")?;
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(bytes, &signature)
        .map_err(|_| anyhow::anyhow!("the signature does not match the policy (edited after signing?)"))?;
    Ok(key)
}

/// `<file>.sig`.
pub fn sig_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentsh-sign-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn sign_verify_edit_expire_and_unknown_keys() {
        let d = dir("roundtrip");
        let (private, _) = keygen(&d, "ci").unwrap();
        let keys = trust_store(&d, false).unwrap();
        let policy = b"version: 1\nname: p\n";
        let sig = sign(policy, &private, "alice").unwrap();
        assert_eq!(verify(policy, &sig, &keys).unwrap().label, "ci");
        let err = verify(b"version: 1\nname: q\n", &sig, &keys).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let mut expired = keys.clone();
        expired[0].expires_at = Some("2001-01-01T00:00:00Z".into());
        assert!(verify(policy, &sig, &expired).unwrap_err().to_string().contains("expired"));
        let other = dir("other");
        let (other_key, _) = keygen(&other, "other").unwrap();
        let foreign = sign(policy, &other_key, "mallory").unwrap();
        assert!(verify(policy, &foreign, &keys).unwrap_err().to_string().contains("not in the trust store"));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn a_world_writable_store_is_refused_when_strict() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("perm");
        keygen(&d, "x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(trust_store(&d, true).unwrap_err().to_string().contains("writable"));
        assert_eq!(trust_store(&d, false).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
