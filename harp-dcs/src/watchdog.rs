//! systemd's service watchdog, for the agent and the manager: `READY=1` once the process serves,
//! then `WATCHDOG=1` at half of `WatchdogSec`, sent from the loop that makes the decisions — so a
//! process whose decision loop hangs (a blocked call, a deadlock) is killed by systemd within
//! `WatchdogSec`, and with it the children that die with it (PgBouncer). Without systemd
//! (`NOTIFY_SOCKET`/`WATCHDOG_USEC` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;

pub struct Watchdog {
    every: Option<Duration>,
    next: Instant,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) as systemd sets them.
    pub fn from_env() -> Watchdog {
        let every = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(d) = every {
            tracing::info!("systemd watchdog on: a keep-alive every {d:?}");
        }
        Watchdog {
            every,
            next: Instant::now(),
        }
    }

    /// Tells systemd the service is up.
    pub fn ready(&self) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
            tracing::warn!("cannot notify systemd (READY=1): {e}");
        }
    }

    /// When the next keep-alive is due (never without a watchdog), for the loop's `select!`.
    pub async fn due(&self) {
        match self.every {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    /// Sends `WATCHDOG=1` and schedules the next one.
    pub fn kick(&mut self) {
        let Some(every) = self.every else { return };
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::warn!("cannot notify systemd (WATCHDOG=1): {e}");
        }
        self.next = Instant::now() + every;
    }
}
