//! The typed policy file model (DESIGN.md §7). Every struct rejects unknown fields.
pub mod blocks;
pub mod compat;
pub mod db_ops;
pub mod db_rules;
pub mod db_service;
pub mod file;
pub mod llm;
pub mod network;
pub mod policy;
pub mod serde_str;
pub mod unix;
pub mod values;
