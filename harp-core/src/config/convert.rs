//! Converters for [`Reader`](super::reader::Reader)'s getters: each turns a node into a value
//! of HARP's config, or into the message of an issue (`expected <what>, got <value>`).

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Kind, Node};
use super::reader::{expected, scalar_text};
use super::types::{DcsDriver, PoolMode, ProxyMode, Replication, SynchronousMode};

/// Cluster, location and node names: `[A-Za-z0-9_.-]+`.
pub(super) fn identifier(node: &Node) -> Result<String, String> {
    match scalar_text(node) {
        Some(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
        {
            Ok(s)
        }
        _ => Err(expected(
            "a name made of letters, digits, `_`, `.` and `-`",
            node,
        )),
    }
}

pub(super) fn non_empty_text(node: &Node) -> Result<String, String> {
    match scalar_text(node) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(expected("a non-empty string", node)),
    }
}

pub(super) fn path(node: &Node) -> Result<Option<PathBuf>, String> {
    non_empty_text(node).map(|s| Some(PathBuf::from(s)))
}

pub(super) fn boolean(node: &Node) -> Result<bool, String> {
    match node.kind {
        Kind::Bool(b) => Ok(b),
        _ => Err(expected("true or false", node)),
    }
}

/// A switch: YAML's `true`/`false`, or `on`/`off` (what Postgres and PgBouncer users write).
pub(super) fn on_off(node: &Node) -> Result<bool, String> {
    match (&node.kind, scalar_text(node).as_deref()) {
        (Kind::Bool(b), _) => Ok(*b),
        (_, Some("on")) => Ok(true),
        (_, Some("off")) => Ok(false),
        _ => Err(expected("on or off", node)),
    }
}

/// An integer `>= min` that fits `T` (which sets the upper bound).
pub(super) fn integer<T: TryFrom<i64>>(
    min: i64,
    what: &'static str,
) -> impl Fn(&Node) -> Result<T, String> {
    move |node| match node.kind {
        Kind::Int(i) if i >= min => T::try_from(i).map_err(|_| expected(what, node)),
        _ => Err(expected(what, node)),
    }
}

/// What a bare integer means for a duration key (HARP's units differ per key).
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    Seconds,
    Milliseconds,
}

/// A positive duration `>= min`: a bare integer in `unit`, or a humantime string (`"6s"`).
pub(super) fn duration(unit: Unit, min: Duration) -> impl Fn(&Node) -> Result<Duration, String> {
    move |node| {
        let value = any_duration(unit, node)?;
        let shown = humantime::format_duration(value);
        if value.is_zero() {
            Err(format!(
                "expected a duration greater than zero, got {shown}"
            ))
        } else if value < min {
            let min = humantime::format_duration(min);
            Err(format!(
                "expected a duration of at least {min}, got {shown}"
            ))
        } else {
            Ok(value)
        }
    }
}

/// A duration where zero means "off".
pub(super) fn duration_or_zero(unit: Unit) -> impl Fn(&Node) -> Result<Duration, String> {
    move |node| any_duration(unit, node)
}

fn any_duration(unit: Unit, node: &Node) -> Result<Duration, String> {
    let value = match &node.kind {
        Kind::Int(n) => u64::try_from(*n).ok().map(|n| match unit {
            Unit::Seconds => Duration::from_secs(n),
            Unit::Milliseconds => Duration::from_millis(n),
        }),
        Kind::Str(s) => humantime::parse_duration(s).ok(),
        _ => None,
    };
    let unit_name = match unit {
        Unit::Seconds => "seconds",
        Unit::Milliseconds => "milliseconds",
    };
    value.ok_or_else(|| {
        let what = format!("a duration such as \"6s\" or a whole number of {unit_name}");
        expected(what, node)
    })
}

/// An IPv4 or IPv6 address to listen on, such as `0.0.0.0` or `127.0.0.1`.
pub(super) fn ip_address(node: &Node) -> Result<String, String> {
    match scalar_text(node) {
        Some(t) if t.parse::<std::net::IpAddr>().is_ok() => Ok(t),
        _ => Err(expected("an IP address such as 0.0.0.0 or 127.0.0.1", node)),
    }
}

pub(super) fn proxy_mode(node: &Node) -> Result<ProxyMode, String> {
    match scalar_text(node).as_deref() {
        Some("auto") => Ok(ProxyMode::Auto),
        Some("ebpf") => Ok(ProxyMode::Ebpf),
        Some("userspace") => Ok(ProxyMode::Userspace),
        _ => Err(expected("one of auto, ebpf, userspace", node)),
    }
}

pub(super) fn replication(node: &Node) -> Result<Replication, String> {
    match scalar_text(node).as_deref() {
        Some("multi_writer") => Ok(Replication::MultiWriter),
        Some("streaming") => Ok(Replication::Streaming),
        _ => Err(expected("one of multi_writer, streaming", node)),
    }
}

pub(super) fn synchronous_mode(node: &Node) -> Result<SynchronousMode, String> {
    match scalar_text(node).as_deref() {
        Some("off") | Some("false") => Ok(SynchronousMode::Off),
        Some("on") | Some("true") => Ok(SynchronousMode::On),
        Some("strict") => Ok(SynchronousMode::Strict),
        _ => Err(expected("one of off, on, strict", node)),
    }
}

/// `proxy.type`: `true` for `pgbouncer`, `false` for `builtin`.
pub(super) fn proxy_type(node: &Node) -> Result<bool, String> {
    match scalar_text(node).as_deref() {
        Some("builtin") => Ok(false),
        Some("pgbouncer") => Ok(true),
        _ => Err(expected("one of builtin, pgbouncer", node)),
    }
}

pub(super) fn pool_mode(node: &Node) -> Result<PoolMode, String> {
    match scalar_text(node).as_deref() {
        Some("session") => Ok(PoolMode::Session),
        Some("transaction") => Ok(PoolMode::Transaction),
        Some("statement") => Ok(PoolMode::Statement),
        _ => Err(expected("one of session, transaction, statement", node)),
    }
}

/// PgBouncer's TLS modes (libpq's names).
pub(super) fn tls_mode(node: &Node) -> Result<String, String> {
    const MODES: [&str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    match scalar_text(node) {
        Some(m) if MODES.contains(&m.as_str()) => Ok(m),
        _ => Err(expected(
            "one of disable, allow, prefer, require, verify-ca, verify-full",
            node,
        )),
    }
}

/// The client authentications HARP configures PgBouncer for.
pub(super) fn auth_type(node: &Node) -> Result<String, String> {
    match scalar_text(node) {
        Some(t) if ["trust", "password", "md5", "scram-sha-256"].contains(&t.as_str()) => Ok(t),
        _ => Err(expected("one of trust, password, md5, scram-sha-256", node)),
    }
}

pub(super) fn dcs_driver(node: &Node) -> Result<DcsDriver, String> {
    match scalar_text(node) {
        Some(d) if d == "etcd" => Ok(DcsDriver::Etcd),
        Some(d) => Err(format!("unsupported driver `{d}`; HARP supports `etcd`")),
        None => Err(expected("a driver name (`etcd`)", node)),
    }
}

/// `host:port` or `http(s)://host:port` with a numeric port.
pub(super) fn endpoint(node: &Node) -> Result<String, String> {
    let valid = |s: &str| {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(|c: char| c.is_whitespace() || c == '/')
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    match scalar_text(node) {
        Some(s) if valid(&s) => Ok(s),
        _ => Err(expected("`host:port` or `http(s)://host:port`", node)),
    }
}
