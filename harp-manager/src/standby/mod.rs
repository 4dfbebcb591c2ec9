//! The Postgres operations of streaming mode, called by the manager's decision loop from
//! spawned tasks: follow a primary, promote, stop, rejoin (rewind) as a standby, rebuild from
//! the primary, and manage `synchronous_standby_names`. Every step is bounded in time (a hung
//! `pg_rewind` must not hang the manager) and every program runs as the data directory's owner.
//! Errors name the cause and the fix; no password ever reaches a log, an error or a command
//! line (programs get it as `PGPASSWORD`).
//!
//! The caller runs one operation at a time per node, holding [`PgCtl::turn`] as
//! [`crate::pgctl::serve`] does, except [`Standby::stop`], which may cut in at any time.
//! Replication slots are not used: the primary's `wal_keep_size` must cover what a standby or a rewind may need. The role of
//! `manager.dsn` needs what pg_rewind needs on the primary (superuser, or the functions its
//! documentation lists plus `pg_checkpoint` and `pg_read_server_files`), the REPLICATION
//! attribute, and `pg_read_all_stats` for [`Standby::sync_states`].

mod conninfo;
mod datadir;
mod error;
mod rejoin;
mod wait;

use std::time::Duration;

pub use conninfo::{Conninfo, DsnError};
pub use datadir::ControlData;
pub use error::StandbyError;
pub use rejoin::Rejoined;
use tokio_postgres::Client;

use crate::pgconn::PgTarget;
use crate::pgctl::PgCtl;

/// How often a promotion looks whether Postgres has left recovery.
const PROMOTE_POLL: Duration = Duration::from_millis(10);

/// Bounds of each step; [`Timeouts::default`] suits a small database on a healthy host.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connecting to a Postgres, and each short query.
    pub query: Duration,
    /// From the promotion signal until Postgres takes writes (the end of recovery).
    pub promote: Duration,
    /// A fast shutdown, before an immediate one.
    pub fast_stop: Duration,
    /// `pg_rewind` (it copies every changed block and the non-relation files).
    pub rewind: Duration,
    /// `pg_basebackup` (it copies the whole database).
    pub basebackup: Duration,
    /// From start until Postgres accepts connections (a standby replays WAL first).
    pub start: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            query: Duration::from_secs(10),
            promote: Duration::from_secs(60),
            fast_stop: Duration::from_secs(15),
            rewind: Duration::from_secs(600),
            basebackup: Duration::from_secs(3600),
            start: Duration::from_secs(120),
        }
    }
}

/// The local Postgres of a node in streaming mode.
#[derive(Debug, Clone)]
pub struct Standby {
    pub ctl: PgCtl,
    /// The node name: the `application_name` this node streams with, which
    /// `synchronous_standby_names` and `pg_stat_replication` name it by.
    pub node: String,
    pub timeouts: Timeouts,
    /// The manager's own DSN (`manager.dsn`), as pairs and as what to connect to.
    own: Conninfo,
    target: PgTarget,
}

impl Standby {
    pub fn new(ctl: PgCtl, dsn: &str, node: &str) -> Result<Standby, StandbyError> {
        Ok(Standby {
            ctl,
            node: node.to_owned(),
            timeouts: Timeouts::default(),
            own: Conninfo::parse(dsn)?,
            target: PgTarget::parse(dsn)?,
        })
    }

    /// The conninfo this node streams from the primary at `host:port` with: our DSN's user,
    /// password, passfile and TLS settings, the primary's host and port, our node name as
    /// `application_name`. Its `Display` hides the password.
    pub fn primary_conninfo(&self, host: &str, port: u16) -> Conninfo {
        self.own.for_server(host, port, &self.node)
    }

    /// Points this standby at the primary at `host:port` (`ALTER SYSTEM SET primary_conninfo`
    /// and a reload: Postgres 13+ restarts its WAL receiver, no restart needed; the new
    /// timeline is followed since `recovery_target_timeline` is `latest` by default).
    /// `Ok(false)` if it already pointed there. A standby that went past the new timeline's
    /// fork point will not stream (its status says so): then [`Standby::rejoin`].
    pub async fn follow(&self, host: &str, port: u16) -> Result<bool, StandbyError> {
        let want = self.primary_conninfo(host, port);
        let client = self.connect_own().await?;
        if !self.in_recovery(&client).await? {
            return Err(StandbyError::NotStandby);
        }
        let current = self.show(&client, "primary_conninfo").await?;
        if current == want.to_libpq() {
            return Ok(false);
        }
        self.alter_system(&client, "primary_conninfo", &want.to_libpq())
            .await?;
        tracing::info!("following the primary at {host}:{port} ({want})");
        Ok(true)
    }

