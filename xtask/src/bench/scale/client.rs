//! The scale bench's client process (`cargo xtask bench scale-client`, hidden): many Postgres
//! sessions on one single-threaded tokio runtime, speaking the wire protocol itself (startup,
//! simple query) so that a session costs a socket and a few bytes here. It runs as a process of
//! its own so that the kernel path can run it inside the steered cgroup.
//!
//! It reads one command per line on stdin and answers each with one JSON line on stdout:
//! - `grow <total>`: opens sessions until `total` are open, each checked with one `SELECT 1`
//!   → `{"connected", "failed", "error"}`;
//! - `active <secs> <interval_ms>`: every session runs `SELECT 1` every `interval_ms` (phases
//!   spread evenly, missed ticks skipped, never a burst) for `secs`
//!   → `{"connected", "queries", "errors", "secs", "p50_ms", "p99_ms", "error"}`.
//!
//! At EOF it ends every session with Terminate and exits.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use harp_core::pgwire::startup_message;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, timeout};

use crate::bench::stats::nearest_rank;

/// `application_name` of the sessions.
pub const APP: &str = "harp-bench-scale";
/// Sessions being opened at once.
const OPENING: usize = 32;
/// Bound on opening one session (connect, startup, one query).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one query of the active phase.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn main(port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(port))
}

async fn serve(port: u16) -> anyhow::Result<()> {
    let mut sessions: Vec<TcpStream> = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["grow", total] => grow(&mut sessions, port, total.parse()?).await,
            ["active", secs, interval_ms] => {
                let secs = Duration::from_secs_f64(secs.parse()?);
                let interval = Duration::from_millis(interval_ms.parse()?);
                active(&mut sessions, secs, interval).await
            }
            _ => bail!("unknown command {line:?}"),
        };
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    for mut s in sessions {
        let _ = s.write_all(&[b'X', 0, 0, 0, 4]).await;
    }
    Ok(())
}

/// Opens sessions until `total` are open, or until one fails (the rest of that batch still
/// finishes).
async fn grow(sessions: &mut Vec<TcpStream>, port: u16, total: usize) -> serde_json::Value {
    let want = total.saturating_sub(sessions.len());
    let (mut started, mut failed, mut error) = (0, 0, None::<String>);
    let mut opening = JoinSet::new();
    loop {
        while started < want && opening.len() < OPENING && error.is_none() {
            opening.spawn(async move {
                match timeout(OPEN_TIMEOUT, open(port)).await {
                    Ok(r) => r,
                    Err(_) => bail!("no ReadyForQuery within {OPEN_TIMEOUT:?}"),
                }
            });
            started += 1;
        }
        let Some(done) = opening.join_next().await else {
            break;
        };
        match done.context("opening task").and_then(|r| r) {
            Ok(s) => sessions.push(s),
            Err(e) => {
                failed += 1;
                error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    json!({"connected": sessions.len(), "failed": failed, "error": error})
}

/// A session on `127.0.0.1:<port>` (trust auth) that answered one `SELECT 1`. Through pgbouncer
/// in session mode that query also binds the session's server connection, as on every other
/// path.
async fn open(port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connect")?;
    s.set_nodelay(true)?;
    let startup = startup_message(&[
        ("user", "postgres"),
        ("database", "postgres"),
        ("application_name", APP),
    ]);
    s.write_all(&startup).await?;
    until_ready(&mut s).await.context("startup")?;
    query(&mut s).await?;
    Ok(s)
}

/// Sends `SELECT 1` and reads up to ReadyForQuery.
async fn query(s: &mut TcpStream) -> anyhow::Result<()> {
    const SQL: &[u8] = b"SELECT 1\0";
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&(4 + SQL.len() as u32).to_be_bytes());
    msg.extend_from_slice(SQL);
    s.write_all(&msg).await?;
    until_ready(s).await.context("SELECT 1")
}

/// Reads messages up to ReadyForQuery; `Err` on an ErrorResponse (the server closes after one
/// during startup) or an authentication request.
async fn until_ready(s: &mut TcpStream) -> anyhow::Result<()> {
    let mut error = None;
    loop {
        let (kind, payload) = match read_message(s).await {
            Ok(m) => m,
            Err(e) => return Err(error.map_or(e, |m| anyhow::anyhow!("server error: {m}"))),
        };
        match kind {
            b'Z' => return error.map_or(Ok(()), |m| bail!("server error: {m}")),
            b'E' => error = Some(message_field(&payload)),
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                bail!("the server asks for authentication (trust expected)")
            }
            _ => {}
        }
    }
}

/// One backend message: its type and body.
async fn read_message(s: &mut TcpStream) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 20).contains(&len) {
        bail!("bad message length {len} (type {:?})", head[0] as char);
    }
    let mut payload = vec![0u8; len - 4];
    s.read_exact(&mut payload).await?;
    Ok((head[0], payload))
}

/// The `M` (message) field of an ErrorResponse body.
fn message_field(payload: &[u8]) -> String {
    payload
        .split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// What one session did in the active phase; `session` is `None` once it failed.
struct Done {
    session: Option<TcpStream>,
    queries: u64,
    latencies_us: Vec<u32>,
    error: Option<String>,
}

async fn active(
    sessions: &mut Vec<TcpStream>,
    secs: Duration,
    interval: Duration,
) -> serde_json::Value {
    let n = sessions.len().max(1) as u32;
    let start = Instant::now();
    let end = start + secs;
    let mut tasks = JoinSet::new();
    for (i, s) in sessions.drain(..).enumerate() {
        // Spread the sessions' phases over one interval, so the load is steady.
        let first = start + interval * i as u32 / n;
        tasks.spawn(run_session(s, first.into(), end.into(), interval));
    }
    let (mut queries, mut errors, mut error, mut lat) = (0u64, 0u64, None, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let Ok(d) = done else {
            errors += 1;
            continue;
        };
        queries += d.queries;
        lat.extend(d.latencies_us);
        match d.session {
            Some(s) => sessions.push(s),
            None => errors += 1,
        }
        if error.is_none() {
            error = d.error;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = lat.into_iter().map(|u| f64::from(u) / 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "connected": sessions.len(),
        "queries": queries,
        "errors": errors,
        "secs": elapsed,
        "p50_ms": nearest_rank(&ms, 0.5),
        "p99_ms": nearest_rank(&ms, 0.99),
        "error": error,
    })
}

async fn run_session(
    mut s: TcpStream,
    first: tokio::time::Instant,
    end: tokio::time::Instant,
    interval: Duration,
) -> Done {
    let mut tick = tokio::time::interval_at(first, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut done = Done {
        session: None,
        queries: 0,
        latencies_us: Vec::new(),
        error: None,
    };
    // The window ends at `end`, not at the first tick after it.
    while let Ok(at) = tokio::time::timeout_at(end, tick.tick()).await {
        if at >= end {
            break;
        }
        let t0 = Instant::now();
        match timeout(QUERY_TIMEOUT, query(&mut s)).await {
            Ok(Ok(())) => {
                done.queries += 1;
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                done.latencies_us.push(us);
            }
            Ok(Err(e)) => {
                done.error = Some(format!("{e:#}"));
                return done;
            }
            Err(_) => {
                done.error = Some(format!("SELECT 1 took over {QUERY_TIMEOUT:?}"));
                return done;
            }
        }
    }
    done.session = Some(s);
    done
}
