//! Structured logs with `tracing`: `--log-format json|pretty`, filters from
//! `RUST_LOG` (default `info`). Logs go to stderr; stdout is for command output.

use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

/// Installs the global subscriber once; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
