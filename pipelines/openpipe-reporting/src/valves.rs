//! The filter's valves (docs/reporting.md §3). After `pipelines`, `priority` and `ENABLED`,
//! the next fourteen names and defaults are the reference filter's, so an operator's settings
//! carry over (docs/migrating.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_sdk::schemars::JsonSchema;
use sluice_sdk::{FieldError, Secret, Valves};

use crate::interaction::{Gate, Interaction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
pub enum ReportModelAs {
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "base_model_id")]
    BaseModelId,
}

/// Split of entries added on request (no AUTO: the dataset action had none).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
pub enum DatasetSplit {
    TRAIN,
    TEST,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
pub enum DpoSplit {
    TRAIN,
    TEST,
    AUTO,
}

#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(default, deny_unknown_fields)]
pub struct ReportingValves {
    /// Models this filter runs for ("*" = all).
    pub pipelines: Vec<String>,
    /// Order among filters, lowest first. Give it a higher number than a redaction filter.
    pub priority: i64,
    /// Master switch: off makes the filter a pure pass-through.
    pub ENABLED: bool,
    /// OpenPipe project key (read/write). Empty: nothing is captured or queued. Env: OPENPIPE_API_KEY.
    pub OPENPIPE_API_KEY: Secret,
    /// API root; /report and /datasets are appended. Env: OPENPIPE_BASE_URL.
    pub OPENPIPE_BASE_URL: String,
    /// Add tools_used, has_tool_calls and tool_call_count to the metadata.
    pub INCLUDE_TOOL_METRICS: bool,
    /// Add inference_time_ms (turn latency as Open WebUI sees it) to the metadata.
    pub INCLUDE_TIMING_METRICS: bool,
    /// Classify turns (chat_message, function_calling, task names); off reports them as unknown.
    pub INCLUDE_INTERACTION_CLASSIFICATION: bool,
    /// Report ordinary chat turns.
    pub REPORT_CHAT_MESSAGES: bool,
    /// Report Open WebUI's background tasks (title, tags, follow-ups, search queries, ...).
    pub REPORT_SYSTEM_TASKS: bool,
    /// Report turns in which the model called tools.
    pub REPORT_TOOL_INTERACTIONS: bool,
    /// Notice regenerated answers and tag them regenerated_from / regeneration_index.
    pub ENABLE_DPO_DETECTION: bool,
    /// Submit confirmed preference pairs to the DPO dataset.
    pub AUTO_SUBMIT_DPO_PAIRS: bool,
    /// Dataset that receives DPO pairs; found by exact name, created when missing.
    pub DPO_DATASET_NAME: String,
    /// Log ids, sizes and status codes per report (never content or keys).
    pub DEBUG_LOGGING: bool,
    /// JSON object of extra metadata for every report, e.g. {"environment":"production"}.
    pub CUSTOM_METADATA: String,
    /// Timeout of one HTTP attempt to OpenPipe, in seconds (1-120).
    #[schemars(range(min = 1, max = 120))]
    pub TIMEOUT_SECONDS: u64,
    /// Rebuild reasoning and tool calls from Open WebUI's <details> blocks; off sends content verbatim.
    pub PARSE_OPENWEBUI_BLOCKS: bool,
    /// reqPayload.model: Open WebUI's model id, or a workspace model's base model id.
    pub REPORT_MODEL_AS: ReportModelAs,
    /// Hours regenerations and pending DPO pairs are kept (1-720).
    #[schemars(range(min = 1, max = 720))]
    pub DPO_WINDOW_HOURS: u64,
    /// Split of submitted DPO entries; AUTO lets OpenPipe choose.
    pub DPO_SPLIT: DpoSplit,
    /// Hours a report is retried before it moves to the dead letters (1-720).
    #[schemars(range(min = 1, max = 720))]
    pub DELIVERY_MAX_AGE_HOURS: u64,
    /// Seconds an inlet capture waits for its outlet (60-86400).
    #[schemars(range(min = 60, max = 86_400))]
    pub PENDING_TTL_SECONDS: u64,
    /// Largest serialized report in bytes (10000-50000000); larger ones lose images, then long texts.
    #[schemars(range(min = 10_000, max = 50_000_000))]
    pub MAX_REPORT_BYTES: u64,
    /// Most delivery attempts this replica starts per second (1-1000); with several replicas the total is this times their number.
    #[schemars(range(min = 1, max = 1000))]
    pub MAX_ATTEMPTS_PER_SECOND: u32,
    /// Days a reported turn is kept for "add this chat to a dataset" (POST /openpipe_reporting/actions/dataset_add, or `sluice openpipe dataset-add`); 0 keeps none (0-365).
    #[schemars(range(max = 365))]
    pub DATASET_TURNS_KEEP_DAYS: u32,
    /// Dataset a chat is added to when the request names none (the dataset action's DEFAULT_DATASET_NAME).
    pub DEFAULT_DATASET_NAME: String,
    /// Split of the entries added on request: TRAIN or TEST.
    pub DEFAULT_SPLIT: DatasetSplit,
    /// Create the dataset when no dataset of that name exists; off, such entries become dead letters.
    pub AUTO_CREATE_DATASET: bool,
    /// For Open WebUI before 0.10 only: report chats of API callers (/api/chat/completions), which get no outlet there, from the answer this server gave. Leave off on 0.10 and later: they send the outlet, and both would report the turn.
    pub REPORT_API_CHATS_FROM_ANSWERS: bool,
}

impl Default for ReportingValves {
    fn default() -> Self {
        Self {
            pipelines: vec!["*".into()],
            priority: 0,
            ENABLED: true,
            OPENPIPE_API_KEY: Secret::default(),
            OPENPIPE_BASE_URL: "https://api.openpipe.ai/api/v1".into(),
            INCLUDE_TOOL_METRICS: true,
            INCLUDE_TIMING_METRICS: true,
            INCLUDE_INTERACTION_CLASSIFICATION: true,
            REPORT_CHAT_MESSAGES: true,
            REPORT_SYSTEM_TASKS: true,
            REPORT_TOOL_INTERACTIONS: true,
            ENABLE_DPO_DETECTION: true,
            AUTO_SUBMIT_DPO_PAIRS: false,
            DPO_DATASET_NAME: "OpenWebUI DPO Training".into(),
            DEBUG_LOGGING: false,
            CUSTOM_METADATA: "{}".into(),
            TIMEOUT_SECONDS: 10,
            PARSE_OPENWEBUI_BLOCKS: true,
            REPORT_MODEL_AS: ReportModelAs::Id,
            DPO_WINDOW_HOURS: 24,
            DPO_SPLIT: DpoSplit::TRAIN,
            DELIVERY_MAX_AGE_HOURS: 72,
            PENDING_TTL_SECONDS: 3600,
            MAX_REPORT_BYTES: 900_000,
            MAX_ATTEMPTS_PER_SECOND: 50,
            REPORT_API_CHATS_FROM_ANSWERS: false,
            DATASET_TURNS_KEEP_DAYS: 0,
            DEFAULT_DATASET_NAME: String::new(),
            DEFAULT_SPLIT: DatasetSplit::TRAIN,
            AUTO_CREATE_DATASET: true,
        }
    }
}

/// Metadata keys the filter sets itself (§7.3); custom metadata may not use them.
pub const RESERVED_KEYS: &[&str] = &[
    "source",
    "capture",
    "interaction_type",
    "user_id",
    "chat_id",
    "message_id",
    "model_id",
    "inference_time_ms",
    "tools_used",
    "has_tool_calls",
    "tool_call_count",
    "step_index",
    "step_count",
    "revision",
    "regenerated_from",
    "regeneration_index",
    "images_omitted",
    "truncated",
    "steps_omitted",
];

/// Parses `CUSTOM_METADATA` into flat string values, or says what is wrong (§3).
pub fn custom_metadata(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let Value::Object(map) = value else { return Err("must be a JSON object such as {\"team\":\"search\"}".into()) };
    if map.len() > 32 {
        return Err(format!("has {} keys; at most 32 are allowed", map.len()));
    }
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let key_ok = (1..=64).contains(&key.len())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '-'));
        if !key_ok {
            return Err(format!("key {key:?} must be 1-64 characters of letters, digits, _ . $ -"));
        }
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(format!("key {key:?} is set by the filter itself and cannot be overridden"));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("value of {key:?} must be a string, number, boolean or null")),
        };
        if text.chars().count() > 512 {
            return Err(format!("value of {key:?} is longer than 512 characters"));
        }
        out.push((key, text));
    }
    Ok(out)
}

