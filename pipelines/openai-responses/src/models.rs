//! Model ids, capability flags, aliases and prices (docs/manifold.md §3). Kept as data:
//! a new model is a new row.

use serde_json::{json, Map, Value};

/// What a base model accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Function calling: tools are sent at all.
    pub tools: bool,
    /// Reasoning parameters and encrypted reasoning.
    pub reasoning: bool,
    /// Reasoning summaries.
    pub summary: bool,
    /// Hosted web search.
    pub web_search: bool,
    /// Hosted image generation.
    pub image: bool,
    /// `text.verbosity`.
    pub verbosity: bool,
    /// Files (`input_file`, PDF) and images (`input_image`) in the input.
    pub files: bool,
}

/// A row of the table; every model in it reads files and images unless [`no_files`] says so.
const fn caps(tools: bool, reasoning: bool, summary: bool, web_search: bool, image: bool, verbosity: bool) -> Caps {
    Caps { tools, reasoning, summary, web_search, image, verbosity, files: true }
}

/// Models that take text only.
const fn no_files(c: Caps) -> Caps {
    Caps { files: false, ..c }
}

const FULL: Caps = caps(true, true, true, true, true, true);
const GPT41: Caps = caps(true, false, false, true, true, false);

/// Base models and their flags (§3.2, as in the community manifold v0.9.15).
const BASE_MODELS: &[(&str, Caps)] = &[
    ("gpt-6-astra", FULL),
    ("gpt-5.6-sol", FULL),
    ("gpt-5.6-terra", FULL),
    ("gpt-5.6-luna", FULL),
    ("gpt-5.5", FULL),
    ("gpt-5.5-pro", FULL),
    ("gpt-5.4", FULL),
    ("gpt-5.4-pro", FULL),
    ("gpt-5.2", FULL),
    ("gpt-5.2-pro", FULL),
    ("gpt-5.1", FULL),
    ("gpt-5", FULL),
    ("gpt-5-pro", FULL),
    ("gpt-5-mini", FULL),
    ("gpt-5-nano", FULL),
    ("gpt-4.1", GPT41),
    ("gpt-4.1-mini", GPT41),
    ("gpt-4.1-nano", caps(true, false, false, false, true, false)),
    ("gpt-4o", GPT41),
    ("gpt-4o-mini", GPT41),
    ("o3", caps(true, true, true, false, false, false)),
    ("o3-mini", no_files(caps(true, true, true, false, false, false))),
    ("o3-pro", caps(true, true, false, false, false, false)),
    ("o4-mini", caps(true, true, true, true, false, false)),
    ("o3-deep-research", caps(true, true, true, false, false, false)),
    ("o4-mini-deep-research", caps(true, true, true, false, false, false)),
    ("gpt-5.2-chat-latest", caps(true, false, false, true, false, false)),
    ("gpt-5.1-chat-latest", caps(true, false, false, true, false, false)),
    ("gpt-5-chat-latest", caps(true, false, false, true, false, false)),
    ("codex-mini-latest", no_files(caps(true, true, true, false, false, false))),
    ("chatgpt-4o-latest", no_files(caps(false, false, false, false, false, false))),
];

/// Alias families (§3.3): `<base>-<effort>` and `<base>-pro[-<effort>]`.
const ALIASES: &[(&str, &[&str], &[&str])] = &[
    ("gpt-6-astra", &["low", "high", "xhigh", "max"], &["", "high", "xhigh", "max"]),
    ("gpt-5.6-sol", &["none", "low", "high", "xhigh", "max"], &["", "high", "xhigh", "max"]),
    ("gpt-5.6-terra", &["none", "low", "high", "xhigh", "max"], &[]),
    ("gpt-5.6-luna", &["none", "low", "high", "xhigh", "max"], &[]),
    ("gpt-5.5", &["low", "medium", "high", "xhigh"], &[]),
    ("gpt-5.5-pro", &["high", "xhigh"], &[]),
    ("gpt-5.4", &["low", "medium", "high", "xhigh"], &[]),
    ("gpt-5.4-pro", &["high", "xhigh"], &[]),
    ("gpt-5.2", &["low", "medium", "high", "xhigh"], &[]),
    ("gpt-5.2-pro", &["high", "xhigh"], &[]),
    ("gpt-5.1", &["low", "medium", "high"], &[]),
    ("gpt-5", &["minimal", "high"], &[]),
    ("gpt-5-mini", &["minimal", "high"], &[]),
    ("gpt-5-nano", &["minimal", "high"], &[]),
    ("o3-mini", &["high"], &[]),
    ("o4-mini", &["high"], &[]),
];

