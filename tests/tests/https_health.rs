//! Health endpoints of real managers and an agent over HTTPS (`http.secure`), with a required
//! client certificate on the managers, as a load balancer configured for TLS probes them.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use harp_tests::{AgentProc, TestCluster, TestPki, http_get};

#[test]
fn managers_and_agents_answer_probes_over_https_and_refuse_clients_without_a_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestPki::create(certs.path());
    let mut c = TestCluster::builder("https")
        .etcd_members(1)
        .node("n1", "dca", 200)
        .node("n2", "dca", 100)
        .http_yaml(&ca.http_yaml(true))
        .start();
    assert_eq!(wait_leader_not(&c, "dca", None).node, "n1");
    let (p1, p2) = (c.node("n1").mgr.http_port(), c.node("n2").mgr.http_port());
    let code = |port, path| ca.https_get(port, path, true).map(|(code, _)| code);
    assert!(
        eventually(LONG, || code(p1, "/primary") == Ok(200)),
        "/primary on the leader: {:?}\n{}",
        code(p1, "/primary"),
        c.manager_logs(20)
    );
    assert_eq!(code(p2, "/primary"), Ok(503));
    assert_eq!(code(p2, "/read-only"), Ok(200));
    // No client certificate: refused at the handshake; plain HTTP: no answer at all.
    let refused = ca.https_get(p1, "/primary", false);
    assert!(
        refused.is_err(),
        "answered without a certificate: {refused:?}"
    );
    assert_eq!(http_get(p1, "/primary", Duration::from_secs(2)), None);
    // A client that connects and sends nothing does not delay a probe.
    let mut silent = TcpStream::connect(("127.0.0.1", p1)).unwrap();
    let began = Instant::now();
    assert_eq!(code(p1, "/health/is-live"), Ok(200));
    assert!(began.elapsed() < Duration::from_secs(1), "the probe waited");
    let _ = silent.flush();

    // The agent over HTTPS (no client certificate required there).
    let mut spec = c.agent_spec("app", "dca");
    spec.http_yaml = ca.http_yaml(false);
    let agent = AgentProc::start(c.dir(), spec);
    let ready = || ca.https_get(agent.http_port(), "/health/is-ready", false);
    assert!(
        eventually(LONG, || ready().is_ok_and(|(code, _)| code == 200)),
        "agent /health/is-ready: {:?}\n{}",
        ready(),
        agent.log_tail(20)
    );
}