impl Valves for ReportingValves {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(e) = sluice_sdk::valves::check_url(&self.OPENPIPE_BASE_URL, true) {
            errors
                .push(FieldError::new("OPENPIPE_BASE_URL", format!("{e}; for example https://api.openpipe.ai/api/v1")));
        }
        if let Err(e) = sluice_sdk::valves::check_header_value(self.OPENPIPE_API_KEY.expose()) {
            errors.push(FieldError::new("OPENPIPE_API_KEY", e));
        }
        if let Err(e) = custom_metadata(&self.CUSTOM_METADATA) {
            errors.push(FieldError::new("CUSTOM_METADATA", e));
        }
        let name_len = self.DPO_DATASET_NAME.chars().count();
        if !(1..=200).contains(&name_len) || self.DPO_DATASET_NAME.trim().is_empty() {
            errors.push(FieldError::new("DPO_DATASET_NAME", "must be 1-200 characters"));
        }
        if self.pipelines.iter().any(|p| p.trim().is_empty()) {
            errors.push(FieldError::new("pipelines", "model ids must be non-empty"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn titles() -> &'static [(&'static str, &'static str)] {
        &[
            ("OPENPIPE_API_KEY", "OpenPipe API Key"),
            ("OPENPIPE_BASE_URL", "OpenPipe Base URL"),
            ("ENABLE_DPO_DETECTION", "DPO Detection"),
            ("AUTO_SUBMIT_DPO_PAIRS", "Auto-submit DPO Pairs"),
            ("DPO_DATASET_NAME", "DPO Dataset Name"),
            ("CUSTOM_METADATA", "Custom Metadata (JSON)"),
            ("PARSE_OPENWEBUI_BLOCKS", "Parse Open WebUI Blocks"),
            ("DPO_WINDOW_HOURS", "DPO Window (hours)"),
            ("DPO_SPLIT", "DPO Split"),
            ("DELIVERY_MAX_AGE_HOURS", "Delivery Max Age (hours)"),
            ("PENDING_TTL_SECONDS", "Pending Capture TTL (seconds)"),
            ("MAX_REPORT_BYTES", "Max Report Size (bytes)"),
            ("REPORT_API_CHATS_FROM_ANSWERS", "Report API Chats From Answers (Open WebUI < 0.10)"),
            ("DATASET_TURNS_KEEP_DAYS", "Keep Reported Turns For Datasets (days)"),
        ]
    }

    fn env_aliases() -> &'static [(&'static str, &'static str)] {
        &[("OPENPIPE_API_KEY", "OPENPIPE_API_KEY"), ("OPENPIPE_BASE_URL", "OPENPIPE_BASE_URL")]
    }

    fn sent_to() -> &'static [(&'static str, &'static str)] {
        &[("OPENPIPE_API_KEY", "OPENPIPE_BASE_URL")]
    }
}

