//! Free loopback ports, never the same one twice within one test process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port that was free on 127.0.0.1 a moment ago and that this process has not handed out
/// before. The probe socket is closed on return, so the caller's server can bind it.
pub fn free_port() -> u16 {
    let mut used = handed_out().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..10_000 {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local_addr of probe socket")
            .port();
        if used.insert(port) {
            return port;
        }
    }
    panic!(
        "no unused free port found after 10000 tries ({} handed out)",
        used.len()
    );
}
