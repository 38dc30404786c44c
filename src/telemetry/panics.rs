//! A panic is a bug, but a caller must still get an answer and the log one line.
//!
//! Without this, a handler that panicked dropped its connection with no answer (tokio catches
//! the panic at the connection's task), and Rust's default hook printed the message, which may
//! quote a caller's text, straight to stderr past the log's escaping.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use futures_util::FutureExt;

use crate::error::ApiError;

/// Every panic is logged as one `error` line (through the log's escaping), with its place and,
/// when `RUST_BACKTRACE` asks for one, the backtrace. Installed once the log is.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let message = payload_text(info.payload());
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                tracing::error!(panic = message, place, %backtrace, "a bug: the server panicked")
            }
            _ => tracing::error!(panic = message, place, "a bug: the server panicked"),
        }
    }));
}

/// What `panic!` was given, when it was text.
fn payload_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}

/// The middleware: a request whose handling panicked is answered with a JSON 500 (the hook
/// above has logged the panic). It sits inside CORS and the request log (src/startup.rs), so
/// that answer carries the CORS headers a browser needs to read it and the request id; a
/// panic in those two is not caught. The answer is an error, not a response: the request is
/// gone with the unwinding, and keeping a copy of it would stop actix from routing it, which
/// needs it unshared. A panic while a streamed body is being sent is not caught here: that
/// connection ends, the rest of the server goes on.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Unwind safety: a request that panicked shares nothing it could leave half-changed but
    // what every handler already guards with its own locks and stores. The call is made
    // inside the future, so a panic in its synchronous part is caught too.
    match AssertUnwindSafe(async move { next.call(req).await }).catch_unwind().await {
        Ok(result) => result,
        Err(_) => Err(ApiError::bug().into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use actix_web::test::{call_service, init_service, read_body, try_call_service, TestRequest};
    use actix_web::{web, App, HttpResponse};

    use super::*;

    #[test]
    fn text_payloads_are_read_and_others_named() {
        assert_eq!(payload_text(&"static text"), "static text");
        assert_eq!(payload_text(&String::from("owned text")), "owned text");
        assert_eq!(payload_text(&42u8), "(not text)");
    }

    #[actix_web::test]
    async fn a_handler_that_panics_gets_a_json_500_and_the_next_request_is_served() {
        let app = init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(catch_panics))
                .route("/bug", web::get().to(|| async { panic!("a caller's text \n forged") as HttpResponse }))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("fine") })),
        )
        .await;
        // The server writes an error that reaches it as `error_response()`.
        let error = try_call_service(&app, TestRequest::get().uri("/bug").to_request()).await.err().unwrap();
        let res = error.error_response();
        assert_eq!(res.status(), 500);
        let body: serde_json::Value =
            serde_json::from_slice(&actix_web::body::to_bytes(res.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["detail"], "the server hit a bug; it is in the server's log");
        assert!(!body.to_string().contains("forged"), "{body}");
        let res = call_service(&app, TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(read_body(res).await, "fine");
    }
}
