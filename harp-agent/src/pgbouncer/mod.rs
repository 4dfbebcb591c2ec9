//! `proxy.type: pgbouncer`: the agent runs a PgBouncer on the proxy's port and steers it
//! through its admin console instead of relaying itself. Clients get PgBouncer's pooling;
//! the agent keeps the routing rules (one leader, held while there is none, old sessions cut,
//! switchovers drained with `PAUSE`).

mod admin;
mod commands;
pub mod guard;
mod ini;
mod plan;
mod process;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use harp_core::config::{PgBouncerConfig, ProxyConfig};
use harp_core::directives::ProxyLive;
use harp_core::routing::Routing;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::proxy::Shared;
use admin::Admin;
use ini::{Paths, Settings};
use plan::{Plan, Step};
pub use process::binary;
use process::{die_with_parent, exited, os_user, socket_dir};

/// How often client counts are read (and how soon a failed command is tried again).
const POLL: Duration = Duration::from_millis(100);
/// How long PgBouncer may fail to follow the route before the agent stops it, at most: other
/// agents route a new leader at the latest one lease after it appears, so the bound is also
/// half the lease (see [`fail_closed_after`]).
const FAIL_CLOSED_AFTER: Duration = Duration::from_secs(3);

/// [`FAIL_CLOSED_AFTER`], or half the lease when that is shorter: PgBouncer is stopped before
/// any other agent gives up waiting for it.
fn fail_closed_after(lease_ttl: Duration) -> Duration {
    FAIL_CLOSED_AFTER.min(lease_ttl / 2)
}
/// How long PgBouncer may take to open its admin socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long PgBouncer may take to confirm a `PAUSE` after every database was killed, and
/// how many times databases that appeared meanwhile are killed before giving up on it.
const KILL_CONFIRM: Duration = Duration::from_millis(200);
const KILL_ROUNDS: usize = 10;

pub struct PgBouncer {
    proxy: ProxyConfig,
    pgb: PgBouncerConfig,
    paths: Paths,
    child: Child,
    admin: Option<Admin>,
    plan: Plan,
    /// The settings pgbouncer.ini was last written with.
    live: ProxyLive,
    /// Whether the whole pooler is paused (at start and after a kill), not database by
    /// database.
    paused_all: bool,
    /// While a drain pauses databases: whether every one is paused (all transactions done).
    pausing: Option<watch::Receiver<bool>>,
    pause_task: Option<tokio::task::JoinHandle<()>>,
    /// The leadership PgBouncer was last pointed at (or was being pointed at).
    pointed_at: Option<i64>,
    /// Stops PgBouncer if the agent's authority lapses while it may serve a leadership.
    guard: guard::Guard,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(t) = self.pause_task.take() {
            t.abort();
        }
        // PgBouncer itself goes with `child` (killed on drop); its socket directory here.
        let _ = std::fs::remove_dir_all(&self.paths.socket_dir);
    }
}

