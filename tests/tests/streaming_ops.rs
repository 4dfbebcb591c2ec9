//! The Postgres operations of streaming mode (`harp_manager::standby`) against real
//! PostgreSQL 15: a primary and standbys made by the streaming harness, no managers, no etcd.

use std::time::Duration;

use harp_manager::pgctl::PgCtl;
use harp_manager::standby::{Standby, StandbyError};
use harp_tests::postgres::pg_bin_dir;
use harp_tests::streaming::{execute, query_text, wait_for_value};
use harp_tests::{PgInstance, Replicas, Writer};

const WAIT: Duration = Duration::from_secs(20);

/// Primary `nodes[0]`, the rest its standbys; no etcd, no managers.
fn cluster(_name: &str, nodes: &[&str], settings: &[(&str, &str)]) -> Replicas {
    Replicas::start(nodes, settings)
}

/// The operations on `pg`'s node, as its manager would run them.
fn ops(pg: &PgInstance) -> Standby {
    let ctl = PgCtl::new(pg_bin_dir(), pg.data_dir().to_path_buf());
    Standby::new(ctl, &pg.dsn(), pg.name()).expect("the harness DSN parses")
}

fn in_recovery(pg: &PgInstance) -> Option<String> {
    query_text(&pg.dsn(), "SELECT pg_is_in_recovery()")
}

/// Waits until row `id` of `t` is on `pg`; panics with the logs otherwise.
fn wait_row(c: &Replicas, pg: &PgInstance, id: i64) {
    let got = wait_for_value(
        &pg.dsn(),
        &format!("SELECT count(*) FROM t WHERE id = {id}"),
        "1",
        WAIT,
    );
    assert_eq!(
        got.as_deref(),
        Some("1"),
        "row {id} did not reach {} within {WAIT:?}\n{}",
        pg.name(),
        c.logs(20)
    );
}

fn row_count(pg: &PgInstance, filter: &str) -> Option<String> {
    query_text(&pg.dsn(), &format!("SELECT count(*) FROM t WHERE {filter}"))
}

/// `host:port` of the server `pg`'s WAL receiver streams from.
fn upstream(pg: &PgInstance) -> Option<String> {
    query_text(
        &pg.dsn(),
        "SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver \
         WHERE status = 'streaming'",
    )
}

