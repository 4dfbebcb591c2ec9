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

/// What the primary sees of its standbys, for synchronous mode.
#[derive(Debug, Clone, Default)]
pub struct ReplicationView {
    /// `(application_name, streaming, flush position)` of every walsender.
    pub standbys: Vec<(String, bool, Option<u64>)>,
    /// Names Postgres reports `sync`.
    pub sync: Vec<String>,
    /// `synchronous_standby_names` in effect, as the names of `FIRST 1 (...)`.
    pub ssn: Vec<String>,
    /// `pg_current_wal_lsn()`, read after the rest.
    pub lsn: u64,
}

impl Standby {
    /// One consistent look for the synchronous-mode machine: the position is read last, so
    /// every commit acknowledged before the sync states were read lies at or below it.
    pub async fn replication_view(&self) -> Result<ReplicationView, StandbyError> {
        let client = self.connect_own().await?;
        let q = "SELECT application_name::text, state = 'streaming', \
                 (flush_lsn - '0/0'::pg_lsn)::bigint, sync_state = 'sync' \
                 FROM pg_stat_replication ORDER BY application_name";
        let rows = self
            .bounded("pg_stat_replication", client.query(q, &[]))
            .await?;
        let ssn = self.show(&client, "synchronous_standby_names").await?;
        let q = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";
        let lsn = self.query_one(&client, "the WAL position", q).await?;
        Ok(ReplicationView {
            standbys: rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get::<_, Option<i64>>(2).map(|l| l as u64),
                    )
                })
                .collect(),
            sync: rows.iter().filter(|r| r.get(3)).map(|r| r.get(0)).collect(),
            ssn: parse_ssn(&ssn),
            lsn: lsn.get::<_, i64>(0) as u64,
        })
    }
}

/// The names of `FIRST 1 ("a", "b")`, `ANY 1 (a)`, `a, b` or `''`.
fn parse_ssn(ssn: &str) -> Vec<String> {
    let inner = match (ssn.find('('), ssn.rfind(')')) {
        (Some(a), Some(b)) if a < b => &ssn[a + 1..b],
        _ => ssn,
    };
    inner
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

impl Standby {
    /// Writes a tiny WAL record so that standbys reply at once: a commit waiting for a
    /// standby just named synchronous is released only by that standby's next reply, which
    /// with no new WAL comes only at `wal_receiver_status_interval` (10 s by default).
    pub async fn nudge_standbys(&self) -> Result<(), StandbyError> {
        let client = self.connect_own().await?;
        let q =
            "SELECT pg_logical_emit_message(false, 'harp', 'synchronous standby changed')::text";
        self.query_one(&client, "nudging the standbys", q)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssn_names_are_read_from_every_form() {
        assert_eq!(super::parse_ssn("FIRST 1 (\"n2\", \"n3\")"), ["n2", "n3"]);
        assert_eq!(super::parse_ssn("n2"), ["n2"]);
        assert!(super::parse_ssn("").is_empty());
    }
}
