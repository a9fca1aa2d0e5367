//! Process signals, registered before any port binds.
//!
//! The default action of SIGTERM, SIGINT and SIGHUP is to end the process at
//! once. odgw therefore registers every signal it handles while it starts,
//! before the listeners bind and "odgw listening" is logged: a SIGTERM sent the
//! moment a supervisor sees the port open drains like any later one, and a
//! SIGHUP reloads. (tokio registers a handler when its `Signal` is created,
//! not when it is first awaited, so creating them early is what matters.)

use std::future::Future;

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
    /// [`Shutdown::register`] (or since the last time this resolved).
    pub async fn requested(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Runs `startup` to its end unless SIGTERM or SIGINT comes first: then
    /// `startup` is dropped where it waits (a slow database, a JWKS fetch)
    /// and `None` returned, so an operator's Ctrl-C or a rollout's SIGTERM
    /// never has to wait for a start that is no longer wanted.
    pub async fn unless_requested<F: Future>(&mut self, startup: F) -> Option<F::Output> {
        tokio::select! {
            output = startup => Some(output),
            () = self.requested() => None,
        }
    }

    /// Resolves on the next SIGTERM or SIGINT: the serve loop's signal to
    /// drain.
    pub async fn into_requested(mut self) {
        self.requested().await;
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    /// Sends SIGTERM to this test process.
    fn terminate_self() {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// A SIGTERM that arrives after registration but before anyone awaits it
    /// (the window between "odgw listening" and the serve loop's first poll)
    /// is kept, not lost and not fatal. Registered lazily, this signal would
    /// end the test process.
    #[tokio::test]
    async fn a_sigterm_before_the_first_await_is_kept() {
        let shutdown = Shutdown::register().unwrap();
        terminate_self();
        tokio::time::timeout(Duration::from_secs(10), shutdown.into_requested())
            .await
            .expect("the SIGTERM sent before the first await is delivered");
    }

    /// A start still waiting for something gives way to SIGTERM.
    #[tokio::test]
    async fn sigterm_during_startup_ends_the_startup() {
        let mut shutdown = Shutdown::register().unwrap();
        let startup = async {
            terminate_self();
            // A start that would otherwise never finish (a hung dependency).
            std::future::pending::<()>().await;
        };
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), shutdown.unless_requested(startup))
                .await
                .expect("the startup gave way to SIGTERM");
        assert!(outcome.is_none());
    }
}
