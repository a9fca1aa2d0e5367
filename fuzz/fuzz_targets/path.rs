//! Fuzz target `path`: the properties are in `props/path.rs`, shared with the
//! corpus replay in `tests/e2e/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| odgw_fuzz_props::path::check(data));
