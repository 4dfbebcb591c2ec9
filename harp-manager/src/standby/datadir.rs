//! Files of a stopped data directory: `pg_controldata`'s facts, `standby.signal` and
//! `primary_conninfo` in `postgresql.auto.conf`, the node's own config files kept across a
//! rewind or a rebuild, and moving the contents aside. Whatever is written belongs to the data
//! directory's owner, mode 0600, as Postgres writes its own files.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, chown};
use std::path::{Path, PathBuf};

use super::StandbyError;

/// The node's own configuration, which `pg_rewind` and `pg_basebackup` replace by the
/// source's copies; `postmaster.opts` is the command line [`crate::pgctl::PgCtl::start`] reuses.
pub const LOCAL_FILES: &[&str] = &[
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    "postmaster.opts",
];

/// What `pg_controldata` says about a stopped data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// "shut down", "shut down in recovery", "in production", "in archive recovery", …
    pub state: String,
    pub timeline: u32,
    pub checkpoint_lsn: u64,
    pub wal_log_hints: bool,
    pub checksums: bool,
}

impl ControlData {
    pub fn parse(text: &str) -> Option<ControlData> {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        Some(ControlData {
            state: field("Database cluster state")?,
            timeline: field("Latest checkpoint's TimeLineID")?.parse().ok()?,
            checkpoint_lsn: parse_lsn(&field("Latest checkpoint location")?)?,
            wal_log_hints: field("wal_log_hints setting")? == "on",
            checksums: field("Data page checksum version")? != "0",
        })
    }

    /// Whether pg_rewind can work on this directory at all.
    pub fn rewindable(&self) -> bool {
        self.wal_log_hints || self.checksums
    }
}

/// `16/B374D848` → its 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// One line of a timeline history file: the parent timeline and where the child forked off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    pub parent: u32,
    pub switchpoint: u64,
}

/// `<parent tli>\t<switchpoint>\t<reason>` lines; comments and blank lines skipped.
pub fn parse_history(text: &str) -> Vec<Fork> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let parent = f.next()?.parse().ok()?;
            let switchpoint = parse_lsn(f.next()?)?;
            Some(Fork {
                parent,
                switchpoint,
            })
        })
        .collect()
}

/// Whether a cleanly stopped node (checkpoint at `cd.checkpoint_lsn` on `cd.timeline`, its
/// last WAL record) can follow a primary on `source_tli` with that `history` without a rewind:
/// the same timeline, or a fork off the node's timeline after its last record.
pub fn follows_without_rewind(cd: &ControlData, source_tli: u32, history: &[Fork]) -> bool {
    if cd.state != "shut down" && cd.state != "shut down in recovery" {
        return false;
    }
    if cd.timeline == source_tli {
        return true;
    }
    history
        .iter()
        .find(|f| f.parent == cd.timeline)
        .is_some_and(|f| cd.checkpoint_lsn < f.switchpoint)
}

