use actix_web::HttpResponse;

/// `GET /`: the only route without a key (docs/protocol.md §5.1).
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": true}))
}
