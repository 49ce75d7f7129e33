//! Policy model, strict loading with line/column errors, compiled matchers and pure decision
//! functions. No IO and no async: callers hand in text and typed requests, and get typed
//! outcomes back.
#![forbid(unsafe_code)]

pub mod config;
pub mod decision;
pub mod embedded;
pub mod engine;
pub mod lists;
pub mod load;
pub mod matchers;
pub mod model;

pub use decision::{Decision, Verdict};
pub use engine::{CompiledPolicy, ConnectRequest};
pub use load::{LoadError, LoadErrors, load_policy};
pub use model::policy::Policy;
