//! End-to-end tests: a real gateway on 127.0.0.1:0, the mock Open Dental API
//! in-process, real sled files and audit segments in temp dirs, real tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod attacks;
mod audit;
mod auth;
mod browser;
mod cluster;
mod console;
mod deploy;
mod deploy_cluster;
mod forwarding;
mod fuzz_corpus;
mod oidc_provider;
mod ops;
mod process;
mod traffic;
