//! Which cluster and which etcd a command talks to: the global flags, then the config file.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harp_core::config::{self, Config, DEFAULT_CONFIG_PATH, DcsConfig, DcsDriver};

use crate::cli::Globals;
use crate::error::CtlError;
use crate::output::Format;

/// harpctl's bound on each etcd request when nothing else sets one: an operator waits a
/// little longer than a daemon would before calling etcd unreachable.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The global flags plus the config file, read at most once and only when needed.
pub struct Context {
    globals: Globals,
    config: OnceCell<Option<Config>>,
}

impl Context {
    /// Reads an explicit `-f` at once (a bad file is an error even if its values are not
    /// needed); the default file is read only when a value is missing from the flags.
    pub fn new(globals: Globals) -> Result<Self, CtlError> {
        let ctx = Self {
            globals,
            config: OnceCell::new(),
        };
        if let Some(path) = ctx.globals.config_file.clone() {
            let cfg = config::load_file(&path)?;
            let _ = ctx.config.set(Some(cfg));
        }
        Ok(ctx)
    }

    pub fn format(&self) -> Format {
        self.globals.output
    }

    /// The config file: `-f`, else the default path if it exists, else none.
    pub fn config(&self) -> Result<Option<&Config>, CtlError> {
        if let Some(c) = self.config.get() {
            return Ok(c.as_ref());
        }
        let default = Path::new(DEFAULT_CONFIG_PATH);
        let loaded = if default.is_file() {
            Some(config::load_file(default)?)
        } else {
            None
        };
        Ok(self.config.get_or_init(|| loaded).as_ref())
    }

    fn config_path(&self) -> PathBuf {
        self.globals
            .config_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    pub fn cluster(&self) -> Result<String, CtlError> {
        if let Some(c) = &self.globals.cluster {
            check_name("cluster", c)?;
            return Ok(c.clone());
        }
        match self.config()? {
            Some(cfg) => Ok(cfg.cluster.name.clone()),
            None => Err(CtlError::Usage(format!(
                "no cluster given: pass -c/--cluster NAME (or -f/--config-file with \
                 cluster.name; {DEFAULT_CONFIG_PATH} does not exist)"
            ))),
        }
    }

    /// Endpoints from `--dcs`, else the config file's `dcs`; the request bound from
    /// `--request-timeout`, else the config file's when its endpoints are used, else 2 s. TLS
    /// and the etcd user always come from the config file.
    pub fn dcs(&self) -> Result<DcsConfig, CtlError> {
        let flag_timeout = self.globals.request_timeout;
        if let Some(eps) = &self.globals.dcs {
            let endpoints: Vec<String> = eps
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
            if endpoints.is_empty() {
                return Err(CtlError::Usage(
                    "--dcs needs at least one endpoint, e.g. --dcs 10.0.0.1:2379,10.0.0.2:2379"
                        .into(),
                ));
            }
            // TLS and the etcd user still come from the config file, if one is read.
            let (tls, auth) = match self.config()? {
                Some(cfg) => (cfg.dcs.tls.clone(), cfg.dcs.auth.clone()),
                None => (None, None),
            };
            return Ok(DcsConfig {
                driver: DcsDriver::Etcd,
                endpoints,
                request_timeout: flag_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
                tls,
                auth,
            });
        }
        match self.config()? {
            Some(cfg) => {
                let mut dcs = cfg.dcs.clone();
                if let Some(t) = flag_timeout {
                    dcs.request_timeout = t;
                }
                Ok(dcs)
            }
            None => Err(CtlError::Usage(format!(
                "no etcd endpoints given: pass --dcs HOST:PORT[,HOST:PORT...] (or \
                 -f/--config-file with dcs.endpoints; {DEFAULT_CONFIG_PATH} does not exist)"
            ))),
        }
    }

    /// `manager.name` of the config file, for `fence`/`unfence` without a node.
    pub fn local_node(&self) -> Result<String, CtlError> {
        let path = self.config_path();
        match self.config()? {
            Some(Config {
                manager: Some(m), ..
            }) => Ok(m.name.clone()),
            Some(_) => Err(CtlError::Usage(format!(
                "{} has no manager section: name the node",
                path.display()
            ))),
            None => Err(CtlError::Usage(format!(
                "no node given and no config file ({} does not exist): name the node or pass \
                 -f/--config-file of its manager",
                path.display()
            ))),
        }
    }

    /// `location` of the config file, if one is read.
    pub fn local_location(&self) -> Result<Option<String>, CtlError> {
        Ok(self.config()?.map(|c| c.location.clone()))
    }
}

/// Names become etcd key segments: HARP's identifier rule keeps them to one segment.
pub fn check_name(what: &str, name: &str) -> Result<(), CtlError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CtlError::Usage(format!(
            "bad {what} name {name:?}: use letters, digits, `_`, `.` and `-` only"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_key_segments() {
        assert!(check_name("node", "n1.dc-a_2").is_ok());
        for bad in ["", "a/b", "..x/", "a b", "ü"] {
            let err = check_name("node", bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
