//! Compiled matchers: domain globs, CIDR prefixes and port ranges, validated at load time, and
//! the lookup structures the decision engine builds from them.
pub mod cidr;
pub mod domain;
pub mod domain_trie;
pub mod path_glob;
pub mod ports;
pub mod prefix_table;
