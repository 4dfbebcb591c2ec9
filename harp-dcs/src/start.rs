//! First contact with etcd, for harp-manager and harp-agent: a certificate or password etcd
//! refuses (or a server HARP does not trust, or TLS against plaintext) stops the program at
//! start with the endpoint and the cause, instead of retrying forever.

use etcd_client::GetOptions;
use harp_core::config::DcsConfig;
use harp_core::keys::Keys;
use tokio::task::JoinSet;

use crate::{Backoff, Dcs, DcsError, Result, connect};

/// What the endpoints said to a first request.
enum Contact {
    Answered,
    Refused(DcsError),
    /// No endpoint answered, none refused: `endpoint: why` each.
    Unreachable(String),
}

/// Connects after one request to every endpoint at once: the first that answers lets the
/// program start; when none answers and one refused, that refusal is returned. When none
/// answers at all, etcd is down: without a user the connection is made lazily, as every
/// request retries on its own; with one, HARP must authenticate before any request, so this
/// waits (a warning per attempt) until an endpoint answers or refuses.
pub async fn connect_at_start(cfg: &DcsConfig, keys: Keys) -> Result<Dcs> {
    if let Some(why) = cfg.exposure() {
        tracing::warn!("{why}");
    }
    let mut backoff = Backoff::default();
    loop {
        match first_contact(cfg, &keys).await {
            Contact::Answered => match bounded(cfg, connect(cfg, keys.clone())).await {
                Ok(dcs) => return Ok(dcs),
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => tracing::warn!("etcd answered, then not: {e}; retrying"),
            },
            Contact::Refused(e) => return Err(e),
            Contact::Unreachable(why) => match &cfg.auth {
                None => {
                    tracing::warn!("etcd does not answer yet ({why}); starting, requests retry");
                    return connect(cfg, keys).await;
                }
                Some(a) => tracing::warn!(
                    "etcd does not answer ({why}); waiting for it to authenticate as {}",
                    a.user
                ),
            },
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn bounded<T>(cfg: &DcsConfig, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(cfg.request_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(DcsError::Timeout(cfg.request_timeout)),
    }
}

async fn first_contact(cfg: &DcsConfig, keys: &Keys) -> Contact {
    let mut probes = probe_each(cfg, keys);
    let (mut refused, mut unreachable) = (Vec::new(), Vec::new());
    while let Some(joined) = probes.join_next().await {
        let Ok((endpoint, res)) = joined else {
            continue;
        };
        match res {
            Ok(_) => return Contact::Answered,
            Err(DcsError::Refused { cause, .. }) => refused.push((endpoint, cause)),
            Err(e @ DcsError::Setup(_)) => return Contact::Refused(e),
            Err(e) => unreachable.push(format!("{endpoint}: {e}")),
        }
    }
    if refused.is_empty() {
        unreachable.sort();
        return Contact::Unreachable(unreachable.join("; "));
    }
    refused.sort();
    let endpoints: Vec<&str> = refused.iter().map(|(e, _)| e.as_str()).collect();
    let mut causes: Vec<&str> = refused.iter().map(|(_, c)| c.as_str()).collect();
    causes.dedup();
    Contact::Refused(DcsError::Refused {
        endpoints: endpoints.join(", "),
        cause: causes.join("; "),
    })
}

/// Connects to one endpoint and counts the cluster's keys.
/// One probe per endpoint, all at once: each connects to that endpoint alone and reads the
/// cluster's key count (so a refused user or certificate shows); a failure comes explained
/// ([`DcsError::explain`]). Joined as they end, each with its endpoint.
pub fn probe_each(cfg: &DcsConfig, keys: &Keys) -> JoinSet<(String, Result<Dcs>)> {
    let mut probes = JoinSet::new();
    for ep in &cfg.endpoints {
        let one = DcsConfig {
            endpoints: vec![ep.clone()],
            ..cfg.clone()
        };
        let (ep, keys) = (ep.clone(), keys.clone());
        probes.spawn(async move {
            let res = match probe(&one, keys).await {
                Ok(dcs) => Ok(dcs),
                Err(e) => Err(e.explain(&ep, &one).await),
            };
            (ep, res)
        });
    }
    probes
}

async fn probe(cfg: &DcsConfig, keys: Keys) -> Result<Dcs> {
    let dcs = bounded(cfg, connect(cfg, keys)).await?;
    let mut c = dcs.client.clone();
    let count = GetOptions::new().with_prefix().with_count_only();
    dcs.bounded(c.get(dcs.keys.prefix(), Some(count))).await?;
    Ok(dcs)
}
