//! The lab as a streaming cluster: its health (a routable leader whose Postgres takes writes,
//! every other node streaming from it) and its Postgres, which the managers stop, rewind and
//! start themselves.

use std::time::Duration;

use super::probe::wait_until;
use super::{CTL, Kind, Lab, PG_NODES};
use crate::lab::net::LabError;
use crate::rt::block_on;
use harp_core::config::SynchronousMode;

/// How long a node's manager may take to bring its Postgres back (a crash recovery, a rewind
/// against the new primary, a restart) before the lab calls it stuck.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(90);

impl Lab {
    /// Waits until the cluster is whole: a routable leader whose Postgres is a primary, every
    /// other node streaming from it and, unless `synchronous_mode` is off, one of them a
    /// synchronous standby. Returns the primary.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<String, LabError> {
        let mut primary = String::new();
        wait_until("a primary with every standby streaming", timeout, || {
            primary = self.streaming_state()?;
            Ok(())
        })?;
        Ok(primary)
    }

    /// One look at the cluster (see [`Lab::wait_streaming`]): the primary, or what is missing.
    fn streaming_state(&self) -> Result<String, String> {
        let scope = self.cluster();
        let leader = match self.leader(&scope).map_err(|e| e.to_string())? {
            Some((l, _)) if l.routable() => l.node,
            Some((l, _)) => return Err(format!("leader {} is not routable yet", l.node)),
            None => return Err("no leader".into()),
        };
        let dsn = self.node_dsn(&leader).map_err(|e| e.to_string())?;
        let sql = "SELECT pg_is_in_recovery(), application_name, state, sync_state \
                   FROM (SELECT 1) one LEFT JOIN pg_stat_replication ON true";
        let rows = self
            .on_ctl(|| {
                block_on(|| async {
                    let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    c.query(sql, &[]).await
                })
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{leader}'s Postgres: {e}"))?;
        if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Err(format!("{leader}'s Postgres is still in recovery"));
        }
        let standbys: Vec<(String, String, String)> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .collect();
        let streaming = |n: &str| standbys.iter().any(|s| s.0 == n && s.1 == "streaming");
        let missing: Vec<&str> = PG_NODES
            .iter()
            .map(|n| n.0)
            .filter(|&n| n != leader && !streaming(n))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "not streaming from {leader}: {} (pg_stat_replication: {standbys:?})",
                missing.join(", ")
            ));
        }
        let sync = standbys.iter().any(|s| s.2 == "sync" || s.2 == "quorum");
        if self.spec.synchronous_mode != SynchronousMode::Off && !sync {
            return Err(format!("no synchronous standby of {leader} yet"));
        }
        Ok(leader)
    }

    /// Streaming: a dead Postgres whose manager runs is that manager's to start again (it
    /// rewinds or follows first; a start by the lab meanwhile would race it on the data
    /// directory), so only wait for it. With its manager dead too, start it as it was.
    pub(super) fn revive_streaming_postgres(&mut self, host: &str) -> Result<(), LabError> {
        let managed = self.process(Kind::Manager, host)?.is_running();
        let pg = self.process(Kind::Postgres, host)?;
        if !managed && !pg.is_running() {
            pg.start_again()?;
        }
        let dsn = self.node_dsn(host)?;
        let what = format!("postgres on {host} answering (started again by its manager)");
        let result = wait_until(&what, REJOIN_TIMEOUT, || {
            let probe = || block_on(|| super::pg_query_one(&dsn, "SELECT 1")).map(drop);
            self.net.run_in(CTL, probe).map_err(|e| e.to_string())?
        });
        match result {
            Err(LabError::Timeout { what, secs, detail }) => {
                let log = self.process(Kind::Manager, host)?.log_tail(30);
                Err(LabError::Timeout {
                    what,
                    secs,
                    detail: format!("{detail}\nharp-manager {host}:\n{log}"),
                })
            }
            other => other,
        }
    }
}
