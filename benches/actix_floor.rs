//! The floor of the stack the project is built on: actix-web alone, with the same routes'
//! answers as the raw floor (`/v1/models` the bytes sluice answered, an inlet its own body
//! back), as many workers as sluice, no middleware. With `logged`, each request also gets
//! tracing's span and one `info` line from tracing-subscriber's stock text layer (to stderr,
//! the bench's own, as sluice's: send it to /dev/null or a pipe): what any actix-web service
//! that logs its requests pays. Between it and the raw floor is what the stack costs; between it and sluice, sluice's
//! own work.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use tracing::Instrument;

/// Serves until stdin closes; prints `PORT n` first.
pub fn serve(models_file: &str, logged: bool) {
    let models = web::Bytes::from(std::fs::read(models_file).unwrap());
    if logged {
        tracing_subscriber::fmt().with_ansi(false).with_writer(std::io::stderr).init();
    }
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let models = models.clone();
            App::new()
                .wrap(actix_web::middleware::Condition::new(logged, from_fn(log_request)))
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .route(
                    "/v1/models",
                    web::get().to(move || {
                        let models = models.clone();
                        async move { HttpResponse::Ok().content_type("application/json").body(models) }
                    }),
                )
                .route(
                    "/{id}/filter/inlet",
                    web::post().to(|body: web::Bytes| async move {
                        HttpResponse::Ok().content_type("application/json").body(body)
                    }),
                )
        })
        .bind(("127.0.0.1", 0))
        .unwrap();
        println!("PORT {}", server.addrs()[0].port());
        let running = server.run();
        let handle = running.handle();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            actix_web::rt::System::new().block_on(handle.stop(false));
        });
        running.await.unwrap();
    });
}

/// A span per request and a line when it is answered, as tracing's documentation shows it.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.path());
    let started = std::time::Instant::now();
    let res = next.call(req).instrument(span.clone()).await?;
    span.in_scope(|| tracing::info!(status = res.status().as_u16(), elapsed = ?started.elapsed(), "handled"));
    Ok(res)
}
