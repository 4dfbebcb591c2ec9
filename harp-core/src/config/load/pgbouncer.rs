//! `proxy.type` and the keys only `type: pgbouncer` reads.

use super::super::convert::{
    auth_type, boolean, identifier, integer, non_empty_text, path, pool_mode, proxy_type, tls_mode,
};
use super::super::reader::{Reader, Section};
use super::super::types::*;

/// The proxy keys that only `type: pgbouncer` reads.
pub(super) const KEYS: &[&str] = &[
    "pgbouncer_bin_dir",
    "pgbouncer_user",
    "pool_mode",
    "default_pool_size",
    "auth_type",
    "auth_user",
    "auth_query",
    "auth_file",
    "client_tls_sslmode",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "server_tls_sslmode",
    "server_tls_ca_file",
];

/// `proxy.type` and, for `pgbouncer`, its keys; `None` when invalid.
pub(super) fn read<'d>(r: &mut Reader<'d>, s: &Section<'d>) -> Option<Option<PgBouncerConfig>> {
    if !r.optional(s, "type", false, proxy_type)? {
        let mut valid = true;
        for key in KEYS {
            if let Some(line) = r.line_of(s, key) {
                let message = "only `type: pgbouncer` reads this key; set the type or remove it";
                r.push(Some(line), format!("proxy.{key}"), message);
                valid = false;
            }
        }
        return valid.then_some(None);
    }
    let bin_dir = r.optional(s, "pgbouncer_bin_dir", None, path);
    let user = r.optional(
        s,
        "pgbouncer_user",
        DEFAULT_PGBOUNCER_USER.to_owned(),
        identifier,
    );
    let pool_mode = r.optional(s, "pool_mode", PoolMode::Session, pool_mode);
    let default_pool_size = r.optional(
        s,
        "default_pool_size",
        DEFAULT_POOL_SIZE,
        integer(1, "a whole number >= 1"),
    );
    let auth_type = r.optional(s, "auth_type", DEFAULT_AUTH_TYPE.to_owned(), auth_type);
    let auth_user = r.optional(s, "auth_user", None, |n| identifier(n).map(Some));
    let auth_query = r.optional(
        s,
        "auth_query",
        DEFAULT_AUTH_QUERY.to_owned(),
        non_empty_text,
    );
    let auth_file = r.optional(s, "auth_file", None, path);
    let tls = read_tls(r, s);
    if let (Some(None), Some(None)) = (&auth_user, &auth_file) {
        let line = r.line_of(s, "type");
        let message = "PgBouncer must know the passwords it checks: set proxy.auth_user (a role \
                       it reads them as, with auth_query) or proxy.auth_file (a userlist.txt)";
        r.push(line, "proxy.auth_user", message);
        return None;
    }
    if r.optional(s, "splice", false, boolean) == Some(true) {
        let line = r.line_of(s, "splice");
        r.push(
            line,
            "proxy.splice",
            "splices only the builtin proxy's sessions; remove it",
        );
        return None;
    }
    Some(Some(PgBouncerConfig {
        bin_dir: bin_dir?,
        user: user?,
        pool_mode: pool_mode?,
        default_pool_size: default_pool_size?,
        auth_type: auth_type?,
        auth_user: auth_user?,
        auth_query: auth_query?,
        auth_file: auth_file?,
        tls: tls?,
    }))
}

/// TLS between clients and PgBouncer, and between PgBouncer and Postgres.
fn read_tls<'d>(r: &mut Reader<'d>, s: &Section<'d>) -> Option<PgBouncerTls> {
    let client_sslmode = r.optional(s, "client_tls_sslmode", None, |n| tls_mode(n).map(Some));
    let client_key_file = r.optional(s, "client_tls_key_file", None, path);
    let client_cert_file = r.optional(s, "client_tls_cert_file", None, path);
    let client_ca_file = r.optional(s, "client_tls_ca_file", None, path);
    let server_sslmode = r.optional(s, "server_tls_sslmode", None, |n| tls_mode(n).map(Some));
    let server_ca_file = r.optional(s, "server_tls_ca_file", None, path);
    let tls = PgBouncerTls {
        client_sslmode: client_sslmode?,
        client_key_file: client_key_file?,
        client_cert_file: client_cert_file?,
        client_ca_file: client_ca_file?,
        server_sslmode: server_sslmode?,
        server_ca_file: server_ca_file?,
    };
    let serves_tls = tls
        .client_sslmode
        .as_deref()
        .is_some_and(|m| m != "disable");
    if serves_tls && (tls.client_key_file.is_none() || tls.client_cert_file.is_none()) {
        let line = r.line_of(s, "client_tls_sslmode");
        let message = "PgBouncer needs a key and a certificate to serve TLS: set \
                       proxy.client_tls_key_file and proxy.client_tls_cert_file";
        r.push(line, "proxy.client_tls_sslmode", message);
        return None;
    }
    Some(tls)
}
