//! The commands' output on stdout. `println!` panics when stdout is a pipe its reader closed
//! (`sluice check | head -1`) or a full disk; here a failed write is kept, the rest of the
//! output skipped, and the command exits 1 ([`finish`]).

use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

static FAILURE: OnceLock<std::io::Error> = OnceLock::new();

/// Writes one line (the [`say!`](crate::cli) macro).
pub fn line(args: std::fmt::Arguments<'_>) {
    if FAILURE.get().is_some() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(format_args!("{args}\n")).and_then(|()| out.flush()) {
        let _ = FAILURE.set(e);
    }
}

/// `code`, or 1 when the output could not be written, said on stderr unless the reader closed
/// the pipe (it had read what it wanted).
pub fn finish(code: ExitCode) -> ExitCode {
    match FAILURE.get() {
        None => code,
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Some(e) => {
            eprintln!("sluice: the output could not be written: {e}");
            ExitCode::FAILURE
        }
    }
}
