//! harp-agent's memory with many idle client sessions: open [`IDLE_SESSIONS`] Postgres sessions
//! through it (each up to ReadyForQuery), read its VmRSS before and with them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_core::pgwire::startup_message;
use serde::Serialize;

use super::client::psql;
use super::{host, round_to};

/// Idle client sessions held open through the agent for the RSS measurement.
pub const IDLE_SESSIONS: usize = 1000;
/// `application_name` of the idle sessions, to count them in `pg_stat_activity`.
const IDLE_APP: &str = "harp-bench-idle";
/// Threads opening the sessions.
const OPENERS: usize = 8;

#[derive(Serialize, Default)]
pub struct AgentRss {
    pub rss_mb_before: f64,
    pub rss_mb_after: f64,
    pub sessions: usize,
    /// Client sessions of the test seen in `pg_stat_activity` while held open.
    pub sessions_seen_by_postgres: u64,
    pub open_s: f64,
}

/// Opens [`IDLE_SESSIONS`] sessions through the proxy on `port`, reads the VmRSS of the proxy's
/// process `pid` before and with them, closes them.
pub fn agent_rss(pid: u32, port: u16, pg_port: u16) -> anyhow::Result<AgentRss> {
    let rss_kb = || host::vm_rss_kb(pid).context("read the agent's VmRSS");
    let before = rss_kb()?;
    let t0 = Instant::now();
    let opened: Vec<anyhow::Result<Vec<TcpStream>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                s.spawn(move || {
                    // Thread t opens sessions t·N/T up to (t+1)·N/T.
                    let n = (t + 1) * IDLE_SESSIONS / OPENERS - t * IDLE_SESSIONS / OPENERS;
                    (0..n)
                        .map(|_| open_session(port))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("session opener panicked"))
            .collect()
    });
    let open_s = t0.elapsed().as_secs_f64();
    let mut sessions = Vec::new();
    let mut error = None;
    for r in opened {
        match r {
            Ok(v) => sessions.extend(v),
            Err(e) => error = Some(e),
        }
    }
    if let Some(e) = error {
        close_sessions(sessions);
        return Err(e.context(format!("open {IDLE_SESSIONS} idle sessions")));
    }
    // Let the agent settle (buffers it allocated for the handshakes).
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb()?;
    let seen = psql(
        pg_port,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{IDLE_APP}'"),
    )?
    .parse()
    .unwrap_or(0);
    let n = sessions.len();
    close_sessions(sessions);
    println!(
        "VmRSS: {:.1} MB before, {:.1} MB with {n} idle sessions ({seen} seen by Postgres)",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    Ok(AgentRss {
        rss_mb_before: round_to(before as f64 / 1024.0, 2),
        rss_mb_after: round_to(after as f64 / 1024.0, 2),
        sessions: n,
        sessions_seen_by_postgres: seen,
        open_s: round_to(open_s, 2),
    })
}

/// A Postgres session over `127.0.0.1:<port>` (trust auth), returned once the server sent
/// ReadyForQuery.
fn open_session(port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let msg = startup_message(&[
        ("user", "postgres"),
        ("database", "postgres"),
        ("application_name", IDLE_APP),
    ]);
    s.write_all(&msg)?;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)
            .context("read from the session before ReadyForQuery")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            bail!("bad message length {len} (type {:?})", head[0] as char);
        }
        let mut payload = vec![0u8; len - 4];
        s.read_exact(&mut payload)?;
        match head[0] {
            b'Z' => return Ok(s),
            b'E' => bail!("server refused the session: {}", error_message(&payload)),
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                bail!("the server asks for authentication (trust expected)")
            }
            _ => {}
        }
    }
}

/// The `M` (message) field of an ErrorResponse body.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// Sends Terminate on each session and closes it.
fn close_sessions(sessions: Vec<TcpStream>) {
    for mut s in sessions {
        let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
    }
}
