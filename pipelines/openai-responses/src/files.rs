//! Files attached in an Open WebUI chat, given to the model as files (docs/manifold.md §4.9).
//!
//! Open WebUI sends the file references to the inlet only (its `/chat/completions` call gets the
//! extracted text, put into the messages by its own retrieval). The inlet stashes them; the
//! pipe fetches each file a model can read from Open WebUI's files API with the operator's key,
//! bounded in size and time, and adds it to the last user message: a PDF as `input_file`, an
//! image as `input_image`. Anything else, or any failure, leaves the request as Open WebUI made
//! it (the extracted text is still there).
//!
//! The key is an admin's and reads every user's files, while the references come with the
//! request, which a chat user shapes: a file is only sent when Open WebUI says it belongs to the
//! user who asked (`user_id` of `GET /api/v1/files/{id}`), so nobody gets another user's file
//! into their chat by naming its id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::valves::ResponsesValves;

/// Most files taken from one turn.
const MAX_FILES: usize = 10;
/// Most bytes of files sent with one request (OpenAI's own limit for the files of a request).
const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
/// Requests fetching files at once, server-wide: with [`MAX_TOTAL_BYTES`] each, what files can
/// hold in memory is bounded whatever the number of chats.
static FETCHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The client for Open WebUI's files API: redirects are not followed (a file is Open WebUI's,
/// not whatever another host answers).
fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("sluice-openai-responses/", env!("CARGO_PKG_VERSION")))
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no client for Open WebUI's files API"))
                .ok()
        })
        .as_ref()
}

/// One attached file as the inlet stashed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatFile {
    pub id: String,
    pub name: String,
    pub content_type: String,
}

