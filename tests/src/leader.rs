//! Reading and watching the per-location leader key (`/harp/<cluster>/leader/<location>`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use harp_core::keys::{KeyKind, Keys};
use harp_core::records::LeaderRecord;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The leader record of `location` and its fencing token (the key's `create_revision`).
pub async fn try_read_leader(
    client: &Client,
    cluster: &str,
    location: &str,
) -> Result<Option<(LeaderRecord, i64)>, etcd_client::Error> {
    let key = Keys::new(cluster).leader(location);
    let resp = client.clone().get(key.as_str(), None).await?;
    Ok(resp.kvs().first().map(|kv| {
        let rec = LeaderRecord::decode(kv.value())
            .unwrap_or_else(|e| panic!("bad leader record at {key}: {e}"));
        (rec, kv.create_revision())
    }))
}

/// Like [`try_read_leader`], panicking if etcd does not answer.
pub async fn read_leader(
    client: &Client,
    cluster: &str,
    location: &str,
) -> Option<(LeaderRecord, i64)> {
    try_read_leader(client, cluster, location)
        .await
        .unwrap_or_else(|e| panic!("read leader of {cluster}/{location}: {e}"))
}

/// Polls every 10 ms until `pred` holds for the current leader (etcd errors count as "not
/// yet"). Returns the leader that satisfied it; `None` on timeout, and also when `pred` was
/// satisfied by "no leader" (use [`wait_no_leader`] to wait for absence).
pub async fn wait_leader(
    client: &Client,
    cluster: &str,
    location: &str,
    pred: impl Fn(Option<&LeaderRecord>) -> bool,
    timeout: Duration,
) -> Option<LeaderRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(cur) = try_read_leader(client, cluster, location).await {
            let rec = cur.map(|(r, _)| r);
            if pred(rec.as_ref()) {
                return rec;
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls every 10 ms until `location` has no leader; `false` on timeout.
pub async fn wait_no_leader(
    client: &Client,
    cluster: &str,
    location: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(None) = try_read_leader(client, cluster, location).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One change of a leader key, stamped when the watch delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEvent {
    pub location: String,
    /// The new leader; `None` when the key was deleted (lease expired or released).
    pub leader: Option<LeaderRecord>,
    /// The key's `create_revision` (0 for a delete).
    pub fencing_token: i64,
    /// The etcd revision of the change.
    pub revision: i64,
    pub at: Instant,
}

/// A background etcd watch on `/harp/<cluster>/leader/`, started at a snapshot so no change
/// after [`LeaderWatch::start`] returns is missed. Reconnects (from the next revision) if the
/// stream breaks, e.g. when its etcd member dies.
#[derive(Debug)]
pub struct LeaderWatch {
    rx: mpsc::UnboundedReceiver<LeaderEvent>,
    pending: VecDeque<LeaderEvent>,
    initial: HashMap<String, (LeaderRecord, i64)>,
    task: JoinHandle<()>,
}

impl LeaderWatch {
    /// Snapshots the current leaders and watches from the next revision. Needs a tokio runtime.
    pub async fn start(client: &Client, cluster: &str) -> LeaderWatch {
        let keys = Keys::new(cluster);
        let prefix = keys.leader_prefix();
        let snap = client
            .clone()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap_or_else(|e| panic!("read leaders under {prefix}: {e}"));
        let mut initial = HashMap::new();
        for kv in snap.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if let (Some(KeyKind::Leader(loc)), Ok(rec)) =
                (keys.parse(&key), LeaderRecord::decode(kv.value()))
            {
                initial.insert(loc.to_string(), (rec, kv.create_revision()));
            }
        }
        let start_rev = snap.header().map_or(0, |h| h.revision()) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(watch_loop(client.clone(), keys, start_rev, tx));
        LeaderWatch {
            rx,
            pending: VecDeque::new(),
            initial,
            task,
        }
    }

    /// The leader of `location` when the watch started, with its fencing token.
    pub fn initial(&self, location: &str) -> Option<&(LeaderRecord, i64)> {
        self.initial.get(location)
    }

    /// The next event of any location, in order; `None` on timeout.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<LeaderEvent> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next event for `location` satisfying `pred`. Earlier events of `location` are
    /// consumed; events of other locations are kept for later calls. `None` on timeout.
    pub async fn wait_for(
        &mut self,
        location: &str,
        pred: impl Fn(&LeaderEvent) -> bool,
        timeout: Duration,
    ) -> Option<LeaderEvent> {
        let mut kept = VecDeque::new();
        let mut found = None;
        while let Some(ev) = self.pending.pop_front() {
            if found.is_none() && ev.location == location {
                if pred(&ev) {
                    found = Some(ev);
                }
            } else {
                kept.push_back(ev);
            }
        }
        self.pending = kept;
        if found.is_some() {
            return found;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten()?;
            if ev.location != location {
                self.pending.push_back(ev);
            } else if pred(&ev) {
                return Some(ev);
            }
        }
    }

    /// The next leader of `location` that is not `not_node`, and when the watch saw it.
    pub async fn next_leader_not(
        &mut self,
        location: &str,
        not_node: &str,
        timeout: Duration,
    ) -> Option<(LeaderRecord, Instant)> {
        let ev = self
            .wait_for(
                location,
                |ev| ev.leader.as_ref().is_some_and(|l| l.node != not_node),
                timeout,
            )
            .await?;
        Some((ev.leader.expect("matched a present leader"), ev.at))
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_loop(
    mut client: Client,
    keys: Keys,
    mut next_rev: i64,
    tx: mpsc::UnboundedSender<LeaderEvent>,
) {
    let prefix = keys.leader_prefix();
    loop {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next_rev);
        if let Ok(mut stream) = client.watch(prefix.as_str(), Some(opts)).await {
            while let Ok(Some(resp)) = stream.message().await {
                let at = Instant::now();
                if resp.canceled() {
                    if resp.compact_revision() > next_rev {
                        next_rev = resp.compact_revision();
                    }
                    break;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    next_rev = next_rev.max(kv.mod_revision() + 1);
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let Some(KeyKind::Leader(loc)) = keys.parse(&key) else {
                        continue;
                    };
                    let leader = match ev.event_type() {
                        EventType::Delete => None,
                        EventType::Put => match LeaderRecord::decode(kv.value()) {
                            Ok(rec) => Some(rec),
                            Err(e) => {
                                eprintln!("LeaderWatch: skipping bad record at {key}: {e}");
                                continue;
                            }
                        },
                    };
                    let event = LeaderEvent {
                        location: loc.to_string(),
                        fencing_token: if leader.is_some() {
                            kv.create_revision()
                        } else {
                            0
                        },
                        leader,
                        revision: kv.mod_revision(),
                        at,
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
