//! The `proxy` section (the agent's keys; PgBouncer's in `pgbouncer`).

use super::*;

const PROXY_KEYS: &[&str] = &[
    "name",
    "listen_address",
    "listen_port",
    "max_client_conn",
    "keepalive",
    "timeout",
    "pause_timeout",
    "leader_lease_duration",
    "lease_refresh_interval",
    "mode",
    "splice",
    "cgroup_path",
    "type",
];

/// `Some(None)` when the file has no `proxy` section; `None` when the section is invalid.
pub(super) fn read_proxy<'d>(
    r: &mut Reader<'d>,
    root: &Section<'d>,
) -> Option<Option<ProxyConfig>> {
    let keys = [PROXY_KEYS, pgbouncer::KEYS].concat();
    let s = r.section(root, "proxy", &keys);
    if !s.is_present() {
        return Some(None);
    }
    let name = r.required(&s, "name", identifier);
    let listen_address = r.optional(
        &s,
        "listen_address",
        DEFAULT_LISTEN_ADDRESS.to_owned(),
        ip_address,
    );
    let listen_port = r.optional(
        &s,
        "listen_port",
        DEFAULT_LISTEN_PORT,
        integer(1, "a port number 1..=65535"),
    );
    let max_client_conn = r.optional(
        &s,
        "max_client_conn",
        DEFAULT_MAX_CLIENT_CONN,
        integer(1, "a whole number >= 1"),
    );
    let ms = |min| duration(Unit::Milliseconds, min);
    let keepalive = r.optional(
        &s,
        "keepalive",
        DEFAULT_KEEPALIVE,
        duration(Unit::Seconds, Duration::from_secs(1)),
    );
    let timeout = r.optional(&s, "timeout", DEFAULT_CONNECT_TIMEOUT, ms(Duration::ZERO));
    let pause_timeout = r.optional(
        &s,
        "pause_timeout",
        DEFAULT_PAUSE_TIMEOUT,
        ms(Duration::ZERO),
    );
    let (leader_lease_duration, lease_refresh_interval) = read_lease(r, &s, "proxy");
    let mode = r.optional(&s, "mode", ProxyMode::Auto, proxy_mode);
    let splice = r.optional(&s, "splice", false, boolean);
    let cgroup_path = r.optional(&s, "cgroup_path", None, path);
    let pgbouncer = pgbouncer::read(r, &s);
    if let (Some(Some(_)), Some(ProxyMode::Ebpf)) = (&pgbouncer, mode) {
        let message = "kernel steering would send clients past PgBouncer; \
                       use `mode: userspace` (or `auto`) with `type: pgbouncer`";
        let line = r.line_of(&s, "mode");
        r.push(line, "proxy.mode", message);
        return None;
    }
    Some(Some(ProxyConfig {
        name: name?,
        listen_address: listen_address?,
        listen_port: listen_port?,
        max_client_conn: max_client_conn?,
        keepalive: keepalive?,
        timeout: timeout?,
        pause_timeout: pause_timeout?,
        leader_lease_duration: leader_lease_duration?,
        lease_refresh_interval: lease_refresh_interval?,
        mode: mode?,
        splice: splice?,
        cgroup_path: cgroup_path?,
        pgbouncer: pgbouncer?,
    }))
}
