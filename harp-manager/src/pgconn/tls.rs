//! The rustls client side of each `sslmode`, as libpq means them: `disable` no TLS; `allow` and
//! `prefer` TLS if the server offers it, unverified; `require` TLS, verified against
//! `sslrootcert` only if one is given (then like `verify-ca`); `verify-ca` the chain;
//! `verify-full` the chain and the host name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};

use super::PgConnError;
use crate::standby::Conninfo;

/// `None` for `sslmode=disable`.
pub(super) fn client_config(mode: &str, c: &Conninfo) -> Result<Option<ClientConfig>, PgConnError> {
    let provider = Arc::new(ring::default_provider());
    let roots = c.get("sslrootcert").map(Path::new);
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        ("disable", _) => return Ok(None),
        ("allow" | "prefer", _) | ("require", None) => {
            Arc::new(Unverified(provider.signature_verification_algorithms))
        }
        ("require" | "verify-ca", Some(path)) => Arc::new(ChainOnly(webpki(path, &provider)?)),
        ("verify-full", Some(path)) => webpki(path, &provider)?,
        ("verify-ca" | "verify-full", None) => {
            return Err(PgConnError::NoRootCert { mode: mode.into() });
        }
        (other, _) => return Err(PgConnError::SslMode(other.into())),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (c.get("sslcert"), c.get("sslkey")) {
        (Some(cert), Some(key)) => {
            let certs = certificates("sslcert", Path::new(cert))?;
            let key = private_key(Path::new(key))?;
            builder.with_client_auth_cert(certs, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(missing("sslkey", "sslcert")),
        (None, Some(_)) => return Err(missing("sslcert", "sslkey")),
    };
    Ok(Some(config))
}

fn missing(key: &'static str, with: &str) -> PgConnError {
    PgConnError::Pem {
        key,
        path: "".into(),
        what: format!("missing: {with} needs it"),
    }
}

fn webpki(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PgConnError> {
    let mut roots = RootCertStore::empty();
    for c in certificates("sslrootcert", path)? {
        roots.add(c).map_err(|e| pem("sslrootcert", path, e))?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| pem("sslrootcert", path, e))
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PgConnError> {
    let bytes = std::fs::read(path).map_err(|source| PgConnError::File {
        key,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(key, path, e))?;
    if certs.is_empty() {
        return Err(pem(key, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PgConnError> {
    let bytes = std::fs::read(path).map_err(|source| PgConnError::File {
        key: "sslkey",
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem("sslkey", path, e))
}

fn pem(key: &'static str, path: &Path, what: impl ToString) -> PgConnError {
    PgConnError::Pem {
        key,
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// `verify-ca`: the chain must lead to the CA; the name may be anything.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a CA: encrypted, not authenticated (libpq's meaning). The
/// handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
