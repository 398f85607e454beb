//! End-to-end tests of Pulse; they live in `tests/` and run with `./dev test`.
