//! The threshold checks and the state machine, value by value.

use super::*;
use crate::query::Summary;

fn cpu(for_: &str) -> Threshold {
    Threshold {
        id: 1,
        name: "cpu".into(),
        selector: "perfd_cpu_percent".into(),
        aggregation: Aggregation::Avg,
        window: "5m".into(),
        comparison: Comparison::Gt,
        warning: Some(80.0),
        critical: Some(95.0),
        clear: Some(70.0),
        for_: for_.into(),
        enabled: true,
        no_data: NoData::Keep,
    }
}

fn run(t: &Threshold, values: &[f64]) -> Vec<(Level, Level)> {
    let mut s = AlertState::default();
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| evaluate(t, &mut s, Some(*v), i as i64 * 10_000))
        .map(|e| (e.from, e.to))
        .collect()
}

#[test]
fn flapping_at_the_line_does_not_flap_the_alert() {
    // Hovers around 80 every other tick: with for=30s it never holds long enough to fire.
    let hover: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 81.0 } else { 79.0 }).collect();
    assert!(run(&cpu("30s"), &hover).is_empty());
    // Once firing, hovering between clear (70) and warning (80) does not resolve it.
    let mut values = vec![85.0; 5];
    values.extend((0..40).map(|i| if i % 2 == 0 { 81.0 } else { 75.0 }));
    values.push(60.0);
    assert_eq!(run(&cpu("30s"), &values), vec![(Level::Ok, Level::Warning), (Level::Warning, Level::Ok)]);
}

#[test]
fn escalates_after_for_and_resolves_immediately() {
    let t = cpu("20s");
    let values = [90.0, 90.0, 90.0, 99.0, 99.0, 99.0, 50.0];
    assert_eq!(
        run(&t, &values),
        vec![(Level::Ok, Level::Warning), (Level::Warning, Level::Critical), (Level::Critical, Level::Ok)]
    );
    assert_eq!(
        run(&cpu("0s"), &[99.0, 85.0]),
        vec![(Level::Ok, Level::Critical), (Level::Critical, Level::Warning)]
    );
}

#[test]
fn without_a_clear_level_an_alert_resolves_at_the_line() {
    // `> 80`: 80 breaches nothing; it stayed at warning when the clear level defaulted to 80.
    let t = Threshold { clear: None, ..cpu("0s") };
    assert_eq!(run(&t, &[85.0, 80.0]), vec![(Level::Ok, Level::Warning), (Level::Warning, Level::Ok)]);
    // Critical only, with a clear level: between the two it stays critical (it has no warning).
    let t = Threshold { warning: None, ..cpu("0s") };
    assert_eq!(
        run(&t, &[99.0, 80.0, 69.0]),
        vec![(Level::Ok, Level::Critical), (Level::Critical, Level::Ok)]
    );
}

#[test]
fn invalid_thresholds_are_refused() {
    assert!(cpu("1m").validate().is_ok());
    for t in [
        Threshold { warning: Some(99.0), ..cpu("1m") },
        Threshold { clear: Some(90.0), ..cpu("1m") },
        Threshold { warning: None, critical: None, ..cpu("1m") },
        Threshold { selector: "cpu{".into(), ..cpu("1m") },
        Threshold { window: "soon".into(), ..cpu("1m") },
        Threshold { for_: "x".into(), ..cpu("1m") },
        // 300 million years: its milliseconds overflowed i64 and the alert fired at once.
        Threshold { for_: "300000000y".into(), ..cpu("1m") },
        Threshold { for_: "3651d".into(), ..cpu("1m") },
        Threshold { name: "".into(), ..cpu("1m") },
        Threshold { comparison: Comparison::Lt, ..cpu("1m") },
        // A count or a sum always has a value: a no-data policy would never act.
        Threshold { aggregation: Aggregation::Count, no_data: NoData::Critical, ..cpu("1m") },
        Threshold { aggregation: Aggregation::Sum, no_data: NoData::Ok, ..cpu("1m") },
    ] {
        assert!(t.validate().is_err(), "{t:?}");
    }
    for d in defaults() {
        d.validate().unwrap();
    }
    let unknown: std::result::Result<Threshold, _> = serde_json::from_str(
        r#"{"name":"x","selector":"m","aggregation":"median","comparison":">","warning":1}"#,
    );
    assert!(unknown.is_err());
}

