//! Every seed of the fuzz corpus and every input a fuzzer once crashed on (`fuzz/regressions/
//! <target>/`, where `cargo xtask fuzz` copies a crash) through the fuzz targets' bodies, on
//! the stable toolchain: a fixed crash stays fixed.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut seen = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".keep") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                panic!("{target} panics on {}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no seeds for {target} under {}", root.display());
}

#[test]
fn the_wire_reader_survives_every_seed_and_past_crash() {
    replay("wire", harp_core::fuzzing::wire);
}

#[test]
fn the_config_loader_survives_every_seed_and_past_crash() {
    replay("config", harp_core::fuzzing::config);
}

#[test]
fn the_record_decoders_survive_every_seed_and_past_crash() {
    replay("records", harp_core::fuzzing::records);
}
