//! `sluice`: see `sluice --help` (src/cli).

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            // `args()` panicked on it; a file name is the usual case.
            Err(raw) => {
                eprintln!("sluice: the argument {raw:?} is not UTF-8 text; give it in UTF-8 (rename the file)");
                return std::process::ExitCode::from(2);
            }
        }
    }
    sluice::cli::run(args).await
}
