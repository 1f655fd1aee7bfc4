//! Series and selectors against a model, through the real server: series whose label values hold
//! the characters every syntax on the way treats specially (line protocol's `,`, `=`, space and
//! `\`, the selector's `"`, `\` and `}`, non-ASCII), written by `/write` or `/api/v1/ingest`, must
//! be listed, queried and exported with exactly their labels by any selector of `=`, `!=`, `=~`
//! and `!~` matchers, with the name before the braces, as `__name__="…"` or as a `__name__`
//! regex, and an export imported again must add no series.

use crate::helpers::{TestServer, base_ms, property};
use crate::ingest::urlencode;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};

const KEYS: &[&str] = &["host", "crew", "x.y"];
const VALUES: &[&str] = &[
    "a",
    "b c",
    "a,b",
    "k=v",
    "q\"uote",
    "back\\slash",
    "br}ace",
    "\u{e9} \u{fc}",
    "\\\"",
    " lead",
    "end\\",
];

/// A series: its name's index and its labels.
type Series = (usize, BTreeMap<&'static str, &'static str>);

#[derive(Debug, Clone)]
struct Matcher {
    key: &'static str,
    /// A value, or a regex's alternatives. `None`: the empty value (matches a series without the
    /// label).
    values: Vec<Option<&'static str>>,
    /// `=~`/`!~` with `values` as alternatives; each followed by `.*` when `prefix`.
    regex: bool,
    prefix: bool,
    negated: bool,
}

impl Matcher {
    fn op(&self) -> &'static str {
        match (self.regex, self.negated) {
            (false, false) => "=",
            (false, true) => "!=",
            (true, false) => "=~",
            (true, true) => "!~",
        }
    }

    /// The value as the selector's regex or literal, before quoting.
    fn text(&self) -> String {
        if !self.regex {
            return self.values[0].unwrap_or("").to_owned();
        }
        let alt = |v: &Option<&str>| regex::escape(v.unwrap_or("")) + if self.prefix { ".*" } else { "" };
        self.values.iter().map(alt).collect::<Vec<_>>().join("|")
    }

    /// What the model says: does a series whose label holds `v` ("" when it has none) pass?
    fn passes(&self, v: &str) -> bool {
        let hit = |w: &Option<&str>| {
            let w = w.unwrap_or("");
            if self.regex && self.prefix { v.starts_with(w) } else { v == w }
        };
        let hit = if self.regex { self.values.iter().any(hit) } else { hit(&self.values[0]) };
        hit != self.negated
    }
}

fn series() -> impl Strategy<Value = Series> {
    let labels = prop::collection::btree_map(prop::sample::select(KEYS), prop::sample::select(VALUES), 0..=3);
    (0..2usize, labels)
}

fn matcher() -> impl Strategy<Value = Matcher> {
    // A label no series has, too.
    let key = prop::sample::select(&["host", "crew", "x.y", "other"][..]);
    let values = prop::collection::vec(prop::option::weighted(0.85, prop::sample::select(VALUES)), 1..3);
    (key, values, any::<bool>(), prop::bool::weighted(0.3), any::<bool>())
        .prop_map(|(key, values, regex, prefix, negated)| Matcher { key, values, regex, prefix, negated })
}

/// Which series a selector names: 0 or 1 for one name (written before the braces, or as
/// `__name__="…"` when the flag is set), 2 for both (a `__name__` regex).
type Names = (usize, bool);

type Case = (Vec<Series>, bool, Vec<(Names, Vec<Matcher>)>);

fn cases() -> impl Strategy<Value = Case> {
    let selector = ((0..3usize, any::<bool>()), prop::collection::vec(matcher(), 0..3));
    (prop::collection::vec(series(), 1..8), any::<bool>(), prop::collection::vec(selector, 1..6))
}

fn name(case: u32, n: usize) -> String {
    format!("lm{case}{}_v", ["a", "b"][n])
}

