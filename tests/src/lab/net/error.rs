//! The lab's error type and the one way it runs system tools (`ip`, `nft`, `tc`).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What went wrong setting up or driving the lab; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, nftables, cgroups): run the test as root")]
    NeedsRoot,
    #[error("`{tool}` is not installed: install the Debian package `{package}` (./scripts/setup)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "bad lab or host name {0:?}: use 1 to 12 characters of [a-z0-9], each host once, \
         not `sw` (the switch)"
    )]
    BadName(String),
    #[error("the lab has {0} hosts; at most 200 fit in 198.18.0.10-209")]
    TooManyHosts(usize),
    #[error("no host {0:?} in this lab")]
    UnknownHost(String),
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{what} did not happen within {secs} s: {detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("provisioning script {script} failed: {detail}")]
    Provision { script: PathBuf, detail: String },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The Debian package of each tool the lab runs.
fn package_of(tool: &str) -> Option<(&'static str, &'static str)> {
    match tool {
        "ip" => Some(("ip", "iproute2")),
        "tc" => Some(("tc", "iproute2")),
        "nft" => Some(("nft", "nftables")),
        _ => None,
    }
}

/// Runs `cmd` to completion; stdout on success, else an error with its stderr.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String, LabError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| {
        let program = cmd.get_program().to_string_lossy();
        match package_of(&program) {
            Some((tool, package)) if e.kind() == std::io::ErrorKind::NotFound => {
                LabError::MissingTool { tool, package }
            }
            _ => LabError::io(format!("run {shown}"), e),
        }
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .map_err(|e| LabError::io(format!("write stdin of {shown}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("wait for {shown}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip <args>` (in the root namespace only for `netns` and `-n <ns>` commands).
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd, None)
}

/// Lab and host names: short, lowercase, no `-` (so `hl-<lab>-` prefixes never overlap).
pub(crate) fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LabError::BadName(name.to_string()))
    }
}

pub(crate) fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NeedsRoot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_without_dashes() {
        assert!(check_name("e1").is_ok());
        assert!(check_name("lab42").is_ok());
        for bad in ["", "a-b", "A", "abcdefghijklm", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let err = run(Command::new("nft-does-not-exist"), None).unwrap_err();
        assert!(matches!(err, LabError::Io { .. }), "{err}");
        assert!(
            LabError::MissingTool {
                tool: "nft",
                package: "nftables"
            }
            .to_string()
            .contains("nftables")
        );
    }
}
