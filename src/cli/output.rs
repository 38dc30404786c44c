//! The commands' output on stdout. `println!` panics when stdout is a pipe its reader closed
//! (`sluice check | head -1`) or a full disk; here a failed write is kept, the rest of the
//! output skipped, and the command exits 1 ([`finish`]).

use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::telemetry::OneLine;

static FAILURE: OnceLock<std::io::Error> = OnceLock::new();

/// Writes one line (the [`say!`](crate::cli) macro). Whatever it quotes (a pipeline's
/// source, a valve's name, an upstream's error) is shown, never obeyed: escape sequences,
/// carriage returns, line breaks, tabs and the marks that reorder text are written as escapes
/// ([`OneLine`]), so no text can clear the operator's terminal or forge a line (found by a
/// red team).
pub fn line(args: std::fmt::Arguments<'_>) {
    write_out(format_args!("{}\n", OneLine(&args.to_string())));
}

/// Writes one row of a listing: its cells escaped as [`line`] escapes, separated by tabs (for
/// `cut -f`).
pub fn row(cells: &[&dyn std::fmt::Display]) {
    let shown: Vec<String> = cells.iter().map(|cell| OneLine(&cell.to_string()).to_string()).collect();
    write_out(format_args!("{}\n", shown.join("\t")));
}

/// Writes text of several lines that sluice itself wrote (the help), escaped as [`line`]
/// escapes within each line.
pub fn lines(text: &str) {
    for one in text.lines() {
        line(format_args!("{one}"));
    }
}

/// Writes a message on stderr (the [`complain!`](crate::cli) macro), escaped as [`line`]
/// escapes but for its line breaks (a usage text follows some).
pub fn complain(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let shown: Vec<String> = text.split('\n').map(|one| OneLine(one).to_string()).collect();
    eprintln!("{}", shown.join("\n"));
}

fn write_out(args: std::fmt::Arguments<'_>) {
    if FAILURE.get().is_some() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
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
