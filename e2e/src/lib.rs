//! End-to-end tests live in `tests/`; this library is empty on purpose, so the crate builds
//! nothing outside its tests.
#![forbid(unsafe_code)]
