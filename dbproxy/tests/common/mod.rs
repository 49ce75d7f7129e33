//! Shared test helpers: the classification corpus and (for integration tests) a real
//! Postgres cluster and a proxy in front of it.
#![allow(dead_code)]

pub mod corpus;
pub mod pg;
pub mod proxy;
pub mod tls;
