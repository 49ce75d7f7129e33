//! HTTP proxy for LLM APIs: provider adapters, the DLP engine, SSE stream scanning, usage
//! accounting, credential injection and TLS termination with the session CA.
//! Not implemented yet: see the issue tracker.
#![forbid(unsafe_code)]
