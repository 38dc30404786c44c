use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{web, HttpResponse};
use serde::{Serialize, Serializer};
use serde_json::Value;
use sluice_sdk::{FilterTargets, PipelineKind};

use sluice_sdk::clock::unix_secs;

use crate::error::ApiError;
use crate::registry::LiveRegistry;

/// One model entry, serialised straight from borrowed fields in the reference's key order:
/// building a `serde_json::Value` per entry (a map and an allocation per key) was most of the
/// route's time in the profile.
#[derive(Serialize)]
struct Entry<'a> {
    id: Joined<'a>,
    name: Joined<'a>,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    pipeline: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a Value>,
}

/// Two strings written as one JSON string (`<manifold>.<sub-model>`), without building it.
struct Joined<'a>(&'a str, &'static str, &'a str);

impl Serialize for Joined<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}{}", self.0, self.1, self.2))
    }
}

impl<'a> From<&'a str> for Joined<'a> {
    fn from(one: &'a str) -> Self {
        Joined(one, "", "")
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Kind {
    Pipe {
        valves: bool,
    },
    /// Every filter entry carries both, or Open WebUI fails every chat
    /// (docs/open-webui-client.md §1.5).
    Filter {
        pipelines: Vec<String>,
        priority: i64,
        valves: bool,
    },
    Manifold {
        valves: bool,
    },
}

#[derive(Serialize)]
struct List<'a> {
    data: Vec<Entry<'a>>,
    object: &'static str,
    pipelines: bool,
}

/// `GET /models` (docs/protocol.md §5.2): one entry per pipe and filter, one per manifold
/// sub-model, and `"pipelines": true`, which is how Open WebUI recognises a Pipelines server.
pub async fn list_models(live: web::Data<LiveRegistry>) -> Result<HttpResponse, ApiError> {
    // The last list's size: the answer is written into one buffer, not grown step by step.
    static LAST_LEN: AtomicUsize = AtomicUsize::new(1024);
    let registry = live.load();
    let created = unix_secs();
    let subs: Vec<_> = registry
        .modules()
        .iter()
        .map(|m| if m.kind() == PipelineKind::Manifold { m.pipeline.sub_models() } else { Vec::new() })
        .collect();
    let mut data = Vec::new();
    for (module, subs) in registry.modules().iter().zip(&subs) {
        let valves = module.valves.is_some();
        let id = module.id();
        let name = module.pipeline.name();
        let entry =
            |id, name, pipeline, info| Entry { id, name, object: "model", created, owned_by: "openai", pipeline, info };
        match module.kind() {
            PipelineKind::Pipe => data.push(entry(id.into(), name.into(), Kind::Pipe { valves }, None)),
            PipelineKind::Filter => {
                let FilterTargets { pipelines, priority } = module.pipeline.targets();
                data.push(entry(id.into(), name.into(), Kind::Filter { pipelines, priority, valves }, None));
            }
            PipelineKind::Manifold => {
                for sub in subs {
                    data.push(entry(
                        Joined(id, ".", &sub.id),
                        Joined(name, "", &sub.name),
                        Kind::Manifold { valves },
                        sub.info.as_ref(),
                    ));
                }
            }
        }
    }
    let mut body = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed) + 256);
    serde_json::to_writer(&mut body, &List { data, object: "list", pipelines: true })
        .map_err(|e| ApiError::Internal(format!("the model list could not be written: {e}")))?;
    LAST_LEN.store(body.len(), Ordering::Relaxed);
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}
