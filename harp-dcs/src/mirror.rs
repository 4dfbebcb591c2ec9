//! Mirrors the cluster's keys: a prefix get, then a watch from the next revision. When the
//! watch breaks (member lost its leader, connection dropped) it reads again and reports only the
//! differences, so the decision loop sees one consistent stream of changes and no gap.
//!
//! A watch can also go silent: its member frozen or unreachable while the connection looks
//! open. The mirror asks the watch for its progress every [`PROBE_EVERY`]; etcd answers at
//! once on the same stream, so silence past one probe and the request bound means the watch is
//! dead, and it is read again (through whichever member answers).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Backoff, Dcs, DcsError};

/// What the mirror reports to its owner's decision loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorEvent {
    /// Differences found by a fresh read of the keys (the first one lists every key).
    Synced(Vec<KeyChange>),
    /// Watch events.
    Changed(Vec<KeyChange>),
    /// The watch broke: changes go unseen until the next `Synced`.
    Interrupted,
}

/// One key's state: its value and create_revision, or absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: String,
    pub value: Option<(Vec<u8>, i64)>,
}

type View = BTreeMap<String, (Vec<u8>, i64)>;

/// How often a watch is asked to prove it is alive.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Mirrors every key under `prefix` until the receiver is dropped.
pub async fn run<I: From<MirrorEvent>>(dcs: Dcs, prefix: String, tx: mpsc::Sender<I>) {
    run_tagged(dcs, prefix, tx, I::from).await
}

/// [`run`], each event wrapped by `tag`: mirrors that share a channel stay told apart (each
/// breaks and syncs on its own).
pub async fn run_tagged<I>(
    dcs: Dcs,
    prefix: String,
    tx: mpsc::Sender<I>,
    tag: impl Fn(MirrorEvent) -> I,
) {
    let mut view = View::new();
    let mut backoff = Backoff::default();
    loop {
        match sync(&dcs, &prefix, &mut view, &tx, &tag, &mut backoff).await {
            Ok(()) => return, // the receiver is gone: shutting down
            Err(e) => {
                tracing::warn!("etcd watch of {prefix} interrupted: {e}; reading again");
                if tx.send(tag(MirrorEvent::Interrupted)).await.is_err() {
                    return;
                }
                dcs.pause(&mut backoff).await;
            }
        }
    }
}

async fn sync<I>(
    dcs: &Dcs,
    prefix: &str,
    view: &mut View,
    tx: &mpsc::Sender<I>,
    tag: &impl Fn(MirrorEvent) -> I,
    backoff: &mut Backoff,
) -> Result<(), DcsError> {
    let mut c = dcs.client.clone();
    let fut = c.get(prefix, Some(GetOptions::new().with_prefix()));
    let resp = tokio::time::timeout(dcs.timeout, fut)
        .await
        .map_err(|_| DcsError::Timeout(dcs.timeout))??;
    backoff.reset();
    let rev = resp.header().map_or(0, |h| h.revision());
    let fresh: View = resp
        .kvs()
        .iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            (key, (kv.value().to_vec(), kv.create_revision()))
        })
        .collect();
    let mut changes = Vec::new();
    for (k, v) in &fresh {
        if view.get(k) != Some(v) {
            changes.push(KeyChange {
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    for k in view.keys().filter(|k| !fresh.contains_key(*k)) {
        changes.push(KeyChange {
            key: k.clone(),
            value: None,
        });
    }
    *view = fresh;
    if tx.send(tag(MirrorEvent::Synced(changes))).await.is_err() {
        return Ok(());
    }

    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(rev + 1);
    let watch = tokio::time::timeout(dcs.timeout, c.watch(prefix, Some(opts)))
        .await
        .map_err(|_| DcsError::Timeout(dcs.timeout))??;
    let (mut requests, mut stream) = watch.split();
    let silent_limit = PROBE_EVERY + dcs.timeout;
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        let resp = tokio::select! {
            // An answer already there counts before the probe's verdict.
            biased;
            resp = stream.message() => resp?,
            _ = probe.tick() => {
                if heard.elapsed() > silent_limit {
                    return Err(DcsError::Timeout(silent_limit));
                }
                requests.request_progress().await?;
                continue;
            }
        };
        let Some(resp) = resp else { break };
        if resp.canceled() {
            let reason = resp.cancel_reason().to_owned();
            return Err(etcd_client::Error::WatchError(reason).into());
        }
        let mut changes = Vec::new();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value = match ev.event_type() {
                EventType::Put => Some((kv.value().to_vec(), kv.create_revision())),
                EventType::Delete => None,
            };
            match &value {
                Some(v) => view.insert(key.clone(), v.clone()),
                None => view.remove(&key),
            };
            changes.push(KeyChange { key, value });
        }
        if !changes.is_empty() && tx.send(tag(MirrorEvent::Changed(changes))).await.is_err() {
            return Ok(());
        }
        // Heard now: the time our owner took to take the changes is not the watch's silence.
        heard = Instant::now();
    }
    Err(etcd_client::Error::WatchError("stream ended".into()).into())
}
