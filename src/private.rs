//! Files only sluice's own user may read. The data directory holds the generated key and the
//! store, whose write-ahead log carries chat text within seconds of a turn: directory 0700,
//! files 0600, whatever the umask, and tightened when an older version left them wider.

use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;

/// Creates `dir` (and its parents) and makes it 0700. A directory others may create files in
/// (`/tmp`, a shared drop) is refused, not tightened: 0700 would lock them out of it.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    refuse_shared(dir)?;
    tighten(dir, 0o700)
}

fn refuse_shared(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
        // Sticky (kept for others' files) or writable by anyone.
        if mode & 0o1002 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is shared with other users (mode {mode:o}); sluice makes its directories 0700, which would \
                     lock them out: name a directory of sluice's own (it is created when missing)",
                    dir.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
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
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is mode {current:o} and could not be made {mode:o} ({e}); only its owner can: run \
                         sluice as the owner, or make it {mode:o} yourself",
                        path.display()
                    ),
                )
            })?;
            tracing::info!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "permissions tightened");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The mode of the regular file `path` (its permission bits) when users other than the one
/// sluice runs as may read it: an operator's file that holds a secret is then worth a warning.
/// Read by the group of a file someone else owns is how an operator shares it with sluice, not
/// a leak. `None` otherwise, when it cannot be looked at, for anything but a regular file (a
/// FIFO would be read a second time, and hang), and off Unix.
pub fn others_may_read(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file)?;
        let mode = meta.mode() & 0o777;
        let ours = meta.uid() == rustix::process::geteuid().as_raw();
        (mode & 0o004 != 0 || (ours && mode & 0o040 != 0)).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_shared_directory_is_refused_and_left_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        for shared in [0o1777, 0o777, 0o1770, 0o703] {
            let path = root.path().join(format!("d{shared:o}"));
            std::fs::create_dir(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(shared)).unwrap();
            let e = dir(&path).unwrap_err();
            assert!(e.to_string().contains("shared with other users"), "{e}");
            assert_eq!(mode(&path), shared);
        }
        let own = root.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir(&own).unwrap();
        assert_eq!(mode(&own), 0o700, "a directory of its own is tightened");
        dir(&root.path().join("new/deeper")).unwrap();
        assert_eq!(mode(&root.path().join("new/deeper")), 0o700);
    }
}
