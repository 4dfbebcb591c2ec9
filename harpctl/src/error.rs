//! harpctl's errors and the exit status each one maps to.
//!
//! Exit status:
//! - `0`: success (also "nothing to do", e.g. promoting the node that already leads);
//! - `1`: the operation was refused or did not complete (an ineligible switchover target, a
//!   handover that timed out, an error etcd answered with);
//! - `2`: usage or configuration error (bad flag or value, bad name, unknown output format,
//!   unreadable config file, no cluster or endpoints given, a certificate or password etcd
//!   refuses or a server certificate HARP does not trust);
//! - `3`: etcd unreachable: no endpoint answered within the request timeout;
//! - `4`: not found: an unknown node, proxy or location.

use std::time::Duration;

use harp_core::config::ConfigError;
use harp_dcs::DcsError;

/// Success.
pub const EXIT_OK: u8 = 0;
/// Refused, or did not complete.
pub const EXIT_REFUSED: u8 = 1;
/// Usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// etcd unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Unknown node, proxy or location.
pub const EXIT_NOT_FOUND: u8 = 4;

/// The exit statuses, for `harpctl --help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  the operation was refused or did not complete (e.g. ineligible promote target, timeout)
  2  usage or config error (bad flag, bad name, unknown output format, missing cluster/endpoints,
     a certificate or password etcd refuses, an etcd server certificate not trusted)
  3  etcd unreachable (no endpoint answered within the request timeout)
  4  not found (unknown node, proxy or location)";

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A bad or missing argument; the message says what to pass.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// etcd refused the credentials, or HARP refused etcd's certificate: see `DcsError`.
    #[error("{0}")]
    Rejected(String),
    #[error("etcd unreachable at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("{kind} {name} not found in cluster {cluster}{known}")]
    NotFound {
        kind: &'static str,
        name: String,
        cluster: String,
        /// `" (known: a, b)"` or empty.
        known: String,
    },
    /// The operation was refused; the message says why.
    #[error("{0}")]
    Refused(String),
    /// etcd answered with an error.
    #[error("etcd at {endpoint}: {source}")]
    Etcd {
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Config(_) | Self::Rejected(_) => EXIT_USAGE,
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            Self::NotFound { .. } => EXIT_NOT_FOUND,
            Self::Refused(_) | Self::Etcd { .. } => EXIT_REFUSED,
        }
    }

    pub fn not_found<'a>(
        kind: &'static str,
        name: &str,
        cluster: &str,
        known: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
        let known = if known.is_empty() {
            String::new()
        } else {
            format!(" (known: {})", known.join(", "))
        };
        Self::NotFound {
            kind,
            name: name.into(),
            cluster: cluster.into(),
            known,
        }
    }

    /// Classifies a failed request to `endpoint`: no answer in time or no connection is
    /// "unreachable" (exit 3); an answer that is an error is exit 1.
    pub fn from_dcs(endpoint: &str, err: DcsError) -> Self {
        match err {
            DcsError::Timeout(t) => Self::unreachable(endpoint, no_answer(t)),
            DcsError::Etcd(e) if is_connection_error(&e) => {
                Self::unreachable(endpoint, etcd_message(&e))
            }
            DcsError::Etcd(source) => Self::Etcd {
                endpoint: endpoint.into(),
                source,
            },
            e @ (DcsError::Refused { .. } | DcsError::Setup(_)) => Self::Rejected(e.to_string()),
        }
    }

    pub fn unreachable(endpoints: &str, detail: impl std::fmt::Display) -> Self {
        Self::Unreachable {
            endpoints: endpoints.into(),
            detail: detail.to_string(),
        }
    }
}

/// "no answer within 2s".
pub fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(timeout))
}

/// An etcd error in one line: a gRPC status's message and its innermost cause (tonic's own
/// rendering dumps debug structures).
pub fn etcd_message(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(next) = root.and_then(std::error::Error::source) {
        root = Some(next);
    }
    match root {
        Some(cause) => format!("{}: {cause}", status.message()),
        None => status.message().to_owned(),
    }
}

/// Errors that mean "could not talk to etcd" rather than "etcd said no".
fn is_connection_error(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => true,
        // No member could serve it: no connection, or a member without a quorum leader.
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    }
}
