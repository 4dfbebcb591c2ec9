//! What can go wrong in a streaming operation, each with its cause and its fix.

use std::time::Duration;

use super::DsnError;
use crate::pgctl::PgCtlError;

#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    #[error("manager.dsn is not a valid connection string: {0}")]
    Dsn(#[from] DsnError),
    #[error("manager.dsn: {0}")]
    Conn(#[from] crate::pgconn::PgConnError),
    #[error(
        "cannot connect to {whom} at {at}: {source}; check that it runs and accepts manager.dsn's \
         user and password"
    )]
    Connect {
        whom: &'static str,
        at: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{step} on {whom} failed: {source}")]
    Sql {
        step: &'static str,
        whom: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{step} did not finish within {after:?}; {fix}")]
    Timeout {
        step: &'static str,
        after: Duration,
        fix: &'static str,
    },
    #[error(
        "this node's Postgres is not a standby (pg_is_in_recovery() is false): only a standby \
         follows a primary; a primary must rejoin (stop, rewind, start as a standby)"
    )]
    NotStandby,
    #[error(
        "{at} is not a primary (it is in recovery): a node rejoins or is rebuilt only from the \
         primary"
    )]
    SourceNotPrimary { at: String },
    #[error("promotion failed: {reason}")]
    Promote { reason: String },
    #[error(
        "cannot rewind this node: {reason}. Rebuild it from the primary with `harpctl reinit \
         <node>` (what it has that the primary lacks is discarded); to make rewinds possible, \
         run every node with wal_log_hints = on or data checksums (initdb --data-checksums)"
    )]
    RewindImpossible { reason: String },
    #[error("{program} failed ({status}): {output}{fix}")]
    Program {
        program: &'static str,
        status: String,
        output: String,
        fix: &'static str,
    },
    #[error(transparent)]
    PgCtl(#[from] PgCtlError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
