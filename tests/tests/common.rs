//! Small helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::time::{Duration, Instant};

use harp_core::keys::Keys;
use harp_core::records::{LeaderRecord, PromoteIntent, ProxyStatus, RECORD_VERSION, unix_ms};
use harp_tests::TestCluster;
use harp_tests::rt::block_on;

pub const LONG: Duration = Duration::from_secs(20);

/// The leader of `location` now, with its fencing token.
pub fn leader(c: &TestCluster, location: &str) -> Option<(LeaderRecord, i64)> {
    block_on(|| c.leader(location))
}

/// Waits for a leader of `location` other than `not`; panics with the managers' logs if none.
pub fn wait_leader_not(c: &TestCluster, location: &str, not: Option<&str>) -> LeaderRecord {
    let got = block_on(|| {
        c.wait_leader(
            location,
            |l| l.is_some_and(|l| Some(l.node.as_str()) != not),
            LONG,
        )
    });
    got.unwrap_or_else(|| {
        panic!(
            "no leader of {location} other than {not:?} within {LONG:?}\n{}",
            c.manager_logs(30)
        )
    })
}

/// The `role` a manager reports on `/status` (`leader`/`follower`), `None` if unreachable.
pub fn role(c: &mut TestCluster, node: &str) -> Option<String> {
    let s = c.node(node).mgr.status()?;
    s["role"].as_str().map(str::to_owned)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes or deletes `fenced/<node>` as an operator would.
pub fn set_fenced(c: &TestCluster, node: &str, fenced: bool) {
    let keys = harp_core::keys::Keys::new(c.name());
    block_on(|| async {
        let mut client = c.client().await;
        if fenced {
            client.put(keys.fenced(node), "{}", None).await.unwrap();
        } else {
            client.delete(keys.fenced(node), None).await.unwrap();
        }
    });
}

/// Puts `key` = `value` as an operator (or harpctl) would.
pub fn put(c: &TestCluster, key: String, value: String) {
    block_on(|| async {
        c.client().await.put(key, value, None).await.unwrap();
    });
}

/// Writes the switchover request of `dca` as `harpctl promote` does.
pub fn intent(c: &TestCluster, target: &str, from_token: i64, force: bool) {
    let rec = PromoteIntent {
        version: RECORD_VERSION,
        location: "dca".into(),
        target: target.into(),
        from_token,
        force,
        requested_ms: unix_ms(),
    };
    put(c, Keys::new(c.name()).promote_intent("dca"), rec.encode());
}

/// Deletes `key` as an operator (or harpctl) would.
pub fn delete(c: &TestCluster, key: String) {
    block_on(|| async {
        c.client().await.delete(key, None).await.unwrap();
    });
}

/// The token `proxy` publishes that it routes to (outer `None`: no status key).
pub fn published_token(c: &TestCluster, proxy: &str) -> Option<Option<i64>> {
    let key = Keys::new(c.name()).proxy_status(proxy);
    block_on(|| async {
        let mut client = c.client().await;
        let r = client.get(key, None).await.unwrap();
        let kv = r.kvs().first()?;
        Some(ProxyStatus::decode(kv.value()).unwrap().token)
    })
}
