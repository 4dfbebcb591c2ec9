//! The rustls server setup from `http.cert_file`, `key_file` and `client_ca_file` (PEM).

use std::path::Path;
use std::sync::Arc;

use harp_core::config::HttpTls;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::HttpError;

/// The TLS side of the server. With `client_ca_file`, a client without a certificate signed by
/// that CA fails the handshake.
pub fn acceptor(cfg: &HttpTls) -> Result<TlsAcceptor, HttpError> {
    let certs = certificates("cert_file", &cfg.cert_file)?;
    let key = private_key(&cfg.key_file)?;
    // An explicit provider: which one the process default would be depends on the features
    // other crates turn on.
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in certificates("client_ca_file", path)? {
                roots
                    .add(c)
                    .map_err(|e| pem_error("client_ca_file", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| pem_error("client_ca_file", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        pem_error(
            "key_file",
            &cfg.key_file,
            format!("{e} (is it the key of http.cert_file?)"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, HttpError> {
    std::fs::read(path).map_err(|source| HttpError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(key, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, HttpError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_error("key_file", path, format!("no PEM private key: {e}")))
}

fn pem_error(key: &'static str, path: &Path, what: impl ToString) -> HttpError {
    HttpError::Pem {
        key,
        path: path.to_owned(),
        what: what.to_string(),
    }
}
