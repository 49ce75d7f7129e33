//! The ClientHello body (RFC 8446 §4.1.2): fixed fields, then the extensions the gateway needs
//! (`server_name`, ALPN, `supported_versions`, ECH presence). Every other extension is skipped
//! after its framing is checked.

use super::reader::Reader;
use super::{ClientHelloInfo, TlsError};
use crate::hostname::Hostname;

pub(super) const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const EXT_ECH: u16 = 0xfe0d;
pub(super) const NAME_TYPE_HOST_NAME: u8 = 0;

/// Parse a complete ClientHello body (the handshake header already removed).
pub(super) fn parse_body(body: &[u8]) -> Result<ClientHelloInfo, TlsError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("truncated legacy_version")?;
    if legacy_version >> 8 != 3 {
        return Err(TlsError::Malformed("legacy_version is not 3.x"));
    }
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(TlsError::Malformed("legacy_session_id longer than 32 octets"));
    }
    let suites = r.vec16("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(TlsError::Malformed("cipher_suites empty or of odd length"));
    }
    if r.vec8("truncated legacy_compression_methods")?.is_empty() {
        return Err(TlsError::Malformed("no compression methods"));
    }
    let mut info = ClientHelloInfo {
        sni: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
        has_ech: false,
        consumed: 0,
    };
    // Extensions are optional only in pre-TLS-1.2 hellos, and then absent entirely.
    if r.is_empty() {
        return Ok(info);
    }
    let mut exts = Reader::new(r.vec16("truncated extensions")?);
    r.finish("bytes after the extensions block")?;
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let ext_type = exts.u16("truncated extension header")?;
        let data = exts.vec16("truncated extension data")?;
        seen.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => info.sni = Some(parse_server_name(data)?),
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => info.supported_versions = parse_supported_versions(data)?,
            EXT_ECH => info.has_ech = true,
            _ => {}
        }
    }
    // RFC 8446 §4.2: at most one extension of each type. A second server_name in particular
    // would let a client show one name to us and another to the server.
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(TlsError::Malformed("duplicate extension"));
    }
    Ok(info)
}

/// RFC 6066 §3: a non-empty list holding exactly one `host_name` entry.
fn parse_server_name(data: &[u8]) -> Result<Hostname, TlsError> {
    let mut ext = Reader::new(data);
    let mut list = Reader::new(ext.vec16("truncated server_name list")?);
    ext.finish("bytes after the server_name list")?;
    let mut host = None;
    if list.is_empty() {
        return Err(TlsError::Malformed("empty server_name list"));
    }
    while !list.is_empty() {
        let name_type = list.u8("truncated server_name entry")?;
        let name = list.vec16("truncated server_name entry")?;
        if name_type != NAME_TYPE_HOST_NAME {
            return Err(TlsError::Malformed("server_name entry is not a host_name"));
        }
        if host.is_some() {
            return Err(TlsError::Malformed("more than one host_name"));
        }
        host = Some(name);
    }
    let raw = host.ok_or(TlsError::Malformed("empty server_name list"))?;
    Ok(Hostname::from_wire(raw)?)
}

/// RFC 7301 §3.1: a non-empty list of non-empty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut ext = Reader::new(data);
    let mut list = Reader::new(ext.vec16("truncated ALPN list")?);
    ext.finish("bytes after the ALPN list")?;
    if list.is_empty() {
        return Err(TlsError::Malformed("empty ALPN list"));
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("truncated ALPN protocol name")?;
        if name.is_empty() {
            return Err(TlsError::Malformed("empty ALPN protocol name"));
        }
        out.push(name.to_vec());
    }
    Ok(out)
}

/// RFC 8446 §4.2.1 (ClientHello form): a one-octet-length list of two-octet versions.
fn parse_supported_versions(data: &[u8]) -> Result<Vec<u16>, TlsError> {
    let mut ext = Reader::new(data);
    let list = ext.vec8("truncated supported_versions")?;
    ext.finish("bytes after supported_versions")?;
    if list.is_empty() || list.len() % 2 != 0 {
        return Err(TlsError::Malformed("supported_versions empty or of odd length"));
    }
    Ok(list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
}