    /// Promotes this standby: `pg_promote(wait => false)`, then a look every 10 ms (its own
    /// wait looks only every 100 ms). Ok once `pg_is_in_recovery()` is false; Ok at once if it
    /// already was. Postgres replays all WAL it received before it ends recovery, so nothing
    /// received is lost and there is nothing to wait for first.
    pub async fn promote(&self) -> Result<(), StandbyError> {
        let client = self.connect_own().await?;
        if !self.in_recovery(&client).await? {
            return Ok(());
        }
        let signalled: bool = self
            .query_one(&client, "pg_promote", "SELECT pg_promote(false)")
            .await?
            .get(0);
        if !signalled {
            return Err(StandbyError::Promote {
                reason: "Postgres refused the promotion signal; see its log".into(),
            });
        }
        let deadline = tokio::time::Instant::now() + self.timeouts.promote;
        let mut polls = 0u32;
        while self.in_recovery(&client).await? {
            // Right after streaming failed (the primary just died or stopped), the startup
            // process handles the promotion and then sleeps out `wal_retrieve_retry_interval`
            // (5 s by default) before it ends recovery. A reload's SIGHUP wakes it.
            polls += 1;
            if polls % 5 == 2 {
                self.bounded(
                    "pg_reload_conf()",
                    client.batch_execute("SELECT pg_reload_conf()"),
                )
                .await?;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StandbyError::Promote {
                    reason: format!(
                        "Postgres did not finish promoting within {:?}",
                        self.timeouts.promote
                    ),
                });
            }
            tokio::time::sleep(PROMOTE_POLL).await;
        }
        tracing::info!("promoted: Postgres accepts writes");
        Ok(())
    }

    /// Stops Postgres if it runs: fast, then immediate after `timeouts.fast_stop`. For a
    /// deposed primary that must stop taking writes at once.
    pub async fn stop(&self) -> Result<(), StandbyError> {
        Ok(self.ctl.stop_within(self.timeouts.fast_stop).await?)
    }

    /// Sets `synchronous_standby_names` on this (primary) node: `FIRST 1 ("a", "b")`, or empty
    /// for none (commits then wait for no standby). `Ok(false)` if it already was so. Returns
    /// after the reload is signalled: wait for [`Standby::sync_states`] before relying on it.
    pub async fn set_sync_standbys(&self, names: &[String]) -> Result<bool, StandbyError> {
        let want = sync_names(names);
        let client = self.connect_own().await?;
        if self.show(&client, "synchronous_standby_names").await? == want {
            return Ok(false);
        }
        self.alter_system(&client, "synchronous_standby_names", &want)
            .await?;
        tracing::info!("synchronous_standby_names = '{want}'");
        Ok(true)
    }

    /// `(application_name, sync_state)` of every standby streaming from this node, as
    /// `pg_stat_replication` reports them (`sync`, `potential`, `quorum`, `async`).
    pub async fn sync_states(&self) -> Result<Vec<(String, String)>, StandbyError> {
        let client = self.connect_own().await?;
        let q = "SELECT application_name::text, sync_state::text FROM pg_stat_replication \
                 ORDER BY application_name";
        let rows = self
            .bounded("the replication query", client.query(q, &[]))
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn connect_own(&self) -> Result<Client, StandbyError> {
        connect(&self.target, "the local Postgres", self.timeouts.query).await
    }

    async fn in_recovery(&self, client: &Client) -> Result<bool, StandbyError> {
        let row = self
            .query_one(client, "pg_is_in_recovery()", "SELECT pg_is_in_recovery()")
            .await?;
        Ok(row.get(0))
    }

    async fn show(&self, client: &Client, setting: &'static str) -> Result<String, StandbyError> {
        let q = format!("SELECT current_setting('{setting}')");
        Ok(self
            .query_one(client, "reading a setting", &q)
            .await?
            .get(0))
    }

    /// `ALTER SYSTEM SET` + reload. The statement may hold a password: logging of this
    /// session's statements is turned off first where our role may do so.
    async fn alter_system(
        &self,
        client: &Client,
        setting: &'static str,
        value: &str,
    ) -> Result<(), StandbyError> {
        let quiet = "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; \
                     SET log_min_duration_statement = -1";
        if let Err(e) = self.bounded("quiet", client.batch_execute(quiet)).await {
            tracing::debug!("cannot turn statement logging off for ALTER SYSTEM: {e}");
        }
        let sql = format!("ALTER SYSTEM SET {setting} = {}", sql_literal(value));
        self.bounded("ALTER SYSTEM", client.batch_execute(&sql))
            .await?;
        self.bounded(
            "pg_reload_conf()",
            client.batch_execute("SELECT pg_reload_conf()"),
        )
        .await
    }

    async fn query_one(
        &self,
        client: &Client,
        step: &'static str,
        q: &str,
    ) -> Result<tokio_postgres::Row, StandbyError> {
        self.bounded(step, client.query_one(q, &[])).await
    }

    /// A local query bounded by `timeouts.query`.
    async fn bounded<T>(
        &self,
        step: &'static str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StandbyError> {
        tokio::time::timeout(self.timeouts.query, fut)
            .await
            .map_err(|_| StandbyError::Timeout {
                step,
                after: self.timeouts.query,
                fix: "Postgres is overloaded or hung",
            })?
            .map_err(|source| StandbyError::Sql {
                step,
                whom: "the local Postgres",
                source,
            })
    }
}

/// Connects (bounded) and drives the connection on a task.
async fn connect(
    target: &PgTarget,
    whom: &'static str,
    bound: Duration,
) -> Result<Client, StandbyError> {
    let at = describe(target.config());
    let (client, conn) = tokio::time::timeout(bound, target.connect())
        .await
        .map_err(|_| StandbyError::Timeout {
            step: "connecting",
            after: bound,
            fix: "is the address right and Postgres up?",
        })?
        .map_err(|source| StandbyError::Connect { whom, at, source })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `host:port` of a config, for messages.
fn describe(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A string literal for any value: `E'...'` with `\` and `'` escaped, whatever
/// `standard_conforming_strings` says.
fn sql_literal(v: &str) -> String {
    format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// `FIRST 1 ("a", "b")`, names quoted (`"` doubled) so any application_name matches; empty for
/// none.
fn sync_names(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect();
    format!("FIRST 1 ({})", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_standby_names_quote_each_name() {
        assert_eq!(sync_names(&[]), "");
        assert_eq!(
            sync_names(&["s1".into(), "Node \"B\"".into()]),
            r#"FIRST 1 ("s1", "Node ""B""")"#
        );
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(sql_literal(r"a'b\c"), r"E'a''b\\c'");
    }
}
