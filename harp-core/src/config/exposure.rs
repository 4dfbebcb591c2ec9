//! Whether an etcd link is open to whoever reaches etcd: HARP keeps plaintext the default (a
//! CA is the operator's to provide), so a link beyond this host without TLS and a proof of who
//! HARP is gets named at every start (SAFETY A10).

use super::DcsConfig;

impl DcsConfig {
    /// Why this link lets others in, or `None` when every endpoint is on this host or the link
    /// is TLS with a client certificate or an etcd user.
    pub fn exposure(&self) -> Option<String> {
        let remote: Vec<&str> = self
            .endpoints
            .iter()
            .map(String::as_str)
            .filter(|e| !is_loopback(e))
            .collect();
        if remote.is_empty() {
            return None;
        }
        let eps = remote.join(", ");
        let proven = self.auth.is_some() || self.tls.as_ref().is_some_and(|t| t.client.is_some());
        let why = match (&self.tls, proven) {
            (Some(_), true) => return None,
            (None, true) => {
                "is plaintext: the etcd password and every leader record cross \
                             the network readable and changeable"
            }
            (None, false) => {
                "is plaintext with no etcd user: anyone who reaches etcd can \
                              write a leader key and send every client to a server of their \
                              choosing"
            }
            (Some(_), false) => {
                "proves nothing about HARP to etcd (no client certificate, no \
                                 user): anyone who reaches etcd can write a leader key"
            }
        };
        Some(format!(
            "the etcd link to {eps} {why}; set dcs.ssl: on with ssl_ca_file, ssl_cert_file, \
             ssl_key_file and dcs.user (README: TLS and users on the etcd link)"
        ))
    }
}

/// `127.0.0.0/8`, `::1` or `localhost`, with or without a scheme and port.
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientCert, DcsAuth, DcsTls, Password, parse_str};

    fn dcs(endpoints: &str) -> DcsConfig {
        let quoted: Vec<String> = endpoints.split(", ").map(|e| format!("{e:?}")).collect();
        let yaml = format!(
            "cluster:\n  name: c1\ndcs:\n  driver: etcd\n  endpoints: [{}]\nlocation: dca\n",
            quoted.join(", ")
        );
        parse_str(&yaml, "config.yml").unwrap().dcs
    }

    #[test]
    fn a_link_on_this_host_is_not_exposed() {
        for eps in [
            "127.0.0.1:2379",
            "localhost:2379, http://127.0.0.2:2379",
            "[::1]:2379",
        ] {
            assert_eq!(dcs(eps).exposure(), None, "{eps}");
        }
    }

    #[test]
    fn plaintext_beyond_this_host_is_named_with_the_fix() {
        let d = dcs("127.0.0.1:2379, 10.0.0.2:2379, http://etcd3:2379");
        let why = d.exposure().expect("exposed");
        assert!(
            why.starts_with(
                "the etcd link to 10.0.0.2:2379, http://etcd3:2379 is plaintext with no etcd user"
            ),
            "{why}"
        );
        assert!(why.contains("set dcs.ssl: on"), "{why}");
    }

    #[test]
    fn tls_needs_a_proof_of_harp_too() {
        let mut d = dcs("10.0.0.2:2379");
        d.tls = Some(DcsTls::default());
        assert!(d.exposure().unwrap().contains("proves nothing about HARP"));
        let mut with_cert = d.clone();
        with_cert.tls = Some(DcsTls {
            ca_file: None,
            client: Some(ClientCert {
                cert_file: "c.pem".into(),
                key_file: "c.key".into(),
            }),
        });
        assert_eq!(with_cert.exposure(), None);
        let mut with_user = d.clone();
        with_user.auth = Some(DcsAuth {
            user: "harp".into(),
            password: Password::new("x"),
            password_from: "test".into(),
        });
        assert_eq!(with_user.exposure(), None);
        with_user.tls = None;
        assert!(with_user.exposure().unwrap().contains("password"));
    }
}
