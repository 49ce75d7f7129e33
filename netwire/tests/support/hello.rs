//! Building ClientHello bytes: by hand (any extension, any record split) and with rustls.

use std::sync::Arc;

/// An extension as (type, data).
pub type Ext = (u16, Vec<u8>);

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits u16").to_be_bytes()
}

/// `server_name` with one entry of `name_type` and the raw `name`.
pub fn sni_entry(name_type: u8, name: &[u8]) -> Vec<u8> {
    let mut e = vec![name_type];
    e.extend_from_slice(&u16be(name.len()));
    e.extend_from_slice(name);
    e
}

/// A `server_name` extension from already-encoded entries.
pub fn sni_ext_entries(entries: &[Vec<u8>]) -> Ext {
    let list: Vec<u8> = entries.concat();
    let mut data = u16be(list.len()).to_vec();
    data.extend_from_slice(&list);
    (0, data)
}

/// A `server_name` extension naming `name`.
pub fn sni_ext(name: &[u8]) -> Ext {
    sni_ext_entries(&[sni_entry(0, name)])
}

/// An ALPN extension.
pub fn alpn_ext(protocols: &[&[u8]]) -> Ext {
    let mut list = Vec::new();
    for p in protocols {
        list.push(u8::try_from(p.len()).expect("short name"));
        list.extend_from_slice(p);
    }
    let mut data = u16be(list.len()).to_vec();
    data.extend_from_slice(&list);
    (16, data)
}

/// `supported_versions` offering TLS 1.3 and 1.2.
pub fn versions_ext() -> Ext {
    (43, vec![4, 0x03, 0x04, 0x03, 0x03])
}

/// `psk_key_exchange_modes` offering psk_dhe_ke.
pub fn psk_modes_ext() -> Ext {
    (45, vec![1, 1])
}

/// `early_data` as a ClientHello carries it (empty).
pub fn early_data_ext() -> Ext {
    (42, vec![])
}

/// A `pre_shared_key` with one identity and one 32-octet binder (contents are opaque to us).
pub fn psk_ext() -> Ext {
    let identity = [0x77; 16];
    let mut ids = u16be(identity.len()).to_vec();
    ids.extend_from_slice(&identity);
    ids.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // obfuscated_ticket_age
    let mut data = u16be(ids.len()).to_vec();
    data.extend_from_slice(&ids);
    data.extend_from_slice(&u16be(33));
    data.push(32);
    data.extend_from_slice(&[0xbb; 32]);
    (41, data)
}

/// `padding` (RFC 7685) of `n` zero octets, for hellos of a chosen size.
pub fn padding_ext(n: usize) -> Ext {
    (21, vec![0; n])
}

/// A complete ClientHello handshake message (4-byte header included) with `exts`.
pub fn client_hello(exts: &[Ext]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x11; 32]); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // two suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut ext_bytes = Vec::new();
    for (t, d) in exts {
        ext_bytes.extend_from_slice(&t.to_be_bytes());
        ext_bytes.extend_from_slice(&u16be(d.len()));
        ext_bytes.extend_from_slice(d);
    }
    body.extend_from_slice(&u16be(ext_bytes.len()));
    body.extend_from_slice(&ext_bytes);
    handshake(&body)
}

/// Wrap a ClientHello body in its handshake header.
pub fn handshake(body: &[u8]) -> Vec<u8> {
    let n = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut m = vec![1, n[1], n[2], n[3]];
    m.extend_from_slice(body);
    m
}

/// Frame `msg` into handshake records of at most `max` payload bytes each.
pub fn records(msg: &[u8], max: usize) -> Vec<u8> {
    records_with_version(msg, max, [3, 1])
}

/// [`records`] with `version` as every record's `legacy_record_version`.
pub fn records_with_version(msg: &[u8], max: usize, version: [u8; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(max) {
        out.extend_from_slice(&[22, version[0], version[1]]);
        out.extend_from_slice(&u16be(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// The handshake message inside a single- or multi-record flight (headers stripped).
pub fn unframe(flight: &[u8]) -> Vec<u8> {
    let mut msg = Vec::new();
    let mut pos = 0;
    while pos + 5 <= flight.len() {
        let len = usize::from(u16::from_be_bytes([flight[pos + 3], flight[pos + 4]]));
        msg.extend_from_slice(&flight[pos + 5..pos + 5 + len]);
        pos += 5 + len;
    }
    msg
}

/// The first flight rustls (ring provider) sends to `server_name` offering `alpn`.
pub fn rustls_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to Vec");
    }
    out
}
