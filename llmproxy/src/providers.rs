//! Provider adapters: for each API shape, which endpoint a path is, where the model name and
//! the stream flag are, where usage is reported, and which headers carry the credential.
//! Pure functions over paths, headers and `serde_json::Value`s.

use http::{HeaderMap, HeaderValue};
use policies::model::llm::ProviderKind;
use serde_json::Value;

use crate::usage::Usage;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic `/v1/messages`.
    Messages,
    /// Anthropic `/v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `/v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `/v1/responses`.
    Responses,
    /// Gemini `…/models/<m>:generateContent` or `:streamGenerateContent`.
    GenerateContent,
    /// Anything else on a provider host: forwarded with generic JSON DLP.
    Other,
}

impl Endpoint {
    /// Name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Responses => "responses",
            Endpoint::GenerateContent => "generate_content",
            Endpoint::Other => "other",
        }
    }

    /// Whether this endpoint runs a model (and so is subject to the model rules).
    pub fn is_inference(self) -> bool {
        !matches!(self, Endpoint::Other)
    }
}

/// Classifies a path (without query) for a provider of `kind`.
pub fn classify(kind: ProviderKind, path: &str) -> Endpoint {
    let path = path.trim_end_matches('/');
    match kind {
        ProviderKind::Anthropic if path.ends_with("/messages/count_tokens") => Endpoint::CountTokens,
        ProviderKind::Anthropic if path.ends_with("/messages") => Endpoint::Messages,
        ProviderKind::Openai if path.ends_with("/chat/completions") => Endpoint::ChatCompletions,
        ProviderKind::Openai if path.ends_with("/responses") => Endpoint::Responses,
        ProviderKind::Gemini if gemini_model(path).is_some() => Endpoint::GenerateContent,
        _ => Endpoint::Other,
    }
}

/// The provider kind whose well-known endpoint `path` is, for requests that reach the plain
/// listener without a `/<provider>/` prefix.
pub fn guess_kind(path: &str) -> Option<ProviderKind> {
    [ProviderKind::Anthropic, ProviderKind::Openai, ProviderKind::Gemini]
        .into_iter()
        .find(|k| classify(*k, path) != Endpoint::Other)
}

/// `gemini-2.0-flash` from `/v1beta/models/gemini-2.0-flash:streamGenerateContent`.
fn gemini_model(path: &str) -> Option<&str> {
    let (_, tail) = path.rsplit_once("/models/")?;
    let (model, method) = tail.split_once(':')?;
    matches!(method, "generateContent" | "streamGenerateContent").then_some(model)
}

/// The model a request names: the body's `model`, or the path's for Gemini.
pub fn model(kind: ProviderKind, path: &str, body: Option<&Value>) -> Option<String> {
    if kind == ProviderKind::Gemini
        && let Some(m) = gemini_model(path)
    {
        return Some(m.to_string());
    }
    body?.get("model")?.as_str().map(str::to_string)
}

/// Adds `stream_options.include_usage: true` to a streamed Chat Completions request that does
/// not ask for it, so the stream ends with a usage chunk. `json` is `body` parsed (before any
/// redaction); returns the new body if it changed.
pub fn ensure_stream_usage(body: &[u8], json: &Value) -> Option<Vec<u8>> {
    if json.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    match json.get("stream_options") {
        None => {
            // Splice after the opening brace so the rest of the body stays byte-identical.
            let open = body.iter().position(|&b| b == b'{')?;
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
            out.extend_from_slice(&body[open + 1..]);
            Some(out)
        }
        Some(Value::Object(o)) if o.get("include_usage") == Some(&Value::Bool(true)) => None,
        Some(_) => {
            // Re-read `body` rather than reuse `json`: the body may have been redacted since.
            let mut json: Value = serde_json::from_slice(body).ok()?;
            let opts = json.get("stream_options").and_then(Value::as_object).cloned().unwrap_or_default();
            let mut opts = opts;
            opts.insert("include_usage".into(), Value::Bool(true));
            json["stream_options"] = Value::Object(opts);
            serde_json::to_vec(&json).ok()
        }
    }
}

fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// Usage in one JSON document (a whole answer or one stream event), normalised; `None` when
/// it carries none. Gemini's non-SSE stream (a JSON array) is merged element by element.
pub fn usage(kind: ProviderKind, v: &Value) -> Option<Usage> {
    if let Value::Array(items) = v {
        let mut out: Option<Usage> = None;
        for item in items {
            if let Some(u) = usage(kind, item) {
                out.get_or_insert_with(Usage::default).merge_max(&u);
            }
        }
        return out;
    }
    if let Some(m) = v.get("usageMetadata").filter(|m| m.is_object()) {
        return Some(Usage {
            input: count(m.get("promptTokenCount")),
            output: count(m.get("candidatesTokenCount")).saturating_add(count(m.get("thoughtsTokenCount"))),
            cache_read: count(m.get("cachedContentTokenCount")),
            cache_write: 0,
        });
    }
    // Anthropic stream: `message_start.message.usage`; Responses stream: `response.usage`.
    let u = [v.get("usage"), v.pointer("/message/usage"), v.pointer("/response/usage")]
        .into_iter()
        .flatten()
        .find(|u| u.is_object())?;
    if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        return Some(Usage {
            input: count(u.get("prompt_tokens")),
            output: count(u.get("completion_tokens")),
            cache_read: count(u.pointer("/prompt_tokens_details/cached_tokens")),
            cache_write: 0,
        });
    }
    if kind == ProviderKind::Openai || u.get("input_tokens_details").is_some() {
        return Some(Usage {
            input: count(u.get("input_tokens")),
            output: count(u.get("output_tokens")),
            cache_read: count(u.pointer("/input_tokens_details/cached_tokens")),
            cache_write: 0,
        });
    }
    let (read, write) =
        (count(u.get("cache_read_input_tokens")), count(u.get("cache_creation_input_tokens")));
    Some(Usage {
        input: count(u.get("input_tokens")).saturating_add(read).saturating_add(write),
        output: count(u.get("output_tokens")),
        cache_read: read,
        cache_write: write,
    })
}

