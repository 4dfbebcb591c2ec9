//! `harpctl version` and `harpctl completion <shell>`.

use clap::CommandFactory;
use clap_complete::Shell;
use serde::Serialize;

use crate::cli::{Cli, CompletionShell};
use crate::output::{Format, render_data};

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

pub fn version(format: Format) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match format {
        Format::Table => format!("harpctl {version}\n"),
        _ => render_data(&Version { version }, format),
    }
}

pub fn script(shell: CompletionShell) -> String {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "harpctl", &mut out);
    String::from_utf8(out).expect("completion scripts are UTF-8")
}
