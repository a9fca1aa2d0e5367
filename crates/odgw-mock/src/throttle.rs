//! Per-customer-key throttling, as Open Dental applies it ("per customer key
//! basis, not a per developer key basis").

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ThrottleMode;

/// The throttle's verdict on one call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Serve now.
    Go,
    /// Serve after waiting this long (Delay mode).
    Wait(Duration),
    /// Answer 429 with this `Retry-After` (Reject mode).
    Reject(u64),
}

/// Mode plus, per customer key, the time of its last accepted call (Reject)
/// or its last reserved slot (Delay).
#[derive(Debug)]
pub(crate) struct Throttle {
    mode: ThrottleMode,
    last: HashMap<String, Instant>,
}

impl Throttle {
    pub fn new(mode: ThrottleMode) -> Self {
        Throttle {
            mode,
            last: HashMap::new(),
        }
    }

    /// Changes the mode; history is kept so a switch does not grant a burst.
    pub fn set_mode(&mut self, mode: ThrottleMode) {
        self.mode = mode;
    }

    pub fn admit(&mut self, customer_key: &str, now: Instant) -> Admission {
        match self.mode {
            ThrottleMode::Off => Admission::Go,
            ThrottleMode::Reject {
                interval,
                retry_after_secs,
            } => match self.last.get(customer_key) {
                Some(prev) if now.saturating_duration_since(*prev) < interval => {
                    Admission::Reject(retry_after_secs)
                }
                _ => {
                    self.last.insert(customer_key.to_owned(), now);
                    Admission::Go
                }
            },
            ThrottleMode::Delay { interval } => {
                let slot = match self.last.get(customer_key) {
                    Some(prev) => (*prev + interval).max(now),
                    None => now,
                };
                self.last.insert(customer_key.to_owned(), slot);
                if slot > now {
                    Admission::Wait(slot - now)
                } else {
                    Admission::Go
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn reject_is_per_customer_key_and_measured_from_accepted_calls() {
        let mut t = Throttle::new(ThrottleMode::Reject {
            interval: SEC,
            retry_after_secs: 1,
        });
        let t0 = Instant::now();
        assert_eq!(t.admit("a", t0), Admission::Go);
        assert_eq!(t.admit("b", t0), Admission::Go, "another key is unaffected");
        assert_eq!(t.admit("a", t0 + SEC / 2), Admission::Reject(1));
        // The rejected call did not move the window.
        assert_eq!(t.admit("a", t0 + SEC), Admission::Go);
        assert_eq!(t.admit("a", t0 + SEC + SEC / 10), Admission::Reject(1));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_spaces_calls() {
        let mut t = Throttle::new(ThrottleMode::Delay { interval: SEC });
        let t0 = Instant::now();
        assert_eq!(t.admit("a", t0), Admission::Go);
        assert_eq!(t.admit("a", t0), Admission::Wait(SEC));
        assert_eq!(t.admit("a", t0), Admission::Wait(2 * SEC));
        assert_eq!(t.admit("b", t0), Admission::Go);
        assert_eq!(t.admit("a", t0 + 10 * SEC), Admission::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn off_admits_everything() {
        let mut t = Throttle::new(ThrottleMode::Off);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.admit("a", t0), Admission::Go);
        }
    }
}
