//! Some refusals reach the gRPC client only as a closed connection: etcd refuses a client
//! certificate with a TLS alert after the handshake, and closes a plaintext connection to its
//! TLS port. A second, bare connection to the endpoint asks it directly and reads its answer.

use std::sync::Arc;

use harp_core::config::{DcsConfig, DcsTls};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HTTP/2's connection preface: what a gRPC client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why `endpoint` refuses this configuration, if it says so; `None` when it does not (it is
/// down, or answers as it should).
pub(crate) async fn diagnose(endpoint: &str, cfg: &DcsConfig) -> Option<String> {
    let addr = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let ask = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        match &cfg.tls {
            None => plaintext(tcp, addr).await,
            Some(tls) => client_cert(tcp, addr, tls).await,
        }
    };
    tokio::time::timeout(cfg.request_timeout, ask)
        .await
        .ok()
        .flatten()
}

/// A plaintext HTTP/2 server answers the preface with its settings; when this one does not,
/// a TLS handshake (trusting nobody) tells whether it speaks TLS: it shows a certificate.
async fn plaintext(mut tcp: TcpStream, addr: &str) -> Option<String> {
    tcp.write_all(PREFACE).await.ok()?;
    let mut buf = [0u8; 64];
    let n = tcp.read(&mut buf).await.unwrap_or(0);
    // An HTTP/2 frame header: 3 bytes of length, then the type; 4 is SETTINGS.
    if n >= 4 && buf[3] == 4 {
        return None;
    }
    let roots = rustls::RootCertStore::empty();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let shown = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name(addr)?, tcp)
        .await
    {
        Ok(_) => true,
        Err(e) => e.to_string().contains("invalid peer certificate"),
    };
    shown.then(|| {
        "the endpoint speaks TLS but HARP connected in plaintext: set dcs.ssl: on and \
         dcs.ssl_ca_file"
            .to_owned()
    })
}

fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).ok()
}

/// Completes the handshake as HARP would, sends the preface and reads: a TLS alert then is
/// etcd refusing the client certificate (or its absence).
async fn client_cert(tcp: TcpStream, addr: &str, tls: &DcsTls) -> Option<String> {
    let ca = tls.ca_file.as_ref()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let mut config = match &tls.client {
        Some(c) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(&c.cert_file)
                .ok()?
                .collect::<Result<_, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_file(&c.key_file).ok()?;
            builder.with_client_auth_cert(certs, key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = server_name(addr)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // A failed handshake is HARP refusing etcd's certificate: the gRPC error said so already.
    let mut stream = connector.connect(name, tcp).await.ok()?;
    stream.write_all(PREFACE).await.ok()?;
    let mut buf = [0u8; 64];
    let alert = match stream.read(&mut buf).await {
        Err(e) if e.to_string().contains("alert") => e.to_string(),
        _ => return None,
    };
    let which = match &tls.client {
        Some(c) => format!("the client certificate {}", c.cert_file.display()),
        None => "a connection without a client certificate (set dcs.ssl_cert_file and \
                 dcs.ssl_key_file)"
            .to_owned(),
    };
    Some(format!(
        "etcd refused {which} ({alert}): it must be signed by a CA in etcd's --trusted-ca-file \
         and be valid now (not expired)"
    ))
}
