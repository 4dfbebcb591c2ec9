//! The agent's decision loop: etcd session and leader-key events go into the routing state
//! machine; its decisions go to the proxy (through the route channel) and to etcd (status).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harp_core::config::{Config, ProxyConfig};
use harp_core::directives::{ProxyLive, ProxyOverrides};
use harp_core::keys::KeyKind;
use harp_core::records::{LeaderRecord, ManagedRecord, ProxyStatus};
use harp_core::routing::{PeerRoute, Route, RouteEvent, Router, Routing, Watch};
use harp_dcs::{Dcs, KeyChange, MirrorEvent, SessionEvent};
use tokio::sync::{mpsc, watch};

use crate::proxy::Shared;
use crate::steering::Steering;

mod status;

/// How often session counts are refreshed in etcd when they change.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

pub enum Input {
    Session(SessionEvent),
    /// An event of one of the mirrors, each of which breaks and syncs on its own.
    Mirror(Mirror, MirrorEvent),
    /// The mirror of the proxies' statuses (apart: its breaks say nothing of the leader's).
    Peers(MirrorEvent),
    /// SIGHUP: the live settings of the config file read again.
    Reload(ProxyLive),
    Shutdown,
}

/// Which mirror an [`Input::Mirror`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    /// A watch the route stands on: while it is out of sync, no new route is taken.
    Route(Watch),
    /// `config/proxies/`: live settings, which never change a route.
    Config,
}

impl From<SessionEvent> for Input {
    fn from(e: SessionEvent) -> Self {
        Input::Session(e)
    }
}

/// The loop's channels: what it reads, and where its decisions go.
pub struct Channels {
    pub rx: mpsc::Receiver<Input>,
    /// What the proxy follows.
    pub route_tx: watch::Sender<Routing>,
    /// `proxies/<name>/status` for the publisher.
    pub publish: watch::Sender<Option<(String, String, i64)>>,
}

pub struct Runner {
    dcs: Dcs,
    location: String,
    router: Router,
    /// `leader_lease_duration`: how long we trust etcd, published for the peers' waits.
    lease_ttl: Duration,
    shared: Arc<Shared>,
    route_tx: watch::Sender<Routing>,
    publish: watch::Sender<Option<(String, String, i64)>>,
    rx: mpsc::Receiver<Input>,
    steering: Option<Steering>,
    /// Until then a map adopted from an earlier run is left as it is (routing continues across
    /// a restart); if the router has decided nothing by then, the map is cleared (fail closed).
    adopt_grace: Option<Instant>,
    lease: Option<i64>,
    /// The leader key as the mirror shows it.
    observed: Option<Route>,
    /// The token of that leadership when its record asks proxies to drain it (switchover).
    handover: Option<i64>,
    /// `managed` (cluster) and `unmanaged/proxies/<me>` as last seen.
    cluster_managed: bool,
    proxy_unmanaged: bool,
    /// Live settings: the file's, under `config/proxies/global`, under `config/proxies/<me>`.
    base: ProxyLive,
    global: ProxyOverrides,
    own: ProxyOverrides,
    last_status: Option<ProxyStatus>,
    /// The other managed proxies of our location: the leaderships they may have sessions under.
    peers: BTreeMap<String, PeerRoute>,
    /// What our PgBouncer serves (see [`Shared::pooled`]).
    pooled: watch::Receiver<Option<i64>>,
}

