//! Holds the cross-crate integration tests (`tests/`) and benches (`benches/`).
