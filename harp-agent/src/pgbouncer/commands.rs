//! The admin-console steps a plan is carried out with: pause (a drain), kill (a cut),
//! retarget, resume, and pointing pgbouncer.ini at a leader or nowhere.

use std::path::Path;

use anyhow::Context;
use tokio::sync::watch;

use super::admin::{self, Admin, quote};
use super::ini::{self, Settings};
use super::{KILL_CONFIRM, KILL_ROUNDS, POLL, PgBouncer, plan};

impl PgBouncer {
    /// Pauses each database until its transactions are done; new work waits. PgBouncer
    /// keeps pointing at the leader handing over: it holds the lease until the drain ends.
    pub(super) async fn pause(&mut self) -> anyhow::Result<()> {
        self.stop_pausing().await;
        if self.paused_all {
            // PgBouncer refuses `PAUSE <db>` under a global pause (one a failed step left).
            // The leader handing over still holds its lease: work may run there meanwhile.
            self.admin().await?.run("RESUME").await?;
            self.paused_all = false;
        }
        let (all_paused, rx) = watch::channel(false);
        let (dir, port) = (self.paths.socket_dir.clone(), self.proxy.listen_port);
        self.pause_task = Some(tokio::spawn(async move {
            if let Err(e) = pause_each(&dir, port, all_paused).await {
                tracing::warn!("{e}");
            }
        }));
        self.pausing = Some(rx);
        Ok(())
    }

    /// Cuts every session and holds new ones: `KILL` each database (which also holds it),
    /// then `PAUSE` the pooler so databases first used later wait too. PgBouncer confirms
    /// the pause once no server is in use; if a database appeared between the two, it is
    /// killed as well and the pause sent again. (Not pointed nowhere first: a failed server
    /// login stalls a pool for `server_login_retry`.)
    pub(super) async fn kill(&mut self) -> anyhow::Result<()> {
        self.stop_pausing().await;
        let mut killed = std::collections::HashSet::new();
        for _ in 0..KILL_ROUNDS {
            if self.paused_all {
                // PgBouncer refuses KILL under a global pause.
                let _ = self.admin().await?.run("RESUME").await;
                self.paused_all = false;
            }
            let admin = self.admin().await?;
            for (db, _) in admin.databases().await? {
                if killed.contains(&db) {
                    continue;
                }
                // A failure is tried again next round, and logged if it lasts.
                match admin.run(&format!("KILL {}", quote(&db))).await {
                    Ok(()) => drop(killed.insert(db)),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            self.paused_all = true;
            let pause = self.admin().await?.run("PAUSE");
            let confirmed = tokio::time::timeout(KILL_CONFIRM, pause).await;
            match confirmed {
                Ok(result) => return Ok(result?),
                // The answer would come on this connection later: drop it.
                Err(_) => self.admin = None,
            }
        }
        // The pause holds new work already; only servers still in use keep it unconfirmed:
        // the plan then starts over, and PgBouncer is stopped if that lasts (fail closed).
        anyhow::bail!(
            "PgBouncer still has servers in use after killing every database {KILL_ROUNDS} times"
        )
    }

    pub(super) async fn retarget(&mut self, t: &plan::Target) -> anyhow::Result<()> {
        self.point(Some(t)).await?;
        // Idle server connections to an earlier leader close now, the rest when released.
        self.admin().await?.run("RECONNECT").await?;
        Ok(())
    }

    pub(super) async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop_pausing().await;
        let all = self.paused_all;
        self.resume_databases().await?;
        if all {
            self.admin().await?.run("RESUME").await?;
        }
        self.paused_all = false;
        Ok(())
    }

    /// RESUMEs every database paused one by one (by a drain, or by KILL).
    pub(super) async fn resume_databases(&mut self) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        for (db, paused) in admin.databases().await? {
            if paused {
                admin.run(&format!("RESUME {}", quote(&db))).await?;
            }
        }
        Ok(())
    }

    /// Ends a drain's pausing task, and with it its admin connection.
    pub(super) async fn stop_pausing(&mut self) {
        self.pausing = None;
        if let Some(t) = self.pause_task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Rewrites pgbouncer.ini for `target` (`None`: nowhere) and reloads it.
    pub(super) async fn point(&mut self, target: Option<&plan::Target>) -> anyhow::Result<()> {
        self.write_ini(target)?;
        self.admin().await?.run("RELOAD").await?;
        Ok(())
    }

    pub(super) fn write_ini(&self, target: Option<&plan::Target>) -> anyhow::Result<()> {
        let settings = Settings {
            proxy: &self.proxy,
            pgb: &self.pgb,
            live: self.live,
            paths: &self.paths,
        };
        ini::write_whole(&self.paths.ini, &ini::render(&settings, target))
            .with_context(|| format!("cannot write {}", self.paths.ini.display()))
    }
}

/// Pauses every database, and keeps pausing any that appears, until aborted; tells whether
/// every database is paused (no transaction open). Only a `PAUSE` this task saw answered
/// counts: a database can show as paused while an earlier, unanswered `PAUSE` still waits.
async fn pause_each(
    dir: &Path,
    port: u16,
    all_paused: watch::Sender<bool>,
) -> Result<(), admin::AdminError> {
    let admin = Admin::connect(dir, port).await?;
    let mut confirmed = std::collections::HashSet::new();
    loop {
        let open: Vec<String> = admin
            .databases()
            .await?
            .into_iter()
            .map(|(db, _)| db)
            .filter(|db| !confirmed.contains(db))
            .collect();
        // Said before the PAUSEs, which wait for the transactions to end.
        let now = open.is_empty();
        all_paused.send_if_modified(|all| std::mem::replace(all, now) != now);
        if now {
            tokio::time::sleep(POLL).await;
        }
        // Then look again at once: the drain ends as soon as the last PAUSE returns.
        for db in open {
            match admin.run(&format!("PAUSE {}", quote(&db))).await {
                Ok(()) => drop(confirmed.insert(db)),
                Err(e) => {
                    tracing::error!("{e}; database {db:?} is not held by the drain");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}
