use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use arc_swap::ArcSwapOption;
use serde::{Serialize, Serializer};
use serde_json::Value;
use sluice_sdk::{FilterTargets, PipelineKind, SubModel};

use sluice_sdk::clock::unix_secs;

use crate::error::ApiError;
use crate::registry::{LiveRegistry, Module};

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
    pipeline: Kind<'a>,
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
enum Kind<'a> {
    Pipe {
        valves: bool,
    },
    /// Every filter entry carries both, or Open WebUI fails every chat
    /// (docs/open-webui-client.md §1.5).
    Filter {
        pipelines: &'a [String],
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

/// The last list written and what it was made from. Asked again in the same second with the
/// same sources, the same bytes go out: the list is a function of both. The pipelines are
/// still asked every time, so nothing here assumes when their lists change; what is saved is
/// writing the JSON (most of the route's time in the profile), and a manifold that hands back
/// the list it keeps is compared by pointer, not entry by entry.
#[derive(Default)]
pub struct ModelsCache(ArcSwapOption<Written>);

struct Written {
    created: u64,
    sources: Vec<Source>,
    bytes: Bytes,
}

/// One module as the list saw it.
struct Source {
    id: String,
    name: String,
    valves: bool,
    part: Part,
}

/// What a module's entries are made from, besides its id, name and valves.
enum Part {
    Pipe,
    Filter(FilterTargets),
    Manifold(Arc<[SubModel]>),
}

impl Part {
    /// Whether both make the same entries. Objects inside a sub-model's `info` compare equal in
    /// any key order, so a change of key order alone shows up with the next second's list.
    fn same(&self, other: &Part) -> bool {
        match (self, other) {
            (Part::Pipe, Part::Pipe) => true,
            (Part::Filter(a), Part::Filter(b)) => a == b,
            (Part::Manifold(a), Part::Manifold(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Source {
    fn same(&self, module: &Module, part: &Part) -> bool {
        self.id == module.id()
            && self.name == module.pipeline.name()
            && self.valves == module.valves.is_some()
            && self.part.same(part)
    }
}

/// `GET /models` (docs/protocol.md §5.2): one entry per pipe and filter, one per manifold
/// sub-model, and `"pipelines": true`, which is how Open WebUI recognises a Pipelines server.
pub async fn list_models(
    live: web::Data<LiveRegistry>,
    cache: web::Data<ModelsCache>,
) -> Result<HttpResponse, ApiError> {
    let registry = live.load();
    let modules = registry.modules();
    let created = unix_secs();
    let parts: Vec<Part> = modules
        .iter()
        .map(|m| match m.kind() {
            PipelineKind::Pipe => Part::Pipe,
            PipelineKind::Filter => Part::Filter(m.pipeline.targets()),
            PipelineKind::Manifold => Part::Manifold(m.pipeline.sub_models()),
        })
        .collect();
    let last = cache.0.load_full();
    if let Some(last) = &last {
        let unchanged = last.created == created
            && last.sources.len() == modules.len()
            && last.sources.iter().zip(modules.iter()).zip(&parts).all(|((s, m), p)| s.same(m, p));
        if unchanged {
            return Ok(answer(last.bytes.clone()));
        }
    }
    let room = last.as_ref().map_or(1024, |l| l.bytes.len() + 256);
    let bytes = write(modules, &parts, created, room)?;
    let sources = modules
        .iter()
        .zip(parts)
        .map(|(m, part)| Source {
            id: m.id().to_owned(),
            name: m.pipeline.name().to_owned(),
            valves: m.valves.is_some(),
            part,
        })
        .collect();
    cache.0.store(Some(Arc::new(Written { created, sources, bytes: bytes.clone() })));
    Ok(answer(bytes))
}

fn answer(bytes: Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(bytes)
}

/// The list as JSON, in a buffer of `room` bytes to start with.
fn write(modules: &[Arc<Module>], parts: &[Part], created: u64, room: usize) -> Result<Bytes, ApiError> {
    let mut data = Vec::new();
    for (module, part) in modules.iter().zip(parts) {
        let valves = module.valves.is_some();
        let id = module.id();
        let name = module.pipeline.name();
        let entry =
            |id, name, pipeline, info| Entry { id, name, object: "model", created, owned_by: "openai", pipeline, info };
        match part {
            Part::Pipe => data.push(entry(id.into(), name.into(), Kind::Pipe { valves }, None)),
            Part::Filter(FilterTargets { pipelines, priority }) => {
                data.push(entry(id.into(), name.into(), Kind::Filter { pipelines, priority: *priority, valves }, None))
            }
            Part::Manifold(subs) => {
                for sub in subs.iter() {
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
    let mut body = Vec::with_capacity(room);
    serde_json::to_writer(&mut body, &List { data, object: "list", pipelines: true })
        .map_err(|e| ApiError::Internal(format!("the model list could not be written: {e}")))?;
    Ok(Bytes::from(body))
}