impl Runner {
    pub fn new(
        dcs: Dcs,
        config: &Config,
        proxy: &ProxyConfig,
        shared: Arc<Shared>,
        steering: Option<Steering>,
        Channels {
            rx,
            route_tx,
            publish,
        }: Channels,
    ) -> Self {
        let pooled = shared.pooled.subscribe();
        let ttl = proxy.leader_lease_duration;
        let adopt_grace = steering
            .as_ref()
            .map(|_| Instant::now() + ttl - harp_core::election::safety_margin(ttl));
        let mut router = Router::new(ttl);
        // Not read yet counts as broken: no route before every watch it stands on is read.
        for w in Watch::ALL {
            router.step(RouteEvent::WatchLost(w), Instant::now());
        }
        Self {
            steering,
            adopt_grace,
            dcs,
            location: config.scope().to_owned(),
            router,
            lease_ttl: ttl,
            shared,
            route_tx,
            publish,
            rx,
            lease: None,
            observed: None,
            handover: None,
            cluster_managed: true,
            proxy_unmanaged: false,
            base: ProxyLive::of(proxy),
            global: ProxyOverrides::new(),
            own: ProxyOverrides::new(),
            last_status: None,
            peers: BTreeMap::new(),
            pooled,
        }
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut status_tick = tokio::time::interval(STATUS_PERIOD);
        let mut watchdog = harp_dcs::watchdog::Watchdog::from_env();
        watchdog.ready();
        loop {
            let wake = self.router.next_wake();
            let events = tokio::select! {
                input = self.rx.recv() => match input {
                    Some(Input::Shutdown) | None => break,
                    Some(i) => self.translate(i),
                },
                _ = sleep_until(wake) => vec![RouteEvent::Tick],
                _ = sleep_until(self.adopt_grace) => {
                    self.adopt_grace = None;
                    let routing = self.router.routing();
                    self.steer(move |st| st.reconcile(routing.route.as_ref(), routing.live))
                        .await;
                    self.publish_status(false); // no longer names the adopted entry
                    vec![]
                }
                // Sent from this loop: systemd kills an agent whose routing decisions hang
                // (and its PgBouncer with it).
                _ = watchdog.due() => {
                    watchdog.kick();
                    vec![]
                }
                _ = status_tick.tick() => {
                    self.publish_status(false);
                    if self.steering.as_ref().is_some_and(Steering::stale_left) {
                        self.steer(Steering::cut_stale).await;
                    }
                    vec![]
                }
                // PgBouncer cut (or took up) a leadership: the other agents wait for that.
                _ = self.pooled.changed() => {
                    self.publish_status(false);
                    vec![]
                }
                // A drain's progress goes to etcd as sessions end: the leader waits for it.
                _ = self.shared.drain.changed.notified(), if self.router.draining().is_some() => {
                    self.publish_status(false);
                    vec![]
                }
            };
            let mut changed = false;
            for ev in events {
                for action in self.router.step(ev, Instant::now()) {
                    tracing::info!("{action}");
                    changed = true;
                }
            }
            // Every keep-alive extends what the data path may do without us; a relay or a
            // kernel entry acts on nothing past it.
            let authority = self.router.authority();
            self.shared.trust.set(authority);
            if let Some(st) = &mut self.steering {
                st.extend(authority);
            }
            if changed {
                let routing = self.router.routing();
                self.route_tx.send_if_modified(|r| {
                    let new = *r != routing;
                    *r = routing.clone();
                    new
                });
                if self.steering.is_some() {
                    self.steer(move |st| st.reconcile(routing.route.as_ref(), routing.live))
                        .await;
                    self.adopt_grace = None;
                }
                self.publish_status(true);
            }
        }
        tracing::info!("shutting down");
        if let Some(lease) = self.lease.take()
            && let Err(e) = self.dcs.revoke(lease).await
        {
            tracing::warn!("could not revoke the etcd lease ({e}); it will expire");
        }
        Ok(())
    }

