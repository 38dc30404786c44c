//! A pipeline that panics (a bug) from the outside: the caller gets a JSON 500 it can read, a
//! browser on an allowed origin included, with the request id the server's log line carries.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_sdk::{async_trait, Pipeline, PipelineError, PipelineKind};

use crate::helpers::{spawn_app_with, Options, KEY};

const ORIGIN: &str = "http://localhost:3000";

/// A filter whose inlet panics with a caller's text in the message.
struct PanickingFilter;

#[async_trait]
impl Pipeline for PanickingFilter {
    fn id(&self) -> &str {
        "panicking_filter"
    }

    fn name(&self) -> &str {
        "Panicking Filter"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }

    #[allow(clippy::panic)]
    async fn inlet(&self, body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        panic!("a bug quoting the caller: {body}")
    }
}

#[tokio::test]
async fn a_panic_is_answered_with_cors_headers_and_the_request_id() {
    let app = spawn_app_with(Options {
        cors_allowed_origins: vec![ORIGIN.into()],
        pipelines: vec![Arc::new(PanickingFilter)],
        ..Default::default()
    })
    .await
    .unwrap();
    let form = json!({"body": {"model": "m", "messages": [{"role": "user", "content": "forged\nline"}]}, "user": null});
    let res = app
        .client
        .post(app.url("/panicking_filter/filter/inlet"))
        .bearer_auth(KEY)
        .header("origin", ORIGIN)
        .json(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 500);
    let headers = res.headers().clone();
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(ORIGIN));
    let id = headers.get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "request id {id:?}");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"], "the server hit a bug; it is in the server's log");
    assert!(!body.to_string().contains("forged"), "the panic's message was quoted: {body}");

    // The worker that panicked serves the next request.
    let res = app.get("/models").await;
    assert_eq!(res.status().as_u16(), 200);
}
