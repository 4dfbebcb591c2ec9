//! Config loading: valid files, defaults, and a table of bad files with their exact errors.

use super::*;

const FULL: &str = r#"
cluster:
  name: mycluster
dcs:
  driver: etcd
  endpoints: [127.0.0.1:2379, "https://host2:2379"]
  request_timeout: 250ms
location: dca
manager:
  name: node1
  dsn: "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
  priority: 50
  leader_lease_duration: 10
  lease_refresh_interval: "3s"
  maximum_lag: 1048576
  db_data_dir: /var/lib/pgsql/data
  db_bin_dir: /usr/pgsql/bin
  stop_database_when_fenced: true
  health_check_interval: 500
  health_check_timeout: 3s
  server_transfer_timeout: 0
proxy:
  name: proxy1
  listen_address: 127.0.0.1
  listen_port: 7432
  max_client_conn: 500
  keepalive: 10
  timeout: 2s
  pause_timeout: 15000
  leader_lease_duration: 8
  lease_refresh_interval: 1000
  mode: userspace
  splice: true
  cgroup_path: /sys/fs/cgroup/apps
http:
  enable: false
  host: 127.0.0.1
  port: 9090
  probes:
    timeout: 2s
"#;

/// Lines 1-6; cases append from line 7.
const BASE: &str =
    "cluster:\n  name: c1\ndcs:\n  driver: etcd\n  endpoints: [e1:2379]\nlocation: dca\n";

