//! A throwaway certificate authority for tests of HARP's TLS links, and an HTTPS GET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// `ca.pem`, and `<name>.pem` + `<name>.key` for every certificate issued, in `dir`.
pub struct TestCa {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA in `dir` (created), with `server` (127.0.0.1, localhost) and `client`
    /// certificates already issued.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the CA dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "HARP test CA");
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        let ca = TestCa {
            dir: dir.to_owned(),
            ca,
        };
        ca.issue("server", &["127.0.0.1", "localhost"], true);
        ca.issue("client", &[], false);
        ca
    }

    /// Issues `<name>.pem`/`<name>.key` for these names (IPs or DNS names), for a server or a
    /// client.
    pub fn issue(&self, name: &str, sans: &[&str], server: bool) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![match server {
            true => ExtendedKeyUsagePurpose::ServerAuth,
            false => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write key");
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// `http:` lines for a server with this CA's `server` certificate; with `client_ca`,
    /// clients must present one of its certificates.
    pub fn http_yaml(&self, client_ca: bool) -> String {
        let mut y = format!(
            "secure: true\ncert_file: \"{}\"\nkey_file: \"{}\"\n",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if client_ca {
            y.push_str(&format!(
                "client_ca_file: \"{}\"\n",
                self.path("ca.pem").display()
            ));
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
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).map_err(|e| e.to_string())? {
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
                let certs = CertificateDer::pem_file_iter(self.path("client.pem"))
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = PrivateKeyDer::from_pem_file(self.path("client.key"))
                    .map_err(|e| e.to_string())?;
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
