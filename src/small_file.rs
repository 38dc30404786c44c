//! Reading a small text file the operator wrote (settings, valves) without being made to hang
//! or fill memory by what was put in its place.

use std::io::Read;
use std::path::Path;

/// The most such a file may hold: far more than any settings or valves, and what the valves
/// editor's route takes in one update.
pub const MAX_BYTES: u64 = 1 << 20;

/// The text of `path`; `Ok(None)` when it does not exist. Only a regular file of at most
/// [`MAX_BYTES`] is read (a link to one is, as a Kubernetes ConfigMap mounts them): a FIFO put
/// in its place hung the server's start and every command, and a large file (or a link to
/// `/dev/zero`) took gigabytes (found by red teams). `what` names the file in the refusal ("a
/// valves file").
pub fn read(path: &Path, what: &str) -> std::io::Result<Option<String>> {
    Ok(read_opened(path, what)?.map(|(text, _)| text))
}

/// [`read`], with the metadata of the file that was read (not of whatever the path names a
/// moment later: a check on the path could be shown another file than the one read).
pub fn read_opened(path: &Path, what: &str) -> std::io::Result<Option<(String, std::fs::Metadata)>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO to read waits for a writer; without waiting it opens, and is refused below.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is not a regular file"));
    }
    if meta.len() > MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is {} bytes; {what} may have at most {MAX_BYTES}", meta.len()),
        ));
    }
    let mut text = String::new();
    // Bounded even if it grows while being read.
    file.take(MAX_BYTES).read_to_string(&mut text)?;
    Ok(Some((text, meta)))
}
