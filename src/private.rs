//! Files only sluice's own user may read. The data directory holds the generated key and the
//! store, whose write-ahead log carries chat text within seconds of a turn: directory 0700,
//! files 0600, whatever the umask, and tightened when an older version left them wider.
//!
//! What is in it must be sluice's own: a directory or file another user owns, or a symbolic
//! link, is refused, not used. Planted while the directory was open to others, a link named
//! `sluice.db` or `api_key` put the store where they could read it or the key they chose in
//! use, and as root sluice tightened whatever a link pointed at (found by a red team).

use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// Keeps the server's memory and environment, where its keys are, from other processes of its
/// user and out of core dumps (found by a red team: any process of the user could read
/// `/proc/PID/environ` and `/proc/PID/mem`). Root still can, and a debugger run as root.
pub fn seal_process() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        tracing::warn!(error = %e, "the process could not be kept from core dumps and from its user's other processes");
    }
}

/// Creates `dir` (and its missing parents) 0700 and makes an existing one 0700. A directory
/// others may create files in (`/tmp`, a shared drop) is refused, not tightened: 0700 would
/// lock them out of it. So is one another user owns: they could change what is in it.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    create_dir(dir)?;
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(dir)?;
        refuse_shared(dir, &meta)?;
        refuse_foreign(dir, &meta)?;
    }
    tighten(dir, 0o700)
}

/// What sluice keeps at the top of its data directory (SQLite adds `-wal`, `-shm`,
/// `-journal` and `-mj...` to the store's name).
const OWN_NAMES: &[&str] = &["sluice.", "api_key", "builds", "wasm-cache"];

/// The data directory made private ([`dir`]), and what sluice keeps at its top its own: a link
/// or another user's entry there (`sluice.db-journal`, `builds`) is refused. A directory open
/// to others before may hold what they put there: a hot journal SQLite rolls into the store on
/// open, a `builds` link whose target sluice then emptied (found by a red team). Anything else
/// another user owns is said, not refused: a volume's `lost+found` is root's.
pub fn data_dir(path: &Path) -> std::io::Result<()> {
    dir(path)?;
    #[cfg(unix)]
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        // Not followed: the entry itself. One gone meanwhile (the -wal of a store that was
        // just closed) is nothing to refuse.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let own = OWN_NAMES.iter().any(|n| entry.file_name().to_string_lossy().starts_with(n));
        let checked = if meta.file_type().is_symlink() {
            Err(refused(&entry.path(), "a symbolic link"))
        } else {
            refuse_foreign(&entry.path(), &meta)
        };
        match checked {
            Err(e) if own => return Err(e),
            Err(e) => tracing::warn!("{e}"),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// A directory inside the data directory, made as [`dir`] does; a link in its place is
/// refused, not followed.
pub fn own_dir(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refused(path, "a symbolic link"));
    }
    dir(path)
}

fn refused(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} is {why}; sluice uses only files of its own in its data directory and follows no link there \
             (one could send its data where another user reads it): put the file itself in its place, or remove it",
            path.display()
        ),
    )
}

/// Creates `dir` and its missing parents 0700 (not first with the umask's mode and tightened
/// after: with umask 000 it was open to all meanwhile).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn refuse_shared(dir: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
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
    Ok(())
}

/// The user sluice runs as.
#[cfg(unix)]
fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(unix)]
fn refuse_foreign(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    if meta.uid() != own_uid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user {owner}, not to the user sluice runs as ({}), who could change it behind \
                 sluice's back: run sluice as its owner (a command beside a running server too: sudo -u '#{owner}' \
                 sluice ...), or give it to sluice's user (chown)",
                path.display(),
                own_uid(),
                owner = meta.uid(),
            ),
        ));
    }
    Ok(())
}

/// Whether sluice's own regular file `path` exists: `Ok(false)` when it does not; an error
/// when it is a symbolic link, not a regular file, or another user's. Looked at without
/// following a link, so what it names is never opened or changed.
pub fn own_file(path: &Path) -> std::io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    if meta.file_type().is_symlink() {
        return Err(refused(path, "a symbolic link"));
    }
    if !meta.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    #[cfg(unix)]
    refuse_foreign(path, &meta)?;
    Ok(true)
}

