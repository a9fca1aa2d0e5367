//! The `odgw` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = odgw::cli::Cli::parse();
    odgw::logging::init(cli.log_format);
    // Before any secret is read: no core file may ever hold one.
    if let Err(e) = odgw::hardening::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            odgw::logging::flush();
            eprintln!("odgw: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(odgw::commands::run(cli));
    // Tasks still running may log as the runtime stops: flush after it.
    drop(runtime);
    odgw::logging::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("odgw: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}
