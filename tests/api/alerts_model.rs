//! Alerts against a model, through the real server: random sequences of points written to two
//! series, sampler ticks, threshold updates, disabling, enabling and restarts must fire, change
//! and end the threshold's alert when a model of the documented rules says (levels, the worst
//! series, the clear level's hysteresis, the no-data policy; `for` is 0), and leave the history
//! the model expects.

use crate::helpers::{TestServer, property};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;
use std::cell::RefCell;

const AGGREGATIONS: &[&str] = &["avg", "min", "max", "last", "sum", "count"];
const COMPARISONS: &[&str] = &[">", ">=", "<", "<="];
const NO_DATA: &[&str] = &["keep", "ok", "warning", "critical"];

/// A threshold's levels, as the model reads them.
#[derive(Debug, Clone, Copy)]
struct Levels {
    warning: f64,
    critical: f64,
    clear: f64,
}

#[derive(Debug, Clone)]
enum Op {
    /// A point of this value in series 0 or 1.
    Write(usize, u8),
    Tick,
    /// New levels, from three numbers (ordered to be valid for the comparison).
    Update([u8; 3]),
    Disable,
    Enable,
    Restart,
    /// The selector pointed at a series that has no data (true), or back at the two (false).
    Blind(bool),
}

fn levels(comparison: &str, mut n: [u8; 3]) -> Levels {
    n.sort();
    let [a, b, c] = n.map(f64::from);
    // Valid: the critical level strictly past the warning level, clear not past the warning.
    if comparison.starts_with('>') {
        Levels { clear: a, warning: b, critical: c + 1.0 }
    } else {
        Levels { critical: a - 1.0, warning: b, clear: c }
    }
}

type Case = (usize, usize, usize, [u8; 3], Vec<Op>);

fn ops() -> impl Strategy<Value = Case> {
    let op = prop_oneof![
        6 => (0..2usize, 0..60u8).prop_map(|(s, v)| Op::Write(s, v)),
        5 => Just(Op::Tick),
        1 => any::<[u8; 3]>().prop_map(|n| Op::Update(n.map(|x| x % 60))),
        1 => Just(Op::Disable),
        1 => Just(Op::Enable),
        1 => Just(Op::Restart),
        1 => any::<bool>().prop_map(Op::Blind),
    ];
    let first = any::<[u8; 3]>().prop_map(|n| n.map(|x| x % 60));
    (0..AGGREGATIONS.len(), 0..COMPARISONS.len(), 0..NO_DATA.len(), first, prop::collection::vec(op, 1..30))
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// What the rules say: the aggregate of each series' points, the worst series, then the level
/// (a firing alert stays at warning at most until the value crosses the clear level).
struct Model {
    aggregation: &'static str,
    comparison: &'static str,
    levels: Levels,
    no_data: &'static str,
    enabled: bool,
    blind: bool,
    points: [Vec<f64>; 2],
    level: Level,
    /// (from, to, reason), oldest first.
    events: Vec<(String, String, Option<String>)>,
}

impl Model {
    fn up(&self) -> bool {
        self.comparison.starts_with('>')
    }

    fn breaches(&self, v: f64, limit: f64) -> bool {
        match self.comparison {
            ">" => v > limit,
            ">=" => v >= limit,
            "<" => v < limit,
            _ => v <= limit,
        }
    }

    fn value(&self) -> Option<f64> {
        let aggregate = |p: &Vec<f64>| -> Option<f64> {
            let last = *p.last()?;
            Some(match self.aggregation {
                "avg" => p.iter().sum::<f64>() / p.len() as f64,
                "min" => p.iter().copied().fold(f64::INFINITY, f64::min),
                "max" => p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                "last" => last,
                "sum" => p.iter().sum(),
                _ => p.len() as f64,
            })
        };
        let none = Vec::new();
        let values = self.points.iter().map(|p| if self.blind { &none } else { p }).filter_map(aggregate);
        let worst = if self.up() { values.reduce(f64::max) } else { values.reduce(f64::min) };
        // No point at all: a count or a sum is 0.
        worst.or(matches!(self.aggregation, "sum" | "count").then_some(0.0))
    }

    fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let Some(v) = self.value() else {
            let level = match self.no_data {
                "keep" => return,
                "ok" => Level::Ok,
                "warning" => Level::Warning,
                _ => Level::Critical,
            };
            return self.change(level, Some("no data"));
        };
        let l = self.levels;
        let mut target = if self.breaches(v, l.critical) {
            Level::Critical
        } else if self.breaches(v, l.warning) {
            Level::Warning
        } else {
            Level::Ok
        };
        let cleared = if self.up() { v < l.clear } else { v > l.clear };
        if target == Level::Ok && self.level > Level::Ok && !cleared {
            target = if self.level > Level::Warning { Level::Warning } else { self.level };
        }
        self.change(target, None);
    }

    fn change(&mut self, to: Level, reason: Option<&str>) {
        if to != self.level {
            self.events.push((self.level.name().into(), to.name().into(), reason.map(str::to_owned)));
            self.level = to;
        }
    }
}

