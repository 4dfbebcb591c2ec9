//! The agent and a leader that stops answering: what reaches it after the agent cut a session
//! with a request in flight (nothing), and how long a new client waits on it once it is
//! replaced (not at all). The "leaders" here are plain TCP listeners whose records the test
//! writes to etcd itself, so the old one can hold its socket unread, or leave connects
//! unanswered, as a busy or partitioned server does.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harp_core::keys::Keys;
use harp_core::records::{LeaderRecord, RECORD_VERSION};
use harp_tests::agent::{AgentProc, AgentSpec};
use harp_tests::etcd::EtcdCluster;
use harp_tests::rt::block_on;
use harp_tests::workdir::WorkDir;

const CLUSTER: &str = "cut";

fn record(node: &str, port: u16) -> String {
    LeaderRecord {
        version: RECORD_VERSION,
        node: node.into(),
        location: "dca".into(),
        address: "127.0.0.1".into(),
        port,
        handover_to: None,
        leaving: false,
        ..Default::default()
    }
    .encode()
}

/// A new leadership (a new token: the key is deleted, then created again) at `port`.
fn new_leadership(etcd: &EtcdCluster, key: &str, node: &str, port: u16) {
    block_on(|| async {
        let mut c = etcd.client().await;
        c.delete(key, None).await.unwrap();
        c.put(key, record(node, port), None).await.unwrap();
    });
}

/// Accepts every connection (the agent's health probes too) and keeps them unread.
fn hold_connections(l: TcpListener) -> Arc<std::sync::Mutex<Vec<TcpStream>>> {
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    held
}

#[test]
fn bytes_queued_for_a_replaced_leader_are_dropped_at_the_cut() {
    let dir = WorkDir::new();
    let etcd = EtcdCluster::start(1, &dir);
    let key = Keys::new(CLUSTER).leader("dca");
    let old = TcpListener::bind("127.0.0.1:0").unwrap();
    let old_port = old.local_addr().unwrap().port();
    let new = TcpListener::bind("127.0.0.1:0").unwrap();
    let new_port = new.local_addr().unwrap().port();
    let held = hold_connections(old);
    let _new_held = hold_connections(new);
    block_on(|| async {
        let mut c = etcd.client().await;
        c.put(key.as_str(), record("n1", old_port), None)
            .await
            .unwrap();
    });
    let spec = AgentSpec::new("p1", "dca", CLUSTER, etcd.endpoints());
    let mut agent = AgentProc::start(&dir, spec);
    assert!(
        agent.wait_ready(Duration::from_secs(20)),
        "agent never ready\n{}",
        agent.log_tail(30)
    );

    // A client streams a request the old leader never reads, until the agent's socket to it
    // is full: those bytes wait in the agent's kernel for the server to take them.
    let client = TcpStream::connect(("127.0.0.1", agent.listen_port())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            client
                .set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = client.write_all(&chunk)
                    && !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                {
                    break;
                }
            }
        })
    };
    let session = wait_for(Duration::from_secs(10), || {
        held.lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                matches!(s.peek(&mut b), Ok(1))
            })
            .map(|s| s.try_clone().unwrap())
    })
    .expect("the session never reached the old leader");
    std::thread::sleep(Duration::from_secs(1)); // every buffer on the way fills

    // The leadership changes: the agent cuts the session mid-request.
    new_leadership(&etcd, &key, "n2", new_port);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = client.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();

    // The old leader now reads: what it had received, then a reset — never the bytes the
    // agent still held for it followed by a clean end (which it would have run).
    session.set_nonblocking(false).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut session = session;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let end = loop {
        match session.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got += n,
            Err(e) => break Err(e),
        }
    };
    match end {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!(
            "the old leader read {got} bytes then {other:?}, not a reset\n{}",
            agent.log_tail(20)
        ),
    }
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A listener whose accept queue is full: further connects get no answer at all.
fn unanswering_listener() -> (TcpListener, TcpStream, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    nix::sys::socket::listen(&l, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let port = l.local_addr().unwrap().port();
    let filler = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (l, filler, port)
}

#[test]
fn a_connect_to_a_replaced_leader_is_given_up_at_once() {
    let dir = WorkDir::new();
    let etcd = EtcdCluster::start(1, &dir);
    let key = Keys::new(CLUSTER).leader("dca");
    let (_hung, _filler, hung_port) = unanswering_listener();
    let new = TcpListener::bind("127.0.0.1:0").unwrap();
    let new_port = new.local_addr().unwrap().port();
    block_on(|| async {
        let mut c = etcd.client().await;
        c.put(key.as_str(), record("n1", hung_port), None)
            .await
            .unwrap();
    });
    // A connect may take up to 10 s: only a change of leader should end it sooner.
    let mut spec = AgentSpec::new("p1", "dca", CLUSTER, etcd.endpoints());
    spec.pause_timeout_ms = 30_000;
    spec.connect_timeout_ms = 10_000;
    let agent = AgentProc::start(&dir, spec);
    let up = wait_for(Duration::from_secs(20), || {
        agent.http("/status").filter(|(_, b)| b.contains("\"n1\""))
    });
    assert!(
        up.is_some(),
        "agent never routed to n1\n{}",
        agent.log_tail(30)
    );

    // The client's session waits on n1, which never answers the agent's connect.
    let _client = TcpStream::connect(("127.0.0.1", agent.listen_port())).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    new_leadership(&etcd, &key, "n2", new_port);
    let replaced = Instant::now();
    new.set_nonblocking(true).unwrap();
    let reached = wait_for(Duration::from_secs(15), || new.accept().ok());
    let waited = replaced.elapsed();
    assert!(
        reached.is_some(),
        "the session never reached n2\n{}",
        agent.log_tail(30)
    );
    println!("the session reached the new leader {waited:?} after the change");
    assert!(
        waited < Duration::from_secs(3),
        "the agent finished its connect to the replaced leader first ({waited:?})"
    );
}
