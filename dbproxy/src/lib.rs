//! Postgres wire proxy: the pgwire codec in both directions, statement classification with
//! sqlparser, `database_rules` and `database_connection_rules`, credential injection with SCRAM
//! upstream, upstream TLS and audit. Not implemented yet: see the issue tracker.
#![forbid(unsafe_code)]
