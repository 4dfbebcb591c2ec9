//! Recovery times, the one-clock sanity check, and the report text.

use super::*;

#[test]
fn convergence_is_the_slowest_clients_first_ack_after_the_mark() {
    let mut h = failover();
    h.converge_from.push(("kill pg1".into(), T0 + 1000.0));
    ok(&mut h, "c1", 1, "pg1", 990.0, true); // sent before the mark: not counted
    ok(&mut h, "c1", 2, "pg2", 1249.0, true); // ack at 1250
    ok(&mut h, "c2", 1, "pg2", 1399.0, true); // ack at 1400
    ok(&mut h, "c2", 2, "pg2", 1600.0, true);
    let v = check(&h);
    assert_eq!(v.max_converge_ms, Some(400.0));
    assert_eq!(v.convergence[0].slowest.as_deref(), Some("c2"));
    assert!(v.ok(), "{:#?}", v.violations);

    unanswered(
        &mut h,
        "c3",
        1,
        1100.0,
        Outcome::Failed {
            error: "pause timeout".into(),
        },
    );
    let v = check(&h);
    // c3 is counted at the mark and at the end of pg1's tenure.
    assert_eq!(v.max_converge_ms, None);
    assert!(v.unconverged >= 1);
    assert_eq!(v.convergence[0].unconverged, ["c3"]);
    assert!(
        v.violations
            .iter()
            .any(|x| matches!(x, Violation::Unconverged { client, .. } if client == "c3"))
    );
}

#[test]
fn a_client_in_an_outage_is_measured_from_its_end_not_from_moments_inside_it() {
    let mut h = failover();
    h.converge_from.push(("kill pg1".into(), T0 + 1000.0));
    h.outages.push(crate::lab::history::Outage {
        label: "agent of c2 dead".into(),
        clients: vec!["c2".into()],
        start_ms: T0 + 900.0,
        end_ms: Some(T0 + 4000.0),
    });
    ok(&mut h, "c1", 1, "pg2", 1199.0, true); // 200 ms after the mark
    unanswered(
        &mut h,
        "c2",
        1,
        1100.0,
        Outcome::Failed {
            error: "connection refused".into(),
        },
    );
    ok(&mut h, "c2", 2, "pg2", 4299.0, true); // 300 ms after the outage's end
    let v = check(&h);
    assert!(v.ok(), "{:#?}", v.violations);
    let by_label = |l: &str| v.convergence.iter().find(|c| c.label == l).unwrap();
    assert_eq!(by_label("kill pg1").max_ms, Some(200.0));
    assert_eq!(by_label("kill pg1").slowest.as_deref(), Some("c1"));
    assert_eq!(by_label("agent of c2 dead ended").max_ms, Some(300.0));
    assert_eq!(v.max_converge_ms, Some(300.0));
    assert!(timeline(&h, &v).contains("OUTAGE   start \"agent of c2 dead\" (c2)"));

    // Without the outage, c2 is measured from the mark: 3.3 s.
    h.outages.clear();
    assert_eq!(check(&h).max_converge_ms, Some(3300.0));
}

#[test]
fn server_time_outside_send_to_ack_is_a_clock_anomaly() {
    let mut h = failover();
    ok(&mut h, "c1", 1, "pg1", 100.0, true);
    h.writes[0].ack_ms = Some(T0 + 90.0);
    let v = check(&h);
    assert_eq!(v.clock_anomalies, 1);
    assert!(!v.ok());
}

#[test]
fn timeline_shows_events_and_every_violation_with_its_writes() {
    let mut h = failover();
    steady(&mut h, "pg1", 0.0, 900.0, 1);
    ok(&mut h, "c1", 100, "pg1", 1080.0, true);
    ok(&mut h, "c2", 200, "pg2", 1100.0, true);
    ok(&mut h, "c1", 101, "pg1", 1120.0, false);
    let v = check(&h);
    let text = timeline(&h, &v);
    assert!(
        text.contains("test (seed 1, lease 6000 ms, 3.0 s): FAIL"),
        "{text}"
    );
    assert!(text.contains("LEADER   east -> pg2 (token 20)"), "{text}");
    assert!(text.contains("FAULT    start \"kill pg1\""), "{text}");
    assert!(text.contains("GAP      c2: no ack for"), "{text}");
    assert!(
        text.contains("SPLIT-BRAIN in east: pg1 (east, token 10)"),
        "{text}"
    );
    assert!(
        text.contains("c2#200 on pg2 token 20 at 1100.0 (acked, in table)"),
        "{text}"
    );
    assert!(text.contains("LOST: c1#101"), "{text}");
    assert!(text.contains("violations (2):"), "{text}");

    let clean = failover();
    let text = timeline(&clean, &check(&clean));
    assert!(text.contains(": OK") && !text.contains("!!"), "{text}");
}

#[test]
fn verdict_serializes_with_tagged_violations() {
    let mut h = failover();
    ok(&mut h, "c1", 1, "pg1", 100.0, false);
    let json = serde_json::to_string(&check(&h)).unwrap();
    assert!(
        json.contains(r#""kind":"lost""#) && json.contains(r#""lost_writes":1"#),
        "{json}"
    );
}

#[test]
fn the_end_of_a_tenure_is_a_convergence_moment_for_clients_still_writing() {
    let mut h = failover();
    ok(&mut h, "c1", 1, "pg1", 900.0, true);
    // pg1's lead ends at 1000; c1 keeps trying and first lands on pg2 at 1300.
    unanswered(
        &mut h,
        "c1",
        2,
        1050.0,
        Outcome::Failed {
            error: "held".into(),
        },
    );
    ok(&mut h, "c1", 3, "pg2", 1300.0, true);
    let v = check(&h);
    let lost = v
        .convergence
        .iter()
        .find(|c| c.label.starts_with("lead lost: pg1"))
        .expect("a convergence moment at the end of pg1's tenure");
    assert_eq!(lost.max_ms, Some(301.0), "{:#?}", v.convergence);
    assert_eq!(v.max_converge_ms, Some(301.0));
}
