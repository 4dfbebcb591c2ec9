//! The mirror every agent and manager follows etcd with, against a member that freezes
//! (SIGSTOP: its connection stays open, nothing answers): the silence is noticed within
//! about a second, not at the connection's keep-alive timeout, and the view is read again.

use std::time::Duration;

use harp_core::config::{DcsConfig, DcsDriver};
use harp_core::keys::Keys;
use harp_dcs::mirror::{self, MirrorEvent};
use harp_tests::etcd::EtcdCluster;
use harp_tests::workdir::WorkDir;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

async fn next(rx: &mut mpsc::Receiver<MirrorEvent>, within: Duration) -> Option<MirrorEvent> {
    timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_noticed_within_a_probe_and_read_again() {
    let dir = WorkDir::new();
    let mut etcd = EtcdCluster::start(3, &dir);
    let keys = Keys::new("silent");
    // Only member 0: the watch cannot be elsewhere.
    let cfg = DcsConfig {
        driver: DcsDriver::Etcd,
        endpoints: vec![etcd.endpoint(0)],
        request_timeout: Duration::from_millis(500),
        tls: None,
        auth: None,
    };
    let dcs = harp_dcs::connect(&cfg, keys.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::channel::<MirrorEvent>(64);
    let prefix = keys.leader_prefix();
    let task = tokio::spawn(mirror::run(dcs, prefix.clone(), tx));
    let first = next(&mut rx, Duration::from_secs(10)).await;
    assert!(matches!(first, Some(MirrorEvent::Synced(_))), "{first:?}");
    // Quiet for longer than a probe: a live watch answers its probes and is kept.
    assert_eq!(next(&mut rx, Duration::from_secs(3)).await, None);

    let pid = Pid::from_raw(etcd.member_pid(0).unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let ev = next(&mut rx, Duration::from_secs(10)).await;
    let noticed = frozen.elapsed();
    let key = keys.leader("dca");
    {
        let mut other = etcd_client::Client::connect([etcd.endpoint(1)], None)
            .await
            .unwrap();
        other.put(key.as_str(), "n2", None).await.unwrap();
    }
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(ev, Some(MirrorEvent::Interrupted));
    println!("silent watch noticed after {noticed:?}");
    // One probe + the 500 ms request bound, with room for a busy host.
    assert!(
        noticed < Duration::from_secs(3),
        "noticed after {noticed:?}"
    );

    // Back: the read brings the write made meanwhile.
    let synced = loop {
        match next(&mut rx, Duration::from_secs(15)).await {
            Some(MirrorEvent::Interrupted) => continue,
            other => break other,
        }
    };
    match synced {
        Some(MirrorEvent::Synced(changes)) => assert!(
            changes
                .iter()
                .any(|c| c.key == key && c.value.as_ref().is_some_and(|(v, _)| v == b"n2")),
            "{changes:?}"
        ),
        other => panic!("expected a fresh read, got {other:?}"),
    }
    task.abort();
}
