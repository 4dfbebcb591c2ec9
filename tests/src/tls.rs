//! A test PKI made fresh in a test's work directory (rcgen; no key is ever committed): a CA,
//! an etcd server certificate for 127.0.0.1, localhost and the lab's etcd hosts
//! (198.18.0.10-12), client certificates issued by name, and the bad ones the refusal tests
//! need: a second CA, a client certificate it signed, and an expired client certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct TestPki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("dir", &self.dir).finish()
    }
}

/// The server certificate's names: loopback and the lab's etcd hosts.
const SERVER_NAMES: [&str; 5] = [
    "127.0.0.1",
    "localhost",
    "198.18.0.10",
    "198.18.0.11",
    "198.18.0.12",
];

impl TestPki {
    /// Writes `ca.pem`, `server.{pem,key}`, `other-ca.pem`, `stranger.{pem,key}` (signed by
    /// the other CA) and `expired.{pem,key}` (by the CA, expired yesterday) into `dir`.
    pub fn create(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("create pki dir");
        let (ca_pem, ca) = new_ca("HARP test CA");
        std::fs::write(dir.join("ca.pem"), ca_pem).expect("write ca");
        let pki = TestPki {
            dir: dir.to_path_buf(),
            ca,
        };
        let mut server = params("etcd", &SERVER_NAMES);
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        pki.issue("server", server, &pki.ca);
        let (other_pem, other) = new_ca("another CA");
        std::fs::write(dir.join("other-ca.pem"), other_pem).expect("write other ca");
        pki.issue("stranger", client_params("stranger"), &other);
        let mut expired = client_params("expired");
        let now = time::OffsetDateTime::now_utc();
        expired.not_before = now - time::Duration::days(2);
        expired.not_after = now - time::Duration::days(1);
        pki.issue("expired", expired, &pki.ca);
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed neither etcd's certificate nor HARP's.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    pub fn server(&self) -> CertFiles {
        self.files("server")
    }

    /// The client certificate `name` (its CN), issued by the CA on first use.
    pub fn client(&self, name: &str) -> CertFiles {
        let files = self.files(name);
        if !files.cert.is_file() {
            self.issue(name, client_params(name), &self.ca);
        }
        files
    }

    /// Signed by the other CA.
    pub fn stranger(&self) -> CertFiles {
        self.files("stranger")
    }

    /// Signed by the CA, expired yesterday.
    pub fn expired(&self) -> CertFiles {
        self.files("expired")
    }

    fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn issue(&self, name: &str, params: CertificateParams, by: &Issuer<'_, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, by).expect("sign");
        let files = self.files(name);
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    }
}

fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("names");
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

fn client_params(cn: &str) -> CertificateParams {
    let mut p = params(cn, &[]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

fn new_ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut p = params(cn, &[]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let pem = p.self_signed(&key).expect("self-sign ca").pem();
    (pem, Issuer::new(p, key))
}
