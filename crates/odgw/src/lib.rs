//! odgw: a gateway in front of the Open Dental REST API.
//!
//! This crate composes the pipeline crates into a running gateway:
//! - [`config`]: the typed configuration (SPEC §2) and its validation;
//! - [`gateway::Gateway`]: builds every component and the request stack, and
//!   serves it (`Gateway::serve(data_listener, admin_listener, shutdown)`);
//! - [`cli`] and [`commands`]: the `odgw` command line (SPEC §3);
//! - [`dev`]: `odgw serve --dev [--mock-upstream]` (SPEC §9).

pub mod admin_client;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod hardening;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod signals;
pub mod tls;
pub mod token;

pub use gateway::Gateway;
