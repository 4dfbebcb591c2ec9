//! The observer: on the `ctl` host, watches `leader/` of the cluster and records every change
//! with the time it saw it. It re-reads after a broken watch, so a lost etcd quorum costs it
//! only the changes nobody could make anyway.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{ConnectOptions, EventType, GetOptions, WatchOptions};
use harp_core::keys::{KeyKind, Keys};
use harp_core::records::LeaderRecord;
use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

use crate::lab::history::LeaderChange;
use crate::lab::workload::unix_ms;

pub struct Observer {
    stop: Option<oneshot::Sender<()>>,
    seen: Arc<Mutex<Vec<LeaderChange>>>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Starts watching from inside the namespace at `ns_path`.
    pub fn start(
        ns_path: PathBuf,
        endpoints: Vec<String>,
        opts: ConnectOptions,
        cluster: String,
    ) -> Observer {
        let (tx, rx) = oneshot::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&ns_path).expect("open the ctl namespace");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into the ctl namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let keys = Keys::new(&cluster);
            rt.block_on(async move {
                tokio::select! {
                    _ = rx => {}
                    _ = observe(&endpoints, opts, &keys, &out) => {}
                }
            });
        });
        Observer {
            stop: Some(tx),
            seen,
            thread: Some(thread),
        }
    }

    /// Stops and returns what it saw, in order.
    pub fn finish(mut self) -> Vec<LeaderChange> {
        self.halt();
        std::mem::take(&mut *self.seen.lock().expect("observer lock"))
    }

    fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn observe(
    endpoints: &[String],
    opts: ConnectOptions,
    keys: &Keys,
    out: &Mutex<Vec<LeaderChange>>,
) {
    let record = |location: &str, node: Option<String>, token: Option<i64>| {
        let mut v = out.lock().expect("observer lock");
        let last = v.iter().rev().find(|c| c.location == location);
        if last.is_some_and(|c| c.node == node && c.token == token) {
            return;
        }
        v.push(LeaderChange {
            at_ms: unix_ms(),
            location: location.to_owned(),
            node,
            token,
        });
    };
    loop {
        let Ok(mut client) = etcd_client::Client::connect(endpoints, Some(opts.clone())).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let prefix = keys.leader_prefix();
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await;
        let Ok(Ok(resp)) = got else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let rev = resp.header().map_or(0, |h| h.revision());
        // What the read shows now; locations whose key is gone have no leader.
        let present: Vec<(String, String, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let Some(KeyKind::Leader(loc)) = keys.parse(key) else {
                    return None;
                };
                let rec = LeaderRecord::decode(kv.value()).ok()?;
                Some((loc.to_owned(), rec.node, kv.create_revision()))
            })
            .collect();
        let known: Vec<String> = out
            .lock()
            .expect("observer lock")
            .iter()
            .map(|c| c.location.clone())
            .collect();
        for loc in known {
            if !present.iter().any(|p| p.0 == loc) {
                record(&loc, None, None);
            }
        }
        for (loc, node, token) in present {
            record(&loc, Some(node), Some(token));
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let Ok(mut stream) = client.watch(prefix.as_str(), Some(opts)).await else {
            continue;
        };
        while let Ok(Some(resp)) = stream.message().await {
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let Some(KeyKind::Leader(loc)) = keys.parse(key) else {
                    continue;
                };
                match ev.event_type() {
                    EventType::Put => {
                        let node = LeaderRecord::decode(kv.value()).ok().map(|r| r.node);
                        record(loc, node, Some(kv.create_revision()));
                    }
                    EventType::Delete => record(loc, None, None),
                }
            }
        }
    }
}
