//! Shared test helpers: the classification corpus and (for integration tests) a real
//! Postgres cluster.
#![allow(dead_code)]

pub mod corpus;
pub mod pg;
