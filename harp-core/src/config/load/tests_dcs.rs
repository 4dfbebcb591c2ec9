//! The `dcs` section's TLS and authentication keys: what they read to, and the exact error
//! for each mistake.

use super::*;

/// A directory with a CA, a client certificate and key, and password files (their contents
/// do not matter to the loader: only that they can be read).
struct Files(PathBuf);

impl Files {
    fn new(test: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("harp-dcs-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("ca.pem", "ca"),
            ("client.pem", "cert"),
            ("client.key", "key"),
            ("pass", "s3cret\n"),
            ("empty", "\n"),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Files(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// A config whose `dcs` section is `dcs` (lines 3 on), with `{dir}` standing for this
    /// directory.
    fn config(&self, dcs: &str) -> String {
        let dcs = dcs.replace("{dir}", &self.0.display().to_string());
        format!("cluster:\n  name: c1\ndcs:\n  driver: etcd\n{dcs}location: dca\n")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dcs(text: &str, env: Option<&str>) -> DcsConfig {
    match parse_with_env(text, "config.yml", env) {
        Ok(c) => c.dcs,
        Err(e) => panic!("refused {text:?}: {e}"),
    }
}

fn error(text: &str, env: Option<&str>) -> String {
    match parse_with_env(text, "config.yml", env) {
        Ok(c) => panic!("accepted {text:?} as {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_with_a_client_certificate_and_a_user_reads_every_key() {
    let f = Files::new("full");
    let text = f.config(
        "  endpoints: [10.0.0.1:2379, 10.0.0.2:2379]\n  ssl: on\n  ssl_ca_file: {dir}/ca.pem\n  \
         ssl_cert_file: {dir}/client.pem\n  ssl_key_file: {dir}/client.key\n  user: harp-n1\n  \
         password_file: {dir}/pass\n",
    );
    // The file wins over the environment.
    let got = dcs(&text, Some("from-env"));
    assert_eq!(
        got.tls,
        Some(DcsTls {
            ca_file: Some(f.path("ca.pem").into()),
            client: Some(ClientCert {
                cert_file: f.path("client.pem").into(),
                key_file: f.path("client.key").into(),
            }),
        })
    );
    let auth = got.auth.expect("auth");
    assert_eq!(auth.user, "harp-n1");
    assert_eq!(
        auth.password.expose(),
        "s3cret",
        "the newline is not part of it"
    );
    assert_eq!(auth.password_from, f.path("pass"));
    let shown = format!("{:?}", parse_with_env(&text, "config.yml", None).unwrap());
    assert!(
        !shown.contains("s3cret"),
        "Debug shows the password: {shown}"
    );
}

#[test]
fn ssl_switch_and_https_endpoints() {
    let f = Files::new("switch");
    let plain = dcs(&f.config("  endpoints: [e1:2379]\n"), None);
    assert_eq!((plain.tls, plain.auth), (None, None));
    for on in ["on", "true"] {
        let text = f.config(&format!("  endpoints: [e1:2379]\n  ssl: {on}\n"));
        assert_eq!(dcs(&text, None).tls, Some(DcsTls::default()), "ssl: {on}");
    }
    for off in ["off", "false"] {
        let text = f.config(&format!("  endpoints: [e1:2379]\n  ssl: {off}\n"));
        assert_eq!(dcs(&text, None).tls, None, "ssl: {off}");
    }
    let https = f.config("  endpoints: [\"https://e1:2379\", e2:2379]\n");
    assert_eq!(dcs(&https, None).tls, Some(DcsTls::default()));
}

#[test]
fn the_password_comes_from_the_environment_without_a_password_file() {
    let f = Files::new("env");
    let text = f.config("  endpoints: [e1:2379]\n  user: root\n");
    let auth = dcs(&text, Some("pw")).auth.unwrap();
    assert_eq!((auth.user.as_str(), auth.password.expose()), ("root", "pw"));
    assert_eq!(auth.password_from, "$HARP_DCS_PASSWORD");
    // Set in the environment but no user: nothing to authenticate as, ignored.
    assert_eq!(
        dcs(&f.config("  endpoints: [e1:2379]\n"), Some("pw")).auth,
        None
    );
}

#[test]
fn bad_dcs_security_settings_name_the_key_and_the_fix() {
    let f = Files::new("bad");
    let dir = f.0.display().to_string();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "a password in the file",
            "  endpoints: [e1:2379]\n  password: hunter2\n",
            "config.yml:6: dcs.password: a password is never written in config.yml: put it in \
             a file only HARP's user can read and name it in dcs.password_file, or set the \
             environment variable HARP_DCS_PASSWORD"
                .into(),
        ),
        (
            "http:// with ssl on",
            "  endpoints: [e1:2379, \"http://e2:2379\"]\n  ssl: on\n",
            "config.yml:5: dcs.endpoints[1]: http:// (plaintext) while dcs.ssl is on: use \
             https:// or host:port for every endpoint"
                .into(),
        ),
        (
            "http:// beside https://",
            "  endpoints: [\"https://e1:2379\", \"http://e2:2379\"]\n",
            "config.yml:5: dcs.endpoints[1]: http:// (plaintext) while other endpoints use \
             https://: use https:// or host:port for every endpoint"
                .into(),
        ),
        (
            "ssl off with https://",
            "  endpoints: [\"https://e1:2379\"]\n  ssl: off\n",
            "config.yml:6: dcs.ssl: is off, but dcs.endpoints use https://: set dcs.ssl: on, \
             or use host:port endpoints"
                .into(),
        ),
        (
            "not a switch",
            "  endpoints: [e1:2379]\n  ssl: maybe\n",
            "config.yml:6: dcs.ssl: expected on or off, got \"maybe\"".into(),
        ),
        (
            "a certificate without its key",
            "  endpoints: [e1:2379]\n  ssl: on\n  ssl_cert_file: {dir}/client.pem\n",
            "config.yml:7: dcs.ssl_cert_file: needs dcs.ssl_key_file too (the certificate's \
             private key, PEM)"
                .into(),
        ),
        (
            "a key without its certificate",
            "  endpoints: [e1:2379]\n  ssl: on\n  ssl_key_file: {dir}/client.key\n",
            "config.yml:7: dcs.ssl_key_file: needs dcs.ssl_cert_file too (the client \
             certificate, PEM)"
                .into(),
        ),
        (
            "a CA without TLS",
            "  endpoints: [e1:2379]\n  ssl_ca_file: {dir}/ca.pem\n",
            "config.yml:6: dcs.ssl_ca_file: applies only with TLS: set dcs.ssl: on (or use \
             https:// endpoints)"
                .into(),
        ),
        (
            "a missing file",
            "  endpoints: [e1:2379]\n  ssl: on\n  ssl_ca_file: {dir}/nope.pem\n",
            format!(
                "config.yml:7: dcs.ssl_ca_file: cannot read {dir}/nope.pem: No such file or \
                 directory (os error 2)"
            ),
        ),
        (
            "a directory",
            "  endpoints: [e1:2379]\n  ssl: on\n  ssl_ca_file: {dir}\n",
            format!("config.yml:7: dcs.ssl_ca_file: {dir} is not a regular file"),
        ),
        (
            "a user without a password",
            "  endpoints: [e1:2379]\n  user: root\n",
            "config.yml:6: dcs.user: needs a password: name a file only HARP's user can read \
             in dcs.password_file, or set the environment variable HARP_DCS_PASSWORD"
                .into(),
        ),
        (
            "a password file without a user",
            "  endpoints: [e1:2379]\n  password_file: {dir}/pass\n",
            "config.yml:6: dcs.password_file: needs dcs.user (the etcd user this password is \
             for)"
                .into(),
        ),
        (
            "an empty password file",
            "  endpoints: [e1:2379]\n  user: root\n  password_file: {dir}/empty\n",
            format!(
                "config.yml:7: dcs.password_file: {dir}/empty is empty; write the etcd user's \
                 password in it"
            ),
        ),
    ];
    for (what, section, want) in cases {
        assert_eq!(error(&f.config(section), None), want, "{what}");
    }
}
