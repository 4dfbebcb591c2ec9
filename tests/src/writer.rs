//! A background writer: inserts rows `(id)` through one DSN every few milliseconds and records
//! which ids were acknowledged (the commit returned OK), so a test can check row by row that
//! no acknowledged write was lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::streaming::execute;

/// How long one INSERT may take before its outcome counts as unknown (a synchronous commit
/// with no standby blocks forever).
const INSERT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Writer {
    table: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    failures: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Creates `table (id bigint primary key)` on `dsn` (panics if it cannot) and starts
    /// inserting ids 1, 2, … every `every`. An id whose outcome is unknown (error, timeout) is
    /// not acknowledged and never reused; after an error the writer reconnects.
    pub fn start(dsn: &str, table: &str, every: Duration) -> Writer {
        execute(
            dsn,
            &format!("CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY)"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
            let dsn = format!("{dsn} connect_timeout=1");
            let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("writer runtime")
                    .block_on(write_loop(dsn, insert, every, stop, acked, failures))
            })
        };
        Writer {
            table: table.into(),
            stop,
            acked,
            failures,
            thread: Some(thread),
        }
    }

    /// The ids acknowledged so far, in order.
    pub fn acked(&self) -> Vec<i64> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Inserts that failed or timed out so far.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` ids are acknowledged; `false` after `timeout`.
    pub fn wait_acked(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.acked().len() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops writing (waits for the insert in flight) and returns the acknowledged ids.
    pub fn stop(&mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked()
    }

    /// The acknowledged ids that the table on `dsn` does not hold (compared row by row).
    /// Panics if the table cannot be read there.
    pub fn missing_on(&self, dsn: &str) -> Vec<i64> {
        let present: BTreeSet<i64> = crate::streaming::query_text(
            dsn,
            &format!(
                "SELECT coalesce(string_agg(id::text, ','), '') FROM {}",
                self.table
            ),
        )
        .unwrap_or_else(|| panic!("cannot read {} on {dsn}", self.table))
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("id"))
        .collect();
        self.acked()
            .into_iter()
            .filter(|id| !present.contains(id))
            .collect()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn write_loop(
    dsn: String,
    insert: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    failures: Arc<AtomicUsize>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut next: i64 = 1;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                Err(_) => {
                    tokio::time::sleep(every.max(Duration::from_millis(50))).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected");
        let id = next;
        next += 1;
        match tokio::time::timeout(INSERT_TIMEOUT, c.execute(insert.as_str(), &[&id])).await {
            Ok(Ok(_)) => acked.lock().unwrap_or_else(|e| e.into_inner()).push(id),
            _ => {
                failures.fetch_add(1, Ordering::SeqCst);
                client = None;
            }
        }
        tokio::time::sleep(every).await;
    }
}
