//! HTTP proxy for LLM APIs: provider adapters, the DLP engine, SSE stream scanning, usage
//! accounting, credential injection and TLS termination with the session CA.
//! Implemented so far: the pure DLP engine ([`dlp`]).
#![forbid(unsafe_code)]

pub mod ca;
pub mod dlp;