fn error(text: &str) -> String {
    match parse_str(text, "config.yml") {
        Ok(config) => panic!("accepted {text:?} as {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_file_reads_every_key() {
    let config = parse_str(FULL, "config.yml").unwrap();
    let expected = Config {
        cluster: ClusterConfig {
            replication: Replication::MultiWriter,
            synchronous_mode: SynchronousMode::Off,
            name: "mycluster".into(),
        },
        dcs: DcsConfig {
            driver: DcsDriver::Etcd,
            endpoints: vec!["127.0.0.1:2379".into(), "https://host2:2379".into()],
            request_timeout: Duration::from_millis(250),
            // An https:// endpoint: TLS, the others get https:// too.
            tls: Some(DcsTls::default()),
            auth: None,
        },
        location: "dca".into(),
        manager: Some(ManagerConfig {
            name: "node1".into(),
            node: NodeDirectives {
                dsn: "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into(),
                priority: 50,
                leader_lease_duration: Duration::from_secs(10),
                lease_refresh_interval: Duration::from_secs(3),
                maximum_lag: 1_048_576,
                db_data_dir: Some("/var/lib/pgsql/data".into()),
                db_bin_dir: Some("/usr/pgsql/bin".into()),
                stop_database_when_fenced: true,
                health_check_interval: Duration::from_millis(500),
                health_check_timeout: Duration::from_secs(3),
                server_transfer_timeout: Duration::ZERO,
            },
        }),
        proxy: Some(ProxyConfig {
            name: "proxy1".into(),
            listen_address: "127.0.0.1".into(),
            listen_port: 7432,
            max_client_conn: 500,
            keepalive: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            pause_timeout: Duration::from_secs(15),
            leader_lease_duration: Duration::from_secs(8),
            lease_refresh_interval: Duration::from_secs(1),
            mode: ProxyMode::Userspace,
            splice: true,
            cgroup_path: Some("/sys/fs/cgroup/apps".into()),
            pgbouncer: None,
        }),
        http: HttpConfig {
            enable: false,
            host: "127.0.0.1".into(),
            port: 9090,
            probes_timeout: Duration::from_secs(2),
            tls: None,
        },
    };
    assert_eq!(config, expected);
}

#[test]
fn minimal_file_gets_the_defaults() {
    let text = format!("{BASE}manager:\n  name: n1\n  dsn: host=db\n");
    let config = parse_str(&text, "config.yml").unwrap();
    assert_eq!(config.dcs.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    let manager = config.manager.unwrap();
    assert_eq!(
        manager.node,
        NodeDirectives {
            dsn: "host=db".into(),
            priority: DEFAULT_PRIORITY,
            leader_lease_duration: DEFAULT_LEADER_LEASE_DURATION,
            lease_refresh_interval: DEFAULT_LEASE_REFRESH_INTERVAL,
            maximum_lag: DEFAULT_MAXIMUM_LAG,
            db_data_dir: None,
            db_bin_dir: None,
            stop_database_when_fenced: false,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            health_check_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
            server_transfer_timeout: DEFAULT_SERVER_TRANSFER_TIMEOUT,
        }
    );
    assert_eq!(
        config.http,
        HttpConfig {
            enable: DEFAULT_HTTP_ENABLE,
            host: DEFAULT_HTTP_HOST.into(),
            port: DEFAULT_HTTP_PORT,
            probes_timeout: DEFAULT_PROBES_TIMEOUT,
            tls: None,
        }
    );
}

#[test]
fn manager_and_http_sections_are_optional() {
    let config = parse_str(BASE, "config.yml").unwrap();
    assert_eq!(config.manager, None);
    assert_eq!(config.location, "dca");
    assert_eq!(config.dcs.endpoints, ["e1:2379"]);
}

#[test]
fn durations_take_integers_in_the_keys_unit_or_humantime_strings() {
    let cases = [
        ("leader_lease_duration: 6", Duration::from_secs(6)),
        ("leader_lease_duration: 6s", Duration::from_secs(6)),
        ("leader_lease_duration: 1m", Duration::from_secs(60)),
        ("lease_refresh_interval: 250", Duration::from_millis(250)),
        ("lease_refresh_interval: 250ms", Duration::from_millis(250)),
    ];
    for (line, want) in cases {
        let text = format!("{BASE}manager:\n  name: n1\n  dsn: host=db\n  {line}\n");
        let node = parse_str(&text, "config.yml")
            .unwrap()
            .manager
            .unwrap()
            .node;
        let got = if line.starts_with("leader") {
            node.leader_lease_duration
        } else {
            node.lease_refresh_interval
        };
        assert_eq!(got, want, "{line}");
    }
}

#[test]
fn bad_files_report_file_line_key_and_message() {
    let manager = |extra: &str| format!("{BASE}manager:\n  name: n1\n  dsn: host=db\n{extra}");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            manager("  priorty: 5\n"),
            "config.yml:10: manager.priorty: unknown key; valid keys here: name, dsn, priority, \
             leader_lease_duration, lease_refresh_interval, maximum_lag, db_data_dir, db_bin_dir, \
             stop_database_when_fenced, health_check_interval, health_check_timeout, server_transfer_timeout (did you mean `priority`?)",
        ),
        (
            "typo'd section",
            format!("{BASE}manger:\n  name: n1\n"),
            "config.yml:7: manger: unknown key; valid keys here: cluster, dcs, location, manager, \
             proxy, http (did you mean `manager`?)",
        ),
        (
            "duplicate key",
            BASE.replace("  name: c1\n", "  name: c1\n  name: c2\n  name: c3\n"),
            "config.yml:3: cluster.name: duplicate key; first set on line 2\n\
             config.yml:4: cluster.name: duplicate key; first set on line 2",
        ),
        (
            "string where an integer is expected",
            manager("  priority: high\n"),
            "config.yml:10: manager.priority: expected an integer >= -1, got \"high\"",
        ),
        (
            "wrong type for a duration",
            manager("  leader_lease_duration: soon\n"),
            "config.yml:10: manager.leader_lease_duration: expected a duration such as \"6s\" \
             or a whole number of seconds, got \"soon\"",
        ),
        (
            "wrong type for a millisecond duration",
            manager("  health_check_interval: [1]\n"),
            "config.yml:10: manager.health_check_interval: expected a duration such as \"6s\" \
             or a whole number of milliseconds, got a list",
        ),
        (
            "list where a mapping is expected",
            format!("{BASE}http: [8080]\n"),
            "config.yml:7: http: expected a mapping, got a list",
        ),
        (
            "scalar where a section is expected",
            format!("{BASE}manager: node1\n"),
            "config.yml:7: manager: expected a mapping, got \"node1\"",
        ),
        (
            "https without a key",
            format!("{BASE}http:\n  secure: true\n  cert_file: /etc/harp/http.pem\n"),
            "config.yml:8: http.key_file: is required with `secure: true` (PEM files of the \
             server's certificate and key)",
        ),
        (
            "certificate files without secure",
            format!("{BASE}http:\n  cert_file: /etc/harp/http.pem\n"),
            "config.yml:8: http.cert_file: is set but http.secure is not: set `secure: true` \
             for HTTPS, or remove it",
        ),
        (
            "string where a bool is expected",
            format!("{BASE}http:\n  enable: yes\n"),
            "config.yml:8: http.enable: expected true or false, got \"yes\"",
        ),
        (
            "missing cluster.name",
            BASE.replace("  name: c1\n", ""),
            "config.yml:1: cluster.name: missing required value",
        ),
        (
            "missing manager.dsn",
            format!("{BASE}manager:\n  name: n1\n"),
            "config.yml:7: manager.dsn: missing required value",
        ),
        (
            "empty manager section",
            format!("{BASE}manager:\n"),
            "config.yml:7: manager.name: missing required value\n\
             config.yml:7: manager.dsn: missing required value",
        ),
        (
            "missing top-level location",
            BASE.replace("location: dca\n", ""),
            "config.yml: location: missing required value",
        ),
        (
            "missing dcs section",
            "cluster:\n  name: c1\nlocation: dca\n".into(),
            "config.yml: dcs.driver: missing required value\n\
             config.yml: dcs.endpoints: missing required value",
        ),
        (
            "bad cluster name",
            BASE.replace("name: c1", "name: my cluster"),
            "config.yml:2: cluster.name: expected a name made of letters, digits, `_`, `.` and \
             `-`, got \"my cluster\"",
        ),
        (
            "driver consul",
            BASE.replace("etcd", "consul"),
            "config.yml:4: dcs.driver: unsupported driver `consul`; HARP supports `etcd`",
        ),
        (
            "empty endpoints",
            BASE.replace("[e1:2379]", "[]"),
            "config.yml:5: dcs.endpoints: expected a non-empty list of etcd endpoints \
             (host:port), got an empty list",
        ),
        (
            "endpoints as a string",
            BASE.replace("[e1:2379]", "e1:2379"),
            "config.yml:5: dcs.endpoints: expected a non-empty list of etcd endpoints \
             (host:port), got \"e1:2379\"",
        ),
        (
            "endpoint without port",
            BASE.replace("[e1:2379]", "[e1:2379, e2]"),
            "config.yml:5: dcs.endpoints[1]: expected `host:port` or `http(s)://host:port`, \
             got \"e2\"",
        ),
        (
            "endpoint with a non-numeric port",
            BASE.replace("[e1:2379]", "\n    - http://e1:etcd"),
            "config.yml:6: dcs.endpoints[0]: expected `host:port` or `http(s)://host:port`, \
             got \"http://e1:etcd\"",
        ),
        (
            "lease_refresh_interval >= leader_lease_duration",
            manager("  leader_lease_duration: 2\n  lease_refresh_interval: 2000\n"),
            "config.yml:11: manager.lease_refresh_interval: expected a duration shorter than \
             manager.leader_lease_duration (2s), got 2s",
        ),
        (
            "default lease_refresh_interval >= leader_lease_duration",
            manager("  leader_lease_duration: 1s\n"),
            "config.yml:10: manager.lease_refresh_interval: expected a duration shorter than \
             manager.leader_lease_duration (1s), got 2s (the default)",
        ),
        (
            "leader_lease_duration under a second",
            manager("  leader_lease_duration: 500ms\n"),
            "config.yml:10: manager.leader_lease_duration: expected a duration of at least 1s, \
             got 500ms",
        ),
        (
            "zero duration",
            manager("  health_check_interval: 0\n"),
            "config.yml:10: manager.health_check_interval: expected a duration greater than \
             zero, got 0s",
        ),
        (
            "priority -2",
            manager("  priority: -2\n"),
            "config.yml:10: manager.priority: expected an integer >= -1, got -2",
        ),
        (
            "priority beyond i32",
            manager("  priority: 3000000000\n"),
            "config.yml:10: manager.priority: expected an integer >= -1, got 3000000000",
        ),
        (
            "http.port 70000",
            format!("{BASE}http:\n  port: 70000\n"),
            "config.yml:8: http.port: expected a port number 1..=65535, got 70000",
        ),
        (
            "http.port 0",
            format!("{BASE}http:\n  port: 0\n"),
            "config.yml:8: http.port: expected a port number 1..=65535, got 0",
        ),
        (
            "YAML syntax error",
            "cluster:\n  name: c1\ndcs: driver: etcd\n".into(),
            "config.yml:3: invalid YAML: mapping values are not allowed in this context",
        ),
        (
            "empty file",
            String::new(),
            "config.yml: the file is empty; expected a mapping with the keys cluster, dcs, \
             location, manager, proxy, http",
        ),
        (
            "comments only",
            "# nothing here\n".into(),
            "config.yml: the file is empty; expected a mapping with the keys cluster, dcs, \
             location, manager, proxy, http",
        ),
        (
            "not a mapping",
            "- cluster\n- dcs\n".into(),
            "config.yml:1: expected a mapping, got a list",
        ),
        (
            "two documents",
            format!("{BASE}---\nlocation: dcb\n"),
            "config.yml:8: expected a single YAML document, found a second one",
        ),
        (
            "several issues at once, sorted by line",
            "cluster:\n  name: c1\ndcs:\n  driver: etcd\n  endpoints: [e1:2379]\nmanager:\n  \
             name: n1\n  dsn: host=db\n  priorty: 5\nhttp:\n  port: 0\n"
                .into(),
            "config.yml:9: manager.priorty: unknown key; valid keys here: name, dsn, priority, \
             leader_lease_duration, lease_refresh_interval, maximum_lag, db_data_dir, db_bin_dir, \
             stop_database_when_fenced, health_check_interval, health_check_timeout, server_transfer_timeout (did you mean `priority`?)\n\
             config.yml:11: http.port: expected a port number 1..=65535, got 0\n\
             config.yml: location: missing required value",
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(error(&text), want, "case: {name}");
    }
}

#[test]
fn issues_are_structured() {
    let err = parse_str(&BASE.replace("etcd", "consul"), "config.yml").unwrap_err();
    assert_eq!(
        err.issues(),
        [ConfigIssue {
            line: Some(4),
            key: "dcs.driver".into(),
            message: "unsupported driver `consul`; HARP supports `etcd`".into(),
        }]
    );
}

#[test]
fn no_input_panics() {
    // Every prefix of a valid file, plus odd YAML, is either a config or an error.
    for end in (0..=FULL.len()).filter(|&i| FULL.is_char_boundary(i)) {
        let _ = parse_str(&FULL[..end], "config.yml");
    }
    let odd = [
        "? [a, b]\n: c\n",
        "a: &x [*x]\n",
        "cluster: &c {name: c1}\ndcs: *c\n",
        "!!binary aGk=\n",
        "cluster:\n  name: !!int x\n",
        "{[{]: }",
        "\t",
        "priority: 99999999999999999999999\n",
        "...\n",
        "--- |\n  text\n",
    ];
    for text in odd {
        let _ = parse_str(text, "config.yml");
    }
}

#[test]
fn load_file_reads_from_disk_and_names_the_file() {
    let missing = Path::new("/nonexistent/harp/config.yml");
    let err = load_file(missing).unwrap_err();
    assert!(err.issues().is_empty());
    assert_eq!(
        err.to_string(),
        "cannot read config file /nonexistent/harp/config.yml: No such file or directory \
         (os error 2) (pass the right file with -f/--config)"
    );

    let dir = std::env::temp_dir().join(format!("harp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yml");
    std::fs::write(&path, BASE).unwrap();
    assert_eq!(load_file(&path).unwrap().location, "dca");
    std::fs::write(&path, BASE.replace("etcd", "consul")).unwrap();
    let err = load_file(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:4: dcs.driver: unsupported driver `consul`; HARP supports `etcd`",
            path.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn proxy_section_gets_harps_defaults() {
    let text = format!("{BASE}proxy:\n  name: p1\n");
    let proxy = parse_str(&text, "config.yml").unwrap().proxy.unwrap();
    assert_eq!(
        proxy,
        ProxyConfig {
            name: "p1".into(),
            listen_address: DEFAULT_LISTEN_ADDRESS.into(),
            listen_port: DEFAULT_LISTEN_PORT,
            max_client_conn: DEFAULT_MAX_CLIENT_CONN,
            keepalive: DEFAULT_KEEPALIVE,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            pause_timeout: DEFAULT_PAUSE_TIMEOUT,
            leader_lease_duration: DEFAULT_LEADER_LEASE_DURATION,
            lease_refresh_interval: DEFAULT_LEASE_REFRESH_INTERVAL,
            mode: ProxyMode::Auto,
            splice: false,
            cgroup_path: None,
            pgbouncer: None,
        }
    );
}

#[test]
fn bad_proxy_values_name_their_key() {
    let cases = [
        (
            "proxy:\n  name: p1\n  listen_address: everywhere\n",
            "config.yml:9: proxy.listen_address: expected an IP address such as 0.0.0.0 or 127.0.0.1, got \"everywhere\"",
        ),
        (
            "proxy:\n  name: p1\n  max_client_conn: 0\n",
            "config.yml:9: proxy.max_client_conn: expected a whole number >= 1, got 0",
        ),
        (
            "proxy:\n  name: p1\n  pause_timeout: soon\n",
            "config.yml:9: proxy.pause_timeout: expected a duration such as \"6s\" or a whole number of milliseconds, got \"soon\"",
        ),
        (
            "proxy:\n  name: p1\n  lease_refresh_interval: 7s\n",
            "config.yml:9: proxy.lease_refresh_interval: expected a duration shorter than proxy.leader_lease_duration (6s), got 7s",
        ),
        (
            "proxy:\n  name: p1\n  mode: kernel\n",
            "config.yml:9: proxy.mode: expected one of auto, ebpf, userspace, got \"kernel\"",
        ),
        (
            "proxy:\n  listen_port: 6432\n",
            "config.yml:7: proxy.name: missing required value",
        ),
        (
            "proxy:\n  name: p1\n  type: haproxy\n",
            "config.yml:9: proxy.type: expected one of builtin, pgbouncer, got \"haproxy\"",
        ),
        (
            "proxy:\n  name: p1\n  pool_mode: transaction\n",
            "config.yml:9: proxy.pool_mode: only `type: pgbouncer` reads this key",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n  auth_user: lookup\n  mode: ebpf\n",
            "config.yml:11: proxy.mode: kernel steering would send clients past PgBouncer",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n  auth_user: x\n  auth_type: cert\n",
            "config.yml:11: proxy.auth_type: expected one of trust, password, md5, scram-sha-256, got \"cert\"",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n",
            "config.yml:9: proxy.auth_user: PgBouncer must know the passwords it checks",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n  auth_file: /u\n  client_tls_sslmode: require\n",
            "config.yml:11: proxy.client_tls_sslmode: PgBouncer needs a key and a certificate",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n  auth_file: /u\n  server_tls_sslmode: on\n",
            "config.yml:11: proxy.server_tls_sslmode: expected one of disable, allow, prefer",
        ),
        (
            "proxy:\n  name: p1\n  type: pgbouncer\n  auth_file: /u.txt\n  splice: true\n",
            "config.yml:11: proxy.splice: splices only the builtin proxy's sessions",
        ),
        (
            "http:\n  probes:\n    timeot: 1s\n",
            "config.yml:9: http.probes.timeot: unknown key",
        ),
    ];
    for (tail, want) in cases {
        let got = error(&format!("{BASE}{tail}"));
        assert!(
            got.starts_with(want),
            "for {tail:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn pgbouncer_type_reads_its_keys_with_defaults() {
    let text = format!("{BASE}proxy:\n  name: p1\n  type: pgbouncer\n  auth_user: lookup\n");
    let proxy = parse_str(&text, "config.yml").unwrap().proxy.unwrap();
    assert_eq!(
        proxy.pgbouncer,
        Some(PgBouncerConfig {
            bin_dir: None,
            user: DEFAULT_PGBOUNCER_USER.into(),
            pool_mode: PoolMode::Session,
            default_pool_size: DEFAULT_POOL_SIZE,
            auth_type: DEFAULT_AUTH_TYPE.into(),
            auth_user: Some("lookup".into()),
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_file: None,
            tls: PgBouncerTls::default(),
        })
    );
    let text = format!(
        "{BASE}proxy:\n  name: p1\n  type: pgbouncer\n  pgbouncer_bin_dir: /opt/pgb/bin\n  \
         pgbouncer_user: pgb\n  pool_mode: transaction\n  default_pool_size: 5\n  \
         auth_type: md5\n  auth_user: lookup\n  auth_query: SELECT 1\n  \
         auth_file: /etc/harp/userlist.txt\n  client_tls_sslmode: require\n  \
         client_tls_key_file: /k\n  client_tls_cert_file: /c\n  server_tls_sslmode: prefer\n"
    );
    let proxy = parse_str(&text, "config.yml").unwrap().proxy.unwrap();
    assert_eq!(
        proxy.pgbouncer,
        Some(PgBouncerConfig {
            bin_dir: Some("/opt/pgb/bin".into()),
            user: "pgb".into(),
            pool_mode: PoolMode::Transaction,
            default_pool_size: 5,
            auth_type: "md5".into(),
            auth_user: Some("lookup".into()),
            auth_query: "SELECT 1".into(),
            auth_file: Some("/etc/harp/userlist.txt".into()),
            tls: PgBouncerTls {
                client_sslmode: Some("require".into()),
                client_key_file: Some("/k".into()),
                client_cert_file: Some("/c".into()),
                client_ca_file: None,
                server_sslmode: Some("prefer".into()),
                server_ca_file: None,
            },
        })
    );
    let text = format!("{BASE}proxy:\n  name: p1\n  type: builtin\n");
    assert_eq!(
        parse_str(&text, "config.yml")
            .unwrap()
            .proxy
            .unwrap()
            .pgbouncer,
        None
    );
}

#[test]
fn streaming_mode_reads_and_names_what_it_needs() {
    let text = "cluster:\n  name: c1\n  replication: streaming\n  synchronous_mode: strict\n\
                dcs:\n  driver: etcd\n  endpoints: [e1:2379]\nlocation: dca\n\
                manager:\n  name: n1\n  dsn: host=db\n  db_data_dir: /pg\n  db_bin_dir: /bin\n";
    let config = parse_str(text, "config.yml").unwrap();
    assert!(config.is_streaming());
    assert_eq!(config.cluster.synchronous_mode, SynchronousMode::Strict);
    // One primary for the whole cluster: every location competes for and routes to one key.
    assert_eq!(config.scope(), "c1");
    let multi = parse_str(BASE, "config.yml").unwrap();
    assert_eq!(multi.scope(), "dca");
    assert_eq!(multi.cluster.replication, Replication::MultiWriter);

    let missing = error(
        "cluster:\n  name: c1\n  replication: streaming\ndcs:\n  driver: etcd\n  \
         endpoints: [e1:2379]\nlocation: dca\nmanager:\n  name: n1\n  dsn: host=db\n",
    );
    assert!(missing.contains("manager.db_data_dir"), "{missing}");
    assert!(missing.contains("manager.db_bin_dir"), "{missing}");
    assert!(
        missing.contains("cluster.replication: streaming"),
        "{missing}"
    );

    let bad = error(&BASE.replace("name: c1\n", "name: c1\n  replication: logical\n"));
    assert!(
        bad.contains("cluster.replication") && bad.contains("multi_writer, streaming"),
        "{bad}"
    );
    let sync = error(&BASE.replace("name: c1\n", "name: c1\n  synchronous_mode: on\n"));
    assert!(
        sync.contains("cluster.synchronous_mode") && sync.contains("only with"),
        "{sync}"
    );
}

#[test]
fn https_keys_make_a_tls_server_config() {
    let text = format!(
        "{BASE}http:\n  secure: true\n  cert_file: /etc/harp/c.pem\n  key_file: /etc/harp/k.pem\n  \
         client_ca_file: /etc/harp/ca.pem\n"
    );
    let config = parse_str(&text, "config.yml").unwrap();
    assert_eq!(
        config.http.tls,
        Some(HttpTls {
            cert_file: "/etc/harp/c.pem".into(),
            key_file: "/etc/harp/k.pem".into(),
            client_ca_file: Some("/etc/harp/ca.pem".into()),
        })
    );
}
