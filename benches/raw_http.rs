//! The least an HTTP server can do, on loopback: the floor sluice is measured against, the
//! OpenPipe stand-in and the Responses API stand-in (at once, or paced like a model that
//! writes each event as it is made).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server writes for one request: `parts` one after the other, `gap` apart.
pub struct Reply {
    pub parts: Vec<Arc<Vec<u8>>>,
    pub gap: Duration,
}

impl Reply {
    fn whole(bytes: Arc<Vec<u8>>) -> Self {
        Reply { parts: vec![bytes], gap: Duration::ZERO }
    }
}

/// Answers every HTTP/1.1 request on a kept-alive connection with the same bytes; counts them.
pub async fn start_canned_server(response: String) -> (String, Arc<AtomicUsize>) {
    let response = Arc::new(response.into_bytes());
    start_raw_server(move |_| Reply::whole(Arc::clone(&response))).await
}

/// A minimal HTTP/1.1 server on loopback: finds the end of the headers and the Content-Length,
/// takes the body without parsing it, writes `respond(body)`. Counts requests. It does the
/// least an HTTP server can do, so it is also the floor sluice is measured against.
pub async fn start_raw_server<F>(respond: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(&[u8]) -> Reply + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let respond = Arc::new(respond);
    let served = Arc::new(AtomicUsize::new(0));
    let served_in = Arc::clone(&served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let _ = socket.set_nodelay(true);
            let respond = Arc::clone(&respond);
            let served = Arc::clone(&served_in);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    // One request at a time on a kept-alive connection: headers, then the body.
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some((body, used)) = framed(&pending) {
                        let reply = respond(&pending[body]);
                        pending.drain(..used);
                        served.fetch_add(1, Ordering::Relaxed);
                        // Deadlines from the start, not sleeps in a row: timer rounding must not
                        // add up into a stretch that sluice did not cause.
                        let start = tokio::time::Instant::now();
                        for (i, part) in reply.parts.iter().enumerate() {
                            if i > 0 && !reply.gap.is_zero() {
                                tokio::time::sleep_until(start + reply.gap * i as u32).await;
                            }
                            if socket.write_all(part).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, served)
}

/// Where the body of the first whole request in `bytes` is, and how many bytes that request
/// takes; `None` until it has all arrived.
fn framed(bytes: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let (body, used) = extent(bytes)?;
    (bytes.len() >= used).then_some((body..used, used))
}

/// Where the body of the HTTP message starting `bytes` begins and where the message ends, by
/// its Content-Length; `None` until its head has arrived.
fn extent(bytes: &[u8]) -> Option<(usize, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((end + 4, end + 4 + content_length(&bytes[..end])))
}

fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The floor: GET answers `models` (the bytes sluice answered, so both send the same), a POST
/// gets its own body back with a JSON content type, as an inlet that changes nothing would.
pub async fn start_floor(models: Vec<u8>) -> String {
    let models = Arc::new(http_response("application/json", &models));
    let (url, _) = start_raw_server(move |body| {
        if body.is_empty() {
            Reply::whole(Arc::clone(&models))
        } else {
            Reply::whole(Arc::new(http_response("application/json", body)))
        }
    })
    .await;
    url
}

fn http_response(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n", body.len())
        .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Deltas in each answer of the Responses API stand-in.
pub const MOCK_DELTAS: usize = 200;
/// A request whose body holds this marker is answered paced: [`PACED_DELTAS`] deltas,
/// [`PACE`] apart, each event its own write, as OpenAI sends them.
pub const PACED_MARKER: &str = "PACED-ANSWER";
pub const PACED_DELTAS: usize = 100;
pub const PACE: Duration = Duration::from_millis(20);

/// The text of an answer's first delta, as it appears in both the upstream's event and
/// sluice's chunk, and when a paced answer sends it (after created and item added).
pub const FIRST_TOKEN: &[u8] = b"token0 ";
pub const FIRST_TOKEN_DUE: Duration = PACE.saturating_mul(2);

/// The events of one answer of `deltas` text deltas, each a separate SSE event.
fn transcript(deltas: usize) -> Vec<String> {
    let mut events = vec![
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_b\",\"status\":\"in_progress\",\"output\":[]}}\n\n".to_string(),
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"msg_b\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n".to_string(),
    ];
    for i in 0..deltas {
        events.push(format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{},\"item_id\":\"msg_b\",\"output_index\":0,\"content_index\":0,\"delta\":\"token{i} \",\"logprobs\":[],\"obfuscation\":\"abcdef\"}}\n\n", i + 2));
    }
    events.push(format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":999,\"response\":{{\"id\":\"resp_b\",\"status\":\"completed\",\"model\":\"gpt-4.1\",\"output\":[{{\"id\":\"msg_b\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{{\"type\":\"output_text\",\"text\":\"...\",\"annotations\":[]}}]}}],\"usage\":{{\"input_tokens\":10,\"output_tokens\":{deltas},\"total_tokens\":{}}}}}}}\n\n", deltas + 10));
    events
}

/// Upstream events in one paced answer (created, item added, the deltas, completed).
pub fn paced_events() -> usize {
    PACED_DELTAS + 3
}

/// A Responses API stand-in: every request is answered with a [`MOCK_DELTAS`]-delta transcript
/// written at once (the floor the manifold's overhead is measured against), or paced when the
/// request holds [`PACED_MARKER`].
pub async fn start_mock_upstream() -> String {
    let head = |len: usize| {
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncontent-length: {len}\r\n\r\n")
    };
    let whole = transcript(MOCK_DELTAS).concat();
    let whole = Arc::new(format!("{}{whole}", head(whole.len())).into_bytes());
    let mut paced: Vec<Arc<Vec<u8>>> = Vec::new();
    let events = transcript(PACED_DELTAS);
    let len = events.iter().map(String::len).sum();
    for (i, event) in events.into_iter().enumerate() {
        let bytes = if i == 0 { format!("{}{event}", head(len)) } else { event };
        paced.push(Arc::new(bytes.into_bytes()));
    }
    let marker = PACED_MARKER.as_bytes();
    let (url, _) = start_raw_server(move |body| {
        if body.windows(marker.len()).any(|w| w == marker) {
            Reply { parts: paced.clone(), gap: PACE }
        } else {
            Reply::whole(Arc::clone(&whole))
        }
    })
    .await;
    url
}

/// The floor of a streamed answer: a relay that takes a chat request, asks `upstream` for the
/// same kind of answer (paced when the request holds [`PACED_MARKER`], else at once) and passes
/// each piece on as it arrives as one HTTP chunk, with the end marker sluice's clients wait
/// for. One read and one write per upstream event, no parsing: what any proxy pays. Both of its
/// connections are kept alive between answers, as sluice keeps its own.
pub async fn start_relay(upstream: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let addr = upstream.trim_start_matches("http://").to_string();
    let ask = |input: &str| {
        let body = format!(r#"{{"model":"gpt-4.1","stream":true,"input":"{input}"}}"#);
        Arc::new(format!(
            "POST /v1/responses HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let (paced, whole) = (ask(PACED_MARKER), ask("go"));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let (addr, paced, whole) = (addr.clone(), Arc::clone(&paced), Arc::clone(&whole));
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut buf = vec![0u8; 1 << 16];
                let mut seen = Vec::new();
                let mut up: Option<tokio::net::TcpStream> = None;
                loop {
                    let Some((body, used)) = framed(&seen) else {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let marker = PACED_MARKER.as_bytes();
                    let ask = if seen[body].windows(marker.len()).any(|w| w == marker) { &paced } else { &whole };
                    seen.drain(..used);
                    if up.is_none() {
                        let Ok(conn) = tokio::net::TcpStream::connect(&addr).await else { return };
                        let _ = conn.set_nodelay(true);
                        up = Some(conn);
                    }
                    let Some(conn) = up.as_mut() else { return };
                    if conn.write_all(ask.as_bytes()).await.is_err() {
                        return;
                    }
                    let head =
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if client.write_all(head).await.is_err() || !relay_answer(conn, &mut client, &mut buf).await {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Passes the upstream's answer on to `client`, each read as one chunk, then the end marker and
/// the last chunk. The upstream's own head goes along unparsed (its length only ends the answer).
async fn relay_answer(up: &mut tokio::net::TcpStream, client: &mut tokio::net::TcpStream, buf: &mut [u8]) -> bool {
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut head_bytes, mut want, mut received) = (Vec::new(), None::<usize>, 0usize);
    let mut out = Vec::with_capacity(buf.len() + 16);
    while want.is_none_or(|w| received < w) {
        let n = match up.read(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        out.clear();
        let _ = write!(out, "{n:x}\r\n");
        out.extend_from_slice(&buf[..n]);
        out.extend_from_slice(b"\r\n");
        if client.write_all(&out).await.is_err() {
            return false;
        }
        received += n;
        if want.is_none() {
            head_bytes.extend_from_slice(&buf[..n]);
            want = extent(&head_bytes).map(|(_, end)| end);
        }
    }
    client.write_all(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n").await.is_ok()
}
