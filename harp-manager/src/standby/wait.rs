//! A switchover's target waits for the old primary's last WAL record before promoting.

use std::time::Duration;

use super::{Standby, StandbyError};

impl Standby {
    /// Waits until this standby has received (flushed) WAL past `lsn` — the old primary's
    /// shutdown checkpoint — or `bound` passes.
    pub async fn wait_received(&self, lsn: u64, bound: Duration) -> Result<(), StandbyError> {
        let client = self.connect_own().await?;
        let deadline = tokio::time::Instant::now() + bound;
        let q = "SELECT coalesce((pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint, 0)";
        loop {
            let row = self.query_one(&client, "the receive check", q).await?;
            if row.get::<_, i64>(0) as u64 > lsn {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StandbyError::Timeout {
                    step: "receiving the old primary's last WAL record",
                    after: bound,
                    fix: "check that this standby streamed from the old primary",
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