/// A requested id resolved to what is sent upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The normalised id as requested (`o4-mini-high`).
    pub id: String,
    /// The model sent upstream (`o4-mini`).
    pub base: String,
    /// Flags; all off for unknown ids.
    pub caps: Caps,
    /// `reasoning` preset of an alias (`{"effort": "high"}`), merged over the request's.
    pub preset: Option<Map<String, Value>>,
    /// The flags come from `MODEL_CAPABILITIES_JSON`.
    pub declared: bool,
}

impl Resolved {
    pub fn known(&self) -> bool {
        self.declared || caps_of(&self.base).is_some()
    }
}

fn caps_of(base: &str) -> Option<Caps> {
    BASE_MODELS.iter().find(|(id, _)| *id == base).map(|(_, c)| *c)
}

/// Trim, drop our manifold prefix, lower-case, drop a trailing `-YYYY-MM-DD`.
pub fn normalize(id: &str) -> String {
    let id = id.trim();
    let id = id.strip_prefix("openai_responses.").unwrap_or(id).to_lowercase();
    let bytes = id.as_bytes();
    if bytes.len() > 11 {
        // As bytes: the 11th byte from the end may fall inside a character (a caller's model
        // id); when it is the date's `-`, cutting there is on a character boundary.
        let t = &bytes[bytes.len() - 11..];
        let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
        if t[0] == b'-' && digits(1..5) && t[5] == b'-' && digits(6..8) && t[8] == b'-' && digits(9..11) {
            return id[..id.len() - 11].to_string();
        }
    }
    id
}

/// The capability names of `MODEL_CAPABILITIES_JSON`, in `Caps` order.
pub const CAPABILITY_NAMES: [&str; 7] = ["tools", "reasoning", "summary", "web_search", "image", "verbosity", "files"];

/// Flags declared by the operator for one id: `{"tools": true, ...}`, a missing name is false.
pub fn caps_from(declared: &Map<String, Value>) -> Caps {
    let on = |k: &str| declared.get(k).and_then(Value::as_bool).unwrap_or(false);
    let c = caps(on("tools"), on("reasoning"), on("summary"), on("web_search"), on("image"), on("verbosity"));
    Caps { files: on("files"), ..c }
}

/// [`resolve`], with the operator's declared capabilities (`MODEL_CAPABILITIES_JSON`, by
/// normalised id or base model) winning over the table: proxies and models newer than it.
pub fn resolve_with(requested: &str, declared: Option<&Map<String, Value>>) -> Resolved {
    let mut r = resolve(requested);
    if let Some(d) = declared {
        let own = d.get(&r.id).or_else(|| d.get(&r.base)).and_then(Value::as_object);
        if let Some(flags) = own {
            r.caps = caps_from(flags);
            r.declared = true;
        }
    }
    r
}

/// Resolves an alias to its base model and preset; unknown ids pass through without flags.
pub fn resolve(requested: &str) -> Resolved {
    let id = normalize(requested);
    if id == "gpt-5.6" {
        return Resolved { id: id.clone(), base: "gpt-5.6-sol".into(), caps: FULL, preset: None, declared: false };
    }
    // The Function's router pseudo-model: its released form answers with gpt-5-chat-latest
    // (the routing itself was experimental upstream and is not offered; docs/manifold.md §3.4).
    if id == "gpt-5-auto" {
        let base = "gpt-5-chat-latest";
        return Resolved {
            id: id.clone(),
            base: base.into(),
            caps: caps_of(base).unwrap_or_default(),
            preset: None,
            declared: false,
        };
    }
    if let Some(c) = caps_of(&id) {
        return Resolved { id: id.clone(), base: id, caps: c, preset: None, declared: false };
    }
    for (base, efforts, pro) in ALIASES {
        let Some(rest) = id.strip_prefix(base).and_then(|r| r.strip_prefix('-')) else { continue };
        let mut preset = Map::new();
        if efforts.contains(&rest) {
            preset.insert("effort".into(), rest.into());
        } else if let Some(p) = rest.strip_prefix("pro").filter(|p| p.is_empty() || p.starts_with('-')) {
            let effort = p.trim_start_matches('-');
            if !pro.contains(&effort) {
                continue;
            }
            preset.insert("mode".into(), "pro".into());
            if !effort.is_empty() {
                preset.insert("effort".into(), effort.into());
            }
        } else {
            continue;
        }
        let c = caps_of(base).unwrap_or_default();
        return Resolved { id: id.clone(), base: (*base).to_string(), caps: c, preset: Some(preset), declared: false };
    }
    Resolved { id: id.clone(), base: id, caps: Caps::default(), preset: None, declared: false }
}

