//! libpq connection strings: the manager's own DSN (key=value or URI form) read into pairs, and
//! the conninfo a standby streams with, written back in key=value form. Never shown with its
//! password: `Display` and `Debug` redact it.

use std::fmt;

/// Keys of our own DSN that say *where* and *as what* to connect, which a conninfo to another
/// server sets itself (or must not inherit: `options` may carry session settings for our own
/// node, `target_session_attrs` would refuse a standby's walreceiver).
const PER_TARGET_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "application_name",
    "fallback_application_name",
    "replication",
    "target_session_attrs",
    "load_balance_hosts",
    "options",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsnError {
    #[error("unterminated quoted value in the connection string")]
    Unterminated,
    #[error("`{0}` has no `=value` in the connection string")]
    MissingValue(String),
    #[error("invalid percent-encoding in the connection URI")]
    Percent,
}

/// A libpq connection string as ordered `key = value` pairs.
#[derive(Clone, PartialEq, Eq)]
pub struct Conninfo {
    pairs: Vec<(String, String)>,
}

impl Conninfo {
    /// Parses a DSN in key=value form (`host=/run/pg user='a b'`) or URI form
    /// (`postgresql://user:pw@host:5432/db?sslmode=require`).
    pub fn parse(dsn: &str) -> Result<Conninfo, DsnError> {
        let dsn = dsn.trim();
        let pairs = match ["postgresql://", "postgres://"]
            .iter()
            .find_map(|p| dsn.strip_prefix(p))
        {
            Some(rest) => parse_uri(rest)?,
            None => parse_keywords(dsn)?,
        };
        Ok(Conninfo { pairs })
    }

    /// The last value of `key` (libpq: a later key overrides an earlier one).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every `(key, value)`, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets `key` (replacing every earlier value).
    pub fn set(&mut self, key: &str, value: &str) {
        self.remove(key);
        self.pairs.push((key.to_owned(), value.to_owned()));
    }

    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// This conninfo's credentials and TLS settings pointed at another server: `host`, `port`
    /// and `application_name` set, the per-target keys dropped, and `passfile` taken from
    /// `PGPASSFILE` when the DSN names none (the process that uses it may not share our
    /// environment).
    pub fn for_server(&self, host: &str, port: u16, application_name: &str) -> Conninfo {
        let mut c = self.clone();
        c.pairs
            .retain(|(k, _)| !PER_TARGET_KEYS.contains(&k.as_str()));
        if c.get("passfile").is_none()
            && let Some(file) = std::env::var_os("PGPASSFILE")
        {
            c.set("passfile", &file.to_string_lossy());
        }
        c.set("host", host);
        c.set("port", &port.to_string());
        c.set("application_name", application_name);
        c
    }

    /// The full string, password included: only for files only the data dir's owner reads
    /// (`postgresql.auto.conf`), never for a command line or a log.
    pub fn to_libpq(&self) -> String {
        self.render(false)
    }

    /// The string without its password, and the password (pass it as `PGPASSWORD`: a command
    /// line is visible to every local user).
    pub fn split_password(&self) -> (String, Option<String>) {
        let mut c = self.clone();
        let pw = c.get("password").map(str::to_owned);
        c.remove("password");
        (c.to_libpq(), pw)
    }

