//! Files attached in Open WebUI reach the model as files: the inlet keeps the references, the
//! pipe fetches each from Open WebUI's files API with the operator's key (bounded in size and
//! time) and adds it to the user's message; anything else leaves Open WebUI's extracted text.

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json_of, TestApp};
use crate::manifold::{manifold_app, system_and, upstream_bodies};

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
        ("f-9a", vec![b'a'; 9 * 1024 * 1024], "application/pdf"),
        ("f-9b", vec![b'b'; 9 * 1024 * 1024], "application/pdf"),
        ("f-9c", vec![b'c'; 9 * 1024 * 1024], "application/pdf"),
        ("f-9d", vec![b'd'; 9 * 1024 * 1024], "application/pdf"),
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
    let openai = crate::manifold::openai_answering("1_plain_text.sse").await;
    let owui = open_webui().await;
    // The test's own lines replace these defaults.
    let defaults = [
        format!("OPEN_WEBUI_URL = \"{}\"", owui.uri()),
        format!("OPEN_WEBUI_API_KEY = \"{OWUI_KEY}\""),
        "FILE_MAX_MB = 1".into(),
    ];
    let keep = |line: &&String| !extra.contains(line.split('=').next().unwrap_or_default().trim());
    let valves = defaults.iter().filter(keep).map(|l| format!("{l}\n")).collect::<String>() + extra;
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
    let mut fetched = fetched;
    fetched.sort();
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
    let openai = crate::manifold::openai_answering("1_plain_text.sse").await;
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

/// Bounds of one request's files: together at most 32 MB (four files of 9 MB: three go), all
/// fetched at once within one FILE_FETCH_TIMEOUT_S (three slow files of 1.2 s each fit into
/// 2 s), and a redirect is not followed (the bytes would not be Open WebUI's).
#[tokio::test]
async fn the_files_of_a_request_are_bounded_together() {
    let (app, openai, _owui) = setup("FILE_MAX_MB = 10\n").await;
    let big: Vec<Value> =
        ["f-9a", "f-9b", "f-9c", "f-9d"].iter().map(|id| file(id, &format!("{id}.pdf"), "application/pdf")).collect();
    let sent = turn(&app, &openai, "gpt-4.1", json!(big)).await;
    let files = user_parts(&sent).iter().filter(|p| p["type"] == "input_file").count();
    assert_eq!(files, 3, "32 MB together");

    let owui = MockServer::start().await;
    for id in ["s-1", "s-2", "s-3", "r-1"] {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/files/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": id, "user_id": "u-1"})))
            .mount(&owui)
            .await;
    }
    for id in ["s-1", "s-2", "s-3"] {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/files/{id}/content")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(PDF.to_vec(), "application/pdf")
                    .set_delay(std::time::Duration::from_millis(1200)),
            )
            .mount(&owui)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/v1/files/r-1/content"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/api/v1/files/s-1/content", owui.uri())),
        )
        .mount(&owui)
        .await;
    let (app, openai, _) = setup(&format!("OPEN_WEBUI_URL = \"{}\"\nFILE_FETCH_TIMEOUT_S = 2\n", owui.uri())).await;
    let slow: Vec<Value> =
        ["s-1", "s-2", "s-3", "r-1"].iter().map(|id| file(id, &format!("{id}.pdf"), "application/pdf")).collect();
    let started = std::time::Instant::now();
    let sent = turn(&app, &openai, "gpt-4.1", json!(slow)).await;
    let names: Vec<String> =
        user_parts(&sent).iter().filter_map(|p| p["filename"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, ["s-1.pdf", "s-2.pdf", "s-3.pdf"], "fetched together in time; the redirect not followed");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
}

/// OPEN_WEBUI_API_KEY goes only where it was entered for: moving OPEN_WEBUI_URL needs the key
/// again (otherwise whoever edits the valves could send the admin's key to any host).
#[tokio::test]
async fn moving_the_open_webui_url_needs_the_key_again() {
    let (app, _openai, _owui) = setup("").await;
    let res =
        app.post_json("/openai_responses/valves/update", &json!({"OPEN_WEBUI_URL": "http://attacker.example"})).await;
    assert_eq!(res.status().as_u16(), 422);
    let res = app
        .post_json(
            "/openai_responses/valves/update",
            &json!({"OPEN_WEBUI_URL": "http://owui.example", "OPEN_WEBUI_API_KEY": "sk-new-admin-key"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
}
