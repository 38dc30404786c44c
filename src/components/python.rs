//! Builds a reference-style Python pipeline (`.py`) into a component with `componentize-py`,
//! when the server has it: the kit (guests/python/kit) and the interface (wit/) are compiled
//! into this binary and laid out in a private temporary directory for each build.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const KIT: &[(&str, &str)] = &[
    ("kit/app.py", include_str!("../../guests/python/kit/app.py")),
    ("kit/sluice_pipeline.py", include_str!("../../guests/python/kit/sluice_pipeline.py")),
    ("kit/pydantic.py", include_str!("../../guests/python/kit/pydantic.py")),
    ("kit/requests.py", include_str!("../../guests/python/kit/requests.py")),
    ("wit/pipeline.wit", include_str!("../../wit/pipeline.wit")),
    ("wit/deps/cli.wit", include_str!("../../wit/deps/cli.wit")),
    ("wit/deps/clocks.wit", include_str!("../../wit/deps/clocks.wit")),
    ("wit/deps/filesystem.wit", include_str!("../../wit/deps/filesystem.wit")),
    ("wit/deps/http.wit", include_str!("../../wit/deps/http.wit")),
    ("wit/deps/io.wit", include_str!("../../wit/deps/io.wit")),
    ("wit/deps/random.wit", include_str!("../../wit/deps/random.wit")),
    ("wit/deps/sockets.wit", include_str!("../../wit/deps/sockets.wit")),
];

/// A Python file larger than this is no pipeline.
pub const MAX_SOURCE: usize = 1 << 20;
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "this server cannot build Python pipelines ({0}). Build the component where componentize-py is \
         installed (pip install componentize-py; guests/python/build.sh {1}.py) and add the .wasm by URL \
         or upload it"
    )]
    NoCompiler(String, String),
    #[error("the Python file is larger than {MAX_SOURCE} bytes")]
    TooLarge,
    #[error("the Python file is not UTF-8 text")]
    NotText,
    #[error("componentize-py could not build it: {0}")]
    Failed(String),
    #[error("componentize-py took longer than {} s", BUILD_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Io(String),
}

/// The program `compiler` names: a path, or a name looked up on `PATH`.
fn find(compiler: &str) -> Option<PathBuf> {
    if compiler.contains('/') {
        return Path::new(compiler).is_file().then(|| PathBuf::from(compiler));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(compiler)).find(|candidate| candidate.is_file())
}

