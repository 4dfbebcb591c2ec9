//! The server over real sockets: HTTPS answers, plain HTTP to it does not, a required client
//! certificate is enforced, and a silent, slow or huge request neither holds the server nor
//! delays another client's probe.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use harp_core::config::{HttpConfig, HttpTls};
use harp_http::{HttpError, Limits};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA with the server's certificate (127.0.0.1) and a client's, as PEM files in a temp dir.
struct Pki {
    dir: std::path::PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("harp-http-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca };
        pki.issue(
            "server",
            &["127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.issue("client", &[], ExtendedKeyUsagePurpose::ClientAuth);
        pki
    }

    /// `<name>.pem` and `<name>.key`, signed by this CA.
    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    fn tls(&self, client_ca: bool) -> HttpTls {
        HttpTls {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: client_ca.then(|| self.path("ca.pem")),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http(tls: Option<HttpTls>) -> HttpConfig {
    HttpConfig {
        enable: true,
        host: "127.0.0.1".into(),
        port: 0,
        probes_timeout: Duration::from_millis(500),
        tls,
    }
}

/// Serves a `/health/is-live` app; returns its port.
async fn start(tls: Option<HttpTls>, limits: Limits) -> u16 {
    let listener = harp_http::bind(&http(tls)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/health/is-live", get(|| async { "true" }));
    tokio::spawn(harp_http::serve(listener, app, limits));
    port
}

/// A client trusting `ca.pem`, presenting `identity` (`client` → client.pem/.key) if given.
fn connector(pki: &Pki, ca: &Path, identity: Option<&str>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    TlsConnector::from(Arc::new(config))
}

const GET: &[u8] = b"GET /health/is-live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// The answer to [`GET`] over TLS, or the error on the way.
async fn get_tls(port: u16, tls: &TlsConnector) -> std::io::Result<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connect(name, tcp).await?;
    s.write_all(GET).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

async fn get_plain(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_answers_and_plain_http_to_it_gets_no_answer() {
    let pki = Pki::new("https");
    let port = start(Some(pki.tls(false)), Limits::default()).await;
    let tls = connector(&pki, &pki.path("ca.pem"), None);
    let answer = get_tls(port, &tls).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("true"), "{answer}");
    let plain = get_plain(port, GET).await;
    assert!(
        !plain.contains("200 OK"),
        "plain HTTP was answered: {plain}"
    );
}

#[tokio::test]
async fn a_required_client_certificate_is_enforced() {
    let pki = Pki::new("mtls");
    let port = start(Some(pki.tls(true)), Limits::default()).await;
    let ca = pki.path("ca.pem");
    let with = get_tls(port, &connector(&pki, &ca, Some("client"))).await;
    assert!(
        with.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "{with:?}"
    );
    // TLS 1.3: the server's refusal arrives after the client's handshake, at the first read.
    let without = get_tls(port, &connector(&pki, &ca, None)).await;
    assert!(
        without.is_err(),
        "a client without a certificate was answered: {without:?}"
    );
    let other = Pki::new("mtls-other");
    let stranger = get_tls(port, &connector(&other, &ca, Some("client"))).await;
    assert!(
        stranger.is_err(),
        "a certificate of another CA was accepted: {stranger:?}"
    );
}

#[tokio::test]
async fn a_silent_or_slow_client_holds_neither_the_server_nor_another_probe() {
    let pki = Pki::new("slow");
    let limits = Limits {
        head_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    for tls in [None, Some(pki.tls(false))] {
        let secure = tls.is_some();
        let port = start(tls, limits).await;
        // One silent connection, one sending its head a byte at a time.
        let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        slow.write_all(b"GET /health/is-live HTTP/1.1\r\n")
            .await
            .unwrap();
        let began = Instant::now();
        let answer = match secure {
            true => get_tls(port, &connector(&pki, &pki.path("ca.pem"), None))
                .await
                .unwrap(),
            false => get_plain(port, GET).await,
        };
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(began.elapsed() < Duration::from_millis(400), "probe waited");
        // Both are closed once the bound passes.
        for s in [&mut silent, &mut slow] {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
            assert!(
                read.is_ok(),
                "a connection was held past the head bound (tls {secure})"
            );
        }
    }
}

#[tokio::test]
async fn a_huge_request_head_is_refused_and_the_server_goes_on() {
    let port = start(None, Limits::default()).await;
    let mut req = b"GET /health/is-live HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend(b"\r\nConnection: close\r\n\r\n");
    let answer = get_plain(port, &req).await;
    assert!(
        !answer.contains("200 OK"),
        "a 64 KiB head was served: {answer:.80}"
    );
    assert!(get_plain(port, GET).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bad_files_are_errors_that_name_the_key_and_the_file() {
    let pki = Pki::new("bad");
    let mut tls = pki.tls(false);
    tls.cert_file = pki.path("missing.pem");
    let e = harp_http::bind(&http(Some(tls))).await.err().unwrap();
    assert!(
        matches!(
            e,
            HttpError::File {
                key: "cert_file",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // The client's key does not match the server's certificate.
    let mut tls = pki.tls(false);
    tls.key_file = pki.path("client.key");
    let e = harp_http::bind(&http(Some(tls))).await.err().unwrap();
    assert!(e.to_string().starts_with("http.key_file"), "{e}");
    // A key file given as the certificate.
    let mut tls = pki.tls(false);
    tls.cert_file = pki.path("server.key");
    let e = harp_http::bind(&http(Some(tls))).await.err().unwrap();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
}
