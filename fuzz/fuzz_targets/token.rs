//! Fuzz target `token`: the properties are in `props/token.rs`, shared with the
//! corpus replay in `tests/e2e/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| odgw_fuzz_props::token::check(data));