/// The component built from `source`, the pipeline `id` (its file name without `.py`), in a
/// fresh directory under `builds` (in the data directory: private, and present in an image
/// that has no /tmp).
pub async fn build(compiler: &str, builds: &Path, id: &str, source: &[u8]) -> Result<Vec<u8>, BuildError> {
    if source.len() > MAX_SOURCE {
        return Err(BuildError::TooLarge);
    }
    let source = std::str::from_utf8(source).map_err(|_| BuildError::NotText)?;
    if compiler.is_empty() {
        return Err(BuildError::NoCompiler("componentize_py is set to nothing".into(), id.into()));
    }
    let Some(compiler) = find(compiler) else {
        return Err(BuildError::NoCompiler(format!("{compiler} is not installed"), id.into()));
    };
    crate::private::own_dir(builds).map_err(|e| BuildError::Io(format!("{}: {e}", builds.display())))?;
    let work = tempfile::tempdir_in(builds).map_err(|e| BuildError::Io(format!("a build directory: {e}")))?;
    let io = |e: std::io::Error| BuildError::Io(format!("the build directory: {e}"));
    for (path, text) in KIT {
        let path = work.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, text).map_err(io)?;
    }
    let user = work.path().join("user");
    std::fs::create_dir_all(&user).map_err(io)?;
    std::fs::write(user.join("user_pipeline.py"), source).map_err(io)?;
    std::fs::write(user.join("sluice_build.py"), format!("ID = {}\n", serde_json::Value::from(id))).map_err(io)?;
    let out = work.path().join("out.wasm");
    // componentize-py runs the module's top level while it builds, with the site-packages of
    // the Python it finds (a venv's, or the host's through `python3`) mounted writable: an
    // uploaded file wrote a `.pth` into the host's site-packages that every later `python3`
    // ran, as sluice's user (found by a red team). An empty venv of the build's own and no
    // environment (no PATH, so no `python3` or `pipenv`; no keys for the compiler to hand
    // on; no RUST_BACKTRACE in its errors) leave it the kit and the upload, in this directory.
    let venv = work.path().join("venv");
    std::fs::create_dir_all(venv.join("site-packages")).map_err(io)?;
    let child = tokio::process::Command::new(&compiler)
        .env_clear()
        .env("HOME", work.path())
        .env("VIRTUAL_ENV", &venv)
        .current_dir(work.path())
        .args(["-d", "wit", "-w", "pipeline", "componentize", "app", "-p", "kit", "-p", "user", "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BuildError::NoCompiler(format!("{}: {e}", compiler.display()), id.into()))?;
    limit_cpu(&child);
    let done = tokio::time::timeout(BUILD_TIMEOUT, child.wait_with_output()).await.map_err(|_| BuildError::Timeout)?;
    let output = done.map_err(|e| BuildError::Failed(e.to_string()))?;
    #[cfg(unix)]
    // Past its CPU time (see `limit_cpu`).
    if std::os::unix::process::ExitStatusExt::signal(&output.status) == Some(libc::SIGXCPU) {
        return Err(BuildError::Timeout);
    }
    if !output.status.success() {
        return Err(BuildError::Failed(last_lines(&output.stderr, work.path())));
    }
    std::fs::read(&out).map_err(|e| BuildError::Failed(format!("no component was written: {e}")))
}

/// The compiler may run the upload's code for no longer than a build may take, even when
/// sluice is gone: killed with it (`kill -9`, a crash), it kept spinning (found by a red team).
/// On SIGKILL nothing of sluice runs, so the kernel keeps the bound (`RLIMIT_CPU`).
fn limit_cpu(child: &tokio::process::Child) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{prlimit, Pid, Resource, Rlimit};
        // CPU time of all its threads: a build that uses every core for the whole wall-clock
        // bound must still finish.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let seconds = BUILD_TIMEOUT.as_secs() * cores;
        let limit = Rlimit { current: Some(seconds), maximum: Some(seconds + 5) };
        let pid = child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw);
        if let Some(Err(e)) = pid.map(|pid| prlimit(Some(pid), Resource::Cpu, limit)) {
            tracing::warn!(error = %e, "the compiler's CPU time could not be bounded");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = child;
}

/// Build directories a build left behind when sluice stopped under it (each holds an upload's
/// source): removed at start. Only those older than a build may take, so a `sluice pipeline
/// add` building beside a starting server keeps its own.
pub fn clear_leftovers(builds: &Path) {
    // Never through a link: a `builds` link planted in the data directory had its target's
    // directories deleted (found by a red team).
    if std::fs::symlink_metadata(builds).map_or(true, |m| !m.is_dir()) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(builds) else { return };
    for entry in entries.flatten() {
        // What `tempdir_in` makes: a real directory named `.tmp...` (the entry, not followed).
        let Ok(meta) = entry.metadata() else { continue };
        let ours = entry.file_name().to_string_lossy().starts_with(".tmp") && meta.is_dir() && !meta.is_symlink();
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok());
        if ours && old.is_some_and(|age| age > BUILD_TIMEOUT) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "a build left behind could not be removed");
            }
        }
    }
}

/// The end of the compiler's message (a Python syntax error is there), without the temporary
/// directory's path.
fn last_lines(stderr: &[u8], dir: &Path) -> String {
    let text = String::from_utf8_lossy(stderr).replace(&dir.display().to_string(), "");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join("\n").chars().take(2000).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_builds_older_than_a_build_may_take_are_cleared() {
        let builds = tempfile::tempdir().unwrap();
        let (left, running) = (builds.path().join(".tmpLeft"), builds.path().join(".tmpRunning"));
        for dir in [&left, &running] {
            std::fs::create_dir_all(dir.join("user")).unwrap();
        }
        let long_ago = std::time::SystemTime::now() - BUILD_TIMEOUT - Duration::from_secs(60);
        std::fs::File::open(&left).unwrap().set_modified(long_ago).unwrap();
        clear_leftovers(builds.path());
        assert!(!left.exists() && running.exists());
    }
}
