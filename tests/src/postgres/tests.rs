use super::*;

#[test]
fn extra_settings_replace_the_harness_ones_by_key() {
    assert_eq!(
        setting_args(&[]),
        [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100"
        ]
    );
    let extra = [
        ("max_connections".to_string(), "1200".to_string()),
        ("work_mem".to_string(), "8MB".to_string()),
    ];
    assert_eq!(
        setting_args(&extra),
        [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=1200",
            "-c",
            "work_mem=8MB"
        ]
    );
}
