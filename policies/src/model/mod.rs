//! The typed policy file model (DESIGN.md §7). Every struct rejects unknown fields.
pub mod network;
pub mod policy;
pub mod serde_str;
