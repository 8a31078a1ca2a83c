//! End-to-end tests (see tests/src/lib.rs for the harness).
