//! `/primary`, `/read-only` and `/replica` of real harp-managers in a multi-writer cluster, as
//! a load balancer's health check sees them through a failover and a fence.

mod common;

use std::time::Duration;

use common::*;
use harp_tests::{TestCluster, http_get};

/// The status code `path` answers on `node`'s manager (0: no answer).
fn code(c: &mut TestCluster, node: &str, path: &str) -> u16 {
    let port = c.node(node).mgr.http_port();
    http_get(port, path, Duration::from_secs(2)).map_or(0, |(code, _)| code)
}

/// Waits until every node answers `path` with the code `want` gives it.
fn wait_codes(c: &mut TestCluster, path: &str, want: impl Fn(&str) -> u16) {
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    let ok = eventually(LONG, || names.iter().all(|n| code(c, n, path) == want(n)));
    if !ok {
        let got: Vec<(String, u16, u16)> = names
            .iter()
            .map(|n| (n.clone(), code(c, n, path), want(n)))
            .collect();
        panic!(
            "{path}: (node, got, want) = {got:?}\n{}",
            c.manager_logs(20)
        );
    }
}

#[test]
fn primary_follows_the_lead_master_and_read_only_every_healthy_node() {
    let mut c = TestCluster::builder("health")
        .etcd_members(1)
        .node("n1", "dca", 200)
        .node("n2", "dca", 100)
        .node("n3", "dca", 100)
        .start();
    let first = wait_leader_not(&c, "dca", None);
    assert_eq!(first.node, "n1", "the highest priority leads");
    let lead = |want: &'static str| move |n: &str| if n == want { 200 } else { 503 };
    wait_codes(&mut c, "/primary", lead("n1"));
    wait_codes(&mut c, "/read-write", lead("n1"));
    // Every node's Postgres is a writable primary: all serve reads; none is a replica.
    wait_codes(&mut c, "/read-only", |_| 200);
    wait_codes(&mut c, "/replica", |_| 503);
    let (status, body) = http_get(c.node("n2").mgr.http_port(), "/primary", LONG).unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("not the lease holder: n1 leads"), "{body}");

    // Failover: n1's Postgres dies, the lead moves, and so does /primary.
    c.node("n1").pg.kill9();
    let next = wait_leader_not(&c, "dca", Some("n1"));
    let new = if next.node == "n2" { "n2" } else { "n3" };
    wait_codes(&mut c, "/primary", lead(new));
    wait_codes(&mut c, "/read-only", |n| if n == "n1" { 503 } else { 200 });
    let (_, body) = http_get(c.node("n1").mgr.http_port(), "/read-only", LONG).unwrap();
    assert!(body.contains("\"why\":\"Postgres is down\""), "{body}");

    // A fenced node leaves every pool; the lead master leaves /primary as it releases.
    let other = if new == "n2" { "n3" } else { "n2" };
    set_fenced(&c, other, true);
    wait_codes(&mut c, "/read-only", |n| if n == new { 200 } else { 503 });
    set_fenced(&c, new, true);
    wait_codes(&mut c, "/primary", |_| 503);
}
