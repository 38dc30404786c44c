use serde_json::json;

use crate::helpers::{error_of, json_of, raw_exchange, spawn_app};

fn form() -> serde_json::Value {
    json!({
        "user": {"id": "u1", "email": "a@example.com", "name": "Alice", "role": "admin"},
        "body": {"stream": true, "model": "scripted_pipe", "messages": [{"role": "user", "content": "hi"}],
                 "metadata": {"chat_id": "c1", "message_id": "m1", "task": null}}
    })
}

#[tokio::test]
async fn a_filter_inlet_returns_the_bare_modified_body() {
    let app = spawn_app().await;
    for prefix in ["", "/v1"] {
        let (status, body) =
            json_of(app.post_json(&format!("{prefix}/scripted_filter/filter/inlet"), &form()).await).await;
        assert_eq!(status, 200);
        let mut expected = form()["body"].clone();
        expected["inlet_seen"] = json!(true);
        assert_eq!(body, expected);
    }
}

#[tokio::test]
async fn a_filter_outlet_returns_the_bare_modified_body() {
    let app = spawn_app().await;
    let outlet = json!({"user": null, "body": {"model": "scripted_pipe", "messages": [], "chat_id": "c1", "session_id": "s1", "id": "m2"}});
    let (status, body) = json_of(app.post_json("/scripted_filter/filter/outlet", &outlet).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"model": "scripted_pipe", "messages": [], "chat_id": "c1", "session_id": "s1", "id": "m2", "outlet_done": true})
    );
}

#[tokio::test]
async fn pipes_and_manifold_models_answer_their_own_inlet_and_outlet() {
    let app = spawn_app().await;
    // The pipe defines no hooks: echo.
    for hook in ["inlet", "outlet"] {
        let (status, body) = json_of(app.post_json(&format!("/scripted_pipe/filter/{hook}"), &form()).await).await;
        assert_eq!((status, body), (200, form()["body"].clone()));
    }
    let (status, body) = json_of(app.post_json("/scripted_manifold.m.2/filter/inlet", &form()).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["manifold_inlet"], json!(true));
    // Open WebUI's connection Prefix ID lands in the path.
    let (status, body) = json_of(app.post_json("/pp.scripted_manifold.m-1/filter/inlet", &form()).await).await;
    assert_eq!((status, body["manifold_inlet"].clone()), (200, json!(true)));
}

#[tokio::test]
async fn unknown_filters_are_404_with_the_reference_message() {
    let app = spawn_app().await;
    for id in ["nope", "scripted_manifold", "scripted_manifold.unknown"] {
        let (status, body) = error_of(app.post_json(&format!("/{id}/filter/inlet"), &form()).await).await;
        assert_eq!((status, body), (404, json!({"detail": format!("Filter {id} not found")})));
    }
}

#[tokio::test]
async fn a_refusing_inlet_answers_a_json_error() {
    let app = spawn_app().await;
    app.post_json("/scripted_filter/valves/update", &json!({"BLOCK_WORD": "forbidden"})).await;
    let mut request = form();
    request["body"]["messages"][0]["content"] = json!("something forbidden");
    let (status, body) = json_of(app.post_json("/scripted_filter/filter/inlet", &request).await).await;
    assert_eq!(status, 403);
    assert_eq!(body["detail"], json!("Blocked by policy"));

    // Open WebUI shows a failed inlet's reason phrase and nothing else: it must carry the message.
    let payload = serde_json::to_string(&request).unwrap();
    let head = format!(
        "POST /scripted_filter/filter/inlet HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
        crate::helpers::KEY,
        payload.len()
    );
    let response = raw_exchange(&app.address, head.as_bytes(), 1).await;
    assert!(response.starts_with("HTTP/1.1 403 Blocked by policy\r\n"), "{response}");
}

#[tokio::test]
async fn malformed_forms_are_refused_with_the_reason() {
    let app = spawn_app().await;
    let table = [
        (json!({"user": null}), 422, "body: field required"),
        (json!({"body": [1]}), 422, "body: must be a JSON object"),
        (json!({"body": {}, "user": "bob"}), 422, "user: must be a JSON object or null"),
        (json!([1, 2]), 422, "the request must be a JSON object with a \"body\" object"),
    ];
    // The scripted filter's hooks parse the form; the scripted pipe's pass it through unread.
    for path in ["/scripted_filter/filter/inlet", "/scripted_pipe/filter/inlet", "/scripted_pipe/filter/outlet"] {
        for (request, status, detail) in &table {
            let got = error_of(app.post_json(path, request).await).await;
            assert_eq!(got, (*status, json!({"detail": detail})), "{path} {request}");
        }
        // Extra keys and a missing user are fine.
        let (status, _) = json_of(app.post_json(path, &json!({"body": {}, "extra": 1})).await).await;
        assert_eq!(status, 200, "{path}");
        let (status, body) = error_of(app.post_raw(path, r#"{"body": {"a": }"#).await).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_hook_that_changes_nothing_answers_the_bytes_that_came() {
    let app = spawn_app().await;
    // Spacing, escapes, number forms and key order as sent, not as a parser would write them.
    let body = r#"{ "model":"scripted_pipe", "n": 1.50e0, "messages":[{"role":"user","content":"caf\u00e9 \"x\""}] }"#;
    for hook in ["inlet", "outlet"] {
        let res =
            app.post_raw(&format!("/scripted_pipe/filter/{hook}"), format!(r#"{{"user":null,"body":{body}}}"#)).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_is_read_whole() {
    let app = spawn_app().await;
    // The body is kept uncopied when it comes in one chunk and joined when it does not: both
    // ways, declared length or chunked, on the route that answers the bytes and on the one that
    // parses them. Multi-byte characters are cut between pieces.
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "é".repeat(3000));
    let form = format!(r#"{{"user":null,"body":{body}}}"#);
    let want: serde_json::Value = serde_json::from_str(&body).unwrap();
    for path in ["/scripted_pipe/filter/inlet", "/scripted_filter/filter/inlet"] {
        let head = |framing: String| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n{framing}\r\nconnection: close\r\n\r\n",
                crate::helpers::KEY
            )
            .into_bytes()
        };
        let mut declared = head(format!("content-length: {}", form.len()));
        declared.extend_from_slice(form.as_bytes());
        let mut chunked = head("transfer-encoding: chunked".into());
        for chunk in form.as_bytes().chunks(1001) {
            crate::helpers::http_chunk(&mut chunked, chunk);
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        // The pipe answers the body as sent; the filter (which parses it) the same each time.
        let mut first: Option<serde_json::Value> = None;
        for (framing, request) in [("declared", &declared), ("chunked", &chunked)] {
            for pieces in [1, 4] {
                let response = raw_exchange(&app.address, request, pieces).await;
                let at = format!("{path}, {framing}, {pieces} piece(s)");
                assert!(response.starts_with("HTTP/1.1 200"), "{at}: {}", &response[..200.min(response.len())]);
                let answered: serde_json::Value =
                    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
                let first = first.get_or_insert_with(|| answered.clone());
                assert_eq!(&answered, first, "{at}");
                assert_eq!(answered["messages"][0]["content"], want["messages"][0]["content"], "{at}");
            }
        }
        if path.contains("pipe") {
            assert_eq!(first, Some(want.clone()), "{path}");
        }
    }
}
