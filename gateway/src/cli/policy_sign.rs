//! `agentsh policy keygen|sign|verify`: Ed25519 keys, detached `.sig` files and their check
//! against a trust-store directory (see [`crate::signing`]).

use std::{path::Path, process::ExitCode};

use anyhow::Context;

use crate::signing;

/// `policy keygen --output DIR --label L`.
pub fn keygen(dir: &Path, label: &str) -> anyhow::Result<ExitCode> {
    let (private, public) = signing::keygen(dir, label)?;
    println!("private key: {} (keep it secret)", private.display());
    println!("trust-store entry: {} (copy it into the servers' trust store)", public.display());
    Ok(ExitCode::SUCCESS)
}

/// `policy sign FILE --key K [--signer NAME]`: writes `FILE.sig`.
pub fn sign(file: &Path, key: &Path, signer: Option<&str>) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let who = signer
        .map(str::to_string)
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let sig = signing::sign(&bytes, key, &who)?;
    let out = signing::sig_path(file);
    std::fs::write(&out, serde_json::to_string_pretty(&sig)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}: signed with key {} → {}", file.display(), sig.key_id, out.display());
    Ok(ExitCode::SUCCESS)
}

/// `policy verify FILE --key-dir D`: exit 0 when the signature holds, 1 when it does not.
pub fn verify(file: &Path, key_dir: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sig_file = signing::sig_path(file);
    let result = (|| {
        let text =
            std::fs::read_to_string(&sig_file).with_context(|| format!("reading {}", sig_file.display()))?;
        let sig: signing::Signature = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed signature", sig_file.display()))?;
        let keys = signing::trust_store(key_dir, true)?;
        let key = signing::verify(&bytes, &sig, &keys)?;
        anyhow::Ok(format!(
            "signed by {} with key {} ({}) at {}",
            sig.signer, key.key_id, key.label, sig.signed_at
        ))
    })();
    match result {
        Ok(what) => {
            println!("{}: ok, {what}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: NOT VERIFIED: {e:#}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}
