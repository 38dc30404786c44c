//! The manifold's valves (docs/manifold.md §2.2). Names follow the community manifold
//! where the meaning is the same.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_sdk::schemars::JsonSchema;
use sluice_sdk::{FieldError, Secret, Valves};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum ReasoningSummary {
    Auto,
    Concise,
    Detailed,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "snake_case")]
pub enum ReasoningDisplay {
    ReasoningContent,
    Status,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum PersistReasoning {
    Response,
    Conversation,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum ContextSize {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    Auto,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum ServiceTier {
    Auto,
    Default,
    Flex,
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum ChatLogLevel {
    Off,
    Info,
    Debug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum CacheKeyMode {
    Chat,
    User,
    None,
}

#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(default, deny_unknown_fields)]
pub struct ResponsesValves {
    /// Upstream base URL; `/responses` and `/models` are appended. Env: OPENAI_API_BASE_URL.
    pub BASE_URL: String,
    /// OpenAI API key. Env: OPENAI_API_KEY. Never logged or shown in clear.
    pub API_KEY: Secret,
    /// Sent as the OpenAI-Organization header when set.
    pub ORGANIZATION: Option<String>,
    /// Sent as the OpenAI-Project header when set.
    pub PROJECT: Option<String>,
    /// Models offered in Open WebUI, comma-separated. Aliases such as o4-mini-high pick a base model and a reasoning effort.
    pub MODEL_ID: Vec<String>,
    /// Hide listed models the upstream does not serve (GET /models); aliases follow their base model.
    pub FETCH_MODELS: bool,
    /// How long the fetched model list is kept, in seconds (at least 60).
    #[schemars(range(min = 60))]
    pub MODEL_FETCH_TTL_SECONDS: u64,
    /// Reasoning summaries on models that support them (may need a verified organisation).
    pub REASONING_SUMMARY: ReasoningSummary,
    /// How summaries reach Open WebUI: its collapsible reasoning block, status lines, or not at all.
    pub REASONING_DISPLAY: ReasoningDisplay,
    /// Keep encrypted reasoning: within one answer across tool calls (response), also across turns (conversation), or not.
    pub PERSIST_REASONING_TOKENS: PersistReasoning,
    /// Replay earlier function calls and their outputs in later turns.
    pub PERSIST_TOOL_RESULTS: bool,
    /// Let the model call several tools at once.
    pub PARALLEL_TOOL_CALLS: bool,
    /// Send function tools in strict mode.
    pub ENABLE_STRICT_TOOL_CALLING: bool,
    /// Upper bound of hosted tool calls in one response (max_tool_calls); empty: OpenAI's default.
    #[schemars(range(min = 1))]
    pub MAX_TOOL_CALLS: Option<u32>,
    /// Always offer OpenAI's hosted web search on models that support it.
    pub ENABLE_WEB_SEARCH_TOOL: bool,
    /// Use OpenAI's web search (instead of Open WebUI's) when the user switches Web Search on.
    pub WEB_SEARCH_FROM_TOGGLE: bool,
    /// How much search context the model reads: more is better grounded, slower and costlier.
    pub WEB_SEARCH_CONTEXT_SIZE: ContextSize,
    /// JSON object for web_search user_location, e.g. {"type":"approximate","country":"US"}.
    pub WEB_SEARCH_USER_LOCATION: Option<String>,
    /// Offer OpenAI's hosted image_generation tool on models that support it.
    pub ENABLE_IMAGE_GENERATION: bool,
    /// JSON object or list of {server_label, server_url, require_approval?, allowed_tools?, headers?}: remote MCP tools.
    pub REMOTE_MCP_SERVERS_JSON: Option<String>,
    /// When the conversation outgrows the context window: drop its oldest items (auto) or fail (disabled).
    pub TRUNCATION: Truncation,
    /// Let OpenAI store responses (30 days). Off keeps data out of OpenAI's store; replay relies on sluice's own store.
    pub STORE: bool,
    /// OpenAI's processing tier: flex is cheaper and slower, priority faster and dearer; empty: the project's default.
    pub SERVICE_TIER: Option<ServiceTier>,
    /// prompt_cache_key from the chat id, the user id, or not at all.
    pub PROMPT_CACHE_KEY_MODE: CacheKeyMode,
    /// Send a SHA-256 of the Open WebUI user id as safety_identifier.
    pub SAFETY_IDENTIFIER: bool,
    /// Drop temperature/top_p on reasoning models, which refuse them.
    pub DROP_SAMPLING_FOR_REASONING: bool,
    /// Status lines (thinking, searching) above the answer.
    pub STATUS_UPDATES: bool,
    /// Add an estimated USD cost to the usage.
    pub SHOW_USAGE_COST: bool,
    /// JSON {"<base model>": {"input": x, "cached_input": y, "output": z}} in USD per 1M tokens.
    pub CUSTOM_MODEL_PRICING_JSON: Option<String>,
    /// JSON {"<model id>": {"tools": true, "reasoning": true, "summary": true, "web_search": false, "image": false, "verbosity": false}}: what a model the built-in table does not know (a proxy, a newer model) accepts, or corrections to the table. A missing name is false.
    pub MODEL_CAPABILITIES_JSON: Option<String>,
    /// Days the items behind an answer (encrypted reasoning, tool calls) stay replayable; 0 keeps none.
    pub ITEM_STORE_TTL_DAYS: u32,
    /// Seconds to wait for a connection to the upstream.
    #[schemars(range(min = 1, max = 300))]
    pub REQUEST_TIMEOUT_CONNECT_S: u64,
    /// Longest silence allowed between upstream events, in seconds (at most a day: a deadline
    /// further away than the clock can hold would stop every chat).
    #[schemars(range(min = 1, max = 86400))]
    pub STREAM_IDLE_TIMEOUT_S: u64,
    /// Retries before the answer starts (429, 5xx, connection errors).
    #[schemars(range(max = 10))]
    pub MAX_RETRIES: u32,
    /// Add a log of what the pipe did (model, input, tools, replay, OpenAI's answers, retries, usage) to each streamed answer, as a "Logs" citation: off, info, or debug for more. It never holds message text or keys.
    pub LOG_LEVEL: ChatLogLevel,
    /// Show that log only to these Open WebUI users (ids or e-mails), comma-separated; empty: to everyone while LOG_LEVEL is on.
    pub LOG_USERS: Option<Vec<String>>,
    /// When OpenAI cannot be reached, show Open WebUI admins the technical detail (the URL, the network error) in the chat; everyone else gets a short message, and the log has it all.
    pub ERROR_DETAILS_FOR_ADMINS: bool,
    /// Open WebUI's address as sluice reaches it (for example http://open-webui:8080). With OPEN_WEBUI_API_KEY, a file attached in a chat is fetched from it and sent to models that read files: a PDF as a file, an image as an image. Empty: the model gets Open WebUI's extracted text only.
    pub OPEN_WEBUI_URL: Option<String>,
    /// An API key of an Open WebUI admin (Settings > Account > API keys), which may read every user's files. Never logged or shown in clear.
    pub OPEN_WEBUI_API_KEY: Secret,
    /// Largest attached file sent to the model, in MB; a larger one keeps Open WebUI's extracted text only.
    #[schemars(range(min = 1, max = 50))]
    pub FILE_MAX_MB: u64,
    /// Seconds allowed to fetch one attached file from Open WebUI.
    #[schemars(range(min = 1, max = 120))]
    pub FILE_FETCH_TIMEOUT_S: u64,
}

impl Default for ResponsesValves {
    fn default() -> Self {
        Self {
            BASE_URL: "https://api.openai.com/v1".into(),
            API_KEY: Secret::default(),
            ORGANIZATION: None,
            PROJECT: None,
            MODEL_ID: [
                "gpt-5.6-sol",
                "gpt-5.6-sol-high",
                "gpt-5.6-terra",
                "gpt-5-mini",
                "gpt-4.1",
                "o4-mini",
                "o4-mini-high",
            ]
            .map(String::from)
            .to_vec(),
            FETCH_MODELS: true,
            MODEL_FETCH_TTL_SECONDS: 600,
            REASONING_SUMMARY: ReasoningSummary::Disabled,
            REASONING_DISPLAY: ReasoningDisplay::ReasoningContent,
            PERSIST_REASONING_TOKENS: PersistReasoning::Response,
            PERSIST_TOOL_RESULTS: true,
            PARALLEL_TOOL_CALLS: true,
            ENABLE_STRICT_TOOL_CALLING: true,
            MAX_TOOL_CALLS: None,
            ENABLE_WEB_SEARCH_TOOL: false,
            WEB_SEARCH_FROM_TOGGLE: true,
            WEB_SEARCH_CONTEXT_SIZE: ContextSize::Medium,
            WEB_SEARCH_USER_LOCATION: None,
            ENABLE_IMAGE_GENERATION: false,
            REMOTE_MCP_SERVERS_JSON: None,
            TRUNCATION: Truncation::Auto,
            STORE: false,
            SERVICE_TIER: None,
            PROMPT_CACHE_KEY_MODE: CacheKeyMode::Chat,
            SAFETY_IDENTIFIER: true,
            DROP_SAMPLING_FOR_REASONING: true,
            STATUS_UPDATES: true,
            SHOW_USAGE_COST: true,
            CUSTOM_MODEL_PRICING_JSON: None,
            MODEL_CAPABILITIES_JSON: None,
            ITEM_STORE_TTL_DAYS: 30,
            REQUEST_TIMEOUT_CONNECT_S: 30,
            STREAM_IDLE_TIMEOUT_S: 900,
            MAX_RETRIES: 2,
            LOG_LEVEL: ChatLogLevel::Off,
            LOG_USERS: None,
            ERROR_DETAILS_FOR_ADMINS: false,
            OPEN_WEBUI_URL: None,
            OPEN_WEBUI_API_KEY: Secret::default(),
            FILE_MAX_MB: 10,
            FILE_FETCH_TIMEOUT_S: 20,
        }
    }
}

fn json_of(field: &str, text: &Option<String>, errors: &mut Vec<FieldError>) -> Option<Value> {
    let text = text.as_deref().filter(|t| !t.trim().is_empty())?;
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(FieldError::new(field, format!("is not valid JSON: {e}")));
            None
        }
    }
}

impl ResponsesValves {
    pub fn user_location(&self) -> Option<Value> {
        json_of("", &self.WEB_SEARCH_USER_LOCATION, &mut Vec::new())
    }

    pub fn mcp_servers(&self) -> Vec<Value> {
        match json_of("", &self.REMOTE_MCP_SERVERS_JSON, &mut Vec::new()) {
            Some(Value::Array(list)) => list,
            Some(obj @ Value::Object(_)) => vec![obj],
            _ => Vec::new(),
        }
    }

    /// Every secret these valves hold: the API key and the MCP servers' tokens. Texts from the
    /// upstream pass through [`Self::redact`] before a user or a log sees them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = vec![self.API_KEY.expose().to_string(), self.OPEN_WEBUI_API_KEY.expose().to_string()];
        for server in self.mcp_servers() {
            sluice_sdk::secret::texts_under(&server, MCP_SECRET_KEYS, false, &mut out);
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// `error` with every secret of these valves removed from its message: an upstream (or a
    /// proxy in front of it) may quote the `Authorization` header it was sent.
    pub fn redact(&self, error: sluice_sdk::PipelineError) -> sluice_sdk::PipelineError {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        error.redacted(&refs)
    }

    /// [`Self::redact`] for a text of the upstream's that is not an error yet.
    pub fn redact_text(&self, text: &str) -> String {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        sluice_sdk::secret::redact(text, &refs).into_owned()
    }

    /// `MODEL_CAPABILITIES_JSON`, parsed (it was validated when it went live).
    pub fn declared_capabilities(&self) -> Option<serde_json::Map<String, Value>> {
        match json_of("", &self.MODEL_CAPABILITIES_JSON, &mut Vec::new()) {
            Some(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    pub fn custom_pricing(&self) -> Option<Value> {
        json_of("", &self.CUSTOM_MODEL_PRICING_JSON, &mut Vec::new())
    }
}

/// The name of a query parameter of `url` that looks like a credential (`api_key`, `token`,
/// `sig`, ...), if there is one. Names only: a value is never quoted.
fn credential_in_query(url: &str) -> Option<String> {
    const WORDS: &[&str] = &["key", "token", "secret", "pass", "auth", "sig", "credential", "session"];
    let url = reqwest::Url::parse(url).ok()?;
    let name = url.query_pairs().map(|(name, _)| name.into_owned()).find(|name| {
        let name = name.to_ascii_lowercase();
        WORDS.iter().any(|w| name.contains(w))
    })?;
    Some(name.chars().take(40).collect())
}

/// Keys of an MCP server entry whose values are secrets.
pub const MCP_SECRET_KEYS: &[&str] = &["headers", "authorization"];

impl Valves for ResponsesValves {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        // These become HTTP headers of every request.
        for (field, value) in [
            ("API_KEY", Some(self.API_KEY.expose())),
            ("OPEN_WEBUI_API_KEY", Some(self.OPEN_WEBUI_API_KEY.expose())),
            ("ORGANIZATION", self.ORGANIZATION.as_deref()),
            ("PROJECT", self.PROJECT.as_deref()),
        ] {
            if let Some(Err(e)) = value.map(sluice_sdk::valves::check_header_value) {
                errors.push(FieldError::new(field, e));
            }
        }
        if let Some(url) = self.OPEN_WEBUI_URL.as_deref().filter(|u| !u.trim().is_empty()) {
            if let Err(e) = sluice_sdk::valves::check_url(url, true) {
                errors.push(FieldError::new("OPEN_WEBUI_URL", format!("{e}; for example http://open-webui:8080")));
            }
        }
        if let Err(e) = sluice_sdk::valves::check_url(&self.BASE_URL, true) {
            errors.push(FieldError::new("BASE_URL", format!("{e}; for example https://api.openai.com/v1")));
        }
        if self.MODEL_ID.iter().any(|m| m.trim().is_empty() || m.contains(char::is_whitespace)) {
            errors.push(FieldError::new("MODEL_ID", "model ids must be non-empty and contain no spaces"));
        }
        if let Some(v) = json_of("WEB_SEARCH_USER_LOCATION", &self.WEB_SEARCH_USER_LOCATION, &mut errors) {
            if !v.is_object() {
                errors.push(FieldError::new("WEB_SEARCH_USER_LOCATION", "must be a JSON object"));
            }
        }
        if let Some(v) = json_of("REMOTE_MCP_SERVERS_JSON", &self.REMOTE_MCP_SERVERS_JSON, &mut errors) {
            let list = match v {
                Value::Array(list) => list,
                obj @ Value::Object(_) => vec![obj],
                _ => {
                    errors
                        .push(FieldError::new("REMOTE_MCP_SERVERS_JSON", "must be a JSON object or a list of objects"));
                    Vec::new()
                }
            };
            for (i, server) in list.iter().enumerate() {
                let has = |k: &str| server.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                if !has("server_label") || !has("server_url") {
                    errors.push(FieldError::new(
                        "REMOTE_MCP_SERVERS_JSON",
                        format!("server {i} needs server_label and server_url"),
                    ));
                } else if let Some(url) = server.get("server_url").and_then(Value::as_str) {
                    // Credentials belong in `headers`/`authorization`: masked by GET /valves,
                    // kept out of errors, bound to BASE_URL. In the URL they were shown in clear.
                    let problem = match sluice_sdk::valves::check_url(url, false) {
                        Err(e) if e.starts_with("must not contain credentials") => {
                            Some("server_url must not contain credentials; put them in headers or authorization".into())
                        }
                        Err(e) => Some(format!("server_url {e}")),
                        Ok(()) => credential_in_query(url).map(|name| {
                            format!(
                                "server_url carries what looks like a credential in its query ({name}); put it in \
                                 headers or authorization"
                            )
                        }),
                    };
                    if let Some(problem) = problem {
                        errors.push(FieldError::new("REMOTE_MCP_SERVERS_JSON", format!("server {i}: {problem}")));
                    }
                }
                let headers = server.get("headers");
                if headers.is_some_and(|h| !h.is_object()) {
                    errors.push(FieldError::new(
                        "REMOTE_MCP_SERVERS_JSON",
                        format!("server {i}: headers must be an object"),
                    ));
                }
                let headers = headers.and_then(Value::as_object).into_iter().flatten();
                let tokens: Vec<&Value> = headers.map(|(_, v)| v).chain(server.get("authorization")).collect();
                // A token that is not text is masked and redacted all the same, but OpenAI takes
                // only text: said here rather than by the upstream.
                if tokens.iter().any(|t| !t.is_string()) {
                    errors.push(FieldError::new(
                        "REMOTE_MCP_SERVERS_JSON",
                        format!("server {i}: header values and authorization must be strings"),
                    ));
                } else if tokens
                    .iter()
                    .filter_map(|t| t.as_str())
                    .any(|t| sluice_sdk::valves::check_header_value(t).is_err())
                {
                    errors.push(FieldError::new(
                        "REMOTE_MCP_SERVERS_JSON",
                        format!("server {i}: header values must be printable ASCII without line breaks"),
                    ));
                }
            }
        }
        if let Some(v) = json_of("MODEL_CAPABILITIES_JSON", &self.MODEL_CAPABILITIES_JSON, &mut errors) {
            let names = crate::models::CAPABILITY_NAMES;
            let ok = v.as_object().is_some_and(|m| {
                m.values().all(|flags| {
                    flags
                        .as_object()
                        .is_some_and(|f| f.iter().all(|(k, v)| names.contains(&k.as_str()) && v.is_boolean()))
                })
            });
            if !ok {
                errors.push(FieldError::new(
                    "MODEL_CAPABILITIES_JSON",
                    format!("must map model ids to objects of booleans named {}", names.join(", ")),
                ));
            }
        }
        if let Some(v) = json_of("CUSTOM_MODEL_PRICING_JSON", &self.CUSTOM_MODEL_PRICING_JSON, &mut errors) {
            let ok = v.as_object().is_some_and(|m| {
                m.values().all(|p| {
                    p.get("input").is_some_and(Value::is_number) && p.get("output").is_some_and(Value::is_number)
                })
            });
            if !ok {
                errors.push(FieldError::new(
                    "CUSTOM_MODEL_PRICING_JSON",
                    "must map model ids to {\"input\": number, \"output\": number, \"cached_input\"?: number}",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn titles() -> &'static [(&'static str, &'static str)] {
        &[
            ("BASE_URL", "Base URL"),
            ("API_KEY", "API Key"),
            ("OPEN_WEBUI_URL", "Open WebUI URL (for attached files)"),
            ("OPEN_WEBUI_API_KEY", "Open WebUI API Key (an admin's)"),
            ("FILE_MAX_MB", "Largest Attached File (MB)"),
            ("FILE_FETCH_TIMEOUT_S", "Attached File Fetch Timeout (seconds)"),
            ("MODEL_ID", "Model IDs"),
            ("MODEL_FETCH_TTL_SECONDS", "Model List Refresh (seconds)"),
            ("ENABLE_STRICT_TOOL_CALLING", "Strict Tool Calling"),
            ("MAX_TOOL_CALLS", "Max Hosted Tool Calls"),
            ("ENABLE_WEB_SEARCH_TOOL", "Web Search Tool"),
            ("WEB_SEARCH_USER_LOCATION", "Web Search User Location (JSON)"),
            ("ENABLE_IMAGE_GENERATION", "Image Generation"),
            ("REMOTE_MCP_SERVERS_JSON", "Remote MCP Servers (JSON)"),
            ("CUSTOM_MODEL_PRICING_JSON", "Custom Model Pricing (JSON)"),
            ("MODEL_CAPABILITIES_JSON", "Model Capabilities (JSON)"),
            ("LOG_USERS", "Log Users (ids or e-mails)"),
            ("ITEM_STORE_TTL_DAYS", "Replay Records Kept (days)"),
            ("REQUEST_TIMEOUT_CONNECT_S", "Connect Timeout (seconds)"),
            ("STREAM_IDLE_TIMEOUT_S", "Stream Idle Timeout (seconds)"),
        ]
    }

    fn env_aliases() -> &'static [(&'static str, &'static str)] {
        &[("BASE_URL", "OPENAI_API_BASE_URL"), ("API_KEY", "OPENAI_API_KEY")]
    }

    fn sent_to() -> &'static [(&'static str, &'static str)] {
        // The MCP servers' tokens travel to BASE_URL inside each request's `tools` (OpenAI
        // calls the servers): a new BASE_URL must not receive them unless they are given again.
        &[("API_KEY", "BASE_URL"), ("REMOTE_MCP_SERVERS_JSON", "BASE_URL"), ("OPEN_WEBUI_API_KEY", "OPEN_WEBUI_URL")]
    }

    /// MCP servers carry their own tokens: `headers` (any header) and `authorization`.
    fn nested_secrets() -> &'static [(&'static str, &'static [&'static str])] {
        &[("REMOTE_MCP_SERVERS_JSON", MCP_SECRET_KEYS)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mcp_problems(servers: Value) -> Vec<String> {
        let valves = ResponsesValves { REMOTE_MCP_SERVERS_JSON: Some(servers.to_string()), ..Default::default() };
        match valves.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.message).collect(),
        }
    }

    /// Tokens belong in `headers`/`authorization` (masked, bound to BASE_URL): a token in the
    /// URL was shown in clear by GET /valves (found by a reviewer).
    #[test]
    fn mcp_credentials_in_the_url_are_refused_without_quoting_them() {
        let server = |url: &str| json!([{"server_label": "s", "server_url": url}]);
        for url in [
            "https://mcp.example.com/sse?api_key=QUERYSECRET123",
            "https://mcp.example.com/sse?x=1&Access_Token=QUERYSECRET123",
            "https://user:QUERYSECRET123@mcp.example.com/sse",
        ] {
            let problems = mcp_problems(server(url));
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert!(problems[0].contains("put it") || problems[0].contains("put them"), "{problems:?}");
            assert!(!problems[0].contains("QUERYSECRET123"), "{problems:?}");
        }
        assert!(mcp_problems(server("https://mcp.example.com/sse?transport=sse&v=2")).is_empty());
        let numeric = json!([{"server_label": "s", "server_url": "https://m.example", "headers": {"X-Tok": 1234567}}]);
        assert_eq!(mcp_problems(numeric), ["server 0: header values and authorization must be strings"]);
        let headers = json!([{"server_label": "s", "server_url": "https://m.example", "headers": "Bearer x"}]);
        assert_eq!(mcp_problems(headers), ["server 0: headers must be an object"]);
    }
}