/// Headers that carry a credential to some provider; all are dropped before injection.
const AUTH_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Replaces the request's credentials with `key` in the provider's own header.
pub fn inject_key(kind: ProviderKind, headers: &mut HeaderMap, key: &str) -> Result<(), http::Error> {
    for h in AUTH_HEADERS {
        headers.remove(h);
    }
    let (name, value) = match kind {
        ProviderKind::Anthropic => ("x-api-key", key.to_string()),
        ProviderKind::Gemini => ("x-goog-api-key", key.to_string()),
        ProviderKind::Openai | ProviderKind::Generic => ("authorization", format!("Bearer {key}")),
    };
    let mut value = HeaderValue::from_str(&value)?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// Drops `key=` from a query string (Gemini's URL credential), keeping the other pairs.
pub fn strip_key_param(query: &str) -> String {
    query.split('&').filter(|p| !p.is_empty() && !p.starts_with("key=")).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_and_models() {
        assert_eq!(classify(ProviderKind::Anthropic, "/v1/messages"), Endpoint::Messages);
        assert_eq!(classify(ProviderKind::Anthropic, "/v1/messages/count_tokens"), Endpoint::CountTokens);
        assert_eq!(classify(ProviderKind::Openai, "/v1/chat/completions"), Endpoint::ChatCompletions);
        assert_eq!(classify(ProviderKind::Openai, "/v1/responses"), Endpoint::Responses);
        let g = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
        assert_eq!(classify(ProviderKind::Gemini, g), Endpoint::GenerateContent);
        assert_eq!(model(ProviderKind::Gemini, g, None).as_deref(), Some("gemini-2.0-flash"));
        assert_eq!(classify(ProviderKind::Openai, "/v1/models"), Endpoint::Other);
        assert_eq!(guess_kind("/v1/messages"), Some(ProviderKind::Anthropic));
        assert_eq!(guess_kind("/v1/embeddings"), None);
        let body = json!({"model": "claude-x"});
        assert_eq!(model(ProviderKind::Anthropic, "/v1/messages", Some(&body)).as_deref(), Some("claude-x"));
    }

    #[test]
    fn usage_shapes() {
        let anthropic = json!({"usage": {"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}});
        let u = usage(ProviderKind::Anthropic, &anthropic).unwrap();
        assert_eq!((u.input, u.output, u.cache_read, u.cache_write), (117, 5, 100, 7));
        let chat = json!({"usage": {"prompt_tokens": 9, "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4}}});
        let u = usage(ProviderKind::Openai, &chat).unwrap();
        assert_eq!((u.input, u.output, u.cache_read), (9, 3, 4));
        let resp = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 8,
            "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}}});
        let u = usage(ProviderKind::Openai, &resp).unwrap();
        assert_eq!((u.input, u.output, u.cache_read), (8, 2, 1));
        let gem = json!([{"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}},
            {"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "thoughtsTokenCount": 2}}]);
        assert_eq!(usage(ProviderKind::Gemini, &gem).unwrap().output, 8);
        assert_eq!(usage(ProviderKind::Openai, &json!({"usage": null})), None);
        let bad = json!({"usage": {"prompt_tokens": -1, "completion_tokens": "x"}});
        assert_eq!(usage(ProviderKind::Openai, &bad).unwrap().total(), 0);
    }

    #[test]
    fn stream_usage_is_requested() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let json: Value = serde_json::from_slice(body).unwrap();
        let out = ensure_stream_usage(body, &json).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(out.ends_with(br#""model":"m","stream":true,"messages":[]}"#));
        let body = br#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#;
        let out = ensure_stream_usage(body, &serde_json::from_slice(body).unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"], json!({"include_usage": true, "x": 1}));
        let body = br#"{"stream":false}"#;
        assert!(ensure_stream_usage(body, &serde_json::from_slice(body).unwrap()).is_none());
    }

    #[test]
    fn key_injection() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer placeholder"));
        h.insert("x-api-key", HeaderValue::from_static("placeholder"));
        inject_key(ProviderKind::Anthropic, &mut h, "real").unwrap();
        assert_eq!(h.get("x-api-key").unwrap(), "real");
        assert!(h.get("authorization").is_none());
        inject_key(ProviderKind::Openai, &mut h, "real").unwrap();
        assert_eq!(h.get("authorization").unwrap(), "Bearer real");
        assert!(inject_key(ProviderKind::Openai, &mut h, "bad\nkey").is_err());
        assert_eq!(strip_key_param("alt=sse&key=abc&x=1"), "alt=sse&x=1");
    }
}
