use actix_web::{web, HttpResponse};
use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use sluice_sdk::{FilterTargets, PipelineKind};

use sluice_sdk::clock::unix_secs;

use crate::registry::LiveRegistry;

/// One model entry, serialised straight from borrowed fields in the reference's key order:
/// building a `serde_json::Value` per entry (a map and an allocation per key) was most of the
/// route's time in the profile.
#[derive(Serialize)]
struct Entry<'a> {
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    pipeline: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Value>,
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
pub async fn list_models(live: web::Data<LiveRegistry>) -> HttpResponse {
    let registry = live.load();
    let created = unix_secs();
    let mut data = Vec::new();
    for module in registry.modules() {
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
                for sub in module.pipeline.sub_models() {
                    data.push(entry(
                        format!("{id}.{}", sub.id).into(),
                        format!("{name}{}", sub.name).into(),
                        Kind::Manifold { valves },
                        sub.info,
                    ));
                }
            }
        }
    }
    HttpResponse::Ok().json(List { data, object: "list", pipelines: true })
}