/// The `postgresql.auto.conf` text with `key` set to `value` (every other line kept), in the
/// file's own quoting: `'` and `\` doubled.
pub fn set_auto_conf(text: &str, key: &str, value: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| {
            let k = l.split('=').next().unwrap_or("").trim();
            !k.eq_ignore_ascii_case(key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let escaped = value.replace('\\', "\\\\").replace('\'', "''");
    out.push_str(&format!("{key} = '{escaped}'\n"));
    out
}

/// Writes `path` atomically (a temporary file renamed over it), owned by `owner`, mode 0600.
pub fn write_owned(path: &Path, bytes: &[u8], owner: (u32, u32)) -> Result<(), StandbyError> {
    let tmp = path.with_extension("harp-tmp");
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| StandbyError::Io {
            action,
            path,
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    chown(&tmp, Some(owner.0), Some(owner.1)).map_err(io("chown", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

/// Makes the stopped data directory start as a standby streaming with `conninfo`:
/// `standby.signal` and `primary_conninfo` (other settings of the file kept).
pub fn configure_standby(
    dir: &Path,
    conninfo: &str,
    owner: (u32, u32),
) -> Result<(), StandbyError> {
    let auto = dir.join("postgresql.auto.conf");
    let text = match std::fs::read_to_string(&auto) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(StandbyError::Io {
                action: "read",
                path: auto,
                source,
            });
        }
    };
    write_owned(
        &auto,
        set_auto_conf(&text, "primary_conninfo", conninfo).as_bytes(),
        owner,
    )?;
    write_owned(&dir.join("standby.signal"), b"", owner)
}

/// Reads the node's own config files (see [`LOCAL_FILES`]) that exist in `dir`.
pub fn read_local_files(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    LOCAL_FILES
        .iter()
        .filter_map(|name| Some((*name, std::fs::read(dir.join(name)).ok()?)))
        .collect()
}

/// Puts back files read by [`read_local_files`].
pub fn restore_local_files(
    dir: &Path,
    files: &[(&'static str, Vec<u8>)],
    owner: (u32, u32),
) -> Result<(), StandbyError> {
    for (name, bytes) in files {
        write_owned(&dir.join(name), bytes, owner)?;
    }
    Ok(())
}

/// Where a rebuild keeps the old contents: beside the data directory, so that Postgres never
/// sees them and they stay on the same file system (a rename, not a copy).
pub fn aside_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".harp-old");
    data_dir.with_file_name(name)
}

/// Moves every entry of `from` into `to` (created, mode 0700), or removes them if `to` is on
/// another file system. Returns whether they were kept.
pub fn move_contents(from: &Path, to: &Path) -> Result<bool, StandbyError> {
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| StandbyError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(to)
        .map_err(io("create", to))?;
    let mut kept = true;
    for entry in std::fs::read_dir(from).map_err(io("read", from))? {
        let entry = entry.map_err(io("read", from))?;
        let target = to.join(entry.file_name());
        match std::fs::rename(entry.path(), &target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                kept = false;
                remove_entry(&entry.path())?;
            }
            Err(source) => {
                return Err(StandbyError::Io {
                    action: "move aside",
                    path: entry.path(),
                    source,
                });
            }
        }
    }
    Ok(kept)
}

/// Removes every entry of `dir` (not `dir` itself: it may be a mount point).
pub fn clear_dir(dir: &Path) -> Result<(), StandbyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StandbyError::Io {
        action: "read",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        remove_entry(&entry.path())?;
    }
    Ok(())
}

fn remove_entry(path: &Path) -> Result<(), StandbyError> {
    let meta = std::fs::symlink_metadata(path);
    let r = match meta {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    };
    r.map_err(|source| StandbyError::Io {
        action: "remove",
        path: path.to_path_buf(),
        source,
    })
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLDATA: &str = "pg_control version number:            1300\n\
        Database cluster state:               shut down\n\
        Latest checkpoint location:           0/3000028\n\
        Latest checkpoint's REDO location:    0/3000028\n\
        Latest checkpoint's TimeLineID:       2\n\
        wal_log_hints setting:                off\n\
        Data page checksum version:           0\n";

    #[test]
    fn control_data_parses_the_fields_a_rejoin_needs() {
        let cd = ControlData::parse(CONTROLDATA).unwrap();
        assert_eq!(cd.state, "shut down");
        assert_eq!(cd.timeline, 2);
        assert_eq!(cd.checkpoint_lsn, 0x300_0028);
        assert!(!cd.rewindable());
        let hints =
            CONTROLDATA.replace("setting:                off", "setting:                on");
        assert!(ControlData::parse(&hints).unwrap().rewindable());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    }

    #[test]
    fn a_clean_node_follows_without_rewind_only_if_the_fork_is_after_its_last_record() {
        let cd = ControlData::parse(CONTROLDATA).unwrap();
        let history = parse_history(
            "1\t0/2000000\tno recovery target specified\n\
                                     2\t0/3000090\tno recovery target specified\n",
        );
        assert_eq!(history.len(), 2);
        // The new primary forked off timeline 2 after the old primary's shutdown checkpoint.
        assert!(follows_without_rewind(&cd, 3, &history));
        assert!(follows_without_rewind(&cd, 2, &[]));
        // Forked before the old primary's last record: diverged.
        let early = parse_history("2\t0/3000000\tx\n");
        assert!(!follows_without_rewind(&cd, 3, &early));
        // A crashed node's end of WAL is unknown.
        let crashed = ControlData {
            state: "in production".into(),
            ..cd
        };
        assert!(!follows_without_rewind(&crashed, 3, &history));
    }

    #[test]
    fn auto_conf_keeps_other_settings_and_escapes_the_value() {
        let text =
            "# Do not edit this file manually!\nwork_mem = '8MB'\nprimary_conninfo = 'old'\n";
        let out = set_auto_conf(text, "primary_conninfo", r"host=a password='x\'y'");
        assert_eq!(
            out,
            "# Do not edit this file manually!\nwork_mem = '8MB'\n\
             primary_conninfo = 'host=a password=''x\\\\''y'''\n"
        );
    }
}
