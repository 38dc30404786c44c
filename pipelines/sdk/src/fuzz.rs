//! Inputs for the fuzz tests of every crate (feature `fuzz`, dev-dependencies only): arbitrary
//! JSON, and mutations of a valid seed (a corpus file or a fixture), which reach much deeper
//! into a parser than random values do, because most of the document still makes sense.
//! Property-based (proptest): a failure shrinks to a small case and is kept in the crate's
//! `proptest-regressions/` to be replayed first on every later run.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// Cases per fuzz test: a short pass by default (CI); `FUZZ_CASES=20000` for a long one.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("gpt-4.1".to_string()),
        Just("openai_responses.gpt-4.1".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("\u{0}\u{202e}é中🙂".to_string()),
        Just("<details type=\"tool_calls\" done=\"true\">".to_string()),
        Just("http://127.0.0.1:1/v1".to_string()),
        "[a-z_.]{0,12}",
        any::<String>(),
    ]
}

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(u64::MAX)),
    ]
}

/// Any JSON value, a few levels deep.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Duplicate,
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => arb_json().prop_map(Edit::Replace),
        2 => Just(Edit::Remove),
        1 => Just(Edit::Duplicate),
    ]
}

/// Every node's path in `v` (object keys and array indexes), the root first.
fn paths(v: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(Step::Key(k.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(list) => {
            for (i, child) in list.iter().enumerate() {
                at.push(Step::Index(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn apply(root: &mut Value, path: &[Step], edit: Edit) {
    let Some((last, parent_path)) = path.split_last() else {
        if let Edit::Replace(v) = edit {
            *root = v;
        }
        return;
    };
    let mut node = root;
    for step in parent_path {
        node = match (step, node) {
            (Step::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(n) => n,
                None => return,
            },
            (Step::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(n) => n,
                None => return,
            },
            _ => return,
        };
    }
    match (last, node, edit) {
        (Step::Key(k), Value::Object(m), Edit::Replace(v)) => {
            m.insert(k.clone(), v);
        }
        (Step::Key(k), Value::Object(m), Edit::Remove) => {
            m.remove(k);
        }
        (Step::Key(k), Value::Object(m), Edit::Duplicate) => {
            if let Some(v) = m.get(k).cloned() {
                m.insert(format!("{k}_"), v);
            }
        }
        (Step::Index(i), Value::Array(a), Edit::Replace(v)) if *i < a.len() => a[*i] = v,
        (Step::Index(i), Value::Array(a), Edit::Remove) if *i < a.len() => {
            a.remove(*i);
        }
        (Step::Index(i), Value::Array(a), Edit::Duplicate) if *i < a.len() => {
            let v = a[*i].clone();
            a.insert(*i, v);
        }
        _ => {}
    }
}

/// `seed` with one to four nodes replaced by arbitrary JSON, removed or duplicated.
pub fn mutate(seed: Value) -> impl Strategy<Value = Value> {
    let mut all = Vec::new();
    paths(&seed, &mut Vec::new(), &mut all);
    proptest::collection::vec((any::<Index>(), arb_edit()), 1..5).prop_map(move |edits| {
        let mut v = seed.clone();
        for (at, edit) in edits {
            apply(&mut v, &all[at.index(all.len())], edit);
        }
        v
    })
}

/// `seed`'s bytes cut short, with bytes overwritten, or with bytes inserted.
pub fn mutate_bytes(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..3, any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8));
    proptest::collection::vec(edit, 1..4).prop_map(move |edits| {
        let mut b = seed.clone();
        for (kind, at, bytes) in edits {
            let i = at.index(b.len() + 1);
            match kind {
                0 => b.truncate(i),
                1 => {
                    for (k, x) in bytes.into_iter().enumerate() {
                        if let Some(slot) = b.get_mut(i + k) {
                            *slot = x;
                        }
                    }
                }
                _ => {
                    let tail = b.split_off(i);
                    b.extend(bytes);
                    b.extend(tail);
                }
            }
        }
        b
    })
}
