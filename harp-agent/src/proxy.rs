//! The userspace L4 proxy: accept, hold while there is no leader, connect to the leader and
//! relay until either side closes or the route changes. Client bytes are never read before
//! relaying, so a client held or re-routed mid-connect sees nothing but a delay; only a client
//! that must be refused gets a Postgres error it can show.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harp_core::config::ProxyConfig;
use harp_core::directives::ProxyLive;
use harp_core::pgwire::{
    ADMIN_SHUTDOWN, CANNOT_CONNECT_NOW, TERMINATE, TOO_MANY_CONNECTIONS, error_response,
};
use harp_core::routing::Routing;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

mod connect;

pub use connect::connect;
use connect::{Count, connect_leader};

use crate::authority::Trust;
use crate::refuse::refuse;
use crate::relay::{DrainCount, End, Leadership};
use crate::steering::SharedKernel;

/// How long a refused client may take to send its startup packet.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy and the health endpoints share with the decision loop.
pub struct Shared {
    pub name: String,
    pub location: String,
    pub route: watch::Receiver<Routing>,
    /// The decision loop's authority: relays and connects check it before acting.
    pub trust: Trust,
    pub sessions: AtomicU64,
    /// The sessions a switchover's drain waits for (followed by the relay, not yet parked)
    /// and a signal when that count drops.
    pub drain: DrainCount,
    pub held: AtomicU64,
    /// Kernel steering's handle, when it is on.
    pub kernel: Option<SharedKernel>,
    /// The service address kernel steering's entry is keyed by (spliced sessions are checked
    /// against it).
    service: Option<SocketAddrV4>,
    /// Splice sessions in the kernel (`proxy.splice`, with kernel steering on).
    splice: bool,
    /// `proxy.type: pgbouncer`: PgBouncer serves the clients.
    pgbouncer: bool,
    /// With PgBouncer: the leadership its server connections may still serve (published, so
    /// the other agents route a new leader only once PgBouncer has cut the old one).
    pub pooled: watch::Sender<Option<i64>>,
    limit: Arc<Semaphore>,
    /// Settings `harpctl set proxy` may change while the agent runs.
    live: Mutex<ProxyLive>,
    /// Permits still to take out of circulation after max_client_conn was lowered while
    /// sessions held them: each ending session pays one back instead of returning it.
    permit_debt: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn live(&self) -> ProxyLive {
        *self.live.lock().expect("live settings")
    }

    /// Applies new live settings; the client limit grows at once and shrinks as sessions end.
    pub fn set_live(&self, new: ProxyLive) {
        let mut live = self.live.lock().expect("live settings");
        let (old, new_max) = (live.max_client_conn as usize, new.max_client_conn as usize);
        if new_max > old {
            self.limit.add_permits(new_max - old);
        } else if new_max < old {
            // Free permits go now; permits held by sessions go as those sessions end.
            let forgotten = self.limit.forget_permits(old - new_max);
            self.permit_debt
                .fetch_add(old - new_max - forgotten, Ordering::Relaxed);
        }
        *live = new;
    }

    /// Ends a session's hold on a client slot, paying off any debt from a lowered limit.
    fn release(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        let paid = self
            .permit_debt
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
        if paid.is_ok() {
            permit.forget();
        }
    }

    /// `ebpf` when kernel steering (and splicing) is on, `pgbouncer` when PgBouncer serves
    /// the clients, else `userspace`.
    pub fn mode(&self) -> &'static str {
        if self.pgbouncer {
            "pgbouncer"
        } else if self.kernel.is_some() {
            "ebpf"
        } else {
            "userspace"
        }
    }

    pub fn new(
        p: &ProxyConfig,
        location: &str,
        route: watch::Receiver<Routing>,
        kernel: Option<(SharedKernel, SocketAddrV4)>,
    ) -> Self {
        let (kernel, service) = kernel.unzip();
        Self {
            name: p.name.clone(),
            location: location.to_owned(),
            route,
            trust: Trust::default(),
            sessions: AtomicU64::new(0),
            drain: DrainCount::default(),
            held: AtomicU64::new(0),
            splice: p.splice && kernel.is_some(),
            pgbouncer: p.pgbouncer.is_some(),
            pooled: watch::Sender::new(None),
            kernel,
            service,
            limit: Arc::new(Semaphore::new(p.max_client_conn as usize)),
            permit_debt: std::sync::atomic::AtomicUsize::new(0),
            live: Mutex::new(ProxyLive {
                max_client_conn: p.max_client_conn,
                pause_timeout: p.pause_timeout,
                timeout: p.timeout,
                keepalive: p.keepalive,
            }),
        }
    }
}

