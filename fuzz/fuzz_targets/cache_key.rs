//! Fuzz target `cache_key`: the properties are in `props/cache_key.rs`, shared with the
//! corpus replay in `tests/e2e/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| odgw_fuzz_props::cache_key::check(data));
