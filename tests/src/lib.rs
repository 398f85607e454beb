//! End-to-end tests of Pulse (in `tests/`, run by `./dev test`) and the benchmarks that
//! `./dev bench` runs (`pulse-bench`): each starts the real server in-process against the real
//! PostgreSQL, Redis and Kafka, and compares it with the servers' own benchmark tools.

pub mod bench;
pub mod support;