fn threshold_body(case: u32, m: &Model) -> serde_json::Value {
    let selector = if m.blind { format!("am{case}_none") } else { format!("am{case}_v") };
    json!({"name": format!("model {case}"), "selector": selector, "aggregation": m.aggregation,
           "window": "10m", "comparison": m.comparison, "warning": m.levels.warning,
           "critical": m.levels.critical, "clear": m.levels.clear, "for": "0s", "enabled": m.enabled,
           "no_data": m.no_data})
}

/// The threshold's firing level as the server shows it.
async fn firing(s: &TestServer, id: u64) -> Result<Level, TestCaseError> {
    let (status, a) = s.get_json("/api/v1/alerts").await;
    prop_assert_eq!(status, 200);
    let alert = a["alerts"].as_array().expect("alerts").iter().find(|x| x["threshold_id"] == id).cloned();
    Ok(match alert.as_ref().and_then(|a| a["level"].as_str()) {
        None => Level::Ok,
        Some("warning") => Level::Warning,
        Some("critical") => Level::Critical,
        Some(other) => return Err(TestCaseError::fail(format!("level {other}"))),
    })
}

async fn run(
    s: &mut TestServer,
    case: u32,
    (aggregation, comparison, no_data, first, ops): &Case,
) -> Result<(), TestCaseError> {
    let comparison = COMPARISONS[*comparison];
    let mut m = Model {
        aggregation: AGGREGATIONS[*aggregation],
        comparison,
        levels: levels(comparison, *first),
        // A count or a sum is never without data; a policy for them is refused.
        no_data: if matches!(AGGREGATIONS[*aggregation], "sum" | "count") {
            "keep"
        } else {
            NO_DATA[*no_data]
        },
        enabled: true,
        blind: false,
        points: Default::default(),
        level: Level::Ok,
        events: Vec::new(),
    };
    let (status, created) = s.post_json("/api/v1/alerts/thresholds", &threshold_body(case, &m)).await;
    prop_assert_eq!(status, 201, "{}", created);
    let id = created["id"].as_u64().expect("an id");
    let path = format!("/api/v1/alerts/thresholds/{id}");
    // Strictly increasing timestamps a little in the past: every point stays in the window.
    let mut last_ts = 0;
    for op in ops {
        match op {
            Op::Write(series, v) => {
                last_ts = (perfd::model::now_ms() - 1000).max(last_ts + 1);
                let line = format!("am{case},s=s{series} v={v} {last_ts}");
                prop_assert_eq!(s.post("/write?precision=ms", line).await.status().as_u16(), 204);
                m.points[*series].push(f64::from(*v));
            }
            Op::Tick => {
                s.daemon().sampler.tick();
                m.tick();
                prop_assert_eq!(firing(s, id).await?, m.level, "after {:?}", ops);
            }
            Op::Blind(blind) => {
                m.blind = *blind;
                let r = s.client.put(s.url(&path)).json(&threshold_body(case, &m)).send().await;
                prop_assert_eq!(r.expect("PUT").status().as_u16(), 200);
            }
            Op::Update(n) => {
                m.levels = levels(comparison, *n);
                let r = s.client.put(s.url(&path)).json(&threshold_body(case, &m)).send().await;
                prop_assert_eq!(r.expect("PUT").status().as_u16(), 200);
            }
            Op::Disable | Op::Enable => {
                m.enabled = matches!(op, Op::Enable);
                let r = s.client.put(s.url(&path)).json(&threshold_body(case, &m)).send().await;
                prop_assert_eq!(r.expect("PUT").status().as_u16(), 200);
                s.daemon().sampler.tick();
                if !m.enabled {
                    m.change(Level::Ok, Some("threshold disabled"));
                }
                m.tick();
            }
            Op::Restart => {
                s.restart();
                // The first tick ran as it started.
                m.tick();
                prop_assert_eq!(firing(s, id).await?, m.level, "after a restart in {:?}", ops);
            }
        }
    }
    let r = s.client.delete(s.url(&path)).send().await;
    prop_assert_eq!(r.expect("DELETE").status().as_u16(), 204);
    s.daemon().sampler.tick();
    m.change(Level::Ok, Some("threshold deleted"));
    prop_assert_eq!(firing(s, id).await?, Level::Ok);
    let got = crate::alerts::events_of(s, id).await;
    prop_assert_eq!(got, m.events, "history after {:?}", ops);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_and_end_when_a_model_says() {
    // Taken out for each case, so a case may restart it.
    let server = RefCell::new(Some(TestServer::start()));
    let handle = tokio::runtime::Handle::current();
    let case = std::cell::Cell::new(0);
    tokio::task::block_in_place(|| {
        property(80, ops(), |case_ops| {
            case.set(case.get() + 1);
            let mut s = server.borrow_mut().take().expect("the server");
            let result = handle.block_on(run(&mut s, case.get(), &case_ops));
            *server.borrow_mut() = Some(s);
            result
        })
    });
}