pub async fn bind(p: &ProxyConfig) -> anyhow::Result<TcpListener> {
    let addr = format!("{}:{}", p.listen_address, p.listen_port);
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (set proxy.listen_address/listen_port)")
    })?;
    tracing::info!("clients connect to {addr}");
    Ok(listener)
}

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(serve(client, peer, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(mut client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let live = shared.live();
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        let msg = format!(
            "too many clients: max_client_conn ({}) reached on proxy {}",
            live.max_client_conn, shared.name
        );
        let hint = "retry later, or raise proxy.max_client_conn";
        let _ = refuse(
            &mut client,
            TOO_MANY_CONNECTIONS,
            &msg,
            Some(hint),
            REFUSE_READ_TIMEOUT,
        )
        .await;
        return;
    };
    tune(&client, live.keepalive);
    let (server, token) = match connect_leader(&shared).await {
        Ok(pair) => pair,
        Err(msg) => {
            tracing::info!(%peer, "refused: {msg}");
            let hint = "the location has no reachable lead master; check harp-manager and etcd";
            let _ = refuse(
                &mut client,
                CANNOT_CONNECT_NOW,
                &msg,
                Some(hint),
                REFUSE_READ_TIMEOUT,
            )
            .await;
            return;
        }
    };
    tune(&server, live.keepalive);
    let session = Count::up(&shared.sessions);
    let mut route = shared.route.clone();
    // Ends the session as soon as its leadership is no longer live.
    let cut = async move {
        let _ = route.wait_for(|r| r.cuts(token)).await;
    };
    // With the kernel programs loaded, bytes move socket to socket in the kernel; the relay
    // then only sees the closes (and any bytes the kernel passed up).
    let kernel = shared.kernel.as_ref().filter(|_| shared.splice);
    let spliced = kernel.zip(shared.service).is_some_and(|(k, service)| {
        let paired = k
            .lock()
            .expect("kernel lock")
            .pair(&client, &server, service, token as u64);
        if let Err(e) = &paired {
            tracing::debug!("splicing unavailable for {peer}: {e}");
        }
        paired.is_ok()
    });
    // A switchover drains it: parked once idle between transactions, a new request ends it.
    let leadership = Leadership {
        routing: shared.route.clone(),
        token,
        trust: &shared.trust,
    };
    let end = crate::relay::relay(&client, &server, cut, leadership, &shared.drain, spliced);
    let end = end.await;
    // Decided before anything more is written to the server.
    let abandon = abandons_bytes(end, &server);
    // As Postgres does when a backend is terminated, an idle session's client reads why on
    // its next call. A session with a request in flight gets no message: whether the request
    // ran on the old leader is unknown, and an error would claim it did not.
    let loc = &shared.location;
    let why = match end {
        End::Refused => Some(format!(
            "planned switchover of the lead master of {loc}; the new request was not run"
        )),
        End::Cut { idle: true } => Some(format!("the lead master of {loc} changed")),
        End::Cut { idle: false } | End::Closed | End::Lapsed => None,
    };
    if let Some(why) = why {
        let msg = format!("terminating connection between transactions: {why}");
        let hint = "reconnect: new sessions go to the current lead master";
        let _ = client.try_write(&error_response("FATAL", ADMIN_SHUTDOWN, &msg, Some(hint)));
        // The server side ends cleanly too (no "unexpected EOF" in its log).
        let _ = server.try_write(&TERMINATE);
        tracing::debug!(%peer, "idle session closed: {why}");
    }
    if spliced && let Some(k) = kernel {
        let _ = k.lock().expect("kernel lock").unpair(&client, &server);
    }
    if abandon {
        // Closing gracefully would leave the kernel retransmitting the queued bytes — past a
        // partition's end, to a leader that lost its lease — and the request would run there.
        // A reset drops them.
        let _ = SockRef::from(&server).set_linger(Some(Duration::ZERO));
    }
    drop(session);
    shared.release(permit);
    shared.drain.changed.notify_one();
}

/// Whether the server side must be reset rather than closed: cut with a request in flight, or
/// ended with data for the server (or its close) still unacknowledged. A refused request was
/// never relayed.
fn abandons_bytes(end: End, server: &TcpStream) -> bool {
    match end {
        End::Cut { idle } => !idle,
        // Earlier requests may still be queued for a leadership that no longer stands.
        End::Lapsed => true,
        End::Refused => false,
        End::Closed => unacked_bytes(server) > 0,
    }
}

/// Bytes written to `s` that its peer has not acknowledged (`SIOCOUTQ`).
#[allow(unsafe_code)]
fn unacked_bytes(s: &TcpStream) -> i32 {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int to the pointer, which outlives the call.
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::TIOCOUTQ, &mut n) };
    if rc == 0 { n } else { 0 }
}

fn tune(s: &TcpStream, keepalive: Duration) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive);
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}