/// `gpt-5.6-luna-pro` → `GPT 5.6 Luna Pro`, `o4-mini-deep-research` → `o4 Mini Deep Research`.
pub fn display_name(id: &str) -> String {
    normalize(id)
        .split('-')
        .filter(|t| !t.is_empty() && *t != "none")
        .map(|t| match t {
            "gpt" => "GPT".to_string(),
            "chatgpt" => "ChatGPT".to_string(),
            "xhigh" => "XHigh".to_string(),
            t if t.starts_with(|c: char| c.is_ascii_digit()) => t.to_string(),
            t if t.starts_with('o') && t.len() > 1 && t[1..].chars().all(|c| c.is_ascii_digit()) => t.to_string(),
            t => {
                let mut c = t.chars();
                c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// USD per 1M tokens: (input, cached input, output); cached `None` = billed as input (§3.5).
const PRICES: &[(&str, f64, Option<f64>, f64)] = &[
    ("gpt-6-astra", 10.0, Some(1.0), 50.0),
    ("gpt-5.6-sol", 1.25, Some(0.125), 10.0),
    ("gpt-5.6-terra", 0.25, Some(0.025), 2.0),
    ("gpt-5.6-luna", 0.05, Some(0.005), 0.4),
    ("gpt-5.5-pro", 15.0, None, 120.0),
    ("gpt-5.4-pro", 15.0, None, 120.0),
    ("gpt-5.2-pro", 15.0, None, 120.0),
    ("gpt-5-pro", 15.0, None, 120.0),
    ("gpt-5.5", 1.25, Some(0.125), 10.0),
    ("gpt-5.4", 1.25, Some(0.125), 10.0),
    ("gpt-5.2", 1.25, Some(0.125), 10.0),
    ("gpt-5.1", 1.25, Some(0.125), 10.0),
    ("gpt-5", 1.25, Some(0.125), 10.0),
    ("gpt-5-auto", 1.25, Some(0.125), 10.0),
    ("gpt-5.2-chat-latest", 1.25, Some(0.125), 10.0),
    ("gpt-5.1-chat-latest", 1.25, Some(0.125), 10.0),
    ("gpt-5-chat-latest", 1.25, Some(0.125), 10.0),
    ("gpt-5-mini", 0.25, Some(0.025), 2.0),
    ("gpt-5-nano", 0.05, Some(0.005), 0.4),
    ("gpt-4.1", 2.0, Some(0.5), 8.0),
    ("gpt-4.1-mini", 0.4, Some(0.1), 1.6),
    ("gpt-4.1-nano", 0.1, Some(0.025), 0.4),
    ("gpt-4o", 2.5, Some(1.25), 10.0),
    ("gpt-4o-mini", 0.15, Some(0.075), 0.6),
    ("o3", 2.0, Some(0.5), 8.0),
    ("o3-mini", 1.1, Some(0.55), 4.4),
    ("o3-pro", 20.0, None, 80.0),
    ("o4-mini", 1.1, Some(0.275), 4.4),
    ("o3-deep-research", 10.0, Some(2.5), 40.0),
    ("o4-mini-deep-research", 2.0, Some(0.5), 8.0),
    ("chatgpt-4o-latest", 5.0, None, 15.0),
];

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// An estimated cost for the served model (`response.model`), `None` when it has no price.
pub fn cost(served: &str, custom: Option<&Value>, input: u64, cached: u64, output: u64) -> Option<Value> {
    let model = normalize(served);
    let (pin, pcached, pout) = match custom.and_then(|c| c.get(&model)) {
        Some(p) => {
            (p.get("input")?.as_f64()?, p.get("cached_input").and_then(Value::as_f64), p.get("output")?.as_f64()?)
        }
        None => PRICES.iter().find(|(id, ..)| *id == model).map(|(_, i, c, o)| (*i, *c, *o))?,
    };
    let uncached = input.saturating_sub(cached) as f64;
    let input_cost = round6(uncached * pin / 1e6);
    let cached_cost = round6(cached as f64 * pcached.unwrap_or(pin) / 1e6);
    let output_cost = round6(output as f64 * pout / 1e6);
    Some(json!({
        "input_cost": input_cost,
        "cached_input_cost": cached_cost,
        "output_cost": output_cost,
        "total_cost": round6(input_cost + cached_cost + output_cost),
        "currency": "USD",
        "estimate": true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_id_with_wide_characters_near_its_end_is_kept_whole() {
        // The date check cut the id 11 bytes from its end, inside a caller's `é`: a panic
        // that dropped the connection without an answer (found by trying it).
        for n in 0..14 {
            let id = format!("a{}", "é".repeat(n));
            assert_eq!(normalize(&format!("openai_responses.{id}")), id);
            assert_eq!(normalize(&format!("{id}-2025-04-14")), id);
        }
        assert_eq!(normalize("gpt-4.1-2025-04-14"), "gpt-4.1");
        assert_eq!(normalize("gpt-4.1-2025-04-1é"), "gpt-4.1-2025-04-1é");
    }

    #[test]
    fn aliases_resolve_to_base_and_effort() {
        let r = resolve("openai_responses.O4-Mini-High");
        assert_eq!(
            (r.base.as_str(), r.preset.clone()),
            ("o4-mini", Some(json!({"effort": "high"}).as_object().cloned().unwrap_or_default()))
        );
        assert!(r.caps.reasoning && r.caps.web_search);
        let r = resolve("gpt-6-astra-pro-max");
        assert_eq!(r.base, "gpt-6-astra");
        assert_eq!(Value::Object(r.preset.unwrap_or_default()), json!({"mode": "pro", "effort": "max"}));
        assert_eq!(resolve("gpt-5.6").base, "gpt-5.6-sol");
        assert_eq!(resolve("gpt-4.1-2025-04-14").base, "gpt-4.1");
        let unknown = resolve("my-proxy-model");
        assert_eq!((unknown.base.as_str(), unknown.caps, unknown.known()), ("my-proxy-model", Caps::default(), false));
        // Not an alias: gpt-5.1 has no "minimal".
        assert!(!resolve("gpt-5.1-minimal").known());
        assert_eq!(resolve("gpt-5-auto").base, "gpt-5-chat-latest");
        assert!(resolve("codex-mini-latest").caps.reasoning);
    }

    #[test]
    fn declared_capabilities_win_over_the_table() {
        let declared = json!({"my-proxy-model": {"tools": true, "reasoning": true}, "gpt-4.1": {"tools": false}});
        let d = declared.as_object();
        let r = resolve_with("my-proxy-model", d);
        assert!(r.known() && r.caps.tools && r.caps.reasoning && !r.caps.verbosity);
        assert!(!resolve_with("gpt-4.1", d).caps.tools);
        assert!(resolve_with("o4-mini", d).caps.reasoning, "ids not declared keep the table's flags");
    }

    #[test]
    fn display_names_follow_the_manifold() {
        assert_eq!(display_name("gpt-5.6-luna-pro"), "GPT 5.6 Luna Pro");
        assert_eq!(display_name("o4-mini-deep-research"), "o4 Mini Deep Research");
        assert_eq!(display_name("gpt-5.6-sol-none"), "GPT 5.6 Sol");
        assert_eq!(display_name("gpt-5.2-xhigh"), "GPT 5.2 XHigh");
        assert_eq!(display_name("chatgpt-4o-latest"), "ChatGPT 4o Latest");
    }

    #[test]
    fn cost_uses_the_served_model_and_cached_rate() {
        let c = cost("gpt-4.1-2025-04-14", None, 1_000_000, 500_000, 100_000).unwrap_or_default();
        assert_eq!(c["input_cost"], json!(1.0));
        assert_eq!(c["cached_input_cost"], json!(0.25));
        assert_eq!(c["output_cost"], json!(0.8));
        assert_eq!(c["total_cost"], json!(2.05));
        let custom = json!({"my-model": {"input": 1.0, "output": 2.0}});
        assert_eq!(cost("my-model", Some(&custom), 1_000_000, 0, 0).unwrap_or_default()["total_cost"], json!(1.0));
        assert!(cost("unknown", None, 1, 0, 1).is_none());
    }
}
