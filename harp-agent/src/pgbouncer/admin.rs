//! PgBouncer's admin console, reached over the agent's private socket directory.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::ini::ADMIN_USER;

/// Bound on an admin command other than PAUSE (which waits for transactions by design).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("PgBouncer's admin console at {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PgBouncer did not answer `{command}` within {COMMAND_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("PgBouncer refused `{command}`: {source}")]
    Command {
        command: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Client counts summed over every pool (the admin console's own excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pools {
    /// Clients linked to a server or idle between transactions.
    pub clients: u64,
    /// Clients waiting for a server (held while paused).
    pub waiting: u64,
    /// Server connections in use by a client.
    pub servers_active: u64,
}

pub struct Admin {
    client: Client,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Admin {
    /// Bounded like a command: a PgBouncer that accepts but never answers must not hold the
    /// driver past its fail-closed bound.
    pub async fn connect(socket_dir: &Path, port: u16) -> Result<Self, AdminError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(socket_dir)
            .port(port)
            .user(ADMIN_USER)
            .dbname(ADMIN_USER);
        let (client, connection) = tokio::time::timeout(COMMAND_TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| AdminError::Timeout {
                command: "connect".to_owned(),
            })?
            .map_err(|source| AdminError::Connect {
                socket: socket_dir.display().to_string(),
                source,
            })?;
        let conn = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { client, conn })
    }

    async fn rows(&self, command: &str) -> Result<Vec<tokio_postgres::SimpleQueryRow>, AdminError> {
        let query = self.client.simple_query(command);
        // A PAUSE answers when transactions end; anything else at once, or the console hangs.
        let messages = match command.starts_with("PAUSE") {
            true => query.await,
            false => tokio::time::timeout(COMMAND_TIMEOUT, query)
                .await
                .map_err(|_| AdminError::Timeout {
                    command: command.to_owned(),
                })?,
        }
        .map_err(|source| AdminError::Command {
            command: command.to_owned(),
            source,
        })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    pub async fn run(&self, command: &str) -> Result<(), AdminError> {
        self.rows(command).await.map(drop)
    }

    /// The client databases PgBouncer knows (the wildcard makes one per name used), each
    /// with whether it is paused.
    pub async fn databases(&self) -> Result<Vec<(String, bool)>, AdminError> {
        Ok(self
            .rows("SHOW DATABASES")
            .await?
            .iter()
            .filter_map(|r| {
                let name = r.try_get("name").ok()??;
                let paused = r.try_get("paused").ok()?? == "1";
                Some((name.to_owned(), paused))
            })
            .filter(|(name, _)| name != ADMIN_USER)
            .collect())
    }

    pub async fn pools(&self) -> Result<Pools, AdminError> {
        let count = |r: &tokio_postgres::SimpleQueryRow, col: &str| -> u64 {
            let value = r.try_get(col).ok().flatten();
            value.and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let mut p = Pools::default();
        for r in self.rows("SHOW POOLS").await? {
            if r.try_get("database").ok().flatten() == Some(ADMIN_USER) {
                continue;
            }
            p.clients += count(&r, "cl_active");
            p.waiting += count(&r, "cl_waiting");
            p.servers_active += count(&r, "sv_active");
        }
        Ok(p)
    }
}

/// A database name as the admin console reads it.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
