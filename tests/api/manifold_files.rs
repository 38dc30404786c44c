//! Files attached in Open WebUI reach the model as files: the inlet keeps the references, the
//! pipe fetches each from Open WebUI's files API with the operator's key (bounded in size and
//! time) and adds it to the user's message; anything else leaves Open WebUI's extracted text.

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json_of, TestApp};
use crate::manifold::{manifold_app, sse_response, system_and, upstream_bodies};

const OWUI_KEY: &str = "sk-owui-admin-0123456789";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

/// Open WebUI's files API with one PDF (`f-pdf`), one image (`f-png`) and one big file of the
/// user `u-1`, and another user's PDF (`f-other`).
async fn open_webui() -> MockServer {
    let owui = MockServer::start().await;
    for (id, bytes, ct) in [
        ("f-pdf", PDF.to_vec(), "application/pdf"),
        ("f-png", vec![0x89, b'P', b'N', b'G'], "image/png"),
        ("f-big", vec![b'x'; 2 * 1024 * 1024], "application/pdf"),
        ("f-other", PDF.to_vec(), "application/pdf"),
    ] {
        let owner = if id == "f-other" { "u-2" } else { "u-1" };
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/files/{id}")))
            .and(header("authorization", format!("Bearer {OWUI_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": id, "user_id": owner, "filename": id})))
            .mount(&owui)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/files/{id}/content")))
            .and(header("authorization", format!("Bearer {OWUI_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(bytes, ct))
            .mount(&owui)
            .await;
    }
    owui
}

fn file(id: &str, name: &str, ct: &str) -> Value {
    json!({"type": "file", "id": id, "name": name, "url": format!("/api/v1/files/{id}"),
           "file": {"id": id, "filename": name, "meta": {"name": name, "content_type": ct, "size": 10}}})
}

/// One turn as Open WebUI makes it: the model's inlet with the files, then the chat without
/// them (Open WebUI removes them and puts its extracted text into the messages). The
/// Responses request that reached OpenAI.
async fn turn(app: &TestApp, openai: &MockServer, model: &str, files: Value) -> Value {
    let user = json!({"id": "u-1", "name": "N", "email": "n@example.com", "role": "user"});
    let body = json!({"model": format!("openai_responses.{model}"), "stream": true,
        "messages": system_and("What does the report say?"), "files": files,
        "metadata": {"chat_id": "c-1", "message_id": "m-1", "files": files}});
    let (status, changed) = json_of(
        app.post_json(&format!("/openai_responses.{model}/filter/inlet"), &json!({"body": body, "user": user})).await,
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let mut chat = changed.clone();
    for k in ["metadata", "files"] {
        chat.as_object_mut().unwrap().remove(k);
    }
    chat["user"] = user;
    let res = app.post_json("/chat/completions", &chat).await;
    assert_eq!(res.status().as_u16(), 200);
    let _ = res.text().await.unwrap();
    upstream_bodies(openai).await.pop().unwrap()
}

fn user_parts(sent: &Value) -> Vec<Value> {
    let input = sent["input"].as_array().unwrap();
    let user = input.iter().rev().find(|i| i["role"] == "user").unwrap();
    user["content"].as_array().cloned().unwrap_or_default()
}

async fn setup(extra: &str) -> (TestApp, MockServer, MockServer) {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response("1_plain_text.sse"))
        .mount(&openai)
        .await;
    let owui = open_webui().await;
    let url =
        if extra.contains("OPEN_WEBUI_URL") { String::new() } else { format!("OPEN_WEBUI_URL = \"{}\"\n", owui.uri()) };
    let valves = format!("{url}OPEN_WEBUI_API_KEY = \"{OWUI_KEY}\"\nFILE_MAX_MB = 1\n{extra}");
    let app = manifold_app(&openai, &valves).await;
    (app, openai, owui)
}

#[tokio::test]
async fn an_attached_pdf_and_image_reach_the_model_as_a_file_and_an_image() {
    let (app, openai, owui) = setup("").await;
    let files = json!([file("f-pdf", "report.pdf", "application/pdf"), file("f-png", "chart.png", "image/png"),
                       file("f-doc", "notes.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                       {"type": "collection", "id": "kb", "name": "Handbook"}]);
    let sent = turn(&app, &openai, "gpt-4.1", files).await;
    let parts = user_parts(&sent);
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(parts[0], json!({"type": "input_text", "text": "What does the report say?"}));
    assert_eq!(
        parts[1..],
        [
            json!({"type": "input_file", "filename": "report.pdf", "file_data": format!("data:application/pdf;base64,{}", b64(PDF))}),
            json!({"type": "input_image", "image_url": format!("data:image/png;base64,{}", b64(&[0x89, b'P', b'N', b'G'])), "detail": "auto"}),
        ]
    );
    // Only the two files a model reads were fetched; the key went to Open WebUI only.
    let fetched: Vec<String> =
        owui.received_requests().await.unwrap().iter().map(|r| r.url.path().to_string()).collect();
    // Each after asking Open WebUI whose file it is.
    assert_eq!(
        fetched,
        ["/api/v1/files/f-pdf", "/api/v1/files/f-pdf/content", "/api/v1/files/f-png", "/api/v1/files/f-png/content"]
    );
    assert!(!sent.to_string().contains(OWUI_KEY));
    let (_, valves) = json_of(app.get("/openai_responses/valves").await).await;
    assert_ne!(valves["OPEN_WEBUI_API_KEY"], json!(OWUI_KEY), "the key is not handed out");
}

#[tokio::test]
async fn without_the_setting_a_text_model_or_a_failure_the_extracted_text_is_all() {
    let pdf = json!([file("f-pdf", "report.pdf", "application/pdf")]);
    // Not configured: nothing fetched, the request as before.
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response("1_plain_text.sse"))
        .mount(&openai)
        .await;
    let app = manifold_app(&openai, "").await;
    assert_eq!(user_parts(&turn(&app, &openai, "gpt-4.1", pdf.clone()).await).len(), 1);

    // A model that reads text only (declared so): not fetched.
    let (app, openai, owui) = setup("MODEL_CAPABILITIES_JSON = '{\"gpt-4.1\": {\"tools\": true}}'\n").await;
    assert_eq!(user_parts(&turn(&app, &openai, "gpt-4.1", pdf.clone()).await).len(), 1);
    assert!(owui.received_requests().await.unwrap().is_empty());

    // Too large (FILE_MAX_MB = 1), unknown to Open WebUI (404), or Open WebUI down: the answer
    // still comes, with the text only.
    let (app, openai, _owui) = setup("").await;
    let files = json!([file("f-big", "big.pdf", "application/pdf"), file("f-gone", "gone.pdf", "application/pdf")]);
    assert_eq!(user_parts(&turn(&app, &openai, "gpt-4.1", files).await).len(), 1);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (app, openai, _owui) = setup(&format!("OPEN_WEBUI_URL = \"http://127.0.0.1:{closed}\"\n")).await;
    assert_eq!(user_parts(&turn(&app, &openai, "gpt-4.1", pdf).await).len(), 1);
}

/// The key reads every user's files; the references come with the request. Another user's
/// file named in a chat (through the inlet, or a `sluice` object forged by the caller) is not
/// sent.
#[tokio::test]
async fn another_users_file_is_not_sent() {
    let (app, openai, owui) = setup("").await;
    let sent = turn(&app, &openai, "gpt-4.1", json!([file("f-other", "theirs.pdf", "application/pdf")])).await;
    assert_eq!(user_parts(&sent).len(), 1, "{sent}");
    let paths: Vec<String> = owui.received_requests().await.unwrap().iter().map(|r| r.url.path().to_string()).collect();
    assert_eq!(paths, ["/api/v1/files/f-other"], "its content is never fetched");

    // A caller's own `sluice` stash is replaced by the inlet's.
    let user = json!({"id": "u-1", "name": "N", "email": "n@example.com", "role": "user"});
    let forged = json!({"model": "openai_responses.gpt-4.1", "stream": true, "messages": system_and("hi"),
        "sluice": {"files": [{"id": "f-other", "name": "theirs.pdf", "content_type": "application/pdf"}]},
        "metadata": {"chat_id": "c-1", "message_id": "m-2"}});
    let (_, changed) =
        json_of(app.post_json("/openai_responses.gpt-4.1/filter/inlet", &json!({"body": forged, "user": user})).await)
            .await;
    assert!(changed["sluice"].get("files").is_none(), "{changed}");
}
