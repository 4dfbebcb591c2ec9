//! `config.yml`: HARP's shape, parsed strictly (unknown keys, wrong types and missing values are
//! errors that name the file, line and key).

mod convert;
mod exposure;
mod load;
mod raw;
mod reader;
mod types;

pub use load::{ConfigError, ConfigIssue, load_file, parse_str};
pub use types::*;
