//! Starting each kind of process on its host, from the configs `harp-host.sh configure`
//! renders into `<workdir>/<host>/conf/`.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::proc::{HostProc, Kind, Recipe};
use super::provision::{configure, make_pki, phase, read_env_file};
use super::{APP_HOSTS, AgentMode, ETCD_HOSTS, LabSpec, PG_NODES};
use harp_core::config::Replication;

use crate::bins::workspace_bin;
use crate::etcd::etcd_user;
use crate::lab::net::{Enter, Host, LabError, Net, run};
use crate::pg_template::chown_postgres;
use crate::postgres::{pg_bin_dir, postgres_user, template_data_dir};

/// `<workdir>/<host>/`, with `conf/` for the rendered configs.
pub(super) struct HostDir {
    pub root: PathBuf,
    pub conf: PathBuf,
    workdir: PathBuf,
}

impl HostDir {
    pub fn new(workdir: &Path, host: &str) -> Result<HostDir, LabError> {
        let root = workdir.join(host);
        let conf = root.join("conf");
        std::fs::create_dir_all(&conf)
            .map_err(|e| LabError::io(format!("create {}", conf.display()), e))?;
        Ok(HostDir {
            root,
            conf,
            workdir: workdir.to_path_buf(),
        })
    }

    fn log(&self, kind: Kind) -> PathBuf {
        self.root.join(format!("{kind}.log"))
    }
}

