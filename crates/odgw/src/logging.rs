//! Structured logs with `tracing`: `--log-format json|pretty`, filters from
//! `RUST_LOG` (default `info`). Logs go to stderr; stdout is for command output.
//! INFO lines are written in batches ([`batch`]); call [`flush`] before exit.
//!
//! JSON lines are written by [`json::JsonFormat`], which produces what
//! tracing-subscriber's `json().flatten_event(true)` produced, more cheaply.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, fmt::format::JsonFields, EnvFilter};

use crate::cli::LogFormat;

pub mod batch;
pub mod json;

pub use batch::flush;

/// Installs the global subscriber once; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into files or journals.
    let ansi = std::io::stderr().is_terminal();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(batch::stderr().clone())
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonFormat::new())
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
