//! `harp-lab-writer --client C --location L --path kernel|userspace --dsn DSN --out FILE`:
//! the lab's client process (see `harp_tests::lab::workload`). Stops at SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use harp_tests::lab::workload::{WriterSpec, run};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let need = |v: Option<String>, name: &str| {
        v.unwrap_or_else(|| {
            eprintln!(
                "harp-lab-writer: missing {name} (usage: --client C --location L --path P \
                 --dsn DSN --out FILE [--every-ms N] [--timeout-ms N])"
            );
            std::process::exit(2)
        })
    };
    let client = need(get("--client"), "--client");
    let location = need(get("--location"), "--location");
    let path = need(get("--path"), "--path");
    let dsn = need(get("--dsn"), "--dsn");
    let out = PathBuf::from(need(get("--out"), "--out"));
    let ms = |v: Option<String>, default: u64| v.and_then(|v| v.parse().ok()).unwrap_or(default);
    let every = Duration::from_millis(ms(get("--every-ms"), 20));
    let timeout = Duration::from_millis(ms(get("--timeout-ms"), 2000));
    let spec = WriterSpec {
        client,
        location,
        path,
        dsn,
        every,
        timeout,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = rt.block_on(async {
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        run(&spec, &out, stop).await
    });
    if let Err(e) = res {
        eprintln!("harp-lab-writer: {}: {e}", out.display());
        std::process::exit(1);
    }
}