impl ReportingValves {
    /// The validated custom metadata (validation ran before these valves went live).
    pub fn custom(&self) -> Vec<(String, String)> {
        custom_metadata(&self.CUSTOM_METADATA).unwrap_or_default()
    }

    /// Whether anything should be captured or reported at all.
    pub fn active(&self) -> bool {
        self.ENABLED && !self.OPENPIPE_API_KEY.is_empty()
    }

    pub fn base_url(&self) -> &str {
        self.OPENPIPE_BASE_URL.trim_end_matches('/')
    }

    /// Selective reporting (§6.2): whether turns of this `interaction_type` are reported.
    pub fn reports(&self, interaction: &Interaction) -> bool {
        match interaction.gate() {
            Gate::Chat => self.REPORT_CHAT_MESSAGES,
            Gate::Tools => self.REPORT_TOOL_INTERACTIONS,
            Gate::Tasks => self.REPORT_SYSTEM_TASKS,
            Gate::Always => true,
        }
    }

    /// `reqPayload.model` per `REPORT_MODEL_AS`: Open WebUI's id, or a workspace model's base.
    pub fn reported_model(&self, model_id: &str, base_model_id: Option<&str>) -> String {
        match (self.REPORT_MODEL_AS, base_model_id) {
            (ReportModelAs::BaseModelId, Some(base)) => base.to_string(),
            _ => model_id.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn custom_metadata_must_be_a_flat_object_without_reserved_keys() {
        assert_eq!(custom_metadata(r#"{"environment":"production","n":3,"on":true,"x":null}"#).unwrap().len(), 3);
        assert!(custom_metadata("").unwrap().is_empty());
        for bad in ["[1]", "\"x\"", "{", r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#, r#"{"chat_id":"x"}"#, r#"{"bad key":1}"#] {
            assert!(custom_metadata(bad).is_err(), "{bad} accepted");
        }
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(513));
        assert!(custom_metadata(&long).is_err());
    }

    #[test]
    fn selective_reporting_and_the_reported_model() {
        let v = ReportingValves { REPORT_SYSTEM_TASKS: false, ..Default::default() };
        let task = |name: &str| Interaction::Task(name.into());
        assert!(v.reports(&Interaction::ChatMessage) && v.reports(&Interaction::FunctionCalling));
        assert!(v.reports(&task("memory_extraction")) && v.reports(&Interaction::Unknown));
        assert!(!v.reports(&task("title_generation")));
        assert_eq!(v.reported_model("my-assistant", Some("gpt-4o")), "my-assistant");
        let v = ReportingValves { REPORT_MODEL_AS: ReportModelAs::BaseModelId, ..Default::default() };
        assert_eq!(v.reported_model("my-assistant", Some("gpt-4o")), "gpt-4o");
        assert_eq!(v.reported_model("gpt-4o-mini", None), "gpt-4o-mini");
    }

    #[test]
    fn defaults_are_valid_and_urls_are_checked() {
        // Ranges are declared on the fields (`#[schemars(range)]`) and checked by the server
        // for every value it accepts (tests/api/cli.rs, valves.rs).
        assert!(ReportingValves::default().validate().is_ok());
        let v = ReportingValves { OPENPIPE_BASE_URL: "ftp://x".into(), ..Default::default() };
        let errors = v.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["OPENPIPE_BASE_URL"]);
    }
}
