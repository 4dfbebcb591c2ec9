//! The `dcs` section: etcd's endpoints, and how HARP proves itself to etcd and etcd to HARP
//! (TLS, a client certificate, a user and its password). Every file named here must be
//! readable when the config is loaded; a password is never written in the file itself.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::convert::on_off;
use crate::config::raw::Node;
use crate::config::reader::scalar_text;

pub(super) const DCS_KEYS: &[&str] = &[
    "driver",
    "endpoints",
    "request_timeout",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "user",
    "password_file",
];

/// Keys refused with their own message: a password in config.yml would end up in backups,
/// config management and `ps`-visible copies.
pub(super) const REFUSED_KEYS: &[(&str, &str)] = &[(
    "dcs.password",
    "a password is never written in config.yml: put it in a file only HARP's user can read \
     and name it in dcs.password_file, or set the environment variable HARP_DCS_PASSWORD",
)];

/// The TLS and authentication keys that need `dcs.ssl: on`.
const TLS_FILE_KEYS: [&str; 3] = ["ssl_ca_file", "ssl_cert_file", "ssl_key_file"];

pub(super) fn read_dcs<'d>(
    r: &mut Reader<'d>,
    root: &Section<'d>,
    env_password: Option<&str>,
) -> Option<DcsConfig> {
    let s = r.section(root, "dcs", DCS_KEYS);
    let driver = r.required(&s, "driver", dcs_driver);
    let endpoints = r.required_list(&s, "endpoints", "etcd endpoints (host:port)", endpoint);
    let request_timeout = r.optional(
        &s,
        "request_timeout",
        DEFAULT_REQUEST_TIMEOUT,
        duration(Unit::Milliseconds, Duration::ZERO),
    );
    let ssl = r.optional(&s, "ssl", None, |n| on_off(n).map(Some));
    let [ca, cert, key] = TLS_FILE_KEYS.map(|k| r.optional(&s, k, None, readable_file));
    let user = r.optional(&s, "user", None, |n| non_empty_text(n).map(Some));
    let password_file = r.optional(&s, "password_file", None, readable_file);
    let tls = read_tls(r, &s, endpoints.as_deref(), ssl?, ca?, cert?, key?);
    let auth = read_auth(r, &s, user?, password_file?, env_password);
    Some(DcsConfig {
        driver: driver?,
        endpoints: endpoints?,
        request_timeout: request_timeout?,
        tls: tls?,
        auth: auth?,
    })
}

/// TLS is on with `ssl: on` or with `https://` endpoints; `http://` endpoints contradict it.
fn read_tls<'d>(
    r: &mut Reader<'d>,
    s: &Section<'d>,
    endpoints: Option<&[String]>,
    ssl: Option<bool>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Option<Option<DcsTls>> {
    let endpoints = endpoints?;
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let http = endpoints.iter().position(|e| e.starts_with("http://"));
    let on = ssl.unwrap_or(https);
    let mut ok = true;
    if ssl == Some(false) && https {
        let line = r.line_of(s, "ssl");
        r.push(
            line,
            "dcs.ssl",
            "is off, but dcs.endpoints use https://: set dcs.ssl: on, or use host:port endpoints",
        );
        ok = false;
    } else if let (true, Some(i)) = (on, http) {
        let line = r.line_of(s, "endpoints");
        let why = if ssl == Some(true) {
            "dcs.ssl is on"
        } else {
            "other endpoints use https://"
        };
        r.push(
            line,
            format!("dcs.endpoints[{i}]"),
            format!(
                "http:// (plaintext) while {why}: use https:// or host:port for every endpoint"
            ),
        );
        ok = false;
    }
    if !on {
        for (k, given) in TLS_FILE_KEYS.iter().zip([&ca, &cert, &key]) {
            if given.is_some() {
                let line = r.line_of(s, k);
                r.push(
                    line,
                    format!("dcs.{k}"),
                    "applies only with TLS: set dcs.ssl: on (or use https:// endpoints)",
                );
                ok = false;
            }
        }
    }
    let client = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (cert, _) => {
            let (have, missing, what) = if cert.is_some() {
                (
                    "ssl_cert_file",
                    "ssl_key_file",
                    "the certificate's private key",
                )
            } else {
                ("ssl_key_file", "ssl_cert_file", "the client certificate")
            };
            let line = r.line_of(s, have);
            r.push(
                line,
                format!("dcs.{have}"),
                format!("needs dcs.{missing} too ({what}, PEM)"),
            );
            return None;
        }
    };
    ok.then(|| {
        on.then_some(DcsTls {
            ca_file: ca,
            client,
        })
    })
}

/// The user's password: `password_file`, else the environment variable.
fn read_auth<'d>(
    r: &mut Reader<'d>,
    s: &Section<'d>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    env_password: Option<&str>,
) -> Option<Option<DcsAuth>> {
    let Some(user) = user else {
        if password_file.is_some() {
            let line = r.line_of(s, "password_file");
            r.push(
                line,
                "dcs.password_file",
                "needs dcs.user (the etcd user this password is for)",
            );
            return None;
        }
        return Some(None);
    };
    let (password, from) = match (&password_file, env_password) {
        (Some(path), _) => {
            let line = r.line_of(s, "password_file");
            match read_password(path) {
                Ok(p) => (p, path.display().to_string()),
                Err(message) => {
                    r.push(line, "dcs.password_file", message);
                    return None;
                }
            }
        }
        (None, Some(p)) if !p.is_empty() => (p.to_owned(), format!("${DCS_PASSWORD_ENV}")),
        (None, _) => {
            let line = r.line_of(s, "user");
            r.push(
                line,
                "dcs.user",
                format!(
                    "needs a password: name a file only HARP's user can read in \
                     dcs.password_file, or set the environment variable {DCS_PASSWORD_ENV}"
                ),
            );
            return None;
        }
    };
    Some(Some(DcsAuth {
        user,
        password: Password::new(password),
        password_from: from,
    }))
}

/// The file's first line (a trailing newline is not part of the password).
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(format!(
            "{} is empty; write the etcd user's password in it",
            path.display()
        ));
    }
    Ok(password.to_owned())
}

/// A path to a regular file this process can read now.
fn readable_file(node: &Node) -> Result<Option<PathBuf>, String> {
    let Some(text) = scalar_text(node).filter(|t| !t.trim().is_empty()) else {
        return Err(crate::config::reader::expected("a file path", node));
    };
    let path = PathBuf::from(&text);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => return Err(format!("{text} is not a regular file")),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read {text}: {e}")),
    }
    std::fs::File::open(&path).map_err(|e| format!("cannot read {text}: {e}"))?;
    Ok(Some(path))
}
