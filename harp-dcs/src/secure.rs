//! TLS and authentication on the etcd link, and telling a refusal (a certificate or password
//! etcd or HARP does not accept) from etcd being unreachable: a refusal does not heal by
//! retrying, so the programs stop at start with a message naming the endpoint and the cause.

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use harp_core::config::DcsConfig;

use crate::{DcsError, Result};

/// Adds `cfg`'s TLS and etcd user to `opts`. The files were readable when the config was
/// loaded; one that became unreadable since is a setup error.
pub(crate) fn with_security(mut opts: ConnectOptions, cfg: &DcsConfig) -> Result<ConnectOptions> {
    if let Some(tls) = &cfg.tls {
        let mut t = TlsOptions::new();
        t = match &tls.ca_file {
            Some(ca) => t.ca_certificate(Certificate::from_pem(read(ca, "dcs.ssl_ca_file")?)),
            None => t.with_native_roots(),
        };
        if let Some(c) = &tls.client {
            let cert = read(&c.cert_file, "dcs.ssl_cert_file")?;
            let key = read(&c.key_file, "dcs.ssl_key_file")?;
            t = t.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(t);
    }
    if let Some(auth) = &cfg.auth {
        // etcd's tokens expire (`--auth-token-ttl`, and a simple token at a member's restart):
        // a request refused for its token authenticates again and is retried once.
        opts = opts
            .with_user(auth.user.clone(), auth.password.expose())
            .with_auto_token_refresh(true);
    }
    Ok(opts)
}

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| DcsError::Setup(format!("{key}: cannot read {}: {e}", path.display())))
}

/// Why etcd or this client refused the connection, when the error is such a refusal (not a
/// timeout or a closed port): `Some(cause, fix)`.
pub fn refusal(e: &etcd_client::Error, cfg: &DcsConfig) -> Option<String> {
    let chain = chain(e);
    let lower = chain.to_lowercase();
    let has = |s: &str| lower.contains(s);
    let tls = cfg.tls.is_some();
    let cause = if has("authentication failed") || has("invalid user id or password") {
        let from = cfg
            .auth
            .as_ref()
            .map(|a| format!(" for user {} (password from {})", a.user, a.password_from))
            .unwrap_or_default();
        format!("etcd refused the password{from}: fix dcs.password_file or HARP_DCS_PASSWORD")
    } else if has("user name is empty") || has("user name not found") {
        "etcd requires a user: set dcs.user and its password (dcs.password_file or \
         HARP_DCS_PASSWORD)"
            .to_owned()
    } else if has("permission denied") {
        let user = cfg.auth.as_ref().map_or("(none)", |a| a.user.as_str());
        format!("etcd user {user} may not read this cluster's keys: grant its role read access")
    } else if has("unknownissuer") || has("unknown issuer") || has("badsignature") {
        "etcd's server certificate is not signed by the CA in dcs.ssl_ca_file".to_owned()
    } else if has("notvalidforname") || has("not valid for name") {
        "etcd's server certificate does not name this endpoint's host (its SANs)".to_owned()
    } else if has("expired") && !has("token") {
        format!("a certificate has expired ({chain})")
    } else if tls
        && (has("corrupt message") || has("invalidcontenttype") || has("invalid content type"))
    {
        "the endpoint does not speak TLS: drop dcs.ssl (and https://), or enable TLS on etcd"
            .to_owned()
    } else if has("unknown ca")
        || has("unknownca")
        || has("bad certificate")
        || has("badcertificate")
        || has("certificate required")
        || has("certificaterequired")
        || has("certificate unknown")
        || has("certificateunknown")
        || has("certificate expired")
        || has("certificateexpired")
        || has("handshake failure")
        || has("handshakefailure")
        || has("decrypt error")
    {
        let which = match cfg.tls.as_ref().and_then(|t| t.client.as_ref()) {
            Some(c) => format!("the client certificate {}", c.cert_file.display()),
            None => {
                "a client certificate (none is set: dcs.ssl_cert_file, dcs.ssl_key_file)".to_owned()
            }
        };
        format!(
            "etcd refused {which}: it must be signed by a CA etcd trusts \
             (--trusted-ca-file) and be valid now ({chain})"
        )
    } else if !tls
        && (has("frame with invalid size")
            || has("http2 error")
            || has("h2 protocol error")
            || has("invalid http version")
            || has("malformed"))
    {
        "the endpoint speaks TLS but HARP connected in plaintext: set dcs.ssl: on and \
         dcs.ssl_ca_file"
            .to_owned()
    } else if has("certificate") || has("tls") {
        format!("TLS failed: {chain}")
    } else {
        return None;
    };
    Some(cause)
}

/// The error and every cause under it, in one line.
pub fn chain(e: &etcd_client::Error) -> String {
    let mut parts = vec![match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }];
    let mut next: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = next {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
