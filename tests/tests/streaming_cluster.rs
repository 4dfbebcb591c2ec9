//! The harness's streaming cluster: a primary and two standbys cloned from it with
//! `pg_basebackup -R`, streaming, with the settings every benchmarked system shares; and the
//! managers' view of it, as their status and health endpoints show it.

use std::time::Duration;

use harp_tests::TestCluster;
use harp_tests::cluster::STREAMING_SETTINGS;
use harp_tests::rt::block_on;

fn cluster(name: &str, wait_managers: Option<Duration>) -> TestCluster {
    TestCluster::builder(name)
        .etcd_members(1)
        .node("n1", "dca", 100)
        .node("n2", "dca", 90)
        .node("n3", "dcb", 80)
        .streaming("off")
        .wait_managers(wait_managers)
        .start()
}

/// A query's single text column, row by row.
fn try_column(c: &TestCluster, node: &str, sql: &str) -> Result<Vec<String>, String> {
    let n = c.nodes.iter().find(|n| n.name == node).expect("node");
    block_on(|| async {
        let client = n.pg.connect().await?;
        let rows = client.query(sql, &[]).await?;
        Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    })
    .map_err(|e| format!("{node}: {sql}: {e:?}"))
}

fn column(c: &TestCluster, node: &str, sql: &str) -> Vec<String> {
    try_column(c, node, sql).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn standbys_stream_from_the_primary_with_the_shared_settings() {
    let c = cluster("stream-pg", None);
    assert!(c.is_streaming());
    assert_eq!(c.scope("dca"), "stream-pg");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let streaming = loop {
        let s = column(
            &c,
            "n1",
            "SELECT application_name FROM pg_stat_replication \
             WHERE state = 'streaming' ORDER BY 1",
        );
        if s.len() == 2 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(streaming, ["n2", "n3"]);
    for n in ["n2", "n3"] {
        assert_eq!(column(&c, n, "SELECT pg_is_in_recovery()::text"), ["true"]);
    }
    for node in ["n1", "n2", "n3"] {
        for (k, v) in STREAMING_SETTINGS {
            let got = column(&c, node, &format!("SELECT current_setting('{k}')"));
            assert_eq!(got, [v], "{node}: {k}");
        }
    }
    block_on(|| async {
        let client = c.nodes[0].pg.connect().await?;
        client
            .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('replicated')")
            .await
    })
    .expect("write on the primary");
    for n in ["n2", "n3"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // An error until the table's creation has been replayed.
            let seen = try_column(&c, n, "SELECT string_agg(v, ',') FROM t");
            if seen.as_deref() == Ok(&["replicated".to_owned()][..]) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{n} has {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn managers_see_one_writable_primary_and_two_streaming_standbys() {
    let c = cluster("stream-mgr", Some(Duration::from_secs(20)));
    let st = c
        .wait_streaming(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.manager_logs(30)));
    assert_eq!(st.primary, "n1");
    assert_eq!(st.streaming, ["n2", "n3"]);
    // What HAProxy and Kubernetes probes see: one primary, two replicas, all serving reads.
    let code = |node: &str, path: &str| {
        let port = c
            .nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap()
            .mgr
            .http_port();
        harp_tests::http_get(port, path, Duration::from_secs(2)).map(|r| r.0)
    };
    for (node, primary, replica) in [("n1", 200, 503), ("n2", 503, 200), ("n3", 503, 200)] {
        assert_eq!(code(node, "/primary"), Some(primary), "{node} /primary");
        assert_eq!(code(node, "/replica"), Some(replica), "{node} /replica");
        assert_eq!(code(node, "/read-only"), Some(200), "{node} /read-only");
        // Idle: every standby is within a megabyte of the primary's published position.
        assert_eq!(
            code(node, "/replica?lag=1MB"),
            Some(replica),
            "{node} /replica?lag"
        );
    }
    // A standby that stops replaying falls out of `?lag=` pools once it is behind, not of
    // `/replica`.
    let n2 = c.nodes.iter().find(|n| n.name == "n2").unwrap().pg.dsn();
    harp_tests::streaming::execute(&n2, "SELECT pg_wal_replay_pause()");
    let n1 = c.nodes[0].pg.dsn();
    harp_tests::streaming::execute(
        &n1,
        "CREATE TABLE filler AS SELECT g FROM generate_series(1, 100000) g",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while code("n2", "/replica?lag=1kB") != Some(503) {
        assert!(std::time::Instant::now() < deadline, "n2 never fell behind");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(code("n2", "/replica"), Some(200));
    // n3 kept replaying: once both positions are published again it is within the bound.
    while code("n3", "/replica?lag=1MB") != Some(200) {
        assert!(std::time::Instant::now() < deadline, "n3 stays behind");
        std::thread::sleep(Duration::from_millis(200));
    }
}