/// Creates `path` empty with mode 0600 if it does not exist, and makes it 0600 if it does; it
/// must be sluice's own regular file ([`own_file`]). An existing file is never opened: closing
/// any descriptor of a file drops every POSIX lock the process holds on it, and SQLite's locks
/// are POSIX locks.
pub fn file(path: &Path) -> std::io::Result<()> {
    if !own_file(path)? {
        let mut options = std::fs::OpenOptions::new();
        // `create_new` (O_EXCL) fails on a link planted meanwhile instead of following it.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                own_file(path)?;
            }
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

/// Whether users other than its owner (its group's, or anyone) may write in the existing
/// directory `path`: what is in it may then have been put there by someone else.
pub fn others_may_write(path: &Path) -> bool {
    write_bits(path) & 0o022 != 0
}

/// Whether any user at all may write in the existing directory `path` (a directory writable
/// by its group is usual where each user has a group of their own).
pub fn anyone_may_write(path: &Path) -> bool {
    write_bits(path) & 0o002 != 0
}

fn write_bits(path: &Path) -> u32 {
    #[cfg(unix)]
    return std::fs::metadata(path).map_or(0, |meta| meta.mode() & 0o222);
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

/// Why the settings file at `path`, whose opened file's metadata is `file`, may have been put
/// there by another user, if it may: it belongs to another user (not root) and so does its
/// directory, or others (its group, anyone) may write in that directory. A `sluice.toml`
/// planted in `/tmp`, or in another user's directory the operator runs a command in, would
/// choose the data directory and the address the key is sent to. Another user's file in a directory of root's or
/// sluice's user (a bind-mounted file, a mounted ConfigMap) is the operator's choice.
pub fn planted(path: &Path, file: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = std::fs::metadata(dir).ok()?;
        planted_by(own_uid(), (file.uid(), file.mode()), (dir.uid(), dir.mode())).then(|| {
            format!(
                "it belongs to user {} and sits in a directory that others may write in or that is not this \
                 user's or root's: it may have been put there for sluice to read",
                file.uid()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        None
    }
}

/// [`planted`]'s rule over (uid, mode) of the file and of its directory, for `own` uid.
#[cfg(unix)]
fn planted_by(own: u32, file: (u32, u32), dir: (u32, u32)) -> bool {
    let trusted = |uid: u32| uid == own || uid == 0;
    !trusted(file.0) && (!trusted(dir.0) || dir.1 & 0o022 != 0)
}

/// Whether anyone may write the file whose metadata is `file`: its mode, for a warning.
pub fn anyone_may_write_file(file: &std::fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    return (file.mode() & 0o002 != 0).then_some(file.mode() & 0o7777);
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// The mode of the regular file `path` (its permission bits) when users other than the one
/// sluice runs as may read it: an operator's file that holds a secret is then worth a warning.
/// Read by the group of a file someone else owns is how an operator shares it with sluice, not
/// a leak. `None` otherwise, when it cannot be looked at, for anything but a regular file (a
/// FIFO would be read a second time, and hang), and off Unix.
pub fn others_may_read(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file)?;
        let mode = meta.mode() & 0o777;
        let ours = meta.uid() == own_uid();
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

    #[test]
    fn a_settings_file_is_planted_when_another_user_could_have_put_it_there() {
        let (me, other) = (1000, 2001);
        // Another user's file in a directory of theirs, or in one anyone may write (`/tmp`).
        assert!(planted_by(me, (other, 0o644), (other, 0o755)));
        assert!(planted_by(me, (other, 0o644), (0, 0o1777)));
        assert!(planted_by(me, (other, 0o644), (me, 0o777)));
        assert!(planted_by(me, (other, 0o644), (me, 0o2775)), "a directory its group may write in");
        // Own or root's files; another user's in a directory of root's or sluice's user.
        assert!(!planted_by(me, (me, 0o644), (other, 0o777)));
        assert!(!planted_by(me, (0, 0o644), (0, 0o1777)));
        assert!(!planted_by(me, (other, 0o644), (0, 0o755)));
        assert!(!planted_by(me, (other, 0o640), (me, 0o700)));
    }

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