impl PgBouncer {
    /// Writes PgBouncer's files beside config.yml, starts it and pauses it: clients wait
    /// until the first leader is known.
    pub async fn start(
        bin: &Path,
        config_dir: &Path,
        proxy: &ProxyConfig,
        pgb: &PgBouncerConfig,
        live: ProxyLive,
    ) -> anyhow::Result<Self> {
        let run_as = match nix::unistd::geteuid().is_root() {
            true => Some(os_user(&pgb.user)?),
            false => None,
        };
        // Absolute: PgBouncer and the admin client must find the same socket.
        let config_dir = std::path::absolute(config_dir)?;
        let paths = Paths::new(&config_dir, socket_dir(&config_dir, run_as.as_ref())?);
        if pgb.auth_file.is_none() && !paths.userlist.exists() {
            ini::write_whole(&paths.userlist, "")
                .with_context(|| format!("cannot write {}", paths.userlist.display()))?;
        }
        ini::write_whole(&paths.hba, &ini::render_hba(pgb))
            .with_context(|| format!("cannot write {}", paths.hba.display()))?;
        let settings = Settings {
            proxy,
            pgb,
            live,
            paths: &paths,
        };
        ini::write_whole(&paths.ini, &ini::render(&settings, None))
            .with_context(|| format!("cannot write {}", paths.ini.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg(&paths.ini)
            .stdin(Stdio::null())
            .env_remove("NOTIFY_SOCKET")
            .kill_on_drop(true);
        if let Some(user) = &run_as {
            // PgBouncer refuses root. Switching before exec (not with its `user` setting)
            // keeps the parent-death signal, which a credential change would clear.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        tracing::info!(
            pid = child.id(),
            ini = %paths.ini.display(),
            "PgBouncer started; clients wait for a leader"
        );
        let guard = guard::Guard::start(
            child.id().context("PgBouncer exited at once")?,
            proxy.leader_lease_duration,
        )
        .context("cannot start PgBouncer's guard")?;
        let mut me = Self {
            proxy: proxy.clone(),
            pgb: pgb.clone(),
            paths,
            child,
            admin: None,
            plan: Plan::new(),
            live,
            paused_all: true,
            pausing: None,
            pause_task: None,
            pointed_at: None,
            guard,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me.child.try_wait()? {
                anyhow::bail!("{}", exited(status));
            }
            match Admin::connect(&me.paths.socket_dir, proxy.listen_port).await {
                Ok(a) => {
                    me.admin = Some(a);
                    break;
                }
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(e).context("PgBouncer did not open its admin console");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        // Nothing is connected yet: the pause takes effect at once.
        me.admin()
            .await?
            .run("PAUSE")
            .await
            .context("cannot pause PgBouncer")?;
        Ok(me)
    }

    /// Follows the route until PgBouncer exits (an error: the agent stops with it).
    pub async fn run(
        mut self,
        mut route: watch::Receiver<Routing>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_since = None;
        loop {
            let routing = route.borrow_and_update().clone();
            let converged = self.converge(&routing).await;
            self.report_pooled(&shared);
            let serving = shared.pooled.borrow().is_some();
            if let Err(e) = self.guard.feed(shared.trust.get(), serving).await {
                // Without its guard PgBouncer could outlive a frozen agent's authority.
                anyhow::bail!("PgBouncer's guard is gone ({e}); stopping PgBouncer");
            }
            match converged {
                Ok(()) => failing_since = None,
                Err(e) => {
                    tracing::warn!("{e:#}; trying again");
                    self.admin = None;
                    // PgBouncer that cannot be told to cut would go on serving a leader the
                    // agent no longer vouches for: stop it (and the agent) instead.
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let bound = fail_closed_after(self.proxy.leader_lease_duration);
                    if since.elapsed() > bound {
                        anyhow::bail!(
                            "PgBouncer has not followed the route for {bound:?} ({e:#}); \
                             stopping it so no client reaches a replaced leader"
                        );
                    }
                }
            }
            // A drain counts from at least one until PgBouncer confirms (see count_drain).
            let open = matches!(self.plan.hold, plan::Hold::Open | plan::Hold::Pausing);
            if open && shared.drain.waiting.load(Ordering::Relaxed) == 0 {
                shared.drain.waiting.store(1, Ordering::Relaxed);
            }
            tokio::select! {
                // A new route and a drain's news first: refreshing can wait.
                biased;
                changed = route.changed() => if changed.is_err() { return Ok(()) },
                status = self.child.wait() => anyhow::bail!("{}", exited(status?)),
                all = wait_pause(&mut self.pausing) => match all {
                    true => {
                        self.plan.paused();
                        self.count_drain(&shared, 0);
                        tracing::info!("PgBouncer paused: no transaction is open on the leader");
                    }
                    false => self.plan.busy(),
                },
                _ = tick.tick() => {
                    if let Err(e) = self.refresh(&shared).await {
                        tracing::warn!("{e:#}");
                        self.admin = None;
                    }
                }
            }
        }
    }

    /// Tells the agent which leadership PgBouncer's server connections may serve now. After a
    /// step failed half-way nothing is known: the last leadership PgBouncer was pointed at
    /// (or about to be) stands until a step succeeds.
    fn report_pooled(&self, shared: &Shared) {
        let pooled = match (self.plan.hold, &self.plan.target) {
            (plan::Hold::Open | plan::Hold::Pausing, Some(t)) => Some(t.token),
            (plan::Hold::Open | plan::Hold::Pausing, None) => self.pointed_at,
            (plan::Hold::Paused | plan::Hold::Killed, _) => None,
        };
        shared
            .pooled
            .send_if_modified(|p| std::mem::replace(p, pooled) != pooled);
    }

    async fn admin(&mut self) -> anyhow::Result<&Admin> {
        if self.admin.is_none() {
            let a = Admin::connect(&self.paths.socket_dir, self.proxy.listen_port).await?;
            self.admin = Some(a);
        }
        Ok(self.admin.as_ref().expect("just connected"))
    }

    /// Carries out the plan's steps until PgBouncer matches the route. A step that fails
    /// half-way leaves PgBouncer in an unknown state: the plan then starts from the worst.
    async fn converge(&mut self, routing: &Routing) -> anyhow::Result<()> {
        while let Some(step) = self.plan.next(routing) {
            if self.plan.hold == plan::Hold::Paused && matches!(step, Step::Retarget(_)) {
                // A database first used after the pause was confirmed may hold a server on
                // the old leader: then the change must cut.
                if self.admin().await?.pools().await?.servers_active > 0 {
                    self.plan.busy();
                    continue;
                }
            }
            tracing::info!(?step, "PgBouncer");
            if let Step::Retarget(t) = &step {
                self.pointed_at = Some(t.token);
            }
            let result = match &step {
                Step::Pause => self.pause().await,
                Step::Kill => self.kill().await,
                Step::Retarget(t) => self.retarget(t).await,
                Step::Resume => self.resume().await,
            };
            if let Err(e) = result {
                self.plan = Plan::unsure();
                return Err(e);
            }
            self.plan.done(step);
        }
        Ok(())
    }

    /// Publishes PgBouncer's client counts, applies changed live settings, and undoes a
    /// database pause that raced a resume.
    async fn refresh(&mut self, shared: &Shared) -> anyhow::Result<()> {
        let draining = matches!(self.plan.hold, plan::Hold::Pausing | plan::Hold::Paused);
        if draining && self.pause_task.as_ref().is_none_or(|t| t.is_finished()) {
            tracing::warn!("PgBouncer's drain lost its admin connection; pausing again");
            self.pause().await?;
        }
        let live = shared.live();
        if live != self.live {
            let target = self.plan.target.clone().filter(|_| self.plan.pointed);
            let old = std::mem::replace(&mut self.live, live);
            if let Err(e) = self.point(target.as_ref()).await {
                self.live = old;
                return Err(e);
            }
            tracing::info!(?live, "pgbouncer.ini rewritten for new proxy directives");
        }
        // Only while PgBouncer is known to point at the leader (never after a failed step).
        if self.plan.hold == plan::Hold::Open && self.plan.pointed {
            self.resume_databases().await?;
        }
        let pools = self.admin().await?.pools().await?;
        shared.sessions.store(pools.clients, Ordering::Relaxed);
        shared.held.store(pools.waiting, Ordering::Relaxed);
        self.count_drain(shared, pools.servers_active);
        Ok(())
    }

    /// What a drain waits for: the server connections in use (open transactions in
    /// transaction pooling, whole sessions in session pooling) — at least one until PgBouncer
    /// confirms its pause, since the agent reports this count the moment a drain starts,
    /// before the pause is even sent.
    fn count_drain(&self, shared: &Shared, servers_active: u64) {
        let left = match self.plan.hold {
            plan::Hold::Open | plan::Hold::Pausing => servers_active.max(1),
            plan::Hold::Paused | plan::Hold::Killed => 0,
        };
        if shared.drain.waiting.swap(left, Ordering::Relaxed) > left {
            shared.drain.changed.notify_one();
        }
    }
}

/// The next word from a drain's pausing: every database paused, or not.
async fn wait_pause(pausing: &mut Option<watch::Receiver<bool>>) -> bool {
    match pausing {
        Some(rx) => match rx.changed().await {
            Ok(()) => *rx.borrow_and_update(),
            // The task ended (it failed): no more word from it.
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