    /// Runs `f` on the kernel steering off the runtime: map walks, name lookups and netlink
    /// `SOCK_DESTROY` block, and this runtime relays client bytes and keeps etcd's session.
    /// Awaited, so the status published after it says what the kernel really does.
    async fn steer(&mut self, f: impl FnOnce(&mut Steering) + Send + 'static) {
        let Some(mut st) = self.steering.take() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            f(&mut st);
            st
        });
        match done.await {
            Ok(st) => self.steering = Some(st),
            // Blocking tasks are never cancelled: only a panic gets here; it stays one.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn translate(&mut self, input: Input) -> Vec<RouteEvent> {
        match input {
            Input::Session(SessionEvent::Up { lease, .. }) => {
                self.lease = Some(lease);
                self.publish_status(true);
                vec![]
            }
            Input::Session(SessionEvent::Lost) => {
                self.lease = None;
                vec![RouteEvent::SessionLost]
            }
            Input::Session(SessionEvent::KeepAliveOk { sent }) => {
                vec![RouteEvent::Contact { sent }]
            }
            Input::Mirror(Mirror::Route(w), MirrorEvent::Interrupted) => {
                vec![RouteEvent::WatchLost(w)]
            }
            Input::Mirror(Mirror::Config, MirrorEvent::Interrupted) => vec![],
            Input::Mirror(m, MirrorEvent::Synced(changes)) => {
                let mut out = self.observe(changes);
                if let Mirror::Route(w) = m {
                    out.push(RouteEvent::WatchSynced(w));
                }
                out
            }
            Input::Mirror(_, MirrorEvent::Changed(changes)) => self.observe(changes),
            Input::Peers(MirrorEvent::Interrupted) => vec![RouteEvent::Peers(None)],
            Input::Peers(MirrorEvent::Synced(changes) | MirrorEvent::Changed(changes)) => {
                for ch in changes {
                    self.apply_peer(ch);
                }
                // The mirror reads (`Synced`) before it watches (`Changed`): the view is whole.
                let peers = self.peers.values().cloned().collect();
                vec![RouteEvent::Peers(Some(peers))]
            }
            Input::Reload(base) => {
                self.base = base;
                self.apply_live("reload (SIGHUP): live settings applied");
                vec![]
            }
            Input::Shutdown => vec![],
        }
    }

    fn managed(&self) -> bool {
        self.cluster_managed && !self.proxy_unmanaged
    }

    /// Applies key changes; the route events they make.
    fn observe(&mut self, changes: Vec<KeyChange>) -> Vec<RouteEvent> {
        let managed = self.managed();
        for ch in changes {
            self.apply(ch);
        }
        // The leader first, its drain request after: a leader gone with its request never
        // routes to it again in between.
        let seen = [
            RouteEvent::LeaderObserved(self.observed.clone()),
            RouteEvent::Switchover(self.handover),
        ];
        match (managed, self.managed()) {
            // Freeze before the new observation, thaw after it: either way the route
            // changes only while managed.
            (true, false) => [vec![RouteEvent::Managed(false)], seen.to_vec()].concat(),
            (false, true) => [seen.to_vec(), vec![RouteEvent::Managed(true)]].concat(),
            _ => seen.to_vec(),
        }
    }

    /// The file's live settings under etcd's directives (global, then this proxy's).
    fn apply_live(&self, why: &str) {
        let live = self.own.merge(self.global.merge(self.base));
        if live != self.shared.live() {
            tracing::info!(?live, "{why}");
            self.shared.set_live(live);
        }
    }

    fn apply(&mut self, ch: KeyChange) {
        match self.dcs.keys.parse(&ch.key) {
            Some(KeyKind::Leader(loc)) if loc == self.location => {}
            Some(KeyKind::Managed) => {
                // Absent or unreadable: managed (HARP's default).
                self.cluster_managed = ch
                    .value
                    .and_then(|(v, _)| ManagedRecord::decode(&v).ok())
                    .is_none_or(|r| r.managed);
                return;
            }
            Some(KeyKind::ProxyUnmanaged(p)) if p == self.shared.name => {
                self.proxy_unmanaged = ch.value.is_some();
                return;
            }
            Some(KeyKind::ProxyConfig(p)) if p == "global" || p == self.shared.name => {
                let o = match ch.value.map(|(v, _)| ProxyOverrides::decode(&v)) {
                    None => ProxyOverrides::new(),
                    Some(Ok(o)) => o,
                    Some(Err(e)) => {
                        tracing::error!("ignoring proxy directives in etcd: {e}");
                        ProxyOverrides::new()
                    }
                };
                match p {
                    "global" => self.global = o,
                    _ => self.own = o,
                }
                self.apply_live("proxy directives applied");
                return;
            }
            _ => return,
        }
        self.handover = None;
        self.observed = ch
            .value
            .and_then(|(v, token)| match LeaderRecord::decode(&v) {
                // About to release (fenced): gone for us already, so its sessions are cut; still
                // being promoted (streaming): not writable yet, so clients are held.
                Ok(r) if !r.routable() => None,
                Ok(r) => {
                    self.handover = r.handover_to.map(|_| token);
                    Some(Route {
                        node: r.node,
                        address: r.address,
                        port: r.port,
                        token,
                    })
                }
                Err(e) => {
                    // Unreadable means we cannot route safely: hold clients instead.
                    tracing::error!("cannot read the leader record: {e}");
                    None
                }
            });
    }

    /// Records what another proxy of our location says it may have sessions under.
    fn apply_peer(&mut self, ch: KeyChange) {
        let Some(KeyKind::ProxyStatus(p)) = self.dcs.keys.parse(&ch.key) else {
            return;
        };
        if p == self.shared.name {
            return;
        }
        let peer = ch.value.and_then(|(v, _)| match ProxyStatus::decode(&v) {
            Ok(s) => PeerRoute::of(&s, &self.location),
            // It may be a newer agent still routing the old leader: it counts as doing so
            // until its key goes (its lease ends).
            Err(e) => {
                if self.peers.get(p) != Some(&PeerRoute::unreadable()) {
                    tracing::warn!(
                        "the status of proxy {p} cannot be read ({e}): new leaders wait for \
                         it as for a proxy routing the former one"
                    );
                }
                Some(PeerRoute::unreadable())
            }
        });
        match peer {
            Some(r) => self.peers.insert(p.to_owned(), r),
            None => self.peers.remove(p),
        };
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
