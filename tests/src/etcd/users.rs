//! Users of a secure etcd as an operator makes them: `scripts/etcd-harp-roles` run as root,
//! then each unit's `dcs:` lines name its own user, password file and client certificate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::EtcdCluster;
use crate::workdir::WorkDir;

/// The etcd user of a unit, as `scripts/etcd-harp-roles` names it (`kind`: manager, agent,
/// admin; `name` the node or proxy, unused for admin).
pub fn etcd_user(cluster: &str, kind: &str, name: &str) -> String {
    match kind {
        "admin" => format!("harp-{cluster}-admin"),
        _ => format!("harp-{cluster}-{kind}-{name}"),
    }
}

impl EtcdCluster {
    /// Runs `scripts/etcd-harp-roles <cluster> <dir>/passwords <args>` as root (e.g.
    /// `--manager n1 --agent p1 --admin`); returns the password directory.
    pub fn make_users(&self, cluster: &str, dir: &WorkDir, args: &[&str]) -> PathBuf {
        let sec = self
            .secure()
            .expect("users need a secure etcd (start_secure)");
        let root = sec.pki.client("root");
        let passwords = dir.join("passwords");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd-harp-roles");
        let out = Command::new(script)
            .arg(cluster)
            .arg(&passwords)
            .args(args)
            .env("ETCDCTL_ENDPOINTS", self.endpoints().join(","))
            .env("ETCDCTL_CACERT", sec.pki.ca())
            .env("ETCDCTL_CERT", &root.cert)
            .env("ETCDCTL_KEY", &root.key)
            .env("ETCDCTL_USER", format!("root:{}", sec.root_password))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/etcd-harp-roles");
        assert!(
            out.status.success(),
            "etcd-harp-roles failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        passwords
    }

    /// The `dcs:` lines for `user`: TLS with the test CA, the client certificate of the same
    /// name, the password file in `passwords`.
    pub fn dcs_yaml(&self, passwords: &Path, user: &str) -> String {
        let pki = &self.secure().expect("a secure etcd").pki;
        let cert = pki.client(user);
        format!(
            "ssl: on\nssl_ca_file: {}\nssl_cert_file: {}\nssl_key_file: {}\nuser: {user}\n\
             password_file: {}\n",
            pki.ca().display(),
            cert.cert.display(),
            cert.key.display(),
            passwords.join(user).display()
        )
    }

    /// For a secure etcd, the user of a unit (`kind` `manager`, `agent` or `admin`; `name` its
    /// node or proxy) made now, and its `dcs:` lines; for a plain etcd, no lines.
    pub fn unit_dcs_yaml(&self, cluster: &str, dir: &WorkDir, kind: &str, name: &str) -> String {
        if self.secure().is_none() {
            return String::new();
        }
        let flag = match kind {
            "admin" => vec!["--admin"],
            "manager" => vec!["--manager", name],
            "agent" => vec!["--agent", name],
            other => panic!("no etcd user kind {other}"),
        };
        let user = etcd_user(cluster, kind, name);
        let passwords = self.make_users(cluster, dir, &flag);
        self.dcs_yaml(&passwords, &user)
    }
}
