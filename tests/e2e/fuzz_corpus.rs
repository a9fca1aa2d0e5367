//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`) through the
//! fuzz targets' property checks, so every interesting input the fuzzer (or
//! a person) found stays a regression test under plain `cargo test`.
//!
//! The checks are not copied here: `fuzz/props/` is the library of the
//! `fuzz/` package and is included below as a module, so a corpus file runs
//! through exactly the code the fuzzer ran. See `fuzz/README.md`.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/props/mod.rs"]
mod props;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    // An emptied corpus would make the replay pass without checking anything.
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    files
}

/// Runs `check` on every file of `target`'s corpus; on a failure, names the file.
fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{}: {message}", path.display());
        }
    }
}

#[test]
fn path_corpus() {
    replay("path", props::path::check);
}

#[test]
fn headers_corpus() {
    replay("headers", props::headers::check);
}

#[test]
fn token_corpus() {
    replay("token", props::token::check);
}

#[test]
fn cache_key_corpus() {
    replay("cache_key", props::cache_key::check);
}

#[test]
fn audit_corpus() {
    replay("audit", props::audit::check);
}
