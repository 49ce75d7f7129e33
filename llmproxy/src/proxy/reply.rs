//! The proxy's own answers: JSON error bodies that both Anthropic and OpenAI clients read
//! (`error.message`), naming the rule that refused.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::body::ProxyBody;

/// An error answer: `{"type":"error","error":{"type":…,"message":…,"rule":…}}`.
pub(crate) fn error(status: StatusCode, kind: &str, rule: &str, message: &str) -> Response<ProxyBody> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message, "rule": rule}});
    let mut r = Response::new(ProxyBody::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A 429 with `Retry-After`.
pub(crate) fn too_many(rule: &str, retry_after: u64) -> Response<ProxyBody> {
    let msg = format!("limit {rule} reached; retry in {retry_after} s");
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", rule, &msg);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}
