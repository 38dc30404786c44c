//! One server per data directory. A second one would run its own delivery workers on the same
//! outbox and its own writer on the same SQLite file; it must stop before it starts anything.
//! The lock is `flock` on a file of its own (SQLite's POSIX locks on the database are not
//! disturbed), and the kernel drops it when the process dies, however it dies.

use std::fs::{File, TryLockError};
use std::path::Path;

/// Lock file in the data dir.
pub const LOCK_FILE: &str = "sluice.lock";

/// Held for the life of the server.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another sluice is already running with the data directory {dir} (it holds {dir}/{LOCK_FILE}); \
         stop it, or give this one its own SLUICE_DATA_DIR"
    )]
    Held { dir: String },
    #[error("cannot lock {dir}/{LOCK_FILE}: {source}")]
    Io { dir: String, source: std::io::Error },
}

pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
    let shown = dir.display().to_string();
    let path = dir.join(LOCK_FILE);
    crate::private::file(&path).map_err(|source| LockError::Io { dir: shown.clone(), source })?;
    let file =
        File::options().write(true).open(&path).map_err(|source| LockError::Io { dir: shown.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(LockError::Held { dir: shown }),
        Err(TryLockError::Error(source)) => Err(LockError::Io { dir: shown, source }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let e = acquire(dir.path()).unwrap_err();
        assert!(matches!(e, LockError::Held { .. }), "{e}");
        drop(first);
        acquire(dir.path()).unwrap();
    }
}
