//! The smallest useful pipeline, written as docs/writing-a-pipeline.md explains: a pipe named
//! `word_count` that answers with the number of words in the user's last message. One valve,
//! a streamed answer with a status line, an error for an empty message.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_sdk::schemars::JsonSchema;
use sluice_sdk::{
    async_trait, DynValves, FieldError, PipeEvent, PipeRequest, PipeStream, Pipeline, PipelineError, PipelineKind,
    Valves, ValvesCell,
};

/// The module id: the model Open WebUI lists, `valves/word_count.toml`.
pub const PIPELINE_ID: &str = "word_count";

/// The valves: defaults here, overridden by the file and the environment
/// (`SLUICE_VALVES__WORD_COUNT__LABEL`). Doc comments become the editor's help text.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(default, deny_unknown_fields)]
pub struct WordCountValves {
    /// What the answer starts with.
    pub LABEL: String,
    /// Count only words at least this long (1-100).
    pub MIN_LENGTH: u32,
}

impl Default for WordCountValves {
    fn default() -> Self {
        WordCountValves { LABEL: "Words:".into(), MIN_LENGTH: 1 }
    }
}

impl Valves for WordCountValves {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if !(1..=100).contains(&self.MIN_LENGTH) {
            return Err(vec![FieldError::new("MIN_LENGTH", "must be between 1 and 100")]);
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct WordCount {
    valves: ValvesCell<WordCountValves>,
}

#[async_trait]
impl Pipeline for WordCount {
    fn id(&self) -> &str {
        PIPELINE_ID
    }

    fn name(&self) -> &str {
        "Word count"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Pipe
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        let valves = self.valves.get();
        let text = match request.user_message() {
            Some(Value::String(text)) => text,
            _ => String::new(),
        };
        if text.trim().is_empty() {
            // Before the answer starts, an error is an HTTP status with this message.
            return Err(PipelineError::bad_request("there is nothing to count: the last user message is empty"));
        }
        let min = valves.MIN_LENGTH as usize;
        let words = text.split_whitespace().filter(|w| w.chars().count() >= min).count();
        let events = vec![
            PipeEvent::status("Counting…", false),
            PipeEvent::text(format!("{} ", valves.LABEL)),
            PipeEvent::text(words.to_string()),
            PipeEvent::status("Counted", true),
        ];
        Ok(futures_util::stream::iter(events).boxed())
    }
}
