//! Arbitrary bytes as an SSE answer through the proxy's stream scanner: never a panic, and the
//! output does not depend on how the bytes were split into chunks.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmproxy::{dlp::Engine, proxy::sse::SseScanner};
use policies::model::llm::ProviderKind;

static ENGINE: LazyLock<Engine> = LazyLock::new(Engine::builtin);

fn run(chunks: &[&[u8]]) -> Option<Vec<u8>> {
    let mut s = SseScanner::new(&ENGINE, ProviderKind::Anthropic, 64, 1 << 16);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(s.push(c).ok()?);
    }
    out.extend(s.finish().ok()?);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let cut = usize::from(cut) * rest.len() / 256;
    let whole = run(&[rest]);
    let split = run(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, split, "chunking changed the output");
});
