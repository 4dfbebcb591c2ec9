//! The files PgBouncer reads, rendered from the agent's directives and the current target.
//! Rewritten whole (write, then rename) so PgBouncer never reloads half a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harp_core::config::{PgBouncerConfig, ProxyConfig};
use harp_core::directives::ProxyLive;

use super::plan::Target;

/// The admin console's database and user; clients must not use this role name.
pub const ADMIN_USER: &str = "pgbouncer";

/// Where each file lives: beside config.yml, and a private socket directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub ini: PathBuf,
    pub hba: PathBuf,
    /// The generated empty userlist, when `auth_file` is not set.
    pub userlist: PathBuf,
    pub socket_dir: PathBuf,
}

impl Paths {
    pub fn new(config_dir: &Path, socket_dir: PathBuf) -> Self {
        Self {
            ini: config_dir.join("pgbouncer.ini"),
            hba: config_dir.join("pgbouncer_hba.conf"),
            userlist: config_dir.join("pgbouncer_userlist.txt"),
            socket_dir,
        }
    }
}

/// Everything pgbouncer.ini is made of.
pub struct Settings<'a> {
    pub proxy: &'a ProxyConfig,
    pub pgb: &'a PgBouncerConfig,
    pub live: ProxyLive,
    pub paths: &'a Paths,
}

/// Whole seconds, at least one: PgBouncer's timeouts take seconds and read 0 as "never".
fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// pgbouncer.ini for `target` (`None`: no leader yet; clients are held, never sent there).
pub fn render(s: &Settings, target: Option<&Target>) -> String {
    let server = match target {
        Some(t) => format!("host={} port={}", t.address, t.port),
        // A socket path that cannot exist: a server connection opened by mistake fails.
        None => "host=/nonexistent/harp-no-leader port=1".to_owned(),
    };
    let auth_file = s.pgb.auth_file.as_deref().unwrap_or(&s.paths.userlist);
    let mut out = format!(
        "; Written by harp-agent (proxy {name}); edits are lost. Change config.yml or\n\
         ; `harpctl set proxy` instead.\n\
         [databases]\n\
         * = {server}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = {addr}\n\
         listen_port = {port}\n\
         unix_socket_dir = {socket}\n\
         unix_socket_mode = 0700\n\
         pool_mode = {pool_mode}\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_client_conn}\n\
         auth_type = hba\n\
         auth_hba_file = {hba}\n\
         auth_file = {auth_file}\n\
         auth_query = {auth_query}\n\
         admin_users = {ADMIN_USER}\n\
         server_connect_timeout = {connect}\n\
         server_login_retry = 1\n\
         query_wait_timeout = {wait}\n\
         tcp_keepalive = 1\n\
         tcp_keepidle = {keepalive}\n\
         tcp_keepintvl = {keepalive}\n\
         ignore_startup_parameters = extra_float_digits\n",
        name = s.proxy.name,
        addr = s.proxy.listen_address,
        port = s.proxy.listen_port,
        socket = s.paths.socket_dir.display(),
        pool_mode = s.pgb.pool_mode.as_str(),
        pool_size = s.pgb.default_pool_size,
        max_client_conn = s.live.max_client_conn,
        hba = s.paths.hba.display(),
        auth_file = auth_file.display(),
        auth_query = s.pgb.auth_query,
        connect = secs(s.live.timeout),
        wait = secs(s.live.pause_timeout),
        keepalive = secs(s.live.keepalive),
    );
    if let Some(user) = &s.pgb.auth_user {
        out.push_str(&format!("auth_user = {user}\n"));
    }
    let tls = &s.pgb.tls;
    let file = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let settings = [
        ("client_tls_sslmode", tls.client_sslmode.clone()),
        ("client_tls_key_file", file(&tls.client_key_file)),
        ("client_tls_cert_file", file(&tls.client_cert_file)),
        ("client_tls_ca_file", file(&tls.client_ca_file)),
        ("server_tls_sslmode", tls.server_sslmode.clone()),
        ("server_tls_ca_file", file(&tls.server_ca_file)),
    ];
    for (key, value) in settings {
        if let Some(v) = value {
            out.push_str(&format!("{key} = {v}\n"));
        }
    }
    out
}

/// The HBA file: the admin console only over the agent's private socket, clients with the
/// configured method from anywhere.
pub fn render_hba(pgb: &PgBouncerConfig) -> String {
    let method = &pgb.auth_type;
    format!(
        "# Written by harp-agent; edits are lost.\n\
         local pgbouncer {ADMIN_USER} trust\n\
         local all {ADMIN_USER} reject\n\
         host all {ADMIN_USER} 0.0.0.0/0 reject\n\
         host all {ADMIN_USER} ::/0 reject\n\
         local all all {method}\n\
         host all all 0.0.0.0/0 {method}\n\
         host all all ::/0 {method}\n"
    )
}

/// Writes `text` to `path` whole: a temporary file renamed over it.
pub fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
