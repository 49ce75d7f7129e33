//! pgwire as a differential oracle for our `wire` codec: every generated message is encoded
//! by us, decoded by pgwire, encoded again by pgwire and must come back byte for byte; the
//! fields pgwire decoded must be the ones we wrote. Two independent implementations of the
//! protocol agreeing on random messages is evidence neither misreads a length or a field.

use bytes::BytesMut;
use dbproxy::wire::{
    self, Authentication, BackendKeyData, Bind, ErrorFields, Execute, Frontend, Named, ParameterStatus,
    Parse, Query, Target, TxStatus,
};
use pgwire::messages::{DecodeContext, PgWireBackendMessage, PgWireFrontendMessage};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn frontend_ctx() -> DecodeContext {
    let mut ctx = DecodeContext::default();
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

/// pgwire decodes `ours` whole (with `decode`) and encodes it back (with `encode`) to the
/// same bytes.
fn agrees<M: std::fmt::Debug>(
    ours: &[u8],
    decode: impl Fn(&mut BytesMut) -> pgwire::error::PgWireResult<Option<M>>,
    encode: impl Fn(&M, &mut BytesMut) -> pgwire::error::PgWireResult<()>,
) -> M {
    let mut buf = BytesMut::from(ours);
    let msg = decode(&mut buf)
        .unwrap_or_else(|e| panic!("pgwire refuses {ours:?}: {e}"))
        .unwrap_or_else(|| panic!("pgwire wants more than {ours:?}"));
    assert!(buf.is_empty(), "pgwire left {} bytes of {ours:?}", buf.len());
    let mut again = BytesMut::new();
    encode(&msg, &mut again).unwrap();
    assert_eq!(&again[..], ours, "pgwire re-encodes {msg:?} differently");
    msg
}

fn frontend_agrees(ours: &[u8]) -> PgWireFrontendMessage {
    agrees(ours, |b| PgWireFrontendMessage::decode(b, &frontend_ctx()), PgWireFrontendMessage::encode)
}

fn backend_agrees(ours: &[u8]) -> PgWireBackendMessage {
    agrees(ours, |b| PgWireBackendMessage::decode(b, &DecodeContext::default()), PgWireBackendMessage::encode)
}

fn name(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn query_and_parse(sql in text(), stmt in text(), types in prop::collection::vec(any::<u32>(), 0..5)) {
        let mut out = Vec::new();
        Query { sql: &sql }.encode(&mut out);
        let PgWireFrontendMessage::Query(q) = frontend_agrees(&out) else { panic!("not a Query") };
        prop_assert_eq!(&q.query, &sql);

        let mut out = Vec::new();
        Parse { name: &stmt, sql: &sql, param_types: types.clone() }.encode(&mut out);
        let PgWireFrontendMessage::Parse(p) = frontend_agrees(&out) else { panic!("not a Parse") };
        prop_assert_eq!(name(&p.name), stmt.as_str());
        prop_assert_eq!(&p.query, &sql);
        prop_assert_eq!(&p.type_oids, &types);
    }

    #[test]
    fn bind_execute_describe_close(
        portal in text(),
        stmt in text(),
        formats in prop::collection::vec(0i16..2, 0..4),
        params in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..16)), 0..4),
        max_rows in any::<i32>(),
        portal_target in any::<bool>(),
    ) {
        let mut out = Vec::new();
        let values: Vec<Option<&[u8]>> = params.iter().map(|p| p.as_deref()).collect();
        Bind { portal: &portal, statement: &stmt, param_formats: formats.clone(), params: values, result_formats: formats.clone() }
            .encode(&mut out);
        let PgWireFrontendMessage::Bind(b) = frontend_agrees(&out) else { panic!("not a Bind") };
        prop_assert_eq!(name(&b.portal_name), portal.as_str());
        prop_assert_eq!(name(&b.statement_name), stmt.as_str());
        let theirs: Vec<Option<Vec<u8>>> = b.parameters.iter().map(|p| p.as_ref().map(|b| b.to_vec())).collect();
        prop_assert_eq!(theirs, params);

        let mut out = Vec::new();
        Execute { portal: &portal, max_rows }.encode(&mut out);
        let PgWireFrontendMessage::Execute(e) = frontend_agrees(&out) else { panic!("not an Execute") };
        prop_assert_eq!(e.max_rows, max_rows);

        let target = if portal_target { Target::Portal } else { Target::Statement };
        for msg in [Frontend::Describe(Named { target, name: &stmt }), Frontend::Close(Named { target, name: &stmt })] {
            let mut out = Vec::new();
            msg.encode(&mut out);
            frontend_agrees(&out);
        }
        for msg in [Frontend::Sync, Frontend::Flush, Frontend::Terminate, Frontend::CopyDone, Frontend::CopyData(stmt.as_bytes())] {
            let mut out = Vec::new();
            msg.encode(&mut out);
            frontend_agrees(&out);
        }
    }

    #[test]
    fn backend_status_and_errors(
        key in text(),
        value in text(),
        pid in any::<u32>(),
        secret in any::<[u8; 4]>(),
        fields in prop::collection::vec((prop::sample::select(b"SVCMDHP".to_vec()), text()), 0..5),
        status in prop::sample::select(vec![TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed]),
    ) {
        let mut out = Vec::new();
        ParameterStatus { name: &key, value: &value }.encode(&mut out);
        let PgWireBackendMessage::ParameterStatus(p) = backend_agrees(&out) else { panic!("not ParameterStatus") };
        prop_assert_eq!((p.name.as_str(), p.value.as_str()), (key.as_str(), value.as_str()));

        let mut out = Vec::new();
        BackendKeyData { pid, secret: &secret }.encode(&mut out);
        let PgWireBackendMessage::BackendKeyData(k) = backend_agrees(&out) else { panic!("not BackendKeyData") };
        prop_assert_eq!(k.pid as u32, pid);

        let mut out = Vec::new();
        status.encode(&mut out);
        backend_agrees(&out);

        let e = ErrorFields { fields: fields.iter().map(|(t, v)| (*t, v.as_str().into())).collect() };
        let mut out = Vec::new();
        e.encode(b'E', &mut out);
        let PgWireBackendMessage::ErrorResponse(theirs) = backend_agrees(&out) else { panic!("not ErrorResponse") };
        let ours: Vec<(u8, String)> = fields.clone();
        prop_assert_eq!(theirs.fields, ours);
        // And our parser reads back what pgwire would write.
        let Some((wire::Backend::ErrorResponse(back), _)) = wire::parse_backend(&out, wire::Phase::Normal).unwrap() else {
            panic!("our parser refuses it")
        };
        prop_assert_eq!(back, e);
    }

    #[test]
    fn authentication(salt in any::<[u8; 4]>(), data in prop::collection::vec(any::<u8>(), 0..64), mechs in prop::collection::vec("[A-Z0-9-]{1,20}", 1..3)) {
        let mechs: Vec<&str> = mechs.iter().map(String::as_str).collect();
        for a in [
            Authentication::Ok,
            Authentication::CleartextPassword,
            Authentication::Md5Password(salt),
            Authentication::Sasl(mechs.clone()),
            Authentication::SaslContinue(&data),
            Authentication::SaslFinal(&data),
        ] {
            let mut out = Vec::new();
            a.encode(&mut out);
            let PgWireBackendMessage::Authentication(_) = backend_agrees(&out) else { panic!("not Authentication") };
        }
    }
}