#[test]
fn the_harness_streams_rows_from_the_primary_to_every_standby() {
    let c = cluster("harness", &["a", "b", "c"], &[]);
    let (a, b, cc) = (c.pg("a"), c.pg("b"), c.pg("c"));
    assert_eq!(in_recovery(a).as_deref(), Some("f"));
    assert_eq!(in_recovery(b).as_deref(), Some("t"));
    assert_eq!(in_recovery(cc).as_deref(), Some("t"));
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    wait_row(&c, cc, 1);
    // They stream under their node names (what synchronous_standby_names uses).
    let names = query_text(
        &a.dsn(),
        "SELECT string_agg(application_name, ',' ORDER BY application_name) \
         FROM pg_stat_replication WHERE state = 'streaming'",
    );
    assert_eq!(names.as_deref(), Some("b,c"));
    // The writer records what was acknowledged, and `missing_on` compares row by row.
    let mut w = Writer::start(&a.dsn(), "w", Duration::from_millis(2));
    assert!(w.wait_acked(50, WAIT), "the writer got no acks");
    let acked = w.stop();
    let last = *acked.last().unwrap();
    wait_for_value(
        &b.dsn(),
        &format!("SELECT count(*) FROM w WHERE id = {last}"),
        "1",
        WAIT,
    );
    assert_eq!(w.missing_on(&b.dsn()), Vec::<i64>::new());
    execute(&a.dsn(), &format!("DELETE FROM w WHERE id = {}", acked[10]));
    assert_eq!(w.missing_on(&a.dsn()), [acked[10]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_makes_a_standby_writable() {
    let c = cluster("promote", &["a", "b"], &[]);
    let (a, b) = (c.pg("a"), c.pg("b"));
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    ops(a).stop().await.expect("stop the primary");
    ops(b).promote().await.expect("promote b");
    assert_eq!(in_recovery(b).as_deref(), Some("f"));
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    assert_eq!(row_count(b, "true").as_deref(), Some("2"));
    // Promoting a primary is a no-op.
    ops(b)
        .promote()
        .await
        .expect("promote an already promoted node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_repoints_a_standby_at_the_new_primary() {
    let c = cluster("follow", &["a", "b", "cc"], &[]);
    let (a, b, cc) = (c.pg("a"), c.pg("b"), c.pg("cc"));
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    wait_row(&c, cc, 1);
    // A failover: the primary is gone, b is promoted, cc must follow b.
    ops(a).stop().await.expect("stop a");
    ops(b).promote().await.expect("promote b");
    let follow = ops(cc).follow("127.0.0.1", b.port()).await;
    assert!(follow.expect("follow b"), "follow reports a change");
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    wait_row(&c, cc, 2);
    let want = format!("127.0.0.1:{}", b.port());
    assert_eq!(
        wait_for_value(
            &cc.dsn(),
            "SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            &want,
            WAIT
        ),
        Some(want.clone())
    );
    // Pointing it at the same primary again changes nothing.
    let again = ops(cc)
        .follow("127.0.0.1", b.port())
        .await
        .expect("follow again");
    assert!(
        !again,
        "a second follow of the same primary reports no change"
    );
    // A primary does not follow.
    let err = ops(b).follow("127.0.0.1", cc.port()).await.unwrap_err();
    assert!(matches!(err, StandbyError::NotStandby), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_rewinds_a_diverged_old_primary_into_a_standby_of_the_new_one() {
    let c = cluster("rewind", &["a", "b"], &[]);
    let (a, b) = (c.pg("a"), c.pg("b"));
    // A setting of a's own, which b does not have.
    execute(&a.dsn(), "ALTER SYSTEM SET work_mem = '7MB'");
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    // b is promoted while a still takes writes: the two diverge.
    ops(b).promote().await.expect("promote b");
    execute(&a.dsn(), "INSERT INTO t SELECT generate_series(1000, 1099)");
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    let rejoined = ops(a)
        .rejoin("127.0.0.1", b.port())
        .await
        .unwrap_or_else(|e| panic!("rejoin a to b: {e}\n{}", c.logs(30)));
    assert!(rejoined.rewound, "a diverged old primary is rewound");
    assert_eq!(in_recovery(a).as_deref(), Some("t"), "a is a standby now");
    execute(&b.dsn(), "INSERT INTO t VALUES (3)");
    wait_row(&c, a, 3);
    assert_eq!(row_count(a, "id = 2").as_deref(), Some("1"));
    assert_eq!(
        row_count(a, "id >= 1000").as_deref(),
        Some("0"),
        "a's divergent rows are gone"
    );
    assert_eq!(upstream(a), Some(format!("127.0.0.1:{}", b.port())));
    // Its own config survived the rewind (pg_rewind copies the source's), and it streams
    // under its own name.
    assert_eq!(
        query_text(&a.dsn(), "SHOW work_mem").as_deref(),
        Some("7MB")
    );
    assert_eq!(
        query_text(&b.dsn(), "SELECT application_name FROM pg_stat_replication").as_deref(),
        Some("a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_without_wal_log_hints_fails_with_the_fix_and_reinit_rebuilds() {
    let c = cluster("reinit", &["a", "b"], &[("wal_log_hints", "off")]);
    let (a, b) = (c.pg("a"), c.pg("b"));
    assert_eq!(
        query_text(&a.dsn(), "SHOW data_checksums").as_deref(),
        Some("off"),
        "the template has no data checksums"
    );
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    ops(b).promote().await.expect("promote b");
    execute(&a.dsn(), "INSERT INTO t SELECT generate_series(1000, 1099)");
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    let err = ops(a).rejoin("127.0.0.1", b.port()).await.unwrap_err();
    assert!(
        matches!(err, StandbyError::RewindImpossible { .. }),
        "{err}"
    );
    let msg = err.to_string();
    for needle in ["wal_log_hints", "data checksums", "harpctl reinit"] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
    assert!(
        !ops(a).ctl.is_running().await.unwrap(),
        "a node that cannot be rewound stays stopped"
    );
    ops(a)
        .reinit("127.0.0.1", b.port())
        .await
        .unwrap_or_else(|e| panic!("reinit a from b: {e}\n{}", c.logs(30)));
    assert_eq!(in_recovery(a).as_deref(), Some("t"));
    execute(&b.dsn(), "INSERT INTO t VALUES (3)");
    wait_row(&c, a, 3);
    assert_eq!(row_count(a, "id >= 1000").as_deref(), Some("0"));
    let old = a.data_dir().with_file_name("pg-a.harp-old");
    assert!(
        !old.exists(),
        "the old copy is removed once the new one runs"
    );
    assert_eq!(upstream(a), Some(format!("127.0.0.1:{}", b.port())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_recovers_and_rewinds_an_old_primary_killed_by_sigkill() {
    let mut c = cluster("crash", &["a", "b"], &[]);
    let a_port = c.pg("a").port();
    execute(
        &c.pg("a").dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, c.pg("b"), 1);
    // A failover after a crash: a's data directory was not shut down cleanly.
    c.node("a").pg.kill9();
    let (a, b) = (c.pg("a"), c.pg("b"));
    ops(b).promote().await.expect("promote b");
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    // Crash recovery (with a's own command line, where wal_log_hints is set) writes a
    // checkpoint b never got: a rewind is needed.
    let rejoined = ops(a)
        .rejoin("127.0.0.1", b.port())
        .await
        .unwrap_or_else(|e| panic!("rejoin a to b: {e}\n{}", c.logs(30)));
    assert!(rejoined.rewound);
    assert_eq!(a.port(), a_port);
    assert_eq!(in_recovery(a).as_deref(), Some("t"));
    execute(&b.dsn(), "INSERT INTO t VALUES (3)");
    wait_row(&c, a, 3);
    assert_eq!(upstream(a), Some(format!("127.0.0.1:{}", b.port())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_does_not_hang_a_rejoin() {
    let mut c = cluster("hung", &["a", "b"], &[]);
    ops(c.pg("b")).promote().await.expect("promote b");
    // b's postmaster is frozen: connections to it get no answer.
    assert!(c.node("b").pg.sigstop());
    let mut a = ops(c.pg("a"));
    a.timeouts.query = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = a.rejoin("127.0.0.1", c.pg("b").port()).await.unwrap_err();
    let took = started.elapsed();
    c.node("b").pg.sigcont();
    assert!(matches!(err, StandbyError::Timeout { .. }), "{err}");
    assert!(took < Duration::from_secs(15), "rejoin took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_switchover_the_old_primary_rejoins_without_a_rewind() {
    // No wal_log_hints: pg_rewind could not run, so HARP must see by itself that none is
    // needed (the old primary's last record, its shutdown checkpoint, reached the target).
    let c = cluster("switch", &["a", "b"], &[("wal_log_hints", "off")]);
    let (a, b) = (c.pg("a"), c.pg("b"));
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    ops(a).stop().await.expect("stop a");
    ops(b).promote().await.expect("promote b");
    let rejoined = ops(a)
        .rejoin("127.0.0.1", b.port())
        .await
        .unwrap_or_else(|e| panic!("rejoin a to b: {e}\n{}", c.logs(30)));
    assert!(!rejoined.rewound, "a clean switchover needs no rewind");
    execute(&b.dsn(), "INSERT INTO t VALUES (2)");
    wait_row(&c, a, 2);
    assert_eq!(upstream(a), Some(format!("127.0.0.1:{}", b.port())));
    // Rejoining a node that already follows is harmless.
    let again = ops(a)
        .rejoin("127.0.0.1", b.port())
        .await
        .expect("rejoin again");
    assert!(!again.rewound);
    execute(&b.dsn(), "INSERT INTO t VALUES (3)");
    wait_row(&c, a, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_sync_standbys_makes_a_standby_synchronous_and_back() {
    let c = cluster("sync", &["a", "s1", "s2"], &[]);
    let a = c.pg("a");
    let state = |name: &str| {
        format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'")
    };
    assert!(ops(a).set_sync_standbys(&["s1".into()]).await.unwrap());
    assert_eq!(
        wait_for_value(&a.dsn(), &state("s1"), "sync", WAIT).as_deref(),
        Some("sync")
    );
    assert_eq!(query_text(&a.dsn(), &state("s2")).as_deref(), Some("async"));
    let states = ops(a).sync_states().await.unwrap();
    assert_eq!(
        states,
        [("s1".into(), "sync".into()), ("s2".into(), "async".into())]
    );
    assert!(!ops(a).set_sync_standbys(&["s1".into()]).await.unwrap());
    assert!(ops(a).set_sync_standbys(&[]).await.unwrap());
    assert_eq!(
        wait_for_value(&a.dsn(), &state("s1"), "async", WAIT).as_deref(),
        Some("async")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_reads_streaming_facts_on_a_standby_and_the_primary() {
    let c = cluster("facts", &["a", "b"], &[]);
    let (a, b) = (c.pg("a"), c.pg("b"));
    ops(a).set_sync_standbys(&["b".into()]).await.unwrap();
    wait_for_value(
        &a.dsn(),
        "SELECT sync_state FROM pg_stat_replication",
        "sync",
        WAIT,
    );
    execute(
        &a.dsn(),
        "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    wait_row(&c, b, 1);
    let check = |pg: &PgInstance| {
        let dsn = pg.dsn();
        async move {
            let client = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(client.1);
            let row = client
                .0
                .query_one(harp_manager::postgres::CHECK, &[])
                .await
                .unwrap();
            (row.get::<_, bool>(0), harp_manager::postgres::facts(&row))
        }
    };
    let (standby, facts) = check(b).await;
    assert!(standby);
    assert_eq!(facts.timeline, Some(1));
    assert!(facts.receive_lsn.is_some_and(|l| l > 0), "{facts:?}");
    assert_eq!(facts.upstream, Some(format!("127.0.0.1:{}", a.port())));
    assert!(facts.streaming);
    assert!(facts.sync_standbys.is_empty());
    let (standby, facts) = check(a).await;
    assert!(!standby);
    assert_eq!(facts.timeline, Some(1));
    assert_eq!(facts.receive_lsn, None);
    assert_eq!(facts.upstream, None);
    assert!(!facts.streaming);
    assert_eq!(facts.sync_standbys, ["b"]);
    // After a promotion the new primary reports the new timeline.
    ops(a).stop().await.unwrap();
    ops(b).promote().await.unwrap();
    let (standby, facts) = check(b).await;
    assert!(!standby);
    assert_eq!(facts.timeline, Some(2));
}
