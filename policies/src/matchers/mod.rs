//! Compiled matchers: domain globs, CIDR prefixes and port ranges, validated at load time.
pub mod cidr;
pub mod domain;
pub mod ports;
