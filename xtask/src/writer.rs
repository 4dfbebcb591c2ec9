//! The demo's application: a client that writes through a HARP agent in a loop and remembers
//! which server took each write and when, so the demo can show the gap a failover caused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// One acknowledged write: when, and the port of the Postgres that took it.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub at: Instant,
    pub server_port: i32,
}

#[derive(Default, Clone)]
pub struct Log(Arc<Mutex<Vec<Ack>>>);

impl Log {
    pub fn acks(&self) -> Vec<Ack> {
        self.0.lock().expect("writer log").clone()
    }
}

/// Writes every `every` through `dsn` until `stop` flips; reconnects after any error (the agent
/// holds a new connection until a leader exists). Each write lands in `harp_demo` on its server.
pub async fn run(dsn: String, every: Duration, log: Log, stop: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match tokio_postgres::connect(&dsn, NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                Err(_) => {
                    tokio::time::sleep(every).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected");
        let sql = "INSERT INTO harp_demo (server_port) VALUES (inet_server_port()) \
                   RETURNING server_port";
        match c.query_one(sql, &[]).await {
            Ok(row) => log.0.lock().expect("writer log").push(Ack {
                at: Instant::now(),
                server_port: row.get(0),
            }),
            Err(_) => client = None,
        }
        tokio::time::sleep(every).await;
    }
}

/// The longest time between two acknowledged writes, and where it started.
pub fn longest_gap(acks: &[Ack]) -> Option<(Duration, Ack, Ack)> {
    acks.windows(2)
        .map(|w| (w[1].at - w[0].at, w[0], w[1]))
        .max_by_key(|(d, _, _)| *d)
}
