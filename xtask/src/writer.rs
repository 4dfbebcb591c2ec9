//! The demo's application: a separate process (so it can run inside a child cgroup and be
//! steered by the kernel) that writes through a HARP agent in a loop and prints one line per
//! acknowledged write — the CLOCK_MONOTONIC time, the port of the Postgres that took it and
//! the row's id — so the demo can show the gap a failover caused, and whether every
//! acknowledged row is still on the primary afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use tokio_postgres::NoTls;

/// Monotonic nanoseconds, comparable across the processes of this host.
pub fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One acknowledged write: when, the port of the Postgres that took it, and its row's id.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub at_ns: u64,
    pub server_port: i32,
    pub id: i64,
}

/// The id of this process's `seq`-th write: the writer chooses it (not the table's sequence,
/// which a promoted standby may hand out again after an asynchronous failover), unique among
/// the writers running at once (their pids differ).
fn row_id(pid: u32, seq: u32) -> i64 {
    (i64::from(pid) << 32) | i64::from(seq)
}

/// The child side (`cargo xtask demo-writer <dsn>`): writes every `every` until killed,
/// reconnecting after any error (the agent holds a new connection until a leader exists).
/// Prints `<ns> <port> <id>` per acknowledged write and `ERR <ns>` per failed request or
/// connect. Simple protocol, one round trip per write: it runs unchanged through a
/// transaction pool.
pub async fn write_forever(dsn: String, every: Duration) {
    let mut client = None;
    let pid = std::process::id();
    let mut seq: u32 = 0;
    loop {
        if client.is_none() {
            match tokio_postgres::connect(&dsn, NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                Err(_) => {
                    println!("ERR {}", mono_ns());
                    tokio::time::sleep(every).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected");
        seq += 1;
        let id = row_id(pid, seq);
        let sql = format!(
            "INSERT INTO harp_demo (id, server_port) VALUES ({id}, inet_server_port()) \
             RETURNING server_port"
        );
        let port = c.simple_query(&sql).await.ok().and_then(|msgs| {
            msgs.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse::<i32>().ok(),
                _ => None,
            })
        });
        match port {
            Some(port) => println!("{} {port} {id}", mono_ns()),
            None => {
                println!("ERR {}", mono_ns());
                client = None;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The parent side: runs the writer and collects its acknowledgements.
pub struct App {
    child: Child,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// When a request or a connect failed (CLOCK_MONOTONIC ns).
    errors: Arc<Mutex<Vec<u64>>>,
}

impl App {
    /// This very program (rebuilt in place by the workspace build, hence by path) as the
    /// demo's application writing to `dsn`, inside `cgroup` when the kernel path steers it.
    pub fn through(
        dsn: &str,
        cgroup: Option<&harp_tests::cgroup::ChildCgroup>,
    ) -> anyhow::Result<App> {
        let exe = harp_tests::workspace_bin("xtask");
        let mut cmd = match cgroup {
            Some(cg) => cg.command(&exe),
            None => Command::new(&exe),
        };
        cmd.args(["demo-writer", dsn]);
        App::spawn(cmd)
    }

    /// `cmd` runs `xtask demo-writer <dsn>` (possibly wrapped to enter a cgroup).
    pub fn spawn(mut cmd: Command) -> anyhow::Result<App> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (sink, err_sink) = (acks.clone(), errors.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(Ok(at)) = line.strip_prefix("ERR ").map(str::parse::<u64>) {
                    err_sink.lock().expect("errors").push(at);
                    continue;
                }
                if let Some(ack) = parse_ack(&line) {
                    sink.lock().expect("acks").push(ack);
                }
            }
        });
        Ok(App {
            child,
            acks,
            errors,
        })
    }

    /// What it acknowledged so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// When its requests or connects failed so far.
    pub fn errors(&self) -> Vec<u64> {
        self.errors.lock().expect("errors").clone()
    }

    /// Stops the writer and returns what it acknowledged.
    pub fn stop(mut self) -> Vec<Ack> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50)); // let the reader drain the pipe
        self.acks.lock().expect("acks").clone()
    }
}

/// `<ns> <port> <id>`, as the child prints an acknowledged write.
fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.split_whitespace();
    Some(Ack {
        at_ns: it.next()?.parse().ok()?,
        server_port: it.next()?.parse().ok()?,
        id: it.next()?.parse().ok()?,
    })
}

/// The acknowledged rows (by id) missing from `harp_demo` on the Postgres at `dsn` — meant
/// for the current primary, connected to directly: the writes a failover lost. Checked row
/// by row, in sorted order.
pub async fn missing_rows(dsn: &str, acks: &[Ack]) -> anyhow::Result<Vec<i64>> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    let mut ids: Vec<i64> = acks.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = client
        .query("SELECT id FROM harp_demo WHERE id = ANY($1)", &[&ids])
        .await?;
    let found: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ids.into_iter().filter(|id| !found.contains(id)).collect())
}

/// The longest time between two acknowledged writes, and where it started.
pub fn longest_gap(acks: &[Ack]) -> Option<(Duration, Ack, Ack)> {
    acks.windows(2)
        .map(|w| (Duration::from_nanos(w[1].at_ns - w[0].at_ns), w[0], w[1]))
        .max_by_key(|(d, _, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_two_writers_never_collide_and_acks_parse() {
        assert_ne!(row_id(7, 1), row_id(8, 1));
        assert_ne!(row_id(7, 1), row_id(7, 2));
        assert_eq!(row_id(1, 5), (1 << 32) + 5);
        let ack = parse_ack("123 5432 4294967301").expect("parses");
        assert_eq!(
            (ack.at_ns, ack.server_port, ack.id),
            (123, 5432, 4294967301)
        );
        assert!(parse_ack("123 5432").is_none());
        assert!(parse_ack("ERR 123").is_none());
    }
}
