use super::*;

#[test]
fn leader_record_round_trips_and_rejects_unknown_versions() {
    let rec = LeaderRecord {
        version: RECORD_VERSION,
        node: "n1".into(),
        location: "dca".into(),
        address: "10.0.0.1".into(),
        port: 5432,
        handover_to: None,
        leaving: false,
        ..Default::default()
    };
    assert_eq!(LeaderRecord::decode(rec.encode().as_bytes()).unwrap(), rec);
    let handing = LeaderRecord {
        handover_to: Some("n2".into()),
        ..rec.clone()
    };
    assert_eq!(
        LeaderRecord::decode(handing.encode().as_bytes()).unwrap(),
        handing
    );
    let leaving = LeaderRecord {
        leaving: true,
        ..rec.clone()
    };
    assert_eq!(
        LeaderRecord::decode(leaving.encode().as_bytes()).unwrap(),
        leaving
    );
    // A promoting leader is not routable, and a reader of version 1 refuses it whole.
    let mut promoting = rec.clone();
    promoting.set_promoting(true);
    assert!(!promoting.routable() && rec.routable());
    assert!(promoting.encode().contains("\"min_reader_version\":2"));
    promoting.set_promoting(false);
    assert_eq!(promoting, rec);
    // Written by a HARP without the field: not leaving.
    assert!(!rec.encode().contains("leaving"));
    let zero = rec.encode().replace("\"version\":2", "\"version\":0");
    let err = LeaderRecord::decode(zero.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "leader record has version 0, which no HARP writes"
    );
    let unversioned = rec.encode().replace("\"version\":2,", "");
    assert!(LeaderRecord::decode(unversioned.as_bytes()).is_err());
    assert!(LeaderRecord::decode(b"nonsense").is_err());
}

#[test]
fn a_newer_record_with_the_fields_we_need_is_read_and_extras_ignored() {
    let newer = r#"{"version":2,"node":"n1","location":"dca","address":"10.0.0.1",
        "port":5432,"handover_to":"n2","weight":3,"tags":{"rack":"r1"}}"#;
    let rec = LeaderRecord::decode(newer.as_bytes()).unwrap();
    assert_eq!((rec.node.as_str(), rec.port), ("n1", 5432));
    assert_eq!(rec.handover_to.as_deref(), Some("n2"));
    // Still marked as its writer's: nothing reads it as ours.
    assert_eq!(rec.version, 2);
    // Newer, but without a field this build needs: unreadable.
    let missing = r#"{"version":2,"node":"n1","location":"dca","port":5432}"#;
    let err = LeaderRecord::decode(missing.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("address"), "{err}");
}

#[test]
fn a_record_for_newer_readers_only_is_rejected_whole() {
    let rec = r#"{"version":4,"min_reader_version":3,"name":"p1","location":"dca",
        "leader":"n1","token":5,"mode":"userspace","sessions":0,"held":0,"updated_ms":1}"#;
    let err = ProxyStatus::decode(rec.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "proxy status record needs a reader of version 3; this HARP reads version 2: \
         upgrade HARP"
    );
    // One this build can read says so: read.
    let ok = rec.replace("\"min_reader_version\":3", "\"min_reader_version\":2");
    assert_eq!(ProxyStatus::decode(ok.as_bytes()).unwrap().token, Some(5));
}

#[test]
fn directives_of_a_newer_harp_are_ignored_but_kept_on_rewrite() {
    use crate::directives::NodeOverrides;
    let newer = br#"{"version":2,"priority":-1,"future_knob":"on"}"#;
    let mut o = NodeOverrides::decode(newer).unwrap();
    assert_eq!(o.priority, Some(-1), "what we know still applies");
    o.set("maximum_lag=10").unwrap();
    let back = o.encode();
    assert!(back.contains("\"future_knob\":\"on\""), "{back}");
    assert_eq!(NodeOverrides::decode(back.as_bytes()).unwrap(), o);
}

#[test]
fn a_proxy_status_names_every_leadership_it_may_have_sessions_under() {
    // As an agent without the newer fields writes it: managed, nothing pooled.
    let old = r#"{"version":1,"name":"p1","location":"dca","leader":"n1","token":5,
        "mode":"userspace","sessions":2,"held":0,"updated_ms":1}"#;
    let s = ProxyStatus::decode(old.as_bytes()).unwrap();
    assert!(s.managed);
    assert_eq!(s.live_tokens().collect::<Vec<_>>(), vec![5]);
    let pooling = ProxyStatus {
        token: None,
        draining: Some(5),
        pooled: Some(4),
        ..s
    };
    let back = ProxyStatus::decode(pooling.encode().as_bytes()).unwrap();
    assert_eq!(back.live_tokens().collect::<Vec<_>>(), vec![5, 4]);
}

#[test]
fn a_version_1_proxy_status_reads_without_the_lease_it_trusts() {
    let old = r#"{"version":1,"name":"p1","location":"dca","leader":"n1","token":5,
        "mode":"ebpf","sessions":0,"held":0,"updated_ms":1}"#;
    let s = ProxyStatus::decode(old.as_bytes()).unwrap();
    assert_eq!(s.lease_ttl_ms, None);
    let newer = ProxyStatus {
        lease_ttl_ms: Some(10_000),
        ..s
    };
    let text = newer.encode();
    assert!(text.contains("\"lease_ttl_ms\":10000"), "{text}");
    assert_eq!(ProxyStatus::decode(text.as_bytes()).unwrap(), newer);
}
