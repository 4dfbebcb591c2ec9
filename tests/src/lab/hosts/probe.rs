//! Probes the lab's services from inside a namespace (call them within `Net::run_in`).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::lab::net::LabError;
use etcd_client::{Client, ConnectOptions};

/// Whether `addr` accepts a TCP connection within `timeout`.
pub fn tcp_open(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// `GET http://<addr><path>` (HTTP/1.0): the harness's, from inside a namespace.
pub use crate::http::http_get_at as http_get;

/// The first column of the first row of `sql` over a fresh connection to `dsn`.
pub async fn pg_query_one(dsn: &str, sql: &str) -> Result<String, String> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let res = client.simple_query(sql).await.map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    res?.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| format!("`{sql}` returned no row"))
}

/// A put and a linearizable get through `endpoints`, bounded by 2 s.
pub async fn etcd_answers(endpoints: &[String], opts: ConnectOptions) -> Result<(), String> {
    let fut = async {
        let mut c = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        c.put("/harp-lab/health", "ok", None)
            .await
            .map_err(|e| e.to_string())?;
        c.get("/harp-lab/health", None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| "timed out after 2 s".to_string())?
}

/// Retries `check` every 100 ms until it returns `Ok` or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(detail) if Instant::now() >= deadline => {
                return Err(LabError::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs(),
                    detail,
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
