use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use sluice_sdk::PipelineKind;

use crate::registry::Module;
use crate::sse::unix_now;
use crate::startup::AppState;

/// A filter's targets and priority, read from its `pipelines` and `priority` valves. Every
/// filter entry carries both, or Open WebUI fails every chat (open-webui-client.md §1.5).
fn routing(module: &Module) -> (Value, Value) {
    let snapshot = module.valves.as_ref().map(|v| v.snapshot());
    let field = |name: &str| snapshot.as_ref().and_then(|s| s.get(name).cloned());
    let pipelines = match field("pipelines") {
        Some(Value::Array(list)) => Value::Array(list.into_iter().filter(Value::is_string).collect()),
        _ => Value::Array(Vec::new()),
    };
    let priority = match field("priority") {
        Some(Value::Number(n)) => Value::Number(n),
        _ => Value::from(0),
    };
    (pipelines, priority)
}

fn entry(id: String, name: String, created: u64, pipeline: Value, info: Option<Value>) -> Value {
    let mut map = Map::new();
    map.insert("id".into(), id.into());
    map.insert("name".into(), name.into());
    map.insert("object".into(), "model".into());
    map.insert("created".into(), created.into());
    map.insert("owned_by".into(), "openai".into());
    map.insert("pipeline".into(), pipeline);
    if let Some(info) = info {
        map.insert("info".into(), info);
    }
    Value::Object(map)
}

/// `GET /models` (pipelines-protocol.md §5.2): one entry per pipe and filter, one per manifold
/// sub-model, and `"pipelines": true`, which is how Open WebUI recognises a Pipelines server.
pub async fn list_models(state: web::Data<AppState>) -> HttpResponse {
    let created = unix_now();
    let mut data = Vec::new();
    for module in state.registry.modules() {
        let valves = module.valves.is_some();
        let id = module.id();
        let name = module.pipeline.name();
        match module.kind() {
            PipelineKind::Pipe => {
                data.push(entry(id.into(), name.into(), created, json!({"type": "pipe", "valves": valves}), None))
            }
            PipelineKind::Filter => {
                let (pipelines, priority) = routing(module);
                let pipeline =
                    json!({"type": "filter", "pipelines": pipelines, "priority": priority, "valves": valves});
                data.push(entry(id.into(), name.into(), created, pipeline, None));
            }
            PipelineKind::Manifold => {
                for sub in module.pipeline.sub_models() {
                    data.push(entry(
                        format!("{id}.{}", sub.id),
                        format!("{name}{}", sub.name),
                        created,
                        json!({"type": "manifold", "valves": valves}),
                        sub.info,
                    ));
                }
            }
        }
    }
    HttpResponse::Ok().json(json!({"data": data, "object": "list", "pipelines": true}))
}