    fn render(&self, redact: bool) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| match (redact, k.as_str()) {
                (true, "password") => format!("{k}=********"),
                _ => format!("{k}={}", quote(v)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conninfo({self})")
    }
}

/// A value for key=value form: bare if it is safe bare, else in single quotes with `\` and `'`
/// escaped by a backslash (libpq's rules).
fn quote(v: &str) -> String {
    let bare = !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if bare {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `key = value key2 = 'quoted \' value'` (spaces around `=` allowed, as libpq allows).
fn parse_keywords(s: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if key.is_empty() {
            return Ok(pairs);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(DsnError::MissingValue(key));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(DsnError::Unterminated),
                    Some('\'') => break,
                    Some('\\') => value.push(it.next().ok_or(DsnError::Unterminated)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.push(it.next().ok_or(DsnError::Unterminated)?),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The part of a URI after `postgresql://`: `[user[:password]@][hosts][/dbname][?k=v&...]`,
/// hosts `h1:p1,[::1]:p2`; every part percent-decoded.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, DsnError> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_owned(), decode(user)?));
            }
            if let Some(p) = pw {
                pairs.push(("password".to_owned(), decode(p)?));
            }
            hosts
        }
        None => authority,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for spec in hostspec.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = match spec.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or(DsnError::Unterminated)?;
                (h, after.strip_prefix(':').unwrap_or(""))
            }
            None => spec.split_once(':').unwrap_or((spec, "")),
        };
        hosts.push(decode(host)?);
        ports.push(decode(port)?);
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        pairs.push(("host".to_owned(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        pairs.push(("port".to_owned(), ports.join(",")));
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_owned(), decode(dbname)?));
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| DsnError::MissingValue(kv.to_owned()))?;
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(pairs)
}

fn decode(s: &str) -> Result<String, DsnError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(DsnError::Percent)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DsnError::Percent)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::Percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(c: &Conninfo) -> Vec<(&str, &str)> {
        c.pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn keyword_form_with_quotes_escapes_and_spaces_around_equals() {
        let c = Conninfo::parse(
            r"host=/run/postgresql port = 5433 user='a b' password='it\'s \\ x' dbname=app",
        )
        .unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("host", "/run/postgresql"),
                ("port", "5433"),
                ("user", "a b"),
                ("password", r"it's \ x"),
                ("dbname", "app")
            ]
        );
        assert_eq!(
            Conninfo::parse("host='x").unwrap_err(),
            DsnError::Unterminated
        );
        assert_eq!(
            Conninfo::parse("host").unwrap_err(),
            DsnError::MissingValue("host".into())
        );
    }

    #[test]
    fn uri_form_with_percent_encoding_ipv6_and_parameters() {
        let c = Conninfo::parse(
            "postgresql://rep%20user:p%40ss@[::1]:5433,db2:5434/my%2Fdb?sslmode=require&passfile=/x",
        )
        .unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("user", "rep user"),
                ("password", "p@ss"),
                ("host", "::1,db2"),
                ("port", "5433,5434"),
                ("dbname", "my/db"),
                ("sslmode", "require"),
                ("passfile", "/x")
            ]
        );
        let bare = Conninfo::parse("postgres://localhost").unwrap();
        assert_eq!(pairs(&bare), [("host", "localhost")]);
    }

    #[test]
    fn a_conninfo_for_the_primary_keeps_credentials_and_tls_and_names_the_node() {
        let own = Conninfo::parse(
            "host=/tmp port=5432 user=rep password='s3cr et' dbname=app sslmode=require \
             options='-c x=y' target_session_attrs=read-write application_name=mgr",
        )
        .unwrap();
        let c = own.for_server("10.0.0.2", 5433, "node b");
        assert_eq!(c.get("host"), Some("10.0.0.2"));
        assert_eq!(c.get("port"), Some("5433"));
        assert_eq!(c.get("application_name"), Some("node b"));
        assert_eq!(c.get("dbname"), None);
        assert_eq!(c.get("options"), None);
        assert_eq!(c.get("target_session_attrs"), None);
        let full = c.to_libpq();
        assert!(full.contains("password='s3cr et'"), "{full}");
        assert!(full.contains("application_name='node b'"), "{full}");
        // What reaches logs and errors has no password.
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("password=********"), "{shown}");
        let (no_pw, pw) = c.split_password();
        assert!(
            !no_pw.contains("s3cr") && !no_pw.contains("password"),
            "{no_pw}"
        );
        assert_eq!(pw.as_deref(), Some("s3cr et"));
        // What we render parses back to the same pairs.
        assert_eq!(Conninfo::parse(&full).unwrap(), c);
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a'b\\c"), r"'a\'b\\c'");
        assert_eq!(quote("a=b"), "'a=b'");
    }
}
