//! Connecting to Postgres from a libpq DSN as libpq would: key=value or URI form, `sslmode` up
//! to `verify-full` with `sslrootcert`, a client certificate (`sslcert`/`sslkey`), and the
//! password from `passfile`, `PGPASSFILE` or `~/.pgpass` when the DSN has none. TLS goes through
//! rustls (`tokio-postgres-rustls`); tokio-postgres alone knows neither the `verify-*` modes nor
//! these files and refuses a DSN that names them.

mod passfile;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::standby::{Conninfo, DsnError};

/// Keys tokio-postgres reads itself; the TLS and password-file keys are ours; other libpq keys
/// (`gssencmode`, `sslcrl`, …) are not supported and are refused rather than ignored.
const TOKIO_KEYS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];
const OUR_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];
/// Keys that only matter to other programs (a standby's walreceiver, pg_rewind).
const IGNORED_KEYS: &[&str] = &["fallback_application_name", "replication", "sslnegotiation"];

#[derive(Debug, thiserror::Error)]
pub enum PgConnError {
    #[error("{0}")]
    Dsn(#[from] DsnError),
    #[error("{0}")]
    Config(#[from] tokio_postgres::Error),
    #[error("sslmode={0}: expected disable, allow, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("`{0}` is not supported in the connection string (HARP reads: {keys})", keys = supported())]
    UnknownKey(String),
    #[error("sslmode={mode} needs sslrootcert=<CA file> to verify the server with")]
    NoRootCert { mode: String },
    #[error("{key}={}: {source}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}={}: {what}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

fn supported() -> String {
    [TOKIO_KEYS, OUR_KEYS].concat().join(", ")
}

/// The connection's driver, to be spawned or awaited; it ends when the server goes away.
pub type Driver = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// One server to connect to, with its credentials and TLS settings read once.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres's Debug redacts the password.
        f.debug_struct("PgTarget")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgTarget {
    pub fn parse(dsn: &str) -> Result<PgTarget, PgConnError> {
        PgTarget::new(&Conninfo::parse(dsn)?)
    }

    /// `c` as tokio-postgres and rustls settings; files (CA, certificate, key, password file)
    /// are read now, so a missing one is an error here rather than at every connect.
    pub fn new(c: &Conninfo) -> Result<PgTarget, PgConnError> {
        let mut kv = Vec::new();
        for (k, v) in c.pairs() {
            if TOKIO_KEYS.contains(&k) {
                kv.push(format!("{k}={}", quote(v)));
            } else if !OUR_KEYS.contains(&k) && !IGNORED_KEYS.contains(&k) {
                return Err(PgConnError::UnknownKey(k.to_owned()));
            }
        }
        let mut config = tokio_postgres::Config::from_str(&kv.join(" "))?;
        if config.get_password().is_none()
            && let Some(pw) = passfile::lookup(c, &config)
        {
            config.password(pw);
        }
        let mode = c.get("sslmode").unwrap_or("prefer");
        let tls = tls::client_config(mode, c)?;
        config.ssl_mode(match mode {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            _ => SslMode::Require,
        });
        Ok(PgTarget {
            config,
            tls: tls.map(MakeRustlsConnect::new),
        })
    }

    /// Another database on the same server.
    pub fn with_dbname(mut self, dbname: &str) -> PgTarget {
        self.config.dbname(dbname);
        self
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Connects (unbounded: callers bound it); the driver must be polled for the client to
    /// work.
    pub async fn connect(&self) -> Result<(Client, Driver), tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                Ok((client, Box::pin(conn)))
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                Ok((client, Box::pin(conn)))
            }
        }
    }
}

/// A value for a key=value string: quoted, `\` and `'` escaped.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `e` with its causes: tokio-postgres's own message for a TLS failure ("error performing TLS
/// handshake") leaves out why (unknown CA, expired, wrong name).
pub fn why(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
