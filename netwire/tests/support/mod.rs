//! Test support: hand-built ClientHellos, record framing, real rustls hellos and loopback pairs.
#![allow(dead_code)] // each test binary uses a different subset

pub mod hello;
pub mod net;