/// Line protocol escaping of a tag value: `\`, `,`, `=` and space.
fn tag_escaped(v: &str) -> String {
    v.chars().flat_map(|c| if "\\,= ".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// A selector: each value in double quotes with `\` and `"` escaped.
fn selector(case: u32, (n, as_label): Names, matchers: &[Matcher]) -> String {
    let quoted = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let mut parts: Vec<String> =
        matchers.iter().map(|m| format!("{}{}\"{}\"", m.key, m.op(), quoted(&m.text()))).collect();
    let before = match (n, as_label) {
        (2, _) => {
            parts.insert(0, format!("__name__=~\"lm{case}[ab]_v\""));
            String::new()
        }
        (n, true) => {
            parts.push(format!("__name__=\"{}\"", name(case, n)));
            String::new()
        }
        (n, false) => name(case, n),
    };
    format!("{before}{{{}}}", parts.join(","))
}

/// A series' labels as JSON (sorted by key).
fn labels_json(labels: &BTreeMap<&str, &str>) -> serde_json::Value {
    serde_json::Value::Object(labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect())
}

/// The series (name, labels) an answer lists, with `labels` and `name` read by `read`.
fn listed(
    items: &serde_json::Value,
    read: impl Fn(&serde_json::Value) -> (String, serde_json::Value),
) -> BTreeSet<String> {
    items
        .as_array()
        .map_or_else(BTreeSet::new, |a| a.iter().map(&read).map(|(n, l)| format!("{n} {l}")).collect())
}

async fn run(s: &TestServer, case: u32, (series, json, selectors): &Case) -> Result<(), TestCaseError> {
    let t = base_ms();
    let unique: BTreeSet<Series> = series.iter().cloned().collect();
    if *json {
        let body: Vec<serde_json::Value> = unique
            .iter()
            .map(|(n, labels)| serde_json::json!({"name": name(case, *n), "labels": labels_json(labels), "timestamp": t, "value": 1.0}))
            .collect();
        let (status, answer) = s.post_json("/api/v1/ingest", &serde_json::json!(body)).await;
        prop_assert_eq!(status, 200, "{}", answer);
    } else {
        let mut body = String::new();
        for (n, labels) in &unique {
            body += &format!("lm{case}{}", ["a", "b"][*n]);
            for (k, v) in labels {
                body += &format!(",{k}={}", tag_escaped(v));
            }
            body += &format!(" v=1 {t}\n");
        }
        let r = s.post("/write?precision=ms", body.clone()).await;
        prop_assert_eq!(r.status().as_u16(), 204, "{}: {}", body, r.text().await.unwrap_or_default());
    }
    for (names, matchers) in selectors {
        let sel = selector(case, *names, matchers);
        let want: BTreeSet<String> = unique
            .iter()
            .filter(|(m, labels)| {
                (names.0 == 2 || *m == names.0)
                    && matchers.iter().all(|x| x.passes(labels.get(x.key).copied().unwrap_or("")))
            })
            .map(|(m, labels)| format!("{} {}", name(case, *m), labels_json(labels)))
            .collect();
        let (status, body) = s.get_json(&format!("/api/v1/series?match={}", urlencode(&sel))).await;
        prop_assert_eq!(status, 200, "{}: {}", sel, body);
        let got =
            listed(&body["series"], |e| (e["name"].as_str().unwrap_or("").to_owned(), e["labels"].clone()));
        prop_assert_eq!(&got, &want, "series of {}", sel);

        let q = format!("/api/v1/query_range?query={}&start={t}&end={t}", urlencode(&sel));
        let (status, body) = s.get_json(&q).await;
        prop_assert_eq!(status, 200, "{}: {}", sel, body);
        let got =
            listed(&body["series"], |e| (e["name"].as_str().unwrap_or("").to_owned(), e["labels"].clone()));
        prop_assert_eq!(&got, &want, "query of {}", sel);

        // Export, then import it again: the same series, no new ones.
        let url = s.url(&format!("/api/v1/export?match={}&start={t}&end={t}", urlencode(&sel)));
        let export = s.client.get(url).send().await.expect("export").text().await.expect("text");
        let mut exported = BTreeSet::new();
        for line in export.lines() {
            let l: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let mut labels = l["metric"].clone();
            let metric = labels.as_object_mut().and_then(|m| m.remove("__name__"));
            exported.insert(format!("{} {}", metric.as_ref().and_then(|m| m.as_str()).unwrap_or(""), labels));
        }
        prop_assert_eq!(&exported, &want, "export of {}", sel);
        let r = s.post("/api/v1/import", export).await;
        prop_assert_eq!(r.status().as_u16(), 204);
    }
    for n in 0..2 {
        let (_, body) = s.get_json(&format!("/api/v1/series?match={}", name(case, n))).await;
        let count = unique.iter().filter(|(m, _)| *m == n).count();
        prop_assert_eq!(
            body["count"].as_u64(),
            Some(count as u64),
            "{} after imports: {}",
            name(case, n),
            body
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_find_the_series_a_model_says() {
    let s = TestServer::start();
    let handle = tokio::runtime::Handle::current();
    let case = std::cell::Cell::new(0);
    tokio::task::block_in_place(|| {
        property(150, cases(), |c| {
            case.set(case.get() + 1);
            handle.block_on(run(&s, case.get(), &c))
        })
    });
}
