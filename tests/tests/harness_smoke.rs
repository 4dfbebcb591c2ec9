//! Checks the harness itself against real etcd and Postgres (no harp-manager needed).

use std::collections::HashSet;
use std::time::Duration;

use harp_core::records::{LeaderRecord, RECORD_VERSION};
use harp_tests::{
    EtcdCluster, LeaderWatch, PgInstance, WorkDir, free_port, read_leader, wait_leader,
};

async fn put_get(c: &mut etcd_client::Client, key: &str, val: &str) {
    c.put(key, val, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    let r = c
        .get(key, None)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert_eq!(r.kvs().first().map(|kv| kv.value()), Some(val.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_survives_one_member_down_and_restarts_it() {
    let dir = WorkDir::new();
    let mut etcd = EtcdCluster::start(3, &dir);
    assert_eq!(etcd.endpoints().len(), 3);
    let mut c = etcd.client().await;
    put_get(&mut c, "/smoke/a", "1").await;

    etcd.stop_member(1);
    assert!(!etcd.member_running(1));
    assert!(etcd.member_running(0) && etcd.member_running(2));
    // If m1 led, a write in flight during the re-election hangs until it times out.
    etcd.wait_writable();
    let mut c = etcd.client().await;
    put_get(&mut c, "/smoke/b", "2").await;
    put_get(&mut c, "/smoke/a", "3").await;

    etcd.start_member(1);
    assert!(etcd.member_running(1));
    // The restarted member alone serves the data written while it was down.
    let mut only1 = etcd_client::Client::connect([etcd.endpoint(1)], None)
        .await
        .expect("connect to member 1");
    let r = only1.get("/smoke/b", None).await.expect("get via member 1");
    assert_eq!(r.kvs().first().map(|kv| kv.value()), Some(&b"2"[..]));
    put_get(&mut only1, "/smoke/c", "4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instance_dies_on_kill9_and_starts_again() {
    let dir = WorkDir::new();
    let mut pg = PgInstance::start(&dir, "n1");
    assert!(pg.is_running());
    let client = pg.connect().await.expect("connect");
    let rows = client.simple_query("SELECT 1").await.expect("SELECT 1");
    assert!(!rows.is_empty());

    let pid = pg.postmaster_pid();
    pg.kill9();
    assert!(!pg.is_running());
    // The old backend notices the postmaster's death and closes the connection.
    let mut failed = false;
    for _ in 0..100 {
        if client.simple_query("SELECT 1").await.is_err() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed,
        "queries still succeed after kill -9 of postmaster {pid}"
    );
    assert!(pg.connect().await.is_err(), "new connection after kill -9");

    pg.start_again();
    assert!(pg.is_running());
    assert_ne!(pg.postmaster_pid(), pid);
    let client = pg.connect().await.expect("connect after start_again");
    client
        .simple_query("SELECT 1")
        .await
        .expect("SELECT 1 again");

    pg.stop();
    assert!(!pg.is_running());
    pg.start_again();
    pg.connect()
        .await
        .expect("connect after stop + start_again");
}

#[test]
fn free_port_never_repeats() {
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let p = free_port();
        assert!(p > 0);
        assert!(seen.insert(p), "port {p} handed out twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_helpers_read_and_watch_the_leader_key() {
    let dir = WorkDir::new();
    let etcd = EtcdCluster::start(1, &dir);
    let mut c = etcd.client().await;
    let rec = |node: &str| LeaderRecord {
        version: RECORD_VERSION,
        node: node.into(),
        location: "dca".into(),
        address: "127.0.0.1".into(),
        port: 5432,
        handover_to: None,
        leaving: false,
        ..Default::default()
    };
    assert!(read_leader(&c, "smoke", "dca").await.is_none());
    let key = harp_core::keys::Keys::new("smoke").leader("dca");
    c.put(key.as_str(), rec("n1").encode(), None).await.unwrap();
    let mut watch = LeaderWatch::start(&c, "smoke").await;
    assert_eq!(
        watch.initial("dca").map(|(r, _)| r.node.as_str()),
        Some("n1")
    );
    let (got, token) = read_leader(&c, "smoke", "dca").await.expect("leader");
    assert_eq!(got.node, "n1");
    assert!(token > 0);

    // Longer than the client's request timeout, to show the watch outlives it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.put("/harp/smoke/leader/dcb", rec("x").encode(), None)
        .await
        .unwrap();
    c.delete(key.as_str(), None).await.unwrap();
    c.put(key.as_str(), rec("n1").encode(), None).await.unwrap();
    c.put(key.as_str(), rec("n2").encode(), None).await.unwrap();
    let (next, at) = watch
        .next_leader_not("dca", "n1", Duration::from_secs(5))
        .await
        .expect("watch sees n2");
    assert_eq!(next.node, "n2");
    assert!(at.elapsed() < Duration::from_secs(5));
    // The other location's event was kept.
    let ev = watch
        .next_event(Duration::from_secs(1))
        .await
        .expect("dcb event");
    assert_eq!(ev.location, "dcb");

    let l = wait_leader(
        &c,
        "smoke",
        "dca",
        |l| l.is_some_and(|l| l.node == "n2"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(l.map(|l| l.node), Some("n2".to_string()));
}