impl ChatFile {
    fn kind(&self) -> Option<Kind> {
        let ct = self.content_type.to_ascii_lowercase();
        if ct == "application/pdf" || (ct.is_empty() && self.name.to_ascii_lowercase().ends_with(".pdf")) {
            Some(Kind::Pdf)
        } else if matches!(ct.as_str(), "image/png" | "image/jpeg" | "image/webp" | "image/gif") {
            Some(Kind::Image)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pdf,
    Image,
}

/// The files of an inlet body (`files`, and `metadata.files` as other releases send them), as
/// stash entries: `{"id", "name", "content_type"}`. Collections, web pages and other kinds are
/// not files of this chat.
pub fn stash_entries(body: &Map<String, Value>) -> Vec<Value> {
    let lists = [body.get("files"), body.get("metadata").and_then(|m| m.get("files"))];
    let mut out: Vec<Value> = Vec::new();
    for item in lists.into_iter().flatten().filter_map(Value::as_array).flatten() {
        if !matches!(item.get("type").and_then(Value::as_str), Some("file" | "image")) {
            continue;
        }
        let file = item.get("file");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let Some(id) = text(item.get("id")).or_else(|| text(file.and_then(|f| f.get("id")))) else { continue };
        if out.iter().any(|e| e["id"] == id.as_str()) {
            continue;
        }
        let name = text(item.get("name")).or_else(|| text(file.and_then(|f| f.get("filename")))).unwrap_or_default();
        let content_type = text(file.and_then(|f| f.pointer("/meta/content_type")))
            .or_else(|| text(item.get("content_type")))
            .unwrap_or_default();
        out.push(json!({"id": id, "name": name, "content_type": content_type}));
        if out.len() == MAX_FILES {
            break;
        }
    }
    out
}

/// The stashed files of a pipe request.
pub fn from_stash(stash: Option<&Value>) -> Vec<ChatFile> {
    let Some(list) = stash.and_then(|s| s.get("files")).and_then(Value::as_array) else { return Vec::new() };
    let mut seen = std::collections::HashSet::new();
    list.iter()
        .filter(|f| seen.insert(f.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()))
        .filter_map(|f| {
            Some(ChatFile {
                id: f.get("id")?.as_str()?.to_owned(),
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                content_type: f.get("content_type").and_then(Value::as_str).unwrap_or_default().to_owned(),
            })
        })
        .take(MAX_FILES)
        .collect()
}

/// Why a file stayed out; logged (with the file's id, never its content or the key).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Open WebUI could not be reached: {0}")]
    Unreachable(String),
    #[error("Open WebUI answered HTTP {0}")]
    Status(u16),
    #[error("larger than FILE_MAX_MB ({0} MB)")]
    TooLarge(u64),
    #[error("the files of this message pass 32 MB together")]
    TooMuchTogether,
    #[error("its id is not one Open WebUI makes")]
    BadId,
    #[error("it belongs to another user")]
    NotTheUsers,
    #[error("Open WebUI's description of it is not JSON")]
    NotJson,
}

/// The input parts for the files of this turn that the model reads; each file that cannot be
/// fetched is logged and left to Open WebUI's extracted text. The files are fetched together,
/// all within one `FILE_FETCH_TIMEOUT_S` and [`MAX_TOTAL_BYTES`].
/// `user_id`: Open WebUI's id of the user who asked; without one nothing is fetched.
pub async fn parts(valves: &ResponsesValves, files: &[ChatFile], user_id: Option<&str>) -> Vec<Value> {
    let Some(base) = valves.OPEN_WEBUI_URL.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Vec::new();
    };
    let Some(user_id) = user_id.filter(|u| !u.is_empty()) else { return Vec::new() };
    let wanted: Vec<(Kind, &ChatFile)> = files.iter().filter_map(|f| Some((f.kind()?, f))).collect();
    if valves.OPEN_WEBUI_API_KEY.is_empty() || wanted.is_empty() {
        return Vec::new();
    }
    let Some(client) = client() else { return Vec::new() };
    let seconds = valves.FILE_FETCH_TIMEOUT_S;
    let budget = AtomicU64::new(0);
    let all = async {
        let Ok(_permit) = FETCHING.acquire().await else { return Vec::new() };
        let fetches = wanted.iter().map(|(_, f)| fetch(client, valves, base, &f.id, user_id, &budget));
        futures_util::future::join_all(fetches).await
    };
    let Ok(results) = tokio::time::timeout(Duration::from_secs(seconds), all).await else {
        tracing::warn!(
            files = wanted.len(),
            "attached files not fetched within FILE_FETCH_TIMEOUT_S ({seconds} s); sent as their extracted text only"
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for ((kind, file), result) in wanted.iter().zip(results) {
        match result {
            Ok(bytes) => out.push(part(*kind, file, &bytes)),
            Err(e) => {
                tracing::warn!(file_id = %file.id, error = %e, "an attached file is sent as its extracted text only")
            }
        }
    }
    out
}

async fn fetch(
    client: &reqwest::Client,
    valves: &ResponsesValves,
    base: &str,
    id: &str,
    user_id: &str,
    budget: &AtomicU64,
) -> Result<Vec<u8>, FetchError> {
    let limit = valves.FILE_MAX_MB * 1024 * 1024;
    // The id goes into a path: only the characters Open WebUI's ids (UUIDs) are made of.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(FetchError::BadId);
    }
    let file_url = format!("{}/api/v1/files/{id}", base.trim_end_matches('/'));
    // Whose file it is, from Open WebUI (a small JSON object, read within its own cap).
    let meta = get(client, valves, &file_url).await?;
    let meta: Value = serde_json::from_slice(&read_capped(meta, 64 * 1024, valves.FILE_MAX_MB, None).await?)
        .map_err(|_| FetchError::NotJson)?;
    if meta.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(FetchError::NotTheUsers);
    }
    read_capped(get(client, valves, &format!("{file_url}/content")).await?, limit, valves.FILE_MAX_MB, Some(budget))
        .await
}

/// `GET url` on Open WebUI with the key; a status other than 2xx is an error.
async fn get(client: &reqwest::Client, valves: &ResponsesValves, url: &str) -> Result<reqwest::Response, FetchError> {
    let resp = client
        .get(url)
        .bearer_auth(valves.OPEN_WEBUI_API_KEY.expose())
        .send()
        .await
        .map_err(|e| FetchError::Unreachable(sluice_sdk::error_chain(&e)))?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(FetchError::Status(resp.status().as_u16()))
    }
}

