//! A throwaway Postgres cluster (filled in below).
