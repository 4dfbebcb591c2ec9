//! The `http` section: the health and status server, plain or HTTPS.

use super::*;

/// HARP serves its health endpoint unless told otherwise.
pub(super) const DEFAULT_HTTP_ENABLE: bool = true;

const HTTP_KEYS: &[&str] = &[
    "enable",
    "host",
    "port",
    "probes",
    "secure",
    "cert_file",
    "key_file",
    "client_ca_file",
];
const PROBES_KEYS: &[&str] = &["timeout"];

pub(super) fn read_http<'d>(r: &mut Reader<'d>, root: &Section<'d>) -> Option<HttpConfig> {
    let s = r.section(root, "http", HTTP_KEYS);
    let enable = r.optional(&s, "enable", DEFAULT_HTTP_ENABLE, boolean);
    let host = r.optional(&s, "host", DEFAULT_HTTP_HOST.to_owned(), non_empty_text);
    let port = r.optional(
        &s,
        "port",
        DEFAULT_HTTP_PORT,
        integer(1, "a port number 1..=65535"),
    );
    let probes = r.nested_section(&s, "probes", "http.probes", PROBES_KEYS);
    let probes_timeout = r.optional(
        &probes,
        "timeout",
        DEFAULT_PROBES_TIMEOUT,
        duration(Unit::Milliseconds, Duration::ZERO),
    );
    let tls = read_http_tls(r, &s);
    Some(HttpConfig {
        enable: enable?,
        host: host?,
        port: port?,
        probes_timeout: probes_timeout?,
        tls: tls?,
    })
}

/// `secure: true` needs `cert_file` and `key_file`; the files without `secure` would be a
/// silent plain-HTTP server, so they are refused too.
fn read_http_tls<'d>(r: &mut Reader<'d>, s: &Section<'d>) -> Option<Option<HttpTls>> {
    let secure = r.optional(s, "secure", false, boolean)?;
    let cert_file = r.optional(s, "cert_file", None, path)?;
    let key_file = r.optional(s, "key_file", None, path)?;
    let client_ca_file = r.optional(s, "client_ca_file", None, path)?;
    if !secure {
        for (key, set) in [
            ("cert_file", cert_file.is_some()),
            ("key_file", key_file.is_some()),
            ("client_ca_file", client_ca_file.is_some()),
        ] {
            if set {
                let line = r.line_of(s, key);
                r.push(
                    line,
                    format!("http.{key}"),
                    "is set but http.secure is not: set `secure: true` for HTTPS, or remove it",
                );
                return None;
            }
        }
        return Some(None);
    }
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(Some(HttpTls {
            cert_file,
            key_file,
            client_ca_file,
        })),
        (cert, _) => {
            let missing = if cert.is_none() {
                "cert_file"
            } else {
                "key_file"
            };
            let line = r.line_of(s, "secure");
            r.push(
                line,
                format!("http.{missing}"),
                "is required with `secure: true` (PEM files of the server's certificate and key)",
            );
            None
        }
    }
}
