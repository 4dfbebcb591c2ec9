//! Runs the configure phase of `vagrant/provision/harp-host.sh`: the lab starts its processes
//! with exactly the configs the VMs get.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::net::{LabError, run};

/// `vagrant/provision/harp-host.sh` of this repository.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vagrant/provision/harp-host.sh")
}

/// `harp-host.sh <role> configure` with `vars` (`HARP_*`) as its only `HARP_*` environment.
pub fn configure(role: &str, vars: &[(&str, String)]) -> Result<(), LabError> {
    phase(Command::new("bash"), role, "configure", vars)
}

/// `harp-host.sh <role> <phase>` run by `bash` (`cmd`, e.g. inside a host's namespace) with
/// `vars` as its only `HARP_*` environment.
pub(super) fn phase(
    mut cmd: Command,
    role: &str,
    phase: &str,
    vars: &[(&str, String)],
) -> Result<(), LabError> {
    let script = script_path();
    cmd.arg(&script).args([role, phase]);
    // Inherited HARP_* variables (e.g. the harness's HARP_PG_BIN) must not leak into configs.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HARP_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    run_script(cmd, script)
}

/// Runs `cmd` (which runs `script`); a failure names the script.
fn run_script(cmd: Command, script: PathBuf) -> Result<(), LabError> {
    run(cmd, None).map(drop).map_err(|e| LabError::Provision {
        script,
        detail: e.to_string(),
    })
}

/// `scripts/harp-pki <dir> --server-ip <ip>... --client <user>...`: the PKI an operator makes
/// for `HARP_PKI_DIR` (openssl).
pub fn make_pki(dir: &Path, server_ips: &[String], users: &[String]) -> Result<(), LabError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/harp-pki");
    let mut cmd = Command::new(&script);
    cmd.arg(dir);
    for ip in server_ips {
        cmd.args(["--server-ip", ip]);
    }
    for u in users {
        cmd.args(["--client", u]);
    }
    run_script(cmd, script)
}

/// `KEY=VALUE` lines (the etcd env file); blank lines and `#` comments skipped.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, LabError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LabError::io(format!("read {}", path.display()), e))?;
    Ok(parse_env(&text))
}

fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use harp_core::config::{Replication, SynchronousMode};

    #[test]
    fn parses_env_lines() {
        let got = parse_env("# c\nA=1\n\nB=x=y\nnoise\n");
        assert_eq!(got, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
    }

    #[test]
    fn the_script_renders_an_agent_config() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().to_string_lossy().into_owned();
        configure(
            "app",
            &[
                ("HARP_NAME", "a2".into()),
                ("HARP_IP", "198.18.0.17".into()),
                ("HARP_ETCD_MEMBERS", "e1=198.18.0.10,e2=198.18.0.11".into()),
                ("HARP_CONF_DIR", conf),
                ("HARP_LOCATION", "dcb".into()),
                ("HARP_PROXY_MODE", "userspace".into()),
            ],
        )
        .unwrap();
        let yaml = std::fs::read_to_string(dir.path().join("config.yml")).unwrap();
        assert!(yaml.contains("listen_address: 198.18.0.17"), "{yaml}");
        assert!(
            yaml.contains("endpoints: [\"198.18.0.10:2379\", \"198.18.0.11:2379\"]"),
            "{yaml}"
        );
        assert!(yaml.contains("location: dcb"), "{yaml}");
    }

    /// The postgres role's files rendered into a fresh directory with `extra` variables.
    fn render_postgres(extra: &[(&str, &str)]) -> (String, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = vec![
            ("HARP_NAME", "n2".to_string()),
            ("HARP_IP", "198.18.0.14".into()),
            ("HARP_ETCD_MEMBERS", "e1=198.18.0.10".into()),
            ("HARP_CONF_DIR", dir.path().to_string_lossy().into_owned()),
            ("HARP_PG_DATA", "/srv/n2/pgdata".into()),
            ("HARP_PG_BIN", "/opt/pg/bin".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        configure("postgres", &vars).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        (
            read("config.yml"),
            read("postgresql.harp.conf"),
            read("pg_hba.harp.conf"),
        )
    }

    /// `key = value` lines of a Postgres config, quotes removed.
    fn pg_settings(conf: &str) -> Vec<(String, String)> {
        conf.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().into(), v.trim().trim_matches('\'').into()))
            .collect()
    }

    #[test]
    fn the_script_renders_a_multi_writer_node_by_default() {
        let (yaml, conf, hba) = render_postgres(&[]);
        assert!(yaml.starts_with("cluster:\n  name: demo\ndcs:\n"), "{yaml}");
        assert!(yaml.contains("  db_data_dir: /srv/n2/pgdata\n"), "{yaml}");
        assert!(!conf.contains("wal_level"), "{conf}");
        assert_eq!(hba, "host all all 198.18.0.0/24 trust\n");
    }

    #[test]
    fn the_script_renders_a_streaming_node() {
        let (yaml, conf, hba) = render_postgres(&[
            ("HARP_REPLICATION", "streaming"),
            ("HARP_SYNCHRONOUS_MODE", "strict"),
        ]);
        assert!(
            yaml.starts_with(
                "cluster:\n  name: demo\n  replication: streaming\n  synchronous_mode: strict\n"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("  db_data_dir: /srv/n2/pgdata\n"), "{yaml}");
        assert!(yaml.contains("  db_bin_dir: /opt/pg/bin\n"), "{yaml}");
        // The config the manager will run with parses, as streaming.
        let cfg = harp_core::config::parse_str(&yaml, "config.yml").unwrap();
        assert_eq!(cfg.cluster.replication, Replication::Streaming);
        assert_eq!(cfg.cluster.synchronous_mode, SynchronousMode::Strict);
        // Exactly the harness's streaming settings, besides the lab's own.
        let got = pg_settings(&conf);
        for (k, v) in crate::cluster::STREAMING_SETTINGS {
            assert!(
                got.contains(&(k.into(), v.into())),
                "{k} = {v} missing:\n{conf}"
            );
        }
        assert!(
            got.contains(&("cluster_name".into(), "n2".into())),
            "{conf}"
        );
        assert!(
            hba.contains("host replication all 198.18.0.0/24 trust\n"),
            "{hba}"
        );
    }

    #[test]
    fn with_a_pki_etcd_and_every_unit_speak_tls_as_their_own_user() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let users = [
            "harp-prod-manager-n1",
            "harp-prod-agent-a1",
            "harp-prod-admin",
        ];
        let owned: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        make_pki(&pki, &["198.18.0.10".into()], &owned).unwrap();
        std::fs::create_dir_all(pki.join("passwords")).unwrap();
        for u in users {
            std::fs::write(pki.join("passwords").join(u), "secret\n").unwrap();
        }
        let conf = |d: &str| dir.path().join(d).to_string_lossy().into_owned();
        let vars = |name: &str, ip: &str, d: &str| {
            vec![
                ("HARP_NAME", name.to_string()),
                ("HARP_IP", ip.into()),
                ("HARP_ETCD_MEMBERS", "e1=198.18.0.10,e2=198.18.0.11".into()),
                ("HARP_CONF_DIR", conf(d)),
                ("HARP_CLUSTER", "prod".into()),
                ("HARP_PKI_DIR", pki.to_string_lossy().into_owned()),
            ]
        };
        configure("etcd", &vars("e2", "198.18.0.11", "e")).unwrap();
        let env: std::collections::HashMap<_, _> = read_env_file(&dir.path().join("e/etcd.env"))
            .unwrap()
            .into_iter()
            .collect();
        let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
        assert_eq!(
            get("ETCD_ADVERTISE_CLIENT_URLS"),
            "https://198.18.0.11:2379"
        );
        assert_eq!(
            get("ETCD_INITIAL_CLUSTER"),
            "e1=https://198.18.0.10:2380,e2=https://198.18.0.11:2380"
        );
        assert_eq!(get("ETCD_CLIENT_CERT_AUTH"), "true");
        assert_eq!(get("ETCD_PEER_CLIENT_CERT_AUTH"), "true");
        let in_pki = |f: &str| pki.join(f).to_string_lossy().into_owned();
        assert_eq!(get("ETCD_CERT_FILE"), in_pki("server.pem"));
        assert_eq!(get("ETCD_PEER_TRUSTED_CA_FILE"), in_pki("ca.pem"));

        let units = [
            ("postgres", "n1", "config.yml", users[0]),
            ("app", "a1", "config.yml", users[1]),
            ("ctl", "a1", "harpctl.yml", users[2]),
        ];
        for (role, name, file, user) in units {
            let d = format!("{role}-{name}");
            configure(role, &vars(name, "198.18.0.13", &d)).unwrap();
            let yaml = std::fs::read_to_string(dir.path().join(&d).join(file)).unwrap();
            let cfg = harp_core::config::parse_str(&yaml, file).unwrap();
            let tls = cfg.dcs.tls.as_ref().expect("dcs.ssl");
            assert_eq!(tls.ca_file, Some(pki.join("ca.pem")), "{role}: {yaml}");
            let client = tls.client.as_ref().expect("a client certificate");
            assert_eq!(client.cert_file, pki.join(format!("{user}.pem")), "{yaml}");
            assert_eq!(client.key_file, pki.join(format!("{user}.key")), "{yaml}");
            let auth = cfg.dcs.auth.as_ref().expect("dcs.user");
            assert_eq!(auth.user, user, "{role}: {yaml}");
            assert_eq!(auth.password.expose(), "secret", "{role}: {yaml}");
        }
    }

    #[test]
    fn a_bad_replication_or_synchronous_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in [
            ("HARP_REPLICATION", "stream"),
            ("HARP_SYNCHRONOUS_MODE", "yes"),
        ] {
            let err = configure(
                "postgres",
                &[
                    ("HARP_NAME", "n1".into()),
                    ("HARP_IP", "198.18.0.13".into()),
                    ("HARP_ETCD_MEMBERS", "e1=198.18.0.10".into()),
                    ("HARP_CONF_DIR", dir.path().to_string_lossy().into_owned()),
                    ("HARP_REPLICATION", "streaming".into()),
                    (k, v.into()),
                ],
            )
            .unwrap_err();
            assert!(err.to_string().contains(&format!("{k}={v}")), "{err}");
        }
    }

    #[test]
    fn ebpf_mode_without_a_cgroup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = configure(
            "app",
            &[
                ("HARP_NAME", "a1".into()),
                ("HARP_IP", "198.18.0.16".into()),
                ("HARP_ETCD_MEMBERS", "e1=198.18.0.10".into()),
                ("HARP_CONF_DIR", dir.path().to_string_lossy().into_owned()),
                ("HARP_PROXY_MODE", "ebpf".into()),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("HARP_CGROUP_PATH"), "{err}");
    }
}
