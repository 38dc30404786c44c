//! Files only sluice's own user may read. The data directory holds the generated key and the
//! store, whose write-ahead log carries chat text within seconds of a turn: directory 0700,
//! files 0600, whatever the umask, and tightened when an older version left them wider.

use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

/// Creates `dir` (and its parents) and makes it 0700.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tighten(dir, 0o700)
}

/// Creates `path` empty with mode 0600 if it does not exist, and makes it 0600 if it does.
/// An existing file is never opened: closing any descriptor of a file drops every POSIX lock
/// the process holds on it, and SQLite's locks are POSIX locks.
pub fn file(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    tighten(path, 0o600)
}

/// Makes an existing `path` `mode` if it is wider; a missing one is left alone.
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let current = meta.permissions().mode() & 0o777;
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tracing::info!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "permissions tightened");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