/// The body of `resp`, refused as soon as it passes `limit` bytes, or (with a `budget` shared
/// by the files of one request) as soon as they pass [`MAX_TOTAL_BYTES`] together.
async fn read_capped(
    resp: reqwest::Response,
    limit: u64,
    max_mb: u64,
    budget: Option<&AtomicU64>,
) -> Result<Vec<u8>, FetchError> {
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(FetchError::TooLarge(max_mb));
    }
    // A file that says its length takes its share of the budget whole, before any byte is read
    // (so the files that fit are the ones admitted, whatever order their bytes come in); one
    // that does not is counted as it arrives.
    let take = |n: u64| match budget {
        Some(b) if b.fetch_add(n, Ordering::Relaxed) + n > MAX_TOTAL_BYTES => {
            b.fetch_sub(n, Ordering::Relaxed);
            Err(FetchError::TooMuchTogether)
        }
        _ => Ok(()),
    };
    if let Some(n) = declared {
        take(n)?;
    }
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FetchError::Unreachable(sluice_sdk::error_chain(&e)))?;
        let len = chunk.len() as u64;
        if out.len() as u64 + len > limit || declared.is_some_and(|n| out.len() as u64 + len > n) {
            return Err(FetchError::TooLarge(max_mb));
        }
        if declared.is_none() {
            take(len)?;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn part(kind: Kind, file: &ChatFile, bytes: &[u8]) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    match kind {
        Kind::Pdf => json!({
            "type": "input_file",
            "filename": if file.name.is_empty() { "attachment.pdf" } else { file.name.as_str() },
            "file_data": format!("data:application/pdf;base64,{data}"),
        }),
        Kind::Image => json!({
            "type": "input_image",
            "image_url": format!("data:{};base64,{data}", file.content_type.to_ascii_lowercase()),
            "detail": "auto",
        }),
    }
}

/// Adds `parts` to the last user message of a Responses request body.
pub fn attach(body: &mut Value, parts: &[Value]) {
    if parts.is_empty() {
        return;
    }
    let Some(input) = body.get_mut("input").and_then(Value::as_array_mut) else { return };
    let Some(user) = input.iter_mut().rev().find(|i| i.get("role").and_then(Value::as_str) == Some("user")) else {
        return;
    };
    let content = match user.get_mut("content") {
        Some(Value::Array(list)) => list,
        Some(other) => {
            let text = other.as_str().unwrap_or_default().to_owned();
            *other = json!([{"type": "input_text", "text": text}]);
            match other.as_array_mut() {
                Some(list) => list,
                None => return,
            }
        }
        None => return,
    };
    // An image Open WebUI already put into the message is not added twice.
    let has_image = content.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("input_image"));
    content.extend(parts.iter().filter(|p| !(has_image && p["type"] == "input_image")).cloned());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_inlet_keeps_the_chats_own_files_once() {
        let body = json!({
            "files": [
                {"type": "file", "id": "f-1", "name": "report.pdf", "file": {"id": "f-1", "filename": "report.pdf", "meta": {"content_type": "application/pdf", "size": 10}}},
                {"type": "collection", "id": "kb-1", "name": "Handbook"},
                {"type": "web_search", "id": "w-1"},
            ],
            "metadata": {"files": [{"type": "file", "id": "f-1", "name": "report.pdf"}, {"type": "image", "id": "i-1", "name": "a.png", "content_type": "image/png"}]}
        });
        let got = stash_entries(body.as_object().unwrap());
        assert_eq!(
            got,
            [
                json!({"id": "f-1", "name": "report.pdf", "content_type": "application/pdf"}),
                json!({"id": "i-1", "name": "a.png", "content_type": "image/png"})
            ]
        );
        let files = from_stash(Some(&json!({"files": got})));
        assert_eq!(files.iter().map(ChatFile::kind).collect::<Vec<_>>(), [Some(Kind::Pdf), Some(Kind::Image)]);
        assert_eq!(ChatFile { id: "x".into(), name: "notes.docx".into(), content_type: "".into() }.kind(), None);
    }

    #[test]
    fn parts_join_the_last_user_message() {
        let mut body = json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "what is in it?"},
        ]});
        let file = ChatFile { id: "f".into(), name: "r.pdf".into(), content_type: "application/pdf".into() };
        attach(&mut body, &[part(Kind::Pdf, &file, b"%PDF-1.4")]);
        assert_eq!(
            body["input"][2]["content"],
            json!([{"type": "input_text", "text": "what is in it?"},
                   {"type": "input_file", "filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}])
        );
        assert_eq!(body["input"][0]["content"].as_array().unwrap().len(), 1, "earlier turns are left alone");
    }
}
