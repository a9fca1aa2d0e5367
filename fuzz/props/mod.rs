//! Property checks for odgw's fuzz targets, one module per target.
//!
//! Each `check(data)` turns arbitrary bytes into an input for one piece of
//! odgw, runs it, and asserts properties that must hold for every input (it
//! panics on a violation, which is what the fuzzer reports as a crash). The
//! same files are the library of the `fuzz/` package (the targets call them)
//! and a module of the `odgw` e2e tests (`tests/e2e/fuzz_corpus.rs` replays
//! every checked-in corpus file through them), so the two can never drift.
//!
//! Inputs are decoded by hand rather than with `arbitrary`, because the e2e
//! tests may only use crates the `odgw` package already depends on.

pub mod audit;
pub mod cache_key;
pub mod headers;
pub mod path;
pub mod token;

mod input;
