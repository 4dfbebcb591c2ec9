//! The lab's client: writes to the `register` table through an agent, one write at a time,
//! and records every attempt as a [`WriteRecord`] JSON line (flushed at once, so a run that
//! ends abruptly loses at most the attempt in flight). It runs as its own process
//! (`harp-lab-writer`) so it can live in an application host's namespace — and, on the
//! kernel-path host, in the cgroup the agent steers.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

use crate::lab::history::{Outcome, WriteRecord};

/// The table every node carries; the primary key makes a double apply visible.
pub const REGISTER_DDL: &str = "CREATE TABLE IF NOT EXISTS register (\
    client text NOT NULL, seq bigint NOT NULL, value bigint NOT NULL, \
    node text NOT NULL DEFAULT current_setting('cluster_name'), \
    server_ms float8 NOT NULL DEFAULT extract(epoch from clock_timestamp()) * 1000, \
    PRIMARY KEY (client, seq))";

const INSERT: &str = "INSERT INTO register (client, seq, value) VALUES ($1, $2, $3) \
    RETURNING node, server_ms";

/// What one writer does.
#[derive(Debug, Clone)]
pub struct WriterSpec {
    pub client: String,
    pub location: String,
    pub path: String,
    pub dsn: String,
    /// Pause between the end of one attempt and the next.
    pub every: Duration,
    /// A connect or a statement with no answer within this is given up (and reconnected).
    pub timeout: Duration,
}

pub fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Writes until `stop` resolves, appending one JSON line per attempt to `out`.
pub async fn run(
    spec: &WriterSpec,
    out: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    tokio::pin!(stop);
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let rec = tokio::select! {
            _ = &mut stop => return Ok(()),
            rec = attempt(spec, &mut client, seq) => rec,
        };
        let mut line = serde_json::to_string(&rec).map_err(std::io::Error::other)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(spec.every) => {}
        }
    }
}

/// One write: connects if needed, sends, and classifies what happened.
async fn attempt(spec: &WriterSpec, client: &mut Option<Client>, seq: u64) -> WriteRecord {
    let mut rec = WriteRecord {
        client: spec.client.clone(),
        location: spec.location.clone(),
        path: spec.path.clone(),
        seq,
        send_ms: unix_ms(),
        ack_ms: None,
        outcome: Outcome::Ok,
        node: None,
        server_ms: None,
    };
    if client.is_none() {
        match tokio::time::timeout(spec.timeout, tokio_postgres::connect(&spec.dsn, NoTls)).await {
            Ok(Ok((c, conn))) => {
                tokio::spawn(conn);
                *client = Some(c);
            }
            Ok(Err(e)) => return failed(rec, format!("connect: {e}")),
            Err(_) => return failed(rec, format!("connect: no answer in {:?}", spec.timeout)),
        }
        // The connect took time; the statement leaves now.
        rec.send_ms = unix_ms();
    }
    let c = client.as_ref().expect("connected above");
    let value = seq as i64;
    let res = tokio::time::timeout(
        spec.timeout,
        c.query_one(INSERT, &[&spec.client, &(seq as i64), &value]),
    )
    .await;
    match res {
        Ok(Ok(row)) => {
            rec.ack_ms = Some(unix_ms());
            rec.node = Some(row.get(0));
            rec.server_ms = Some(row.get(1));
            rec
        }
        // The server answered with an error: the insert did not happen.
        Ok(Err(e)) if e.as_db_error().is_some() => {
            *client = None;
            failed(rec, e.to_string())
        }
        Ok(Err(e)) => {
            *client = None;
            rec.outcome = Outcome::Unknown {
                error: e.to_string(),
            };
            rec
        }
        Err(_) => {
            *client = None;
            rec.outcome = Outcome::Unknown {
                error: format!("no answer in {:?}", spec.timeout),
            };
            rec
        }
    }
}

fn failed(mut rec: WriteRecord, error: String) -> WriteRecord {
    rec.outcome = Outcome::Failed { error };
    rec
}

/// Reads a writer's JSON lines; a torn last line (the writer was killed mid-write) is skipped.
pub fn read_records(path: &Path) -> std::io::Result<Vec<WriteRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
