//! The manifold's entries in `GET /models`: the configured ids, normalised, less those the
//! upstream does not serve (when it said), with display names. Asked on every model-list
//! request while the valves and the served set change rarely, so the last list is kept with
//! the `Arc`s it was made from: a change is a new `Arc`, and the list is made again.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sluice_sdk::SubModel;

use crate::models;
use crate::valves::ResponsesValves;

/// What the upstream serves, from the last fetch (`None` inside: not known).
pub type Served = Arc<Option<Fetched>>;

/// The ids a fetch found, and the upstream it asked: after an edit of `BASE_URL` they say
/// nothing of the new one until its own fetch, and with `FETCH_MODELS` off nothing at all.
pub struct Fetched {
    pub base_url: String,
    pub ids: HashSet<String>,
}

#[derive(Default)]
pub struct ModelList {
    last: ArcSwapOption<Listed>,
}

struct Listed {
    valves: Arc<ResponsesValves>,
    served: Option<Served>,
    models: Arc<[SubModel]>,
}

impl ModelList {
    /// The list for these valves and this served set (`None`: not started yet).
    pub fn get(&self, valves: Arc<ResponsesValves>, served: Option<Served>) -> Arc<[SubModel]> {
        if let Some(last) = self.last.load().as_ref() {
            let same_served = match (&last.served, &served) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if Arc::ptr_eq(&last.valves, &valves) && same_served {
                return Arc::clone(&last.models);
            }
        }
        let fetched = served.as_deref().and_then(Option::as_ref);
        let applies = fetched.filter(|f| valves.FETCH_MODELS && f.base_url == valves.BASE_URL);
        let models: Arc<[SubModel]> = make(&valves, applies.map(|f| &f.ids)).into();
        self.last.store(Some(Arc::new(Listed { valves, served, models: Arc::clone(&models) })));
        models
    }
}

fn make(valves: &ResponsesValves, served: Option<&HashSet<String>>) -> Vec<SubModel> {
    // Entries that are one id once normalised (`gpt-4.1`, `GPT-4.1`, a dated snapshot) are
    // listed once: Open WebUI keys its models by id.
    let mut configured: Vec<String> = Vec::new();
    for id in valves.MODEL_ID.iter().map(|m| models::normalize(m)) {
        if !configured.contains(&id) {
            configured.push(id);
        }
    }
    let kept: Vec<&String> = match served {
        Some(set) => configured.iter().filter(|id| set.contains(&models::resolve(id).base)).collect(),
        None => configured.iter().collect(),
    };
    // An upstream that serves none of them is more likely wrong than empty: list them all.
    let list = if kept.is_empty() { configured.iter().collect() } else { kept };
    list.into_iter().map(|id| SubModel { id: id.clone(), name: models::display_name(id), info: None }).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_list_follows_the_valves_and_the_served_set() {
        let list = ModelList::default();
        let ids = |m: Arc<[SubModel]>| m.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        let valves =
            Arc::new(ResponsesValves { MODEL_ID: vec!["gpt-4.1".into(), "o4-mini".into()], ..Default::default() });
        assert_eq!(ids(list.get(Arc::clone(&valves), None)), ["gpt-4.1", "o4-mini"]);
        let fetched = |ids: &[&str], base_url: &str| -> Served {
            Arc::new(Some(Fetched { base_url: base_url.into(), ids: ids.iter().map(|i| i.to_string()).collect() }))
        };
        let served = fetched(&["o4-mini"], &valves.BASE_URL);
        assert_eq!(ids(list.get(Arc::clone(&valves), Some(Arc::clone(&served)))), ["o4-mini"], "a new served set");
        assert_eq!(ids(list.get(Arc::clone(&valves), Some(Arc::clone(&served)))), ["o4-mini"], "kept");
        let more = Arc::new(ResponsesValves { MODEL_ID: vec!["gpt-4.1".into()], ..Default::default() });
        assert_eq!(ids(list.get(more, Some(served))), ["gpt-4.1"], "new valves; none served: all listed");
        let twice = Arc::new(ResponsesValves {
            MODEL_ID: vec!["gpt-4.1".into(), "GPT-4.1".into(), "o3".into(), "gpt-4.1-2025-04-14".into()],
            ..Default::default()
        });
        assert_eq!(ids(list.get(twice, None)), ["gpt-4.1", "o3"], "one entry per id");
        // What another upstream served, or a fetch now switched off, filters nothing.
        let elsewhere = fetched(&["o4-mini"], "http://elsewhere/v1");
        assert_eq!(ids(list.get(Arc::clone(&valves), Some(elsewhere))), ["gpt-4.1", "o4-mini"]);
        let off = Arc::new(ResponsesValves { FETCH_MODELS: false, ..(*valves).clone() });
        assert_eq!(ids(list.get(off, Some(fetched(&["o4-mini"], &valves.BASE_URL)))), ["gpt-4.1", "o4-mini"]);
    }
}