/// `e1=198.18.0.10,e2=...` for `HARP_ETCD_MEMBERS`.
pub(super) fn etcd_members(net: &Net) -> Result<String, LabError> {
    let members = ETCD_HOSTS
        .iter()
        .map(|h| net.host(h).map(|h| format!("{}={}", h.name, h.ip)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(members.join(","))
}

/// `<workdir>/pki`: the lab's `HARP_PKI_DIR` (shared by every host, as one file system).
pub(super) fn pki_dir(workdir: &Path) -> PathBuf {
    workdir.join("pki")
}

/// `scripts/harp-pki` into [`pki_dir`]: etcd's certificate for the members' addresses, and a
/// client certificate for root and for every unit's etcd user.
pub(super) fn make_lab_pki(net: &Net, spec: &LabSpec, workdir: &Path) -> Result<(), LabError> {
    let ips = ETCD_HOSTS
        .iter()
        .map(|h| net.host(h).map(|h| h.ip.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let cluster = spec.cluster();
    let mut users = vec!["root".to_string(), etcd_user(&cluster, "admin", "")];
    users.extend(PG_NODES.iter().map(|n| etcd_user(&cluster, "manager", n.0)));
    users.extend(APP_HOSTS.iter().map(|a| etcd_user(&cluster, "agent", a.0)));
    make_pki(&pki_dir(workdir), &ips, &users)
}

/// `harp-host.sh etcd users` on the first member's host: root, HARP's users and roles, auth on.
pub(super) fn make_etcd_users(net: &Net, spec: &LabSpec, workdir: &Path) -> Result<(), LabError> {
    let host = ETCD_HOSTS[0];
    let d = HostDir::new(workdir, host)?;
    let mut vars = common_vars(net, spec, net.host(host)?, &d)?;
    let managers: Vec<&str> = PG_NODES.iter().map(|n| n.0).collect();
    let agents: Vec<&str> = APP_HOSTS.iter().map(|a| a.0).collect();
    vars.push(("HARP_MANAGERS", managers.join(" ")));
    vars.push(("HARP_AGENTS", agents.join(" ")));
    phase(net.command(host, "bash")?, "etcd", "users", &vars)
}

/// `harp-host.sh ctl configure` for `host`: `<workdir>/<host>/conf/harpctl.yml`, as the
/// cluster's etcd admin.
pub(super) fn configure_ctl(
    net: &Net,
    spec: &LabSpec,
    workdir: &Path,
    host: &str,
) -> Result<PathBuf, LabError> {
    let d = HostDir::new(workdir, host)?;
    let vars = common_vars(net, spec, net.host(host)?, &d)?;
    configure("ctl", &vars)?;
    Ok(d.conf.join("harpctl.yml"))
}

/// The variables every role gets.
fn common_vars(net: &Net, spec: &LabSpec, host: &Host, d: &HostDir) -> Result<Vars, LabError> {
    let mut vars = vec![
        ("HARP_NAME", host.name.clone()),
        ("HARP_IP", host.ip.to_string()),
        ("HARP_ETCD_MEMBERS", etcd_members(net)?),
        ("HARP_CONF_DIR", d.conf.display().to_string()),
        ("HARP_DATA_DIR", d.root.join("data").display().to_string()),
        ("HARP_CLUSTER", spec.cluster()),
        ("HARP_LEASE_SECS", spec.lease_secs.to_string()),
        ("HARP_REFRESH_MS", spec.refresh_ms.to_string()),
    ];
    if spec.etcd_tls {
        vars.push(("HARP_PKI_DIR", pki_dir(&d.workdir).display().to_string()));
    }
    if spec.replication == Replication::Streaming {
        vars.push(("HARP_REPLICATION", spec.replication.as_str().into()));
        vars.push((
            "HARP_SYNCHRONOUS_MODE",
            spec.synchronous_mode.as_str().into(),
        ));
    }
    Ok(vars)
}

type Vars = Vec<(&'static str, String)>;

fn harp_env() -> Vec<(String, String)> {
    vec![
        (
            "RUST_LOG".into(),
            std::env::var("HARP_LAB_LOG").unwrap_or_else(|_| "info".into()),
        ),
        ("NO_COLOR".into(), "1".into()),
    ]
}

pub(super) fn start_etcd(
    net: &Net,
    spec: &LabSpec,
    workdir: &Path,
    host: &str,
) -> Result<HostProc, LabError> {
    let h = net.host(host)?;
    let d = HostDir::new(workdir, host)?;
    let mut vars = common_vars(net, spec, h, &d)?;
    vars.push((
        "HARP_ETCD_TOKEN",
        format!("{}-{}", spec.cluster(), std::process::id()),
    ));
    vars.push(("HARP_ETCD_HEARTBEAT_MS", spec.etcd_heartbeat_ms.to_string()));
    vars.push(("HARP_ETCD_ELECTION_MS", spec.etcd_election_ms.to_string()));
    configure("etcd", &vars)?;
    let recipe = Recipe {
        program: std::env::var_os("HARP_ETCD_BIN")
            .unwrap_or_else(|| "etcd".into())
            .into(),
        args: ["--logger", "zap", "--log-outputs", "stderr"]
            .map(OsString::from)
            .into(),
        env: read_env_file(&d.conf.join("etcd.env"))?,
        cwd: d.root.clone(),
        enter: Enter::default(),
    };
    HostProc::spawn(Kind::Etcd, host, &h.ns_path(), recipe, &d.log(Kind::Etcd))
}

/// Postgres (from the initdb template, with the rendered settings included) and its manager.
/// With `standby_of` (a streaming primary's host), Postgres is instead a standby made from
/// that primary with `pg_basebackup -R` over the lab network, run on `host`.
pub(super) fn start_postgres(
    net: &Net,
    spec: &LabSpec,
    workdir: &Path,
    (host, location, priority): (&str, &str, i32),
    standby_of: Option<&str>,
) -> Result<(HostProc, Recipe), LabError> {
    let h = net.host(host)?;
    let d = HostDir::new(workdir, host)?;
    let data = d.root.join("pgdata");
    let sock = d.root.join("sock");
    let mut vars = common_vars(net, spec, h, &d)?;
    vars.push(("HARP_LOCATION", location.to_string()));
    vars.push(("HARP_PRIORITY", priority.to_string()));
    vars.push(("HARP_PG_DATA", data.display().to_string()));
    vars.push(("HARP_PG_BIN", pg_bin_dir().display().to_string()));
    configure("postgres", &vars)?;
    match standby_of {
        None => copy_template(&data)?,
        Some(primary) => base_backup(net, host, primary, &data)?,
    }
    prepare_data_dir(&data, &sock, &d.conf)?;
    let recipe = Recipe {
        program: pg_bin_dir().join("postgres"),
        args: vec![
            "-D".into(),
            data.clone().into(),
            "-c".into(),
            format!("unix_socket_directories={}", sock.display()).into(),
            // The lab proves routing, not durability of the machine's disk.
            "-c".into(),
            "fsync=off".into(),
        ],
        env: Vec::new(),
        cwd: d.root.clone(),
        enter: Enter {
            cgroup: None,
            user: Some(postgres_user()),
        },
    };
    let pg = HostProc::spawn(
        Kind::Postgres,
        host,
        &h.ns_path(),
        recipe,
        &d.log(Kind::Postgres),
    )?
    .with_data_dir(&data);
    let manager = Recipe {
        program: workspace_bin("harp-manager"),
        args: vec!["-f".into(), d.conf.join("config.yml").into()],
        env: harp_env(),
        cwd: d.root.clone(),
        enter: Enter::default(),
    };
    Ok((pg, manager))
}

pub(super) fn start_manager(
    net: &Net,
    host: &str,
    workdir: &Path,
    recipe: Recipe,
) -> Result<HostProc, LabError> {
    let h = net.host(host)?;
    let log = workdir.join(host).join(format!("{}.log", Kind::Manager));
    HostProc::spawn(Kind::Manager, host, &h.ns_path(), recipe, &log)
}

fn copy_template(data: &Path) -> Result<(), LabError> {
    let _ = std::fs::remove_dir_all(data);
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(template_data_dir()).arg(data);
    run(cp, None).map(drop)
}

/// `pg_basebackup -R` of the primary on `primary` into `data`, run on `host` as postgres.
fn base_backup(net: &Net, host: &str, primary: &str, data: &Path) -> Result<(), LabError> {
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data)
        .and_then(|()| std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| LabError::io(format!("create {}", data.display()), e))?;
    chown_postgres(data);
    let enter = Enter {
        cgroup: None,
        user: Some(postgres_user()),
    };
    let mut cmd = net.command_with(host, pg_bin_dir().join("pg_basebackup"), &enter)?;
    cmd.arg("-D")
        .arg(data)
        .args(["-R", "-X", "stream", "-c", "fast", "-w", "-d"])
        .arg(format!(
            "host={} port={} user=postgres application_name={host}",
            net.host(primary)?.ip,
            super::PG_PORT
        ))
        .current_dir(data);
    run(cmd, None)?;
    // The primary's own configs came along: start from the template's, like the primary did.
    for file in ["postgresql.conf", "pg_hba.conf"] {
        std::fs::copy(template_data_dir().join(file), data.join(file))
            .map_err(|e| LabError::io(format!("copy the template's {file}"), e))?;
    }
    Ok(())
}

/// Includes the rendered settings and appends the rendered client rule.
fn prepare_data_dir(data: &Path, sock: &Path, conf: &Path) -> Result<(), LabError> {
    let include = format!(
        "\ninclude '{}'\n",
        conf.join("postgresql.harp.conf").display()
    );
    append(&data.join("postgresql.conf"), &include)?;
    let hba_path = conf.join("pg_hba.harp.conf");
    let hba = std::fs::read_to_string(&hba_path)
        .map_err(|e| LabError::io(format!("read {}", hba_path.display()), e))?;
    append(&data.join("pg_hba.conf"), &hba)?;
    std::fs::create_dir_all(sock)
        .map_err(|e| LabError::io(format!("create {}", sock.display()), e))?;
    chown_postgres(data);
    chown_postgres(sock);
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LabError::io(format!("append to {}", path.display()), e))
}

pub(super) struct AgentPlan<'a> {
    pub host: &'a str,
    pub location: &'a str,
    pub mode: AgentMode,
    pub cgroup: &'a Path,
}

pub(super) fn start_agent(
    net: &Net,
    spec: &LabSpec,
    workdir: &Path,
    plan: &AgentPlan<'_>,
) -> Result<HostProc, LabError> {
    let h = net.host(plan.host)?;
    let d = HostDir::new(workdir, plan.host)?;
    let mut vars = common_vars(net, spec, h, &d)?;
    vars.push(("HARP_LOCATION", plan.location.to_string()));
    vars.push(("HARP_PAUSE_TIMEOUT_MS", spec.pause_timeout_ms.to_string()));
    match plan.mode {
        AgentMode::Kernel => {
            vars.push(("HARP_PROXY_MODE", "ebpf".into()));
            vars.push(("HARP_CGROUP_PATH", plan.cgroup.display().to_string()));
        }
        AgentMode::Userspace => vars.push(("HARP_PROXY_MODE", "userspace".into())),
    }
    configure("app", &vars)?;
    let recipe = Recipe {
        program: workspace_bin("harp-agent"),
        args: vec!["-f".into(), d.conf.join("config.yml").into()],
        env: harp_env(),
        cwd: d.root.clone(),
        enter: Enter::default(),
    };
    HostProc::spawn(
        Kind::Agent,
        plan.host,
        &h.ns_path(),
        recipe,
        &d.log(Kind::Agent),
    )
}

/// The port a host's service of `kind` listens on (the one readiness probes).
pub(super) fn service_port(kind: Kind) -> u16 {
    match kind {
        Kind::Etcd => super::ETCD_PORT,
        Kind::Postgres => super::PG_PORT,
        Kind::Manager => super::MANAGER_HTTP_PORT,
        Kind::Agent => super::AGENT_HTTP_PORT,
    }
}
