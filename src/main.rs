//! `sluice`: see `sluice --help` (src/cli).

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    sluice::cli::run(std::env::args().skip(1).collect()).await
}
