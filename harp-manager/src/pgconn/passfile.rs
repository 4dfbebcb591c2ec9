//! Password files (`~/.pgpass` format) as libpq reads them: `passfile` in the DSN, else
//! `PGPASSFILE`, else `~/.pgpass`; lines `host:port:database:user:password`, `*` matching
//! anything, `\:` and `\\` escaped; the first match wins; a file others may read is ignored.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;

use crate::standby::Conninfo;

/// The password for `config`'s first host, port, database and user, if a file has one.
pub(super) fn lookup(c: &Conninfo, config: &tokio_postgres::Config) -> Option<String> {
    let path = c
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let text = read_private(&path)?;
    // A unix socket counts as `localhost`, as in libpq.
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user()?;
    let db = config.get_dbname().unwrap_or(user);
    find(&text, [&host, &port, db, user])
}

fn read_private(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("cannot read the password file {}: {e}", path.display());
            None
        }
    }
}

fn find(text: &str, want: [&str; 4]) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(fields)
        .find(|f| f.len() == 5 && f[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w))
        .map(|mut f| f.remove(4))
}

/// Up to five fields; the last takes the rest of the line.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => out.last_mut().unwrap().extend(chars.next()),
            ':' if out.len() < 5 => out.push(String::new()),
            _ => out.last_mut().unwrap().push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db1:5432:*:alice:one\n\
                    *:*:app:bob:two\n\
                    10.0.0.1:*:*:bob:th\\:r\\\\ee:x\n\
                    *:*:*:bob:four\n";
        assert_eq!(
            find(text, ["db1", "5432", "x", "alice"]).as_deref(),
            Some("one")
        );
        assert_eq!(find(text, ["h", "1", "app", "bob"]).as_deref(), Some("two"));
        assert_eq!(
            find(text, ["10.0.0.1", "6432", "db", "bob"]).as_deref(),
            Some("th:r\\ee:x")
        );
        assert_eq!(find(text, ["h", "1", "db", "bob"]).as_deref(), Some("four"));
        assert_eq!(find(text, ["db1", "5433", "x", "alice"]), None);
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = tempfile_dir();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_private(&path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private(&path).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("harp-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
