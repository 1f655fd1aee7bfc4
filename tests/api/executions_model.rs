//! Execution slots against a model (a set running, a FIFO queue), through the real server with
//! 3 slots and a queue of 4: random sequences of requests, finishes, heartbeats and stages (of
//! running, queued and ended executions) and reads must answer what the model says: 201, 202
//! with the place in line, or 429; 200, or 409 for what is not running or has ended (a finish
//! of a queued one withdraws it); the state, the position and the stages recorded, in order.

use crate::helpers::{TestServer, property};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;
use std::collections::{HashMap, VecDeque};

const SLOTS: usize = 3;
const QUEUE: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Request,
    /// The n-th execution asked for so far (modulo how many there are).
    Finish(usize),
    Get(usize),
    Heartbeat(usize),
    /// A stage of this many milliseconds.
    Stage(usize, u16),
}

#[derive(Default)]
struct Model {
    /// Every execution asked for, in order (ids), and which are done.
    ids: Vec<u64>,
    done: Vec<u64>,
    running: Vec<u64>,
    queue: VecDeque<u64>,
    /// Stages recorded, by execution: (name, duration ms).
    stages: HashMap<u64, Vec<(String, f64)>>,
}

impl Model {
    fn finish(&mut self, id: u64) {
        self.running.retain(|&r| r != id);
        self.done.push(id);
        while self.running.len() < SLOTS {
            let Some(next) = self.queue.pop_front() else { break };
            self.running.push(next);
        }
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => Just(Op::Request),
        3 => any::<usize>().prop_map(Op::Finish),
        2 => any::<usize>().prop_map(Op::Get),
        1 => any::<usize>().prop_map(Op::Heartbeat),
        2 => (any::<usize>(), 0..5000u16).prop_map(|(n, ms)| Op::Stage(n, ms)),
    ];
    prop::collection::vec(op, 1..30)
}

async fn finish(s: &TestServer, id: u64) -> (u16, serde_json::Value) {
    s.post_json(&format!("/api/v1/executions/{id}/finish"), &json!({"status": "success"})).await
}

/// The stages an execution shows: (name, duration ms).
fn stages_of(e: &serde_json::Value) -> Vec<(String, f64)> {
    e["stages"].as_array().map_or_else(Vec::new, |a| {
        a.iter()
            .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s["duration_ms"].as_f64().unwrap_or(-1.0)))
            .collect()
    })
}

/// What a heartbeat or stage of an execution that is not running gets.
fn refused(m: &Model, id: u64, queued_ok: bool) -> u16 {
    if m.running.contains(&id) || (queued_ok && m.queue.contains(&id)) { 200 } else { 409 }
}

async fn run(s: &TestServer, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    for op in ops {
        match *op {
            Op::Request => {
                let (status, e) = s.post_json("/api/v1/executions", &json!({"crew_id": "model"})).await;
                if m.queue.is_empty() && m.running.len() < SLOTS {
                    prop_assert_eq!(status, 201, "{}", e);
                    m.running.push(e["id"].as_u64().expect("an id"));
                } else if m.queue.len() >= QUEUE {
                    prop_assert_eq!(status, 429, "{}", e);
                    continue;
                } else {
                    prop_assert_eq!(status, 202, "{}", e);
                    prop_assert_eq!(e["position"].as_u64(), Some(m.queue.len() as u64 + 1), "{}", e);
                    m.queue.push_back(e["id"].as_u64().expect("an id"));
                }
                m.ids.push(e["id"].as_u64().expect("an id"));
            }
            Op::Finish(n) if !m.ids.is_empty() => {
                let id = m.ids[n % m.ids.len()];
                let (status, e) = finish(s, id).await;
                if m.running.contains(&id) {
                    prop_assert_eq!(status, 200, "{}", e);
                    let want = m.stages.get(&id).cloned().unwrap_or_default();
                    prop_assert_eq!(stages_of(&e), want, "the profile's stages");
                    m.finish(id);
                } else if m.queue.contains(&id) {
                    // Withdrawn: it leaves the queue; nobody is admitted for it.
                    prop_assert_eq!((status, e["state"].as_str()), (200, Some("finished")), "{}", e);
                    m.queue.retain(|&q| q != id);
                    m.done.push(id);
                } else {
                    // Finished already (a retried finish).
                    prop_assert_eq!(status, 409, "{}", e);
                }
            }
            Op::Heartbeat(n) if !m.ids.is_empty() => {
                let id = m.ids[n % m.ids.len()];
                let (status, e) =
                    s.post_json(&format!("/api/v1/executions/{id}/heartbeat"), &json!({})).await;
                prop_assert_eq!(status, refused(&m, id, true), "heartbeat: {}", e);
            }
            Op::Stage(n, ms) if !m.ids.is_empty() => {
                let id = m.ids[n % m.ids.len()];
                let stage = json!({"name": format!("stage {ms}"), "duration_ms": ms});
                let (status, e) = s.post_json(&format!("/api/v1/executions/{id}/stages"), &stage).await;
                prop_assert_eq!(status, refused(&m, id, false), "stage: {}", e);
                if status == 200 {
                    m.stages.entry(id).or_default().push((format!("stage {ms}"), f64::from(ms)));
                    prop_assert_eq!(stages_of(&e), m.stages[&id].clone());
                }
            }
            Op::Get(n) if !m.ids.is_empty() => {
                let id = m.ids[n % m.ids.len()];
                let (status, e) = s.get_json(&format!("/api/v1/executions/{id}")).await;
                if m.running.contains(&id) {
                    prop_assert_eq!((status, e["state"].as_str()), (200, Some("running")), "{}", e);
                } else if let Some(at) = m.queue.iter().position(|&q| q == id) {
                    prop_assert_eq!((status, e["state"].as_str()), (200, Some("queued")), "{}", e);
                    prop_assert_eq!(e["position"].as_u64(), Some(at as u64 + 1), "{}", e);
                } else {
                    // Finished: its profile, stored before the finish was answered.
                    prop_assert_eq!((status, e["state"].as_str()), (200, Some("finished")), "{}", e);
                    prop_assert_eq!(stages_of(&e), m.stages.get(&id).cloned().unwrap_or_default());
                }
            }
            Op::Finish(_) | Op::Get(_) | Op::Heartbeat(_) | Op::Stage(..) => {}
        }
    }
    // Leave no slot taken for the next sequence.
    while let Some(&id) = m.running.first() {
        prop_assert_eq!(finish(s, id).await.0, 200);
        m.finish(id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_slots_answer_what_a_model_says() {
    let s = TestServer::start_with(|c| {
        c.executions.max_concurrent = SLOTS;
        c.executions.queue_capacity = QUEUE;
    });
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| property(150, ops(), |ops| handle.block_on(run(&s, &ops))));
}
