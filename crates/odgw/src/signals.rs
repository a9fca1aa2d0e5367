//! Process signals, registered before any port binds.
//!
//! The default action of SIGTERM, SIGINT and SIGHUP is to end the process at
//! once. odgw therefore registers every signal it handles while it starts,
//! before the listeners bind and "odgw listening" is logged: a SIGTERM sent the
//! moment a supervisor sees the port open drains like any later one, and a
//! SIGHUP reloads. (tokio registers a handler when its `Signal` is created,
//! not when it is first awaited, so creating them early is what matters.)

use anyhow::Context as _;

/// SIGTERM or SIGINT: drain and exit.
#[derive(Debug)]
pub struct Shutdown {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers now; from here on SIGTERM and SIGINT are
    /// delivered to [`Shutdown::requested`] instead of ending the process.
    pub fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGTERM or SIGINT received since
    /// [`Shutdown::register`].
    pub async fn requested(self) {
        #[cfg(unix)]
        {
            let Self {
                mut terminate,
                mut interrupt,
            } = self;
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP: reload the configuration.
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Hangups {
    /// Installs the handler now; from here on SIGHUP means reload, never the
    /// default "terminate".
    pub fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Reloads the configuration on every SIGHUP. The outcome is logged by
    /// the reloader (info, or a warning with the reason when refused).
    pub async fn reload_each(self, reloader: crate::gateway::Reloader) {
        #[cfg(unix)]
        {
            let mut hangup = self.hangup;
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reloader.reload().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reloader;
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A SIGTERM that arrives after registration but before anyone awaits it
    /// (the window between "odgw listening" and the serve loop's first poll)
    /// is kept, not lost and not fatal. Registered lazily, this signal would
    /// end the test process.
    #[tokio::test]
    async fn a_sigterm_before_the_first_await_is_kept() {
        let shutdown = Shutdown::register().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), shutdown.requested())
            .await
            .expect("the SIGTERM sent before the first await is delivered");
    }
}
