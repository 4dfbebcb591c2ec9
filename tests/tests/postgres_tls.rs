//! The manager's link to its Postgres as a DSN asks for it: `sslmode=verify-full` against a
//! Postgres serving TLS with a test CA's certificate, the password from a `passfile`, and the
//! client certificate as the login, and the clear errors of a wrong CA, a missing CA, a
//! world-readable password file and no TLS.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use harp_manager::pgconn::PgTarget;
use harp_tests::pg_template::chown_postgres;
use harp_tests::rt::block_on;
use harp_tests::streaming::{execute, query_text};
use harp_tests::{EtcdCluster, ManagerProc, ManagerSpec, PgInstance, TestPki, WorkDir};

/// The role the manager logs in as: TLS and a password required; everyone else (the harness)
/// as before.
const HBA: &str = "local all all trust\n\
                   hostssl all harp 127.0.0.1/32 scram-sha-256\n\
                   hostssl all harpcert 127.0.0.1/32 cert\n\
                   host all harpcert 127.0.0.1/32 reject\n\
                   host all harp 127.0.0.1/32 reject\n\
                   host all all 127.0.0.1/32 trust\n";

/// A Postgres serving TLS with the PKI's server certificate and [`HBA`], with the roles `harp`
/// (password) and `harpcert` (client certificate).
fn tls_postgres(dir: &WorkDir, pki: &TestPki) -> PgInstance {
    let files = dir.join("pg-tls-files");
    std::fs::create_dir_all(&files).unwrap();
    let server = pki.server();
    std::fs::copy(&server.cert, files.join("server.pem")).unwrap();
    std::fs::copy(&server.key, files.join("server.key")).unwrap();
    std::fs::copy(pki.ca(), files.join("ca.pem")).unwrap();
    std::fs::write(files.join("hba.conf"), HBA).unwrap();
    std::fs::set_permissions(files.join("server.key"), PermissionsExt::from_mode(0o600)).unwrap();
    chown_postgres(&files);
    let path = |f: &str| files.join(f).display().to_string();
    let pg = PgInstance::start_with(
        dir,
        "tls",
        &[
            ("ssl", "on"),
            ("ssl_cert_file", &path("server.pem")),
            ("ssl_key_file", &path("server.key")),
            ("ssl_ca_file", &path("ca.pem")),
            ("hba_file", &path("hba.conf")),
        ],
    );
    execute(
        &pg.dsn(),
        "CREATE ROLE harp LOGIN SUPERUSER PASSWORD 'harp-secret'",
    );
    execute(&pg.dsn(), "CREATE ROLE harpcert LOGIN SUPERUSER");
    pg
}

/// A password file for `harp` with mode `mode`.
fn passfile(dir: &Path, mode: u32) -> String {
    let path = dir.join(format!("pgpass-{mode:o}"));
    std::fs::write(&path, "127.0.0.1:*:*:harp:harp-secret\n").unwrap();
    std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn connect_error(dsn: &str) -> String {
    let target = match PgTarget::parse(dsn) {
        Ok(t) => t,
        Err(e) => return e.to_string(),
    };
    block_on(|| async move {
        match tokio::time::timeout(Duration::from_secs(5), target.connect()).await {
            Ok(Ok(_)) => "connected".to_owned(),
            Ok(Err(e)) => format!("{e}: {:?}", std::error::Error::source(&e)),
            Err(_) => "timed out".to_owned(),
        }
    })
}

#[test]
fn the_manager_reaches_postgres_over_verified_tls_with_its_password_from_a_passfile() {
    let dir = WorkDir::new();
    let pki = TestPki::create(&dir.join("pki"));
    let pg = tls_postgres(&dir, &pki);
    let etcd = EtcdCluster::start(1, &dir);
    let dsn = format!(
        "host=127.0.0.1 port={} user=harp dbname=postgres application_name=harp-tls \
         sslmode=verify-full sslrootcert={} passfile={}",
        pg.port(),
        pki.ca().display(),
        passfile(dir.path(), 0o600)
    );
    let spec = ManagerSpec::new("n1", "dca", 100, &dsn, "pgtls", etcd.endpoints());
    let mgr = ManagerProc::start(&dir, spec);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mgr.status().is_none_or(|s| s["role"] != "leader") {
        assert!(Instant::now() < deadline, "{}", mgr.log_tail(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its health connection is encrypted (hba would refuse it otherwise, and says so here).
    let ssl = query_text(
        &pg.dsn(),
        "SELECT bool_and(s.ssl)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'harp-tls'",
    );
    assert_eq!(ssl.as_deref(), Some("true"));

    // A client certificate is a login of its own (Postgres' `cert` method).
    let cert = pki.client("harpcert");
    let e = connect_error(&format!(
        "host=127.0.0.1 port={} user=harpcert dbname=postgres sslmode=verify-full \
         sslrootcert={} sslcert={} sslkey={}",
        pg.port(),
        pki.ca().display(),
        cert.cert.display(),
        cert.key.display()
    ));
    assert_eq!(e, "connected", "client certificate login");
    // `require` without a CA: encrypted but not authenticated, as libpq does.
    let e = connect_error(&format!(
        "host=127.0.0.1 port={} user=harp dbname=postgres sslmode=require passfile={}",
        pg.port(),
        passfile(dir.path(), 0o600)
    ));
    assert_eq!(e, "connected", "sslmode=require");

    // What each mistake says.
    let base = format!(
        "host=127.0.0.1 port={} user=harp dbname=postgres",
        pg.port()
    );
    let e = connect_error(&format!(
        "{base} sslmode=verify-full sslrootcert={} passfile={}",
        pki.other_ca().display(),
        passfile(dir.path(), 0o600)
    ));
    assert!(e.contains("UnknownIssuer"), "wrong CA: {e}");
    let e = connect_error(&format!("{base} sslmode=verify-full"));
    assert!(e.contains("needs sslrootcert"), "no CA: {e}");
    let e = connect_error(&format!(
        "{base} sslmode=verify-ca sslrootcert={} passfile={}",
        pki.ca().display(),
        passfile(dir.path(), 0o644)
    ));
    assert!(
        e.contains("password"),
        "world-readable passfile must be ignored: {e}"
    );
    let e = connect_error(&format!("{base} sslmode=disable password=harp-secret"));
    assert!(e.contains("no encryption"), "no TLS: {e}");
    let e = connect_error(&format!("{base} sslmode=verify-everything"));
    assert!(e.contains("sslmode=verify-everything: expected"), "{e}");
    let e = connect_error(&format!("{base} gssencmode=require"));
    assert!(e.contains("`gssencmode` is not supported"), "{e}");
}
