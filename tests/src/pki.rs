//! The test PKI's side of HARP's HTTPS server: its `http:` keys, and a GET over TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::tls::TestPki;

impl TestPki {
    /// `http:` lines for a server with the PKI's `server` certificate; with `client_ca`,
    /// clients must present one of its certificates.
    pub fn http_yaml(&self, client_ca: bool) -> String {
        let server = self.server();
        let mut y = format!(
            "secure: true\ncert_file: \"{}\"\nkey_file: \"{}\"\n",
            server.cert.display(),
            server.key.display()
        );
        if client_ca {
            y.push_str(&format!("client_ca_file: \"{}\"\n", self.ca().display()));
        }
        y
    }

    /// `GET https://127.0.0.1:<port><path>` trusting this CA, presenting this CA's `client`
    /// certificate if `identity`: `(status, body)`, or the error on the way (handshake refused,
    /// connection closed, …).
    pub fn https_get(
        &self,
        port: u16,
        path: &str,
        identity: bool,
    ) -> Result<(u16, String), String> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.ca()).map_err(|e| e.to_string())? {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match identity {
            false => builder.with_no_client_auth(),
            true => {
                let client = self.client("client");
                let certs = CertificateDer::pem_file_iter(&client.cert)
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
        };
        let name = ServerName::try_from("127.0.0.1").expect("an IP is a server name");
        let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, tcp);
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        tls.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("no status code")?;
        Ok((code, body.to_owned()))
    }
}