#[test]
fn aggregations() {
    let mut t = cpu("0s");
    let pts = [(0, 1.0), (1000, 3.0), (3000, 11.0)];
    for (a, want) in [
        (Aggregation::Avg, 5.0),
        (Aggregation::Min, 1.0),
        (Aggregation::Max, 11.0),
        (Aggregation::Last, 11.0),
        (Aggregation::Sum, 15.0),
        (Aggregation::Count, 3.0),
        (Aggregation::Rate, 10.0 / 3.0),
    ] {
        t.aggregation = a;
        assert_eq!(Summary::of(&pts).and_then(|s| t.aggregate(&s)), Some(want), "{a:?}");
    }
    t.aggregation = Aggregation::Rate;
    assert_eq!(Summary::of(&[(5, 1.0)]).and_then(|s| t.aggregate(&s)), None, "one point has no rate");
}

#[test]
fn no_point_is_a_count_and_a_sum_of_zero() {
    let mut t = cpu("0s");
    for (a, want) in [
        (Aggregation::Count, Some(0.0)),
        (Aggregation::Sum, Some(0.0)),
        (Aggregation::Avg, None),
        (Aggregation::Max, None),
        (Aggregation::Rate, None),
    ] {
        t.aggregation = a;
        assert_eq!(t.worst(std::iter::empty()), want, "{a:?}");
        assert_eq!(t.worst([3.0, 7.0].into_iter()), Some(7.0), "{a:?}");
    }
    assert!(Threshold { for_: "3650d".into(), ..cpu("1m") }.validate().is_ok());
}

#[test]
fn no_data_keeps_resolves_or_fires_as_the_policy_says() {
    // Ticks 10 s apart; `None` is a tick whose window held no data.
    let run = |t: &Threshold, values: &[Option<f64>]| {
        let mut s = AlertState::default();
        let events: Vec<_> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| evaluate(t, &mut s, *v, i as i64 * 10_000))
            .map(|e| (e.from, e.to, e.value, e.reason))
            .collect();
        (events, s.value)
    };
    let no_data = Some("no data".to_string());
    let firing_then_silent = [Some(99.0), None, None];
    // Keep: the alert stays critical and still shows the last value.
    let keep = cpu("0s");
    assert_eq!(
        run(&keep, &firing_then_silent),
        (vec![(Level::Ok, Level::Critical, Some(99.0), None)], Some(99.0))
    );
    // Ok: resolved at the first tick without data, and the event says why.
    let ok = Threshold { no_data: NoData::Ok, ..cpu("0s") };
    assert_eq!(
        run(&ok, &firing_then_silent),
        (
            vec![
                (Level::Ok, Level::Critical, Some(99.0), None),
                (Level::Critical, Level::Ok, None, no_data.clone())
            ],
            None
        )
    );
    // Warning: a downgrade from critical is immediate; from ok it waits for `for` (20 s).
    let warn = Threshold { no_data: NoData::Warning, ..cpu("20s") };
    let (events, _) = run(&warn, &[None, None, None, Some(50.0)]);
    assert_eq!(
        events,
        vec![
            (Level::Ok, Level::Warning, None, no_data.clone()),
            (Level::Warning, Level::Ok, Some(50.0), None)
        ]
    );
    let (events, _) = run(&warn, &[Some(99.0), Some(99.0), Some(99.0), None]);
    assert_eq!(events.last(), Some(&(Level::Critical, Level::Warning, None, no_data.clone())));
    // Critical, with data coming back between the clear and the first level: hysteresis
    // holds the alert at warning, as it does for any firing alert.
    let crit = Threshold { no_data: NoData::Critical, ..cpu("0s") };
    let (events, value) = run(&crit, &[None, Some(75.0), Some(60.0)]);
    assert_eq!(
        events,
        vec![
            (Level::Ok, Level::Critical, None, no_data),
            (Level::Critical, Level::Warning, Some(75.0), None),
            (Level::Warning, Level::Ok, Some(60.0), None)
        ]
    );
    assert_eq!(value, Some(60.0));
}

#[test]
fn a_threshold_stored_before_no_data_existed_keeps() {
    let mut old = serde_json::to_value(cpu("1m")).unwrap();
    old.as_object_mut().unwrap().remove("no_data");
    let t: Threshold = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
    assert_eq!(t.no_data, NoData::Keep);
    let bad: std::result::Result<Threshold, _> = serde_json::from_value(serde_json::json!({
        "name": "x", "selector": "m", "comparison": ">", "warning": 1, "no_data": "maybe"
    }));
    assert!(bad.is_err());
    // An event stored with a plain number still reads.
    #[derive(Serialize)]
    struct OldEvent {
        threshold_id: u64,
        name: String,
        from: Level,
        to: Level,
        value: f64,
        at_ms: i64,
    }
    let old = OldEvent {
        threshold_id: 1,
        name: "x".into(),
        from: Level::Ok,
        to: Level::Warning,
        value: 3.5,
        at_ms: 9,
    };
    let e: AlertEvent = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
    assert_eq!((e.value, e.reason), (Some(3.5), None));
}
