//! HARP's etcd plumbing, shared by harp-manager, harp-agent and harpctl: a lazily connecting
//! client whose every request is bounded in time, a session lease kept alive in the
//! background, and a mirror of the cluster's keys fed by a watch.

mod diagnose;
pub mod mirror;
pub mod secure;
pub mod session;
mod start;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions};
use harp_core::config::DcsConfig;
use harp_core::keys::Keys;
use harp_core::lease::KeyLease;
use tokio::sync::Notify;

pub use mirror::{KeyChange, MirrorEvent};
pub use session::{SessionEvent, SessionParams};
pub use start::{connect_at_start, probe_each};

#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The TLS or user settings cannot be used (a file unreadable since the config was loaded).
    #[error("{0}")]
    Setup(String),
    /// etcd refused HARP, or HARP refused etcd (a certificate, a password, TLS against
    /// plaintext): retrying does not help, the configuration must change.
    #[error("etcd at {endpoints} refused the connection: {cause}")]
    Refused { endpoints: String, cause: String },
}

impl DcsError {
    /// Whether retrying cannot help: a refusal or unusable settings.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Setup(_))
    }

    /// [`DcsError::classify`], and when the error does not say why (a closed connection),
    /// asks `endpoint` itself whether it refuses this configuration.
    pub async fn explain(self, endpoint: &str, cfg: &DcsConfig) -> Self {
        match self.classify(endpoint, cfg) {
            Self::Etcd(e) => match diagnose::diagnose(endpoint, cfg).await {
                Some(cause) => Self::Refused {
                    endpoints: endpoint.to_owned(),
                    cause,
                },
                None => Self::Etcd(e),
            },
            other => other,
        }
    }

    /// Turns an error of a request to `endpoints` into a refusal when it is one.
    pub fn classify(self, endpoints: &str, cfg: &DcsConfig) -> Self {
        match &self {
            Self::Etcd(e) => match secure::refusal(e, cfg) {
                Some(cause) => Self::Refused {
                    endpoints: endpoints.to_owned(),
                    cause,
                },
                None => self,
            },
            _ => self,
        }
    }
}

pub type Result<T> = std::result::Result<T, DcsError>;

/// How often a connection with a request or watch open pings etcd, so that one dead behind a
/// partition is dropped (and a fresh one made) within this + the request bound. etcd strikes
/// pings closer than its `--grpc-keepalive-min-time` (5 s by default) only when it sent nothing
/// since the last one, and closes the connection at the third strike; streams hear from it at
/// least every second (watch progress probes, see [`mirror`]) or every
/// `lease_refresh_interval` (keep-alives, 2 s by default), so these pings are never struck
/// three times in a row.
const ETCD_PING_INTERVAL: Duration = Duration::from_secs(2);

/// A cluster's etcd: the client (cheap to clone), its key schema and the request bound.
#[derive(Clone)]
pub struct Dcs {
    pub client: Client,
    pub keys: Keys,
    pub timeout: Duration,
    /// Signalled when etcd answers the session again, to end every retry's backoff at once.
    revived: Arc<Notify>,
}

/// Connects lazily: etcd may be down at start, and every request retries on its own. With a
/// user, it authenticates first (and fails if etcd cannot be reached): see
/// [`connect_at_start`] for the daemons.
pub async fn connect(cfg: &DcsConfig, keys: Keys) -> Result<Dcs> {
    let opts = secure::with_security(options(cfg), cfg)?;
    let client = Client::connect(&cfg.endpoints, Some(opts))
        .await
        .map_err(|e| DcsError::from(e).classify(&cfg.endpoints.join(","), cfg))?;
    Ok(Dcs {
        client,
        keys,
        timeout: cfg.request_timeout,
        revived: Arc::new(Notify::new()),
    })
}

fn options(cfg: &DcsConfig) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(cfg.request_timeout)
        // etcd closes a connection that pings with no stream open, or too often with nothing
        // to say in between ("too_many_pings"), which breaks every watch on it. Ping only
        // under streams (see ETCD_PING_INTERVAL).
        .with_keep_alive(ETCD_PING_INTERVAL, cfg.request_timeout)
        .with_keep_alive_while_idle(false)
        // A member cut off from the quorum must not serve stale reads or silent watches.
        .with_require_leader(true)
}

impl Dcs {
    /// Waits out a retry's backoff, or less if etcd answers meanwhile: after an outage every
    /// watch and write is retried the moment the session gets through, not up to a backoff
    /// later.
    pub async fn pause(&self, backoff: &mut Backoff) {
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = self.revived.notified() => {}
        }
    }

    /// etcd answered the session: see [`Dcs::pause`].
    pub fn answered(&self) {
        self.revived.notify_waiters();
    }

    /// Runs one etcd request, failing with [`DcsError::Timeout`] past `request_timeout`.
    pub async fn bounded<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(DcsError::Timeout(self.timeout)),
        }
    }

    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        let mut c = self.client.clone();
        let secs = ttl.as_secs().max(1) as i64;
        Ok(self.bounded(c.lease_grant(secs, None)).await?.id())
    }

    pub async fn revoke(&self, lease: i64) -> Result<()> {
        let mut c = self.client.clone();
        self.bounded(c.lease_revoke(lease)).await.map(|_| ())
    }

    /// The lease `key` lives on, as etcd reports it now; `None` when the key is absent or its
    /// lease already expired. A key written without a lease reports id 0.
    pub async fn key_lease(&self, key: &str) -> Result<Option<KeyLease>> {
        let mut c = self.client.clone();
        let resp = self.bounded(c.get(key, None)).await?;
        let Some(id) = resp.kvs().first().map(|kv| kv.lease()) else {
            return Ok(None);
        };
        if id == 0 {
            return Ok(Some(KeyLease {
                id,
                granted_secs: 0,
                remaining_secs: 0,
            }));
        }
        let ttl = match self.bounded(c.lease_time_to_live(id, None)).await {
            Ok(t) => t,
            // Expired between the two reads.
            Err(DcsError::Etcd(e)) if e.to_string().contains("not found") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((ttl.ttl() >= 0).then(|| KeyLease {
            id,
            granted_secs: ttl.granted_ttl(),
            remaining_secs: ttl.ttl(),
        }))
    }

    /// Writes `value` at `key` on `lease` (it vanishes with the lease).
    pub async fn put_on_lease(&self, key: String, value: String, lease: i64) -> Result<()> {
        let mut c = self.client.clone();
        let put = c.put(key, value, Some(PutOptions::new().with_lease(lease)));
        self.bounded(put).await.map(|_| ())
    }
}

/// Exponential backoff for etcd retries: 100 ms doubling to 2 s.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Self::MIN)
    }
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }
    pub fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

/// Keeps the newest value written at its key on the session lease: a newer value replaces
/// one still waiting, and failed writes retry with backoff. Used for node and proxy status.
pub async fn publisher(
    dcs: Dcs,
    mut rx: tokio::sync::watch::Receiver<Option<(String, String, i64)>>,
) {
    let mut backoff = Backoff::default();
    while rx.changed().await.is_ok() {
        loop {
            let Some((key, value, lease)) = rx.borrow_and_update().clone() else {
                break;
            };
            match dcs.put_on_lease(key, value, lease).await {
                Ok(()) => {
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    tracing::debug!("status write failed: {e}");
                    dcs.pause(&mut backoff).await;
                }
            }
        }
    }
}
