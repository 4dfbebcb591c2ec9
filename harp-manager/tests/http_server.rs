//! The health endpoints served over a real socket: status codes, `HEAD`, bad queries, and the
//! header-read bound that keeps a silent or slow client from holding a connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harp_core::records::{PgState, ReplicaFacts};
use harp_manager::http::{StatusView, router};
use tokio::sync::watch;

fn primary() -> StatusView {
    StatusView {
        name: "n1".into(),
        location: "dca".into(),
        role: "leader",
        token: Some(9),
        postgres: PgState::Primary,
        leader: Some("n1".into()),
        leader_token: Some(9),
        fenced: false,
        managed: true,
        ineligible: None,
        switchover_refusal: None,
        etcd_session: true,
        replication: "streaming",
        writable: true,
        replica: ReplicaFacts::default(),
        reason: None,
    }
}

/// Serves `view` on a loopback port with the given header bound; returns the port.
fn start(view: StatusView, header_timeout: Duration) -> (u16, watch::Sender<StatusView>) {
    let (tx, rx) = watch::channel(view);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tcp = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let http = harp_core::config::HttpConfig {
                enable: true,
                host: "127.0.0.1".into(),
                port: 0,
                probes_timeout: Duration::from_millis(500),
                tls: None,
            };
            let listener = harp_http::Listener::new(tcp, &http).unwrap();
            let limits = harp_http::Limits {
                head_timeout: header_timeout,
                ..Default::default()
            };
            harp_http::serve(listener, router(rx), limits).await;
        });
    });
    (port, tx)
}

/// Sends `req` raw and reads the whole answer (the server closes: `Connection: close`).
fn raw(port: u16, req: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let text = raw(
        port,
        &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

#[test]
fn checks_answer_with_codes_and_reasons_and_head_has_no_body() {
    let (port, tx) = start(primary(), Duration::from_secs(5));
    let (code, body) = request(port, "GET", "/primary");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["check"], "primary");
    assert_eq!(json["ok"], true);
    assert_eq!(json["why"], "writable primary holding the lease (token 9)");
    // The status view's fields come along, as in /status.
    assert_eq!((&json["name"], &json["token"]), (&"n1".into(), &9.into()));
    assert_eq!(request(port, "GET", "/read-write").0, 200);
    assert_eq!(request(port, "GET", "/leader").0, 200);
    assert_eq!(request(port, "GET", "/read-only?lag=0").0, 200);
    let (code, body) = request(port, "HEAD", "/primary");
    assert_eq!((code, body.as_str()), (200, ""));
    let (code, body) = request(port, "GET", "/replica");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("\"why\":\"Postgres is primary, not a standby\""),
        "{body}"
    );
    assert_eq!(request(port, "HEAD", "/replica"), (503, String::new()));
    let (code, body) = request(port, "GET", "/replica?lga=1");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown parameter `lga`"), "{body}");

    // The answers follow the view as the manager updates it.
    tx.send_replace(StatusView {
        role: "follower",
        token: None,
        postgres: PgState::Standby,
        leader: Some("n2".into()),
        writable: false,
        replica: ReplicaFacts {
            streaming: true,
            upstream: Some("10.0.0.2:5432".into()),
            lag: Some(2 << 20),
            ..Default::default()
        },
        ..primary()
    });
    assert_eq!(request(port, "GET", "/primary").0, 503);
    assert_eq!(request(port, "GET", "/replica?lag=16MB").0, 200);
    assert_eq!(request(port, "GET", "/replica?lag=1%20MB").0, 503);
    assert_eq!(request(port, "GET", "/read-only").0, 200);
}

/// Reads until the server closes the connection; how long that took.
fn closed_within(mut s: TcpStream, bound: Duration) -> Duration {
    s.set_read_timeout(Some(bound)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {} // a 408 or similar before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("the server kept the connection open past {bound:?}: {e}"),
        }
    }
}

#[test]
fn a_slow_or_silent_client_is_cut_after_the_header_bound() {
    let (port, _tx) = start(primary(), Duration::from_millis(300));
    // Half a request line, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /primary HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_within(slow, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Nothing at all.
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let took = closed_within(silent, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The server still answers others.
    assert_eq!(request(port, "GET", "/primary").0, 200);
}
